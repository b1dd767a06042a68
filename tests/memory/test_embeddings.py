from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from memory.embeddings import DIMENSIONS, MiniLMEmbedder, OpenAIEmbedder


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
