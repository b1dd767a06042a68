"""Server-sent events through a real ASGI server arrive as they are made, not at the end:
Django's ASGI handler reads a synchronous stream to its end before it sends a byte, which
held every token of a turn back until the turn was over."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from agentplatform.devtools.testing import Server
from agents.models import Message
from tests.conftest import Persona

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Eight words at 0.25 s each: the turn stores its reply two seconds after it starts.
SLOW = {"SCRIPTED_LLM_DELAY": "0.25", "SCRIPTED_LLM_REPLY": "one two three four five six seven"}


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server({"CELERY_TASK_ALWAYS_EAGER": "1", **SLOW})
    yield server
    server.stop()


def _events(response: requests.Response) -> Iterator[dict]:
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            yield json.loads(line[len(b"data: ") :])


def _replies(persona: Persona) -> int:
    return Message.objects.filter(session=persona.session, role="assistant").count()


def test_a_turns_tokens_stream_before_its_reply_is_stored(server: Server, alice: Persona) -> None:
    response = requests.post(
        f"{server.url}/api/v1/sessions/{alice.session.pk}/messages/",
        json={"content": "hello"},
        headers={"Authorization": f"Bearer {alice.api_key}", "Accept": "text/event-stream"},
        stream=True,
        timeout=30,
    )
    types = []
    for event in _events(response):
        if event["type"] == "token" and "token" not in types:
            assert _replies(alice) == 0, "the first token came only after the turn ended"
        types.append(event["type"])
    assert types[0] == "accepted" and types.count("token") >= 2 and types[-1] == "run"
    assert _replies(alice) == 1


def test_joining_a_run_streams_its_frames_live(server: Server, alice: Persona) -> None:
    headers = {"Authorization": f"Bearer {alice.api_key}", "Accept": "text/event-stream"}
    turn = requests.post(
        f"{server.url}/api/v1/sessions/{alice.session.pk}/messages/",
        json={"content": "hello"},
        headers=headers,
        stream=True,
        timeout=30,
    )
    run_id = next(_events(turn))["run"]
    joined = requests.get(
        f"{server.url}/api/v1/runs/{run_id}/events/", headers=headers, stream=True, timeout=30
    )
    types = []
    for event in _events(joined):
        if not types:
            assert _replies(alice) == 0, "the joined stream came only after the run ended"
        types.append(event["type"])
    assert types[-1] == "run" and "message" in types
    assert _replies(alice) == 1
    turn.close()
