"""A reply streams from one server; that server is SIGKILLed mid-stream; the client
reconnects to another server and resumes: nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agentplatform.devtools.testing import Server
from agents.models import Message
from tests.conftest import Persona
from tests.e2e.conftest import SLOW_REPLY

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _ws_url(server: Server, persona: Persona) -> str:
    return server.url.replace("http://", "ws://") + f"/ws/sessions/{persona.session.pk}/"


class Transcript:
    """What the client saw: session frames deduplicated by seq, in order."""

    def __init__(self) -> None:
        self.frames: list[dict] = []

    @property
    def last_seq(self) -> int:
        return self.frames[-1]["seq"] if self.frames else 0

    def add(self, frame: dict) -> None:
        if frame["type"] in {"pong"} or frame["seq"] <= self.last_seq:
            return
        self.frames.append(frame)


async def _receive(socket: ClientConnection, transcript: Transcript, until: str) -> dict:
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), timeout=30))
        transcript.add(frame)
        if frame["type"] == until:
            return frame


async def test_sigkill_mid_stream_then_resume_on_another_server(
    alice: Persona, servers: tuple[Server, Server]
) -> None:
    first, second = servers
    headers = {"Authorization": f"Bearer {alice.api_key}"}
    transcript = Transcript()
    message = {"type": "message", "content": "tell me a long story", "client_message_id": "m1"}

    async with connect(_ws_url(first, alice), additional_headers=headers) as socket:
        await socket.send(json.dumps(message))
        tokens = 0
        while tokens < 5:
            frame = json.loads(await asyncio.wait_for(socket.recv(), timeout=30))
            transcript.add(frame)
            tokens += frame["type"] == "token"
        await asyncio.to_thread(first.kill)
        with pytest.raises(ConnectionClosed):
            while True:
                transcript.add(json.loads(await asyncio.wait_for(socket.recv(), timeout=30)))

    async with connect(_ws_url(second, alice), additional_headers=headers) as socket:
        await socket.send(json.dumps({"type": "resume", "after_seq": transcript.last_seq}))
        # The killed turn never committed: resend the same message until it runs once.
        for _ in range(60):
            await socket.send(json.dumps(message))
            frame = await _receive_one_of(socket, transcript, {"accepted", "error"})
            if frame["type"] == "accepted":
                break
            assert frame["code"] == "in_progress", frame
            await asyncio.sleep(0.25)
        await _receive(socket, transcript, until="checkpoint")

    seqs = [f["seq"] for f in transcript.frames]
    assert seqs == sorted(set(seqs)), "a frame was doubled or reordered"
    stored = await database_sync_to_async(
        lambda: list(
            Message.objects.filter(session=alice.session)
            .order_by("seq")
            .values_list("seq", "role", "content")
        )
    )()
    seen = [
        (f["message"]["seq"], f["message"]["role"], f["message"]["content"])
        for f in transcript.frames
        if f["type"] == "message"
    ]
    assert seen == stored
    assert stored == [(1, "user", "tell me a long story"), (2, "assistant", SLOW_REPLY)]


async def _receive_one_of(
    socket: ClientConnection, transcript: Transcript, types: set[str]
) -> dict:
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), timeout=30))
        transcript.add(frame)
        if frame["type"] in types:
            return frame


async def test_frames_go_uncompressed_though_the_client_offers_deflate(
    alice: Persona, servers: tuple[Server, Server]
) -> None:
    # The client offers permessage-deflate (websockets does by default); the server, started
    # as `make run` starts it, declines: deflating each small frame cost more than it saved.
    headers = {"Authorization": f"Bearer {alice.api_key}"}
    async with connect(_ws_url(servers[0], alice), additional_headers=headers) as socket:
        assert socket.request is not None and socket.response is not None
        assert "permessage-deflate" in socket.request.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in socket.response.headers
