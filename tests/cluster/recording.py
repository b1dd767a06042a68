"""Records what the platform sends to Redis: each command (with its keys) and each pipeline
(with every queued command's keys), by wrapping the live client; everything still runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.cluster import key_slot


@dataclass
class Recorded:
    commands: list[tuple[str, list[bytes]]] = field(default_factory=list)
    pipelines: list[list[tuple[str, list[bytes]]]] = field(default_factory=list)

    def operations(self) -> list[tuple[str, list[bytes]]]:
        """Each command, and each pipeline as one operation over all its keys."""
        grouped = [
            (" | ".join(name for name, _ in pipeline), [k for _, keys in pipeline for k in keys])
            for pipeline in self.pipelines
        ]
        return [*self.commands, *grouped]


def _encoded(key: Any) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()


# Commands whose arguments after the name are all keys; any other keyed command the
# platform sends has one key, right after its name (GET, SET, XADD, ZREM, ...).
_ALL_KEYS = {"MGET", "DEL", "EXISTS", "UNLINK", "TOUCH"}
_KEYLESS = {"PING", "SCAN", "KEYS", "FLUSHALL", "FLUSHDB", "INFO", "CLUSTER", "SCRIPT",
            "PUBLISH", "COMMAND", "TIME", "DBSIZE"}  # fmt: skip


def command_keys(args: tuple[Any, ...]) -> tuple[str, list[bytes]]:
    name = str(args[0]).upper()
    if name in ("EVAL", "EVALSHA"):
        return name, [_encoded(key) for key in args[3 : 3 + int(args[2])]]
    if name == "MEMORY USAGE":
        return name, [_encoded(args[1])]
    if name in _ALL_KEYS:
        return name, [_encoded(key) for key in args[1:]]
    if name in _KEYLESS or len(args) < 2:
        return name, []
    return name, [_encoded(args[1])]


def slots(keys: list[bytes]) -> set[int]:
    return {key_slot(key) for key in keys}


@contextmanager
def recording(client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    recorded = Recorded()
    run_command, make_pipeline = client.execute_command, client.pipeline

    def execute_command(*args: Any, **kwargs: Any) -> Any:
        recorded.commands.append(command_keys(args))
        return run_command(*args, **kwargs)

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        queued: list[tuple[str, list[bytes]]] = []
        queue, execute = pipe.execute_command, pipe.execute

        def queue_command(*args: Any, **kwargs: Any) -> Any:
            queued.append(command_keys(args))
            return queue(*args, **kwargs)

        def send(*args: Any, **kwargs: Any) -> Any:
            recorded.pipelines.append(list(queued))
            return execute(*args, **kwargs)

        pipe.execute_command, pipe.execute = queue_command, send
        return pipe

    with monkeypatch.context() as patch:
        patch.setattr(client, "execute_command", execute_command)
        patch.setattr(client, "pipeline", pipeline)
        yield recorded
