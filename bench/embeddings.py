"""The bundled embedder at each precision and thread count, on this CPU.

Every turn of an end user with memories embeds its query before the LLM starts, so
`embed_one` is on the turn's critical path. Measured for fp32 (the shipped file: int8
weights folded into fp32 at load) and int8 (the same weights dynamically quantised per
channel), with onnxruntime's intra-op threads at 1 and 2:
- load time; embed_one of a typical query (mean and p50 of 200); batch throughput;
- quality: each precision's vectors against fp32's (cosine), and retrieval of the right
  statement for each question of the memory-quality fixtures (recall@1) per precision.
Prints the CPU model and its decisive flags (VNNI decides int8's margin). Saves
bench/results/embeddings.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, save, summary_ms

FIXTURES = ROOT / "bench" / "fixtures" / "memory_quality.json"
QUERIES = [
    "What is my favourite colour and where do I live these days?",
    "Can you remind me what I ordered last week?",
    "I'm allergic to peanuts, keep that in mind for recipes.",
    "When is my sister's birthday again?",
    "Book the usual table for Thursday evening.",
]


def main() -> None:
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentplatform.project.settings")
    os.environ.setdefault("DATABASE_URL", "postgresql://unused@localhost/unused")
    os.environ.setdefault("REDIS_URL", "redis://localhost:1/0")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from memory.embeddings import MiniLMEmbedder, bundled_precision

    facts = machine()
    print(f"CPU: {facts['cpu']} ({' '.join(facts['cpu_flags'])}), {facts['cpus']} cores")
    statements, questions = _fixture_pairs()
    corpus = statements * 4  # 120+ sentences for the throughput run
    runs: list[dict[str, Any]] = []
    reference: np.ndarray | None = None
    for precision in ("fp32", "int8"):
        for threads in (1, 2):
            started = time.perf_counter()
            embedder = MiniLMEmbedder(precision, threads)
            load = time.perf_counter() - started
            one = _time_embed_one(embedder)
            throughput = _throughput(embedder, corpus)
            vectors = embedder.embed(statements + [q for q, _ in questions])
            if reference is None:
                reference = vectors
            cosines = (vectors * reference).sum(axis=1)
            run = {
                "precision": precision,
                "threads": threads,
                "load_s": round(load, 3),
                "embed_one": summary_ms(one),
                "sentences_per_s": round(throughput, 1),
                "cosine_to_fp32_min": round(float(cosines.min()), 4),
                "cosine_to_fp32_mean": round(float(cosines.mean()), 4),
                "recall_at_1": _recall_at_1(vectors, len(statements), questions, statements),
            }
            runs.append(run)
            print(json.dumps(run))
    results = {"auto_picks": bundled_precision(), "runs": runs}
    fp32 = next(r for r in runs if r["precision"] == "fp32" and r["threads"] == 1)
    int8 = next(r for r in runs if r["precision"] == "int8" and r["threads"] == 1)
    results["int8_speedup_embed_one"] = round(
        fp32["embed_one"]["mean_ms"] / int8["embed_one"]["mean_ms"], 2
    )
    print(f"auto picks {results['auto_picks']}; int8 is {results['int8_speedup_embed_one']}x")
    save("embeddings", results)


def _fixture_pairs() -> tuple[list[str], list[tuple[str, str]]]:
    """Every statement of the memory-quality fixtures, and each question with the fact
    (a substring of exactly one of its user's statements) it asks about."""
    statements: list[str] = []
    questions: list[tuple[str, str]] = []
    for conversation in json.loads(FIXTURES.read_text())["conversations"]:
        own = conversation["statements"]
        statements.extend(own)
        for question, fact in conversation["questions"]:
            questions.append((question, next(s for s in own if fact.lower() in s.lower())))
    return statements, questions


def _time_embed_one(embedder: Any) -> list[float]:
    for query in QUERIES:
        embedder.embed([query])  # warm-up
    timings = []
    for index in range(200):
        query = QUERIES[index % len(QUERIES)]
        started = time.perf_counter()
        embedder.embed([query])
        timings.append(time.perf_counter() - started)
    return timings


def _throughput(embedder: Any, corpus: list[str]) -> float:
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        embedder.embed(corpus)
        rates.append(len(corpus) / (time.perf_counter() - started))
    return statistics.median(rates)


def _recall_at_1(
    vectors: np.ndarray, count: int, questions: list[tuple[str, str]], statements: list[str]
) -> float:
    """A question's nearest statement among *its user's* statements is the one holding
    the fact (per user, as memory search is)."""
    corpus, asked = vectors[:count], vectors[count:]
    hits = 0
    per_user = len(statements) // max(1, len(questions) // 4)
    for index, (question_vector, (_, expected)) in enumerate(zip(asked, questions, strict=True)):
        user = index // 4
        own = slice(user * per_user, (user + 1) * per_user)
        best = int(np.argmax(corpus[own] @ question_vector)) + user * per_user
        hits += statements[best] == expected
    return round(hits / len(questions), 3)


if __name__ == "__main__":
    main()
