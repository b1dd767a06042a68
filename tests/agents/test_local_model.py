"""The bundled local model, end to end (skipped unless `make local-llm` installed it)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from agents.engine.turn import turn_run
from agents.llm.local import is_available
from agents.models import Message
from tests.conftest import Persona

pytestmark = [
    pytest.mark.local_llm,
    pytest.mark.django_db,
    pytest.mark.skipif(not is_available(), reason="local model not installed: make local-llm"),
]


@override_settings(AGENTS={**settings.AGENTS, "LLM_BACKEND": "local"})
def test_a_turn_with_the_bundled_local_model_streams_and_stores_a_reply(alice: Persona) -> None:
    tokens: list[str] = []
    result = turn_run(
        session=alice.session,
        content="Say hello in one short sentence.",
        emit=lambda event, payload: tokens.append(payload["delta"]) if event == "token" else None,
    )
    assert result.assistant_message is not None
    reply = result.assistant_message.content
    assert reply.strip(), "the model replied with nothing"
    assert "".join(tokens) == reply
    assert result.usage is not None and result.usage.completion_tokens > 0
    # Token counts come from the model's own tokenizer once it is loaded.
    assert Message.objects.get(pk=result.assistant_message.pk).token_count > 0
