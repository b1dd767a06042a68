from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from agentplatform.infra import cpu
from memory.embeddings import DIMENSIONS, MiniLMEmbedder, OpenAIEmbedder, bundled_precision


class FakeEmbeddings(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(text))] + [1.0] * 383}
            for i, text in enumerate(request["input"])
        ]
        body = json.dumps(
            {
                "object": "list",
                "data": data,
                "model": request["model"],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEmbeddings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_the_openai_compatible_embedder_normalises_and_names_its_model(endpoint: str) -> None:
    embedder = OpenAIEmbedder(endpoint, "emb-small", "k")
    vectors = embedder.embed(["a", "abc"])
    assert vectors.shape == (2, DIMENSIONS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert embedder.name == "openai:emb-small"


def test_the_bundled_model_scores_paraphrases_high_and_unrelated_low() -> None:
    embedder = MiniLMEmbedder()
    a, b, c = embedder.embed(["My name is Ada.", "I am called Ada.", "The weather is sunny."])
    assert float(a @ b) > 0.75
    assert float(a @ c) < 0.3
    assert np.isclose(np.linalg.norm(a), 1.0, atol=1e-5)
    # Batches pad to their longest text and mask the padding: a text embeds the same alone.
    alone = embedder.embed(["My name is Ada."])[0]
    assert float(alone @ a) > 0.9999


def test_int8_precision_keeps_the_fp32_vectors_meaning() -> None:
    """The dynamically quantised model (derived from the shipped file, cached) answers like
    fp32: paraphrases high, unrelated low, every vector within a small angle of fp32's."""
    texts = ["My name is Ada.", "I am called Ada.", "The weather is sunny."]
    int8 = MiniLMEmbedder("int8")
    fp32 = MiniLMEmbedder("fp32")
    a, b, c = int8.embed(texts)
    assert int8.name != fp32.name  # each stored vector records which one made it
    assert float(a @ b) > 0.75
    assert float(a @ c) < 0.3
    assert (int8.embed(texts) * fp32.embed(texts)).sum(axis=1).min() > 0.97
    assert np.allclose(np.linalg.norm(int8.embed(texts), axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("flags", "picked"),
    [({"sse4_2", "avx"}, "fp32"), ({"avx2", "fma"}, "int8"), ({"avx512_vnni"}, "int8"),
     ({"asimd", "asimddp"}, "int8")],
)  # fmt: skip
def test_auto_precision_follows_the_cpus_int8_kernels(
    settings: Any, monkeypatch: pytest.MonkeyPatch, flags: set[str], picked: str
) -> None:
    settings.EMBEDDINGS_PRECISION = "auto"
    monkeypatch.setattr(cpu, "flags", lambda: frozenset(flags))
    assert bundled_precision() == picked


def test_a_pinned_precision_wins_over_the_cpu(settings: Any) -> None:
    settings.EMBEDDINGS_PRECISION = "fp32"
    assert bundled_precision() == "fp32"


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision"):
        MiniLMEmbedder("fp16")
