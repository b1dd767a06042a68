from __future__ import annotations

import json
import time
from typing import Any
from unittest import mock

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import override_settings

from agentplatform.project.asgi import application
from agents.client_tokens import client_token_mint
from agents.llm.scripted import ScriptedBackend, Step
from agents.models import Agent, Message
from tests.conftest import Persona

pytestmark = pytest.mark.django_db(transaction=True)


def _socket(persona: Persona, session_id: Any = None, **kwargs: Any) -> WebsocketCommunicator:
    session_id = session_id or persona.session.pk
    headers = kwargs.pop("headers", [(b"authorization", f"Bearer {persona.api_key}".encode())])
    path = kwargs.pop("path", f"/ws/sessions/{session_id}/")
    return WebsocketCommunicator(application, path, headers=headers)


async def _open(communicator: WebsocketCommunicator) -> None:
    connected, _ = await communicator.connect()
    assert connected


async def _close_code(communicator: WebsocketCommunicator) -> int:
    await communicator.connect()
    output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close"
    return int(output["code"])


async def _frames_until(
    communicator: WebsocketCommunicator, last_type: str, count: int = 1
) -> list[dict]:
    frames: list[dict] = []
    seen = 0
    while seen < count:
        frame = await communicator.receive_json_from(timeout=10)
        frames.append(frame)
        if frame["type"] == last_type:
            seen += 1
    return frames


async def test_a_message_streams_tokens_then_the_stored_messages(
    alice: Persona, llm: ScriptedBackend
) -> None:
    llm.script(Step(reply="Hello from the agent"))
    ws = _socket(alice)
    await _open(ws)
    await ws.send_json_to({"type": "message", "content": "hi", "client_message_id": "c-1"})
    frames = await _frames_until(ws, "run")
    types = [f["type"] for f in frames]
    assert types[0] == "accepted" and types[-4:] == ["message", "message", "checkpoint", "run"]
    assert "".join(f["delta"] for f in frames if f["type"] == "token") == "Hello from the agent"
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert all(f["client_message_id"] == "c-1" for f in frames)
    stored = await database_sync_to_async(
        lambda: list(Message.objects.filter(session=alice.session).values_list("content", "seq"))
    )()
    assert (
        [(f["message"]["content"], f["message"]["seq"]) for f in frames if f["type"] == "message"]
        == [("hi", 1), ("Hello from the agent", 2)]
        == sorted(stored, key=lambda row: row[1])
    )
    await ws.disconnect()


async def test_a_client_token_opens_its_session_only(alice: Persona) -> None:
    token = (await database_sync_to_async(client_token_mint)(session=alice.session)).token
    ws = _socket(alice, headers=[], path=f"/ws/sessions/{alice.session.pk}/?token={token}")
    await _open(ws)
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "pong"
    await ws.disconnect()
    other = await database_sync_to_async(
        lambda: alice.session.__class__.objects.create(
            tenant=alice.tenant, agent=alice.agent, user_id="other"
        )
    )()
    wrong = _socket(alice, headers=[], path=f"/ws/sessions/{other.pk}/?token={token}")
    assert await _close_code(wrong) == 4404


@pytest.mark.parametrize(
    "credentials",
    [
        {"headers": []},
        {"headers": [(b"authorization", b"Bearer ap_nope_nope")]},
        {"headers": [], "query": "?token=forged.token.value"},
    ],
)
async def test_bad_credentials_close_with_4401(alice: Persona, credentials: dict) -> None:
    path = f"/ws/sessions/{alice.session.pk}/" + credentials.get("query", "")
    ws = _socket(alice, headers=credentials["headers"], path=path)
    assert await _close_code(ws) == 4401


async def test_an_expired_client_token_closes_with_4401(alice: Persona) -> None:
    an_hour_ago = time.time() - 3600
    with mock.patch("django.core.signing.time.time", return_value=an_hour_ago):
        token = (await database_sync_to_async(client_token_mint)(session=alice.session)).token
    ws = _socket(alice, headers=[], path=f"/ws/sessions/{alice.session.pk}/?token={token}")
    assert await _close_code(ws) == 4401


async def test_another_tenants_session_closes_with_4404(alice: Persona, bob: Persona) -> None:
    assert await _close_code(_socket(bob, session_id=alice.session.pk)) == 4404
    assert await _close_code(_socket(bob, session_id="not-a-uuid")) == 4404
    missing = "00000000-0000-0000-0000-000000000000"
    assert await _close_code(_socket(bob, session_id=missing)) == 4404


