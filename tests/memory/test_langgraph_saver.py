"""The platform as a LangGraph checkpointer: the official conformance suite (base and every
extended capability), tenant scoping, and a real graph running on it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from agentplatform.core import rls
from agentplatform.models import Tenant
from memory.langgraph_saver import PlatformCheckpointSaver
from memory.models import GraphBlob, GraphCheckpoint
from tests.conftest import Persona

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.asyncio
async def test_passes_the_conformance_suite_base_and_extended(alice: Persona) -> None:
    @checkpointer_test(name="PlatformCheckpointSaver")
    async def platform_saver() -> AsyncGenerator[PlatformCheckpointSaver, None]:
        yield PlatformCheckpointSaver(tenant=alice.tenant)

    report = await validate(platform_saver, progress=ProgressCallbacks.verbose())
    report.print_report()
    assert report.passed_all_base()
    results = report.to_dict()["results"]
    for extended in ("prune", "copy_thread", "delete_for_runs"):
        assert results[extended]["detected"], extended
        assert results[extended]["tests_failed"] == 0, results[extended]["failures"]
        assert results[extended]["tests_passed"] > 0
    assert report.conformance_level() == "FULL"


def _graph(saver: PlatformCheckpointSaver) -> Any:
    from langgraph.graph import END, START, MessagesState, StateGraph

    def reply(state: MessagesState) -> dict[str, Any]:
        return {"messages": [("ai", f"echo: {state['messages'][-1].content}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


def test_a_graph_runs_on_it_and_another_tenant_sees_nothing(alice: Persona, bob: Persona) -> None:
    thread = {"configurable": {"thread_id": "support-1"}}
    graph = _graph(PlatformCheckpointSaver(tenant=alice.tenant))
    graph.invoke({"messages": [("user", "hello")]}, thread)
    graph.invoke({"messages": [("user", "again")]}, thread)
    state = graph.get_state(thread)
    assert [m.content for m in state.values["messages"]] == [
        "hello", "echo: hello", "again", "echo: again",
    ]  # fmt: skip

    bobs = PlatformCheckpointSaver(tenant=bob.tenant)
    assert bobs.get_tuple(thread) is None
    assert list(bobs.list(None)) == []
    bobs.delete_thread("support-1")
    bobs.prune(["support-1"], strategy="delete")
    assert GraphCheckpoint.objects.filter(tenant=alice.tenant).count() >= 4
    assert _graph(bobs).get_state(thread).values == {}


def test_it_runs_in_its_tenants_scope_from_code_that_has_none(alice: Persona) -> None:
    """Row-level security: a graph run from plain application code (no request, no task:
    no tenant scope) still reads and writes its tenant's rows, and only those."""
    thread = {"configurable": {"thread_id": "no-scope"}}
    with rls.request_scope():
        graph = _graph(PlatformCheckpointSaver(tenant=alice.tenant))
        graph.invoke({"messages": [("user", "hello")]}, thread)
        assert len(graph.get_state(thread).values["messages"]) == 2
        assert GraphCheckpoint.objects.count() == 0  # outside the saver: nothing visible
    assert GraphCheckpoint.objects.filter(tenant=alice.tenant).exists()


def test_unchanged_channels_are_not_stored_again(alice: Persona) -> None:
    saver = PlatformCheckpointSaver(tenant=alice.tenant)
    graph = _graph(saver)
    thread = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:6]}"}}
    for index in range(5):
        graph.invoke({"messages": [("user", f"message {index}")]}, thread)
    checkpoints = GraphCheckpoint.objects.filter(tenant=alice.tenant).count()
    blobs = GraphBlob.objects.filter(tenant=alice.tenant).count()
    assert blobs < checkpoints * 3  # one blob per changed channel, not every channel each time
    saver.prune([thread["configurable"]["thread_id"]])
    assert GraphCheckpoint.objects.filter(tenant=alice.tenant).count() == 1
    assert _graph(saver).get_state(thread).values["messages"][-1].content == "echo: message 4"


def test_async_methods_are_tenant_scoped_too(alice: Persona, bob: Persona) -> None:
    import asyncio

    async def run() -> tuple[Any, Any]:
        graph = _graph(PlatformCheckpointSaver(tenant=alice.tenant))
        thread = {"configurable": {"thread_id": "async-1"}}
        await graph.ainvoke({"messages": [("user", "hi")]}, thread)
        mine = await PlatformCheckpointSaver(tenant=alice.tenant).aget_tuple(thread)
        theirs = await PlatformCheckpointSaver(tenant=bob.tenant).aget_tuple(thread)
        return mine, theirs

    mine, theirs = asyncio.run(run())
    assert mine is not None and theirs is None
    assert Tenant.objects.count() == 2
