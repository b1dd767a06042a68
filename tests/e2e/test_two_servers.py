"""Two uvicorn processes share PostgreSQL and Redis: any instance serves any turn, and a
server killed mid-turn loses nothing once the client retries on the other."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import requests

from agentplatform.devtools.testing import Server
from agents.models import Message
from tests.conftest import Persona

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _turn(server: Server, persona: Persona, content: str, key: str) -> requests.Response:
    return requests.post(
        f"{server.url}/api/v1/sessions/{persona.session.pk}/messages/",
        json={"content": content},
        headers={"Authorization": f"Bearer {persona.api_key}", "Idempotency-Key": key},
        timeout=60,
    )


def test_turns_alternate_between_servers_and_survive_a_sigkill(
    alice: Persona, servers: tuple[Server, Server]
) -> None:
    first, second = servers
    for index in range(4):
        server = (first, second)[index % 2]
        assert _turn(server, alice, f"turn {index}", f"k{index}").status_code == 201

    # A turn starts on the first server, which is killed while the reply streams.
    outcome: list[object] = []
    request = threading.Thread(
        target=lambda: outcome.append(_safe_turn(first, alice, "the crash turn", "k-crash"))
    )
    request.start()
    time.sleep(0.8)
    first.kill()
    request.join()
    assert isinstance(outcome[0], Exception), "the first server answered before it was killed"

    # The client retries with the same key on the other server until it is answered.
    deadline = time.monotonic() + 45
    while True:
        response = _turn(second, alice, "the crash turn", "k-crash")
        if response.status_code != 409 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert response.status_code == 201, response.text
    replay = _turn(second, alice, "the crash turn", "k-crash")
    assert replay.json() == response.json()

    messages = list(Message.objects.filter(session=alice.session).order_by("seq"))
    assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
    users = Counter(m.content for m in messages if m.role == "user")
    assert users == Counter([f"turn {i}" for i in range(4)] + ["the crash turn"])
    assert all(m.status == "active" for m in messages)


def _safe_turn(server: Server, persona: Persona, content: str, key: str) -> object:
    try:
        return _turn(server, persona, content, key)
    except requests.RequestException as error:
        return error