async def test_a_foreign_origin_closes_with_4403(alice: Persona) -> None:
    headers = [
        (b"authorization", f"Bearer {alice.api_key}".encode()),
        (b"origin", b"https://evil.example"),
    ]
    assert await _close_code(_socket(alice, headers=headers)) == 4403
    allowed = [
        (b"authorization", f"Bearer {alice.api_key}".encode()),
        (b"origin", b"http://localhost:8000"),
    ]
    ws = _socket(alice, headers=allowed)
    await _open(ws)
    await ws.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_frame"),
        ("[1, 2]", "bad_frame"),
        (json.dumps({"type": "dance"}), "unknown_type"),
        (json.dumps({"type": "message", "content": ""}), "bad_message"),
        (json.dumps({"type": "message", "content": 5}), "bad_message"),
        (json.dumps({"type": "message", "content": "x", "client_message_id": 5}), "bad_message"),
        (json.dumps({"type": "resume", "after_seq": "x"}), "bad_frame"),
        (json.dumps({"type": "message", "content": "x" * 70_000}), "frame_too_large"),
    ],
)
async def test_a_bad_frame_gets_an_error_and_the_socket_stays_open(
    alice: Persona, frame: str, code: str
) -> None:
    ws = _socket(alice)
    await _open(ws)
    await ws.send_to(text_data=frame)
    error = await ws.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", code)
    assert "seq" in error
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "pong"
    count = await database_sync_to_async(Message.objects.count)()
    assert count == 0
    await ws.disconnect()


async def test_two_sockets_and_a_rest_call_see_the_same_conversation(
    alice: Persona, llm: ScriptedBackend
) -> None:
    first, second = _socket(alice), _socket(alice)
    await _open(first)
    await _open(second)
    await first.send_json_to({"type": "message", "content": "from tab one"})
    seen_one = await _frames_until(first, "run")
    seen_two = await _frames_until(second, "run")
    assert seen_one == seen_two
    await database_sync_to_async(
        lambda: alice.client().post(
            f"/api/v1/sessions/{alice.session.pk}/messages/", {"content": "via REST"}, format="json"
        )
    )()
    rest_frames = await _frames_until(second, "run")
    messages = [f["message"]["content"] for f in rest_frames if f["type"] == "message"]
    assert messages[0] == "via REST"
    await first.disconnect()
    await second.disconnect()


async def test_resume_replays_exactly_the_missed_frames(alice: Persona) -> None:
    ws = _socket(alice)
    await _open(ws)
    await ws.send_json_to({"type": "message", "content": "one"})
    first_turn = await _frames_until(ws, "run")
    await ws.disconnect()
    # While disconnected, another turn happens.
    await database_sync_to_async(
        lambda: alice.client().post(
            f"/api/v1/sessions/{alice.session.pk}/messages/", {"content": "two"}, format="json"
        )
    )()
    again = _socket(alice)
    await _open(again)
    await again.send_json_to({"type": "resume", "after_seq": first_turn[-1]["seq"]})
    missed = await _frames_until(again, "run")
    assert missed[0]["seq"] == first_turn[-1]["seq"] + 1
    assert [f["seq"] for f in missed] == list(range(missed[0]["seq"], missed[-1]["seq"] + 1))
    assert next(f["message"]["content"] for f in missed if f["type"] == "message") == "two"
    await again.send_json_to({"type": "ping"})
    pong = await again.receive_json_from(timeout=5)
    assert pong == {"type": "pong", "seq": missed[-1]["seq"]}
    await again.disconnect()


async def test_enqueue_reports_the_queue_position(alice: Persona, llm: ScriptedBackend) -> None:
    llm.script(Step(reply="slow " * 20, delay=0.05), Step(reply="second"))
    ws = _socket(alice)
    await _open(ws)
    await ws.send_json_to({"type": "message", "content": "first", "client_message_id": "a"})
    await _frames_until(ws, "token")  # the first turn streams: it holds the session
    await ws.send_json_to({"type": "message", "content": "second", "client_message_id": "b"})
    frames = await _frames_until(ws, "run", count=2)
    queued = [f for f in frames if f["type"] == "queued"]
    assert queued and queued[0]["client_message_id"] == "b" and queued[0]["position"] == 1


async def test_reject_policy_answers_an_error_frame(alice: Persona, llm: ScriptedBackend) -> None:
    await database_sync_to_async(
        lambda: Agent.objects.filter(pk=alice.agent.pk).update(double_text_policy="reject")
    )()
    llm.script(Step(reply="slow " * 20, delay=0.05))
    ws = _socket(alice)
    await _open(ws)
    await ws.send_json_to({"type": "message", "content": "first"})
    await _frames_until(ws, "token")  # the first turn streams: it holds the session
    await ws.send_json_to({"type": "message", "content": "second", "client_message_id": "b"})
    frames = await _frames_until(ws, "run")
    errors = [f for f in frames if f["type"] == "error"]
    assert errors and errors[0]["code"] == "session_busy"
    assert errors[0]["client_message_id"] == "b"


@override_settings(AGENTS={**settings.AGENTS, "WS_RATE_MESSAGES": 2})
async def test_messages_over_the_rate_limit_get_an_error(alice: Persona) -> None:
    ws = _socket(alice)
    await _open(ws)
    for index in range(3):
        await ws.send_json_to({"type": "message", "content": f"m{index}"})
    frames = await _frames_until(ws, "run", count=2)
    codes = [f.get("code") for f in frames if f["type"] == "error"]
    assert "rate_limited" in codes


