from __future__ import annotations

from collections.abc import Iterator

import pytest

from agents.llm.scripted import ScriptedBackend, scripted_backend


@pytest.fixture(autouse=True)
def llm() -> Iterator[ScriptedBackend]:
    """The scripted LLM, reset around each test, recording what each call was sent."""
    scripted_backend.reset(record=True)
    yield scripted_backend
    scripted_backend.reset()
