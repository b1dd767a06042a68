from __future__ import annotations

import threading

import pytest
from django.db import connection

from agentplatform.core import rls
from agents.models import Message, Session
from agents.services import NewMessage, messages_append
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def test_open_and_read_a_session(alice: Persona) -> None:
    client = alice.client()
    created = client.post(
        "/api/v1/sessions/",
        {"agent": str(alice.agent.pk), "user_id": "end-user-7", "metadata": {"plan": "pro"}},
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["agent"] == str(alice.agent.pk)
    assert body["status"] == "active"
    fetched = client.get(f"/api/v1/sessions/{body['id']}/").json()
    assert fetched["metadata"] == {"plan": "pro"}


def test_opening_a_session_with_another_tenants_agent_is_404(alice: Persona, bob: Persona) -> None:
    response = bob.client().post(
        "/api/v1/sessions/", {"agent": str(alice.agent.pk), "user_id": "u"}, format="json"
    )
    assert response.status_code == 404
    assert not Session.objects.filter(tenant=bob.tenant, user_id="u").exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"user_id": "u"},
        {"agent": "not-a-uuid", "user_id": "u"},
        {"agent": None, "user_id": "u"},
        {"agent": "{agent}", "user_id": ""},
        {"agent": "{agent}", "user_id": "x" * 300},
        {"agent": "{agent}", "user_id": "u", "metadata": [1, 2]},
        {"agent": "{agent}", "user_id": "u", "metadata": {"k": "v" * 20000}},
        {"agent": "{agent}", "user_id": "u", "status": "closed"},
    ],
)
def test_invalid_session_input_is_422(alice: Persona, payload: dict) -> None:
    payload = {
        key: (str(alice.agent.pk) if value == "{agent}" else value)
        for key, value in payload.items()
    }
    before = Session.objects.count()
    response = alice.client().post("/api/v1/sessions/", payload, format="json")
    assert response.status_code == 422, response.json()
    assert Session.objects.count() == before


def test_session_list_filters_and_never_shows_foreign_rows(alice: Persona, bob: Persona) -> None:
    client = alice.client()
    client.post("/api/v1/sessions/", {"agent": str(alice.agent.pk), "user_id": "u2"}, format="json")
    all_ids = {s["id"] for s in client.get("/api/v1/sessions/").json()["results"]}
    assert str(bob.session.pk) not in all_ids
    assert len(all_ids) == 2
    only_u2 = client.get("/api/v1/sessions/?user_id=u2").json()["results"]
    assert [s["user_id"] for s in only_u2] == ["u2"]
    by_agent = client.get(f"/api/v1/sessions/?agent={alice.agent.pk}").json()["results"]
    assert len(by_agent) == 2
    foreign_agent = client.get(f"/api/v1/sessions/?agent={bob.agent.pk}").json()["results"]
    assert foreign_agent == []
    assert client.get("/api/v1/sessions/?agent=zzz").status_code == 422


@pytest.mark.parametrize(
    "query",
    ["agent=zzz", "status=bogus", "user_id=" + "u" * 256, "page_size=0", "page_size=abc",
     "page_size=201", "page_size=-1"],
)  # fmt: skip
def test_a_malformed_list_filter_is_422_not_ignored(alice: Persona, query: str) -> None:
    response = alice.client().get(f"/api/v1/sessions/?{query}")
    assert response.status_code == 422, response.json()
    name = query.partition("=")[0]
    assert [error["pointer"] for error in response.json()["errors"]] == [f"#/{name}"]


def test_page_size_takes_one_to_two_hundred(alice: Persona) -> None:
    client = alice.client()
    client.post("/api/v1/sessions/", {"agent": str(alice.agent.pk), "user_id": "u2"}, format="json")
    assert len(client.get("/api/v1/sessions/?page_size=1").json()["results"]) == 1
    assert len(client.get("/api/v1/sessions/?page_size=200").json()["results"]) == 2
    # Unknown parameters are ignored, as HTTP APIs do (a client's cache-buster).
    assert client.get("/api/v1/sessions/?_=123").status_code == 200


@pytest.mark.parametrize(("method", "suffix"), [("get", ""), ("delete", ""), ("get", "messages/")])
def test_another_tenants_session_is_404(
    alice: Persona, bob: Persona, method: str, suffix: str
) -> None:
    response = getattr(bob.client(), method)(f"/api/v1/sessions/{alice.session.pk}/{suffix}")
    assert response.status_code == 404
    assert Session.objects.filter(pk=alice.session.pk).exists()


def test_deleting_a_session_removes_its_messages(alice: Persona) -> None:
    messages_append(session=alice.session, messages=[NewMessage("user", "hi")])
    assert alice.client().delete(f"/api/v1/sessions/{alice.session.pk}/").status_code == 204
    assert not Message.objects.filter(session_id=alice.session.pk).exists()


def test_message_list_is_ordered_by_seq(alice: Persona) -> None:
    messages_append(
        session=alice.session,
        messages=[NewMessage("user", "one"), NewMessage("assistant", "two")],
    )
    body = alice.client().get(f"/api/v1/sessions/{alice.session.pk}/messages/").json()
    assert [(m["seq"], m["content"]) for m in body["results"]] == [(1, "one"), (2, "two")]


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_get_gapless_unique_seqs(alice: Persona) -> None:
    def append(worker: int) -> None:
        # A new thread starts with no tenant scope: it takes the tenant's, as a request would.
        with rls.tenant_scope(alice.tenant.id):
            for index in range(10):
                messages_append(
                    session=alice.session,
                    messages=[
                        NewMessage("user", f"{worker}-{index}"),
                        NewMessage("assistant", "ok"),
                    ],
                )
        connection.close()

    threads = [threading.Thread(target=append, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seqs = list(Message.objects.filter(session=alice.session).values_list("seq", flat=True))
    assert sorted(seqs) == list(range(1, 121))
