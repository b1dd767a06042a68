"""The one small interface every LLM backend implements.

`stream()` yields `Delta`s as text arrives, possibly `ToolCall`s, then exactly one `Done`
carrying the final text and token usage. A backend failing mid-stream raises `LLMError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant message asking for tools
    tool_call_id: str = ""  # a tool message: the call it answers


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Done:
    text: str
    usage: Usage
    model: str
    tool_calls: list[ToolCall] = field(default_factory=list)


LLMEvent = Delta | ToolCall | Done


@dataclass(frozen=True)
class GenerationOptions:
    model: str = ""
    base_url: str | None = None
    api_key: str = ""
    temperature: float | None = None
    max_tokens: int = 512
    # Tools the model may call: OpenAI-style function specs (name, description, parameters).
    tools: tuple[dict[str, Any], ...] = ()


class LLMError(Exception):
    """The LLM endpoint failed; the turn answers 502 and keeps the user's message."""


class LLMBackend(Protocol):
    name: str

    def stream(self, messages: list[ChatMessage], options: GenerationOptions) -> Iterator[LLMEvent]:
        """Deltas as they arrive, then one Done."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` by this backend's tokenizer, or the documented estimate."""
        ...


def estimate_tokens(text: str) -> int:
    """The documented estimate where no tokenizer is at hand: one token per 4 characters
    (OpenAI's rule of thumb for English), at least one per non-empty text."""
    return math.ceil(len(text) / 4) if text else 0
