"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, Ollama, ...)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

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


class OpenAICompatibleBackend:
    name = "openai"

    def stream(self, messages: list[ChatMessage], options: GenerationOptions) -> Iterator[LLMEvent]:
        import openai

        client = openai.OpenAI(
            base_url=options.base_url, api_key=options.api_key or "unused", max_retries=1
        )
        kwargs: dict[str, Any] = {"max_tokens": options.max_tokens}
        if options.temperature is not None:
            kwargs["temperature"] = options.temperature
        parts: list[str] = []
        usage = None
        calls: dict[int, dict[str, Any]] = {}
        try:
            kwargs.update(
                model=options.model,
                messages=[openai_message(m) for m in messages],
                stream=True,
                stream_options={"include_usage": True},
            )
            if options.tools:
                kwargs["tools"] = [{"type": "function", "function": t} for t in options.tools]
            stream = client.chat.completions.create(**kwargs)
            for chunk in stream:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        parts.append(choice.delta.content)
                        yield Delta(choice.delta.content)
                    for call in choice.delta.tool_calls or []:
                        entry = calls.setdefault(call.index, {"id": "", "name": "", "args": ""})
                        entry["id"] = call.id or entry["id"]
                        if call.function:
                            entry["name"] += call.function.name or ""
                            entry["args"] += call.function.arguments or ""
        except openai.OpenAIError as error:
            raise LLMError(f"{type(error).__name__}: {error}") from error
        text = "".join(parts)
        tool_calls = [
            ToolCall(id=c["id"], name=c["name"], arguments=json.loads(c["args"] or "{}"))
            for c in calls.values()
        ]
        yield from tool_calls
        prompt = sum(estimate_tokens(m.content) for m in messages)
        final_usage = Usage(
            prompt_tokens=usage.prompt_tokens if usage else prompt,
            completion_tokens=usage.completion_tokens if usage else estimate_tokens(text),
        )
        yield Done(text=text, usage=final_usage, model=options.model, tool_calls=tool_calls)

    def count_tokens(self, text: str) -> int:
        # No tokenizer for an arbitrary remote model: the documented estimate.
        return estimate_tokens(text)


def openai_message(message: ChatMessage) -> dict[str, Any]:
    """A chat message in the API's shape, tool calls and tool answers included."""
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        data["content"] = message.content or None
        data["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        data["tool_call_id"] = message.tool_call_id
    return data
