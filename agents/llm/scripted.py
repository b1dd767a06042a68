"""A deterministic backend for tests and benchmarks: no model, no network.

It replies from a script (or echoes), streams at a set pace, emits tool calls, and fails
mid-stream on cue. Scripts are process-wide so server processes started by tests can be
configured through the environment (`SCRIPTED_LLM_DELAY`, `SCRIPTED_LLM_REPLY`, and
`SCRIPTED_LLM_SCRIPT`: a JSON list of steps `{"reply", "tool_calls": [{"id", "name",
"arguments"}]}`, the n-th answering a turn's n-th LLM call, so that a turn resumed by another
process gets the step it would have had).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from agents.llm.base import (
    ChatMessage,
    Delta,
    Done,
    GenerationOptions,
    LLMError,
    LLMEvent,
    ToolCall,
    Usage,
    estimate_tokens,
)

CALLS_KEPT = 500


@dataclass
class Step:
    """One scripted LLM call."""

    reply: str | None = None  # None: echo the last user message
    tool_calls: list[ToolCall] = field(default_factory=list)
    fail_after_tokens: int | None = None  # raise LLMError after this many deltas
    delay: float | None = None  # seconds between deltas (default: the backend's pace)


class ScriptedBackend:
    name = "scripted"

    def __init__(self) -> None:
        self._steps: deque[Step] = deque()
        self._lock = threading.Lock()
        self.delay = float(os.environ.get("SCRIPTED_LLM_DELAY", "0"))
        # What each call was sent, kept only while a test records (`reset(record=True)`):
        # benchmarks and soaks run this backend in long-lived servers, where even a bounded
        # log of the last calls held every message of their contexts (the soak found it:
        # RSS and garbage-collection time grew with the conversations).
        self.record = False
        self.calls: deque[list[ChatMessage]] = deque(maxlen=CALLS_KEPT)

    def script(self, *steps: Step) -> None:
        with self._lock:
            self._steps.extend(steps)

    def reset(self, *, record: bool = False) -> None:
        with self._lock:
            self._steps.clear()
            self.calls.clear()
            self.record = record
        self.delay = float(os.environ.get("SCRIPTED_LLM_DELAY", "0"))

    def _next_step(self, messages: list[ChatMessage]) -> Step:
        with self._lock:
            if self._steps:
                return self._steps.popleft()
        return _environment_step(messages)

    def stream(self, messages: list[ChatMessage], options: GenerationOptions) -> Iterator[LLMEvent]:
        if self.record:
            with self._lock:
                self.calls.append(list(messages))
        step = self._next_step(messages)
        text = step.reply if step.reply is not None else _default_reply(messages)
        delay = self.delay if step.delay is None else step.delay
        emitted: list[str] = []
        for index, piece in enumerate(_pieces(text)):
            if step.fail_after_tokens is not None and index >= step.fail_after_tokens:
                raise LLMError("scripted failure mid-stream")
            if delay:
                time.sleep(delay)
            emitted.append(piece)
            yield Delta(piece)
        if step.fail_after_tokens is not None and step.fail_after_tokens >= len(emitted):
            raise LLMError("scripted failure at end of stream")
        yield from step.tool_calls
        prompt = sum(self.count_tokens(m.content) for m in messages)
        usage = Usage(prompt_tokens=prompt, completion_tokens=self.count_tokens(text))
        yield Done(text=text, usage=usage, model="scripted", tool_calls=step.tool_calls)

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)


def _environment_step(messages: list[ChatMessage]) -> Step:
    """SCRIPTED_LLM_SCRIPT's step for this call: its index is the number of LLM calls the
    turn made before (assistant messages after the last user message)."""
    raw = os.environ.get("SCRIPTED_LLM_SCRIPT")
    if not raw:
        return Step()
    steps = json.loads(raw)
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    index = sum(1 for m in messages[last_user + 1 :] if m.role == "assistant")
    if index >= len(steps):
        return Step()
    step = steps[index]
    calls = [
        ToolCall(id=c["id"], name=c["name"], arguments=c.get("arguments", {}))
        for c in step.get("tool_calls", [])
    ]
    return Step(reply=step.get("reply"), tool_calls=calls)


def _default_reply(messages: list[ChatMessage]) -> str:
    fixed = os.environ.get("SCRIPTED_LLM_REPLY")
    if fixed:
        return fixed
    last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    return f"You said: {last_user}"


def _pieces(text: str) -> Iterator[str]:
    """Word-sized deltas that join back to exactly `text`."""
    start = 0
    for index, char in enumerate(text):
        if char == " " and index > start:
            yield text[start:index]
            start = index
    if start < len(text):
        yield text[start:]


scripted_backend = ScriptedBackend()
