"""The read replica's database settings, derived from the primary's."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import dj_database_url

from agentplatform.project.env import ConfigError

REPLICA_URL_VARIABLE = "DATABASE_REPLICA_URL"


def replica_database(primary: Mapping[str, Any], url: str) -> dict[str, Any]:
    """The primary's settings (backend, pool, options) pointed at the replica of `url`, with
    the libpq parameters of `url`'s query (sslmode, ...) over the primary's.

    The same role as the primary's: a physical replica holds the primary's roles and
    policies, so row-level security binds the application there exactly as on the primary.
    Under the test runner the alias mirrors the primary's test database (TEST MIRROR), so
    it is neither created nor flushed as a database of its own."""
    parsed: dict[str, Any] = dict(dj_database_url.parse(url))
    if parsed["USER"] != primary["USER"]:
        raise ConfigError(
            f"{REPLICA_URL_VARIABLE} must connect as DATABASE_URL's role "
            f"({primary['USER']!r}), not {parsed['USER']!r}: row-level security binds that role."
        )
    replica = copy.deepcopy(dict(primary))
    replica.update({key: parsed[key] for key in ("HOST", "PORT", "NAME", "PASSWORD")})
    replica["OPTIONS"] = {**replica.get("OPTIONS", {}), **parsed.get("OPTIONS", {})}
    replica["TEST"] = {**replica.get("TEST", {}), "MIRROR": "default"}
    return replica
