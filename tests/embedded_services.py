"""A pytest plugin loaded with `-p` (before pytest-django reads settings).

It starts (or re-attaches to) the embedded PostgreSQL and Redis exactly as `make run`
does, and points the suite at its own Redis database so a developer's running platform
is never flushed by the tests. pytest-django then creates `test_agentplatform` and runs
the migrations (pgvector's CREATE EXTENSION included).
"""

from __future__ import annotations

import os
from urllib.parse import urlparse, urlunparse

from agentplatform.devtools import embedded

TEST_REDIS_DB = 15

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentplatform.project.settings")
embedded.configure(stop_on_exit=True)


def _with_db(url: str, db: int) -> str:
    parsed = urlparse(url)
    return urlunparse(parsed._replace(path=f"/{db}"))


if not os.environ["REDIS_URL"].startswith("redis+cluster://"):  # a cluster has only db 0
    os.environ["REDIS_URL"] = _with_db(os.environ["REDIS_URL"], TEST_REDIS_DB)
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "1")
# No idle pooled connections, so the test database can be dropped at the end.
os.environ.setdefault("DB_POOL_MIN_SIZE", "0")
os.environ.setdefault("REDIS_KEY_PREFIX", "test")
# The LLM is the one part replaced in tests: a deterministic scripted backend.
os.environ.setdefault("AGENTS_LLM_BACKEND", "scripted")
# The suite's webhook receivers and tool servers listen on loopback, which the platform
# otherwise refuses to call (agentplatform.infra.outbound); the SSRF tests set it empty.
os.environ.setdefault("OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8")
