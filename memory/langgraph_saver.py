"""This platform's PostgreSQL as a LangGraph checkpointer, scoped to one tenant.

    saver = PlatformCheckpointSaver(tenant=tenant)
    graph = builder.compile(checkpointer=saver)

Tenants who bring LangGraph graphs keep their graphs' state next to their sessions: same
database, same backups, same erasure and retention. Every row carries the tenant and every
query filters by it, so two tenants' threads with the same id never meet. Channel values are
stored once per version (a checkpoint that leaves a channel unchanged does not copy it), and
`prune`, `copy_thread` and `delete_for_runs` are implemented, so the saver passes the
`langgraph-checkpoint-conformance` suite, base and extended (tests/memory/).

The async methods run the sync ones in Django's database thread (`sync_to_async`). LangGraph
calls a saver from its own worker threads, which Django's request cycle never cleans up, so
each call made outside the main thread hands its connection back to the pool when it ends.
"""

from __future__ import annotations

import builtins
import functools
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.db.models import Max, Q
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)

from agentplatform.core import rls
from agentplatform.models import Tenant
from memory.models import GraphBlob, GraphCheckpoint, GraphWrite

EMPTY = "empty"  # a channel with no value at this version
F = TypeVar("F", bound=Callable[..., Any])


def _releases_connection(method: F) -> F:
    """Runs the method in the saver's tenant scope (row-level security), whatever scope the
    caller is in, and gives a worker thread's connection back to the pool afterwards."""

    @functools.wraps(method)
    def wrapper(self: PlatformCheckpointSaver, *args: Any, **kwargs: Any) -> Any:
        try:
            with rls.tenant_scope(self.tenant.pk):
                return method(self, *args, **kwargs)
        finally:
            outside_main = threading.current_thread() is not threading.main_thread()
            if outside_main and not connection.in_atomic_block:
                connection.close()  # with the pool: back to it, not closed

    return cast(F, wrapper)