async def test_a_resent_client_message_id_never_runs_twice(
    alice: Persona, llm: ScriptedBackend
) -> None:
    ws = _socket(alice)
    await _open(ws)
    await ws.send_json_to({"type": "message", "content": "once", "client_message_id": "m-1"})
    await _frames_until(ws, "run")
    await ws.send_json_to({"type": "message", "content": "once", "client_message_id": "m-1"})
    duplicate = await ws.receive_json_from(timeout=5)
    assert (duplicate["type"], duplicate["code"]) == ("error", "duplicate")
    await ws.send_json_to({"type": "message", "content": "other", "client_message_id": "m-1"})
    reused = await ws.receive_json_from(timeout=5)
    assert reused["code"] == "client_message_id_reused"
    assert len(llm.calls) == 1
    count = await database_sync_to_async(Message.objects.count)()
    assert count == 2
    await ws.disconnect()


async def test_the_run_frame_comes_once_its_client_message_id_is_recorded(
    alice: Persona, llm: ScriptedBackend
) -> None:
    # The turn publishes `run` before it records its key as done; a slow record must not let
    # a client that resends on seeing `run` be told `in_progress` (the key is done by then).
    from agents import entry

    complete = entry.idempotency.idempotency_complete

    def slow_complete(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)
        return complete(*args, **kwargs)

    ws = _socket(alice)
    await _open(ws)
    with mock.patch.object(entry.idempotency, "idempotency_complete", slow_complete):
        await ws.send_json_to({"type": "message", "content": "once", "client_message_id": "m-2"})
        await _frames_until(ws, "run")
    await ws.send_json_to({"type": "message", "content": "once", "client_message_id": "m-2"})
    duplicate = await ws.receive_json_from(timeout=5)
    assert (duplicate["type"], duplicate["code"]) == ("error", "duplicate")
    await ws.disconnect()


async def test_a_frame_reaches_its_handler_without_a_thread_hop_first(
    alice: Persona, llm: ScriptedBackend
) -> None:
    # Channels closes stale database connections before every handler, in a thread; the
    # consumer's handlers use no connection on the loop, so a frame must not pay that hop.
    llm.script(Step(reply="Quick"))
    ws = _socket(alice)
    await _open(ws)
    with mock.patch("channels.consumer.aclose_old_connections") as hop:
        await ws.send_json_to({"type": "ping"})
        assert (await ws.receive_json_from(timeout=5))["type"] == "pong"
        await ws.send_json_to({"type": "message", "content": "hi", "client_message_id": "h-1"})
        frames = await _frames_until(ws, "run")
    assert hop.call_count == 0
    assert frames[-1]["status"] == "completed"
    await ws.disconnect()


async def test_the_end_user_decides_a_call_over_the_socket(
    alice: Persona, llm: ScriptedBackend
) -> None:
    from agents.llm.base import ToolCall
    from agents.models import Run
    from tests.agents import tools

    call = ToolCall(id="x1", name="close_account", arguments={})
    llm.script(Step(reply="", tool_calls=[call]), Step(reply="Your account is closed."))
    await database_sync_to_async(tools.calls_clear)()
    with override_settings(AGENTS={**settings.AGENTS, "TOOLS": tools.PATHS}):
        await database_sync_to_async(
            lambda: Agent.objects.filter(pk=alice.agent.pk).update(tools=["close_account"])
        )()
        token = await database_sync_to_async(lambda: client_token_mint(session=alice.session))()
        ws = _socket(
            alice, headers=[], path=f"/ws/sessions/{alice.session.pk}/?token={token.token}"
        )
        await _open(ws)
        await ws.send_json_to({"type": "message", "content": "close my account"})
        frames = await _frames_until(ws, "run")
        waiting = frames[-1]
        assert waiting["status"] == "requires_action"
        assert waiting["required_action"]["tool_calls"][0]["approval"] == "end_user"
        await ws.send_json_to({"type": "action", "run": waiting["run"], "tool_call_id": "x1"})
        bad = await ws.receive_json_from(timeout=5)
        assert (bad["type"], bad["code"]) == ("error", "bad_frame")
        await ws.send_json_to(
            {"type": "action", "run": "nope", "tool_call_id": "x1", "approve": True}
        )
        missing = await ws.receive_json_from(timeout=5)
        assert missing["code"] == "not_found"
        decision = {"type": "action", "run": waiting["run"], "tool_call_id": "x1", "approve": True}
        await ws.send_json_to(decision)  # eager worker: the run resumes at once
        rest = await _frames_until(ws, "run")
        assert rest[-1]["status"] == "completed"
        replies = [f["message"]["content"] for f in rest if f["type"] == "message"]
        assert replies[-1] == "Your account is closed."
        await ws.send_json_to(decision)
        late = await ws.receive_json_from(timeout=5)
        assert late["code"] == "run_not_waiting"
        await ws.disconnect()
    run = await database_sync_to_async(lambda: Run.objects.get(pk=waiting["run"]))()
    assert run.action_results["x1"]["by"] == "end_user"
    assert [name for name, _, _ in tools.CALLS] == ["close_account"]
