"""Two uvicorn processes on the Redis Cluster: a socket on one server hears a turn run on
the other (the channel layer across instances), any server serves any turn, and a reply cut
by a SIGKILL resumes on the other server. The last two are tests/e2e's, unchanged."""

from __future__ import annotations

import asyncio
import json

import pytest
import requests
from websockets.asyncio.client import connect

from agentplatform.devtools.testing import Server
from tests.conftest import Persona
from tests.e2e.conftest import servers
from tests.e2e.test_two_servers import test_turns_alternate_between_servers_and_survive_a_sigkill
from tests.e2e.test_ws_failover import test_sigkill_mid_stream_then_resume_on_another_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

__all__ = [
    "servers",
    "test_sigkill_mid_stream_then_resume_on_another_server",
    "test_turns_alternate_between_servers_and_survive_a_sigkill",
]


async def test_a_socket_on_one_server_hears_a_turn_on_the_other(
    alice: Persona, servers: tuple[Server, Server]
) -> None:
    first, second = servers
    headers = {"Authorization": f"Bearer {alice.api_key}"}
    url = first.url.replace("http://", "ws://") + f"/ws/sessions/{alice.session.pk}/"
    async with connect(url, additional_headers=headers) as socket:
        response = await asyncio.to_thread(
            requests.post,
            f"{second.url}/api/v1/sessions/{alice.session.pk}/messages/",
            json={"content": "from the other server"},
            headers=headers,
            timeout=60,
        )
        assert response.status_code == 201, response.text
        seen: list[dict] = []
        while not seen or seen[-1]["type"] != "checkpoint":
            seen.append(json.loads(await asyncio.wait_for(socket.recv(), timeout=30)))
    types = [frame["type"] for frame in seen]
    assert "accepted" in types and "token" in types and "message" in types
    seqs = [frame["seq"] for frame in seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # none missed, none doubled