class PlatformCheckpointSaver(BaseCheckpointSaver[str]):
    def __init__(self, *, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tenant = tenant

    # --- reads ----------------------------------------------------------------------------

    @_releases_connection
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        configurable = config["configurable"]
        rows = self._checkpoints().filter(
            thread_id=configurable["thread_id"],
            checkpoint_ns=configurable.get("checkpoint_ns", ""),
        )
        if checkpoint_id := get_checkpoint_id(config):
            rows = rows.filter(checkpoint_id=checkpoint_id)
        row = rows.order_by("-checkpoint_id").first()
        return self._tuple(row) if row is not None else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self._list(config, filter, before, limit)

    @_releases_connection
    def _list(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> builtins.list[CheckpointTuple]:
        found: builtins.list[CheckpointTuple] = []
        rows = self._checkpoints()
        if config is not None:
            configurable = config["configurable"]
            rows = rows.filter(thread_id=configurable["thread_id"])
            if configurable.get("checkpoint_ns") is not None:
                rows = rows.filter(checkpoint_ns=configurable["checkpoint_ns"])
            if checkpoint_id := get_checkpoint_id(config):
                rows = rows.filter(checkpoint_id=checkpoint_id)
        if before is not None and (before_id := get_checkpoint_id(before)):
            rows = rows.filter(checkpoint_id__lt=before_id)
        for row in rows.order_by("-checkpoint_id").iterator(chunk_size=100):
            if limit is not None and len(found) >= limit:
                break
            metadata = self.serde.loads_typed((row.metadata_type, bytes(row.metadata)))
            if filter and any(metadata.get(k) != v for k, v in filter.items()):
                continue
            found.append(self._tuple(row, metadata))
        return found

    def _checkpoints(self) -> Any:
        return GraphCheckpoint.objects.filter(tenant=self.tenant)

    def _tuple(self, row: GraphCheckpoint, metadata: Any = None) -> CheckpointTuple:
        checkpoint: Checkpoint = self.serde.loads_typed((row.type, bytes(row.checkpoint)))
        if metadata is None:
            metadata = self.serde.loads_typed((row.metadata_type, bytes(row.metadata)))
        where = {"thread_id": row.thread_id, "checkpoint_ns": row.checkpoint_ns}
        return CheckpointTuple(
            config={"configurable": {**where, "checkpoint_id": row.checkpoint_id}},
            checkpoint={
                **checkpoint,
                "channel_values": self._channel_values(row, checkpoint["channel_versions"]),
            },
            metadata=metadata,
            parent_config=(
                {"configurable": {**where, "checkpoint_id": row.parent_checkpoint_id}}
                if row.parent_checkpoint_id
                else None
            ),
            pending_writes=self._pending_writes(row),
        )

    def _channel_values(self, row: GraphCheckpoint, versions: ChannelVersions) -> dict[str, Any]:
        if not versions:
            return {}
        wanted = Q()
        for channel, version in versions.items():
            wanted |= Q(channel=channel, version=str(version))
        blobs = GraphBlob.objects.filter(
            wanted, tenant=self.tenant, thread_id=row.thread_id, checkpoint_ns=row.checkpoint_ns
        ).values_list("channel", "type", "blob")
        return {
            channel: self.serde.loads_typed((kind, bytes(blob)))
            for channel, kind, blob in blobs
            if kind != EMPTY
        }

    def _pending_writes(self, row: GraphCheckpoint) -> builtins.list[tuple[str, str, Any]]:
        writes = GraphWrite.objects.filter(
            tenant=self.tenant,
            thread_id=row.thread_id,
            checkpoint_ns=row.checkpoint_ns,
            checkpoint_id=row.checkpoint_id,
        ).values_list("task_path", "task_id", "idx", "channel", "type", "blob")
        ordered = sorted(writes, key=lambda w: writes_sort_key(w[0], w[1], w[2]))
        return [
            (task_id, channel, self.serde.loads_typed((kind, bytes(blob))))
            for _, task_id, _, channel, kind, blob in ordered
        ]

    # --- writes ---------------------------------------------------------------------------

    @_releases_connection
    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        namespace = configurable.get("checkpoint_ns", "")
        stored = checkpoint.copy()
        values: dict[str, Any] = stored.pop("channel_values")  # type: ignore[misc]
        kind, payload = self.serde.dumps_typed(stored)
        full_metadata = get_checkpoint_metadata(config, metadata)
        metadata_kind, metadata_payload = self.serde.dumps_typed(full_metadata)
        blobs = [
            GraphBlob(
                tenant=self.tenant,
                thread_id=thread_id,
                checkpoint_ns=namespace,
                channel=channel,
                version=str(version),
                **_typed(self.serde.dumps_typed(values[channel]) if channel in values else None),
            )
            for channel, version in new_versions.items()
        ]
        with transaction.atomic():
            GraphBlob.objects.bulk_create(blobs, ignore_conflicts=True)
            GraphCheckpoint.objects.update_or_create(
                tenant=self.tenant,
                thread_id=thread_id,
                checkpoint_ns=namespace,
                checkpoint_id=checkpoint["id"],
                defaults={
                    "parent_checkpoint_id": configurable.get("checkpoint_id") or "",
                    "type": kind,
                    "checkpoint": payload,
                    "metadata_type": metadata_kind,
                    "metadata": metadata_payload,
                    "channel_versions": {
                        k: str(v) for k, v in checkpoint["channel_versions"].items()
                    },
                    "run_id": str(full_metadata.get("run_id") or ""),
                },
            )
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": namespace,
                "checkpoint_id": checkpoint["id"],
            }
        }

    @_releases_connection
    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        configurable = config["configurable"]
        where = {
            "tenant": self.tenant,
            "thread_id": configurable["thread_id"],
            "checkpoint_ns": configurable.get("checkpoint_ns", ""),
            "checkpoint_id": configurable["checkpoint_id"],
            "task_id": task_id,
        }
        with transaction.atomic():
            for position, (channel, value) in enumerate(writes):
                idx = WRITES_IDX_MAP.get(channel, position)
                fields = {
                    "task_path": task_path,
                    "channel": channel,
                    **_typed(self.serde.dumps_typed(value)),
                }
                if idx >= 0:  # a regular write is stored once; a retry does not replace it
                    GraphWrite.objects.get_or_create(**where, idx=idx, defaults=fields)
                else:  # special writes (errors, interrupts) keep the latest
                    GraphWrite.objects.update_or_create(**where, idx=idx, defaults=fields)

    @_releases_connection
    def delete_thread(self, thread_id: str) -> None:
        with transaction.atomic():
            for model in (GraphWrite, GraphBlob, GraphCheckpoint):
                model.objects.filter(tenant=self.tenant, thread_id=thread_id).delete()

    @_releases_connection
    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        with transaction.atomic():
            doomed = self._checkpoints().filter(run_id__in=list(run_ids))
            self._delete_checkpoints(doomed)

    @_releases_connection
    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        models: tuple[Any, ...] = (GraphCheckpoint, GraphBlob, GraphWrite)
        with transaction.atomic():
            for model in models:
                rows = list(model.objects.filter(tenant=self.tenant, thread_id=source_thread_id))
                for row in rows:
                    row.pk = None
                    row.thread_id = target_thread_id
                model.objects.bulk_create(rows, ignore_conflicts=True)

    @_releases_connection
    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if not thread_ids:
            return
        rows = self._checkpoints().filter(thread_id__in=list(thread_ids))
        with transaction.atomic():
            if strategy == "delete":
                for model in (GraphWrite, GraphBlob, GraphCheckpoint):
                    model.objects.filter(
                        tenant=self.tenant, thread_id__in=list(thread_ids)
                    ).delete()
                return
            if strategy != "keep_latest":
                raise ValueError(f"unknown prune strategy {strategy!r}")
            latest = {
                (row["thread_id"], row["checkpoint_ns"]): row["last"]
                for row in rows.values("thread_id", "checkpoint_ns").annotate(
                    last=Max("checkpoint_id")
                )
            }
            keep = Q()
            for (thread_id, namespace), checkpoint_id in latest.items():
                keep |= Q(thread_id=thread_id, checkpoint_ns=namespace, checkpoint_id=checkpoint_id)
            self._delete_checkpoints(rows.exclude(keep))
            self._drop_unreferenced_blobs(list(thread_ids))

    def _delete_checkpoints(self, rows: Any) -> None:
        for thread_id, namespace, checkpoint_id in rows.values_list(
            "thread_id", "checkpoint_ns", "checkpoint_id"
        ):
            GraphWrite.objects.filter(
                tenant=self.tenant,
                thread_id=thread_id,
                checkpoint_ns=namespace,
                checkpoint_id=checkpoint_id,
            ).delete()
        rows.delete()

    def _drop_unreferenced_blobs(self, thread_ids: builtins.list[str]) -> None:
        """After pruning, keep only the channel values the remaining checkpoints use."""
        used: set[tuple[str, str, str, str]] = set()
        kept = self._checkpoints().filter(thread_id__in=thread_ids)
        for thread_id, namespace, versions in kept.values_list(
            "thread_id", "checkpoint_ns", "channel_versions"
        ):
            used.update((thread_id, namespace, c, str(v)) for c, v in versions.items())
        blobs = GraphBlob.objects.filter(tenant=self.tenant, thread_id__in=thread_ids)
        stale = [
            pk
            for pk, *key in blobs.values_list(
                "pk", "thread_id", "checkpoint_ns", "channel", "version"
            )
            if tuple(key) not in used
        ]
        GraphBlob.objects.filter(pk__in=stale).delete()

    def get_next_version(self, current: str | None, channel: None) -> str:
        # LangGraph's own string versions: a counter, then a random tie-breaker.
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(current.split(".")[0])
        return f"{number + 1:032}.{random.random():016}"  # noqa: S311 - not a secret

    # --- async: the same, in Django's database thread ------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await sync_to_async(self.get_tuple)(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        def collect() -> builtins.list[CheckpointTuple]:
            return list(self.list(config, filter=filter, before=before, limit=limit))

        for item in await sync_to_async(collect)():
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await sync_to_async(self.put)(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await sync_to_async(self.put_writes)(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await sync_to_async(self.delete_thread)(thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await sync_to_async(self.delete_for_runs)(run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await sync_to_async(self.copy_thread)(source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await sync_to_async(self.prune)(thread_ids, strategy=strategy)


def _typed(dumped: tuple[str, bytes] | None) -> dict[str, Any]:
    if dumped is None:
        return {"type": EMPTY, "blob": b""}
    kind, payload = dumped
    return {"type": kind, "blob": payload}
