from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from agentplatform.core.audit import SYSTEM
from memory.embeddings import get_embedder
from memory.extraction import extract_facts
from memory.models import Memory
from memory.semantic import Source, memory_search, memory_upsert
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def _create(persona: Persona, user_id: str, text: str):
    return persona.client().post(
        "/api/v1/memories/", {"user_id": user_id, "text": text}, format="json"
    )


def test_create_list_read_delete_a_memory(alice: Persona) -> None:
    created = _create(alice, "u1", "The user's name is Ada.")
    assert created.status_code == 201
    body = created.json()
    assert body["sources"][0]["kind"] == "api"
    assert body["embedding_model"] == get_embedder().name  # the bundled model, at its precision
    listed = alice.client().get("/api/v1/memories/?user_id=u1").json()["results"]
    assert [m["id"] for m in listed] == [body["id"]]
    assert alice.client().get(f"/api/v1/memories/{body['id']}/").status_code == 200
    assert alice.client().delete(f"/api/v1/memories/{body['id']}/").status_code == 204
    assert not Memory.objects.filter(pk=body["id"]).exists()


def test_the_same_fact_stated_five_ways_is_one_memory_with_five_sources(alice: Persona) -> None:
    statements = [
        "My favourite colour is green.",
        "Remember that my favourite colour is green!",
        "By the way, my favourite colour is green",
        "just so you know: my favourite colour is green.",
        "Please remember my favourite colour is green",
    ]
    for message_id, statement in enumerate(statements, start=1):
        for fact in extract_facts(statement):
            memory_upsert(
                actor=SYSTEM,
                tenant=alice.tenant,
                user_id="u1",
                text=fact,
                source=Source("message", message_id=message_id, session_id="s"),
            )
    memories = list(Memory.objects.filter(tenant=alice.tenant, user_id="u1"))
    assert len(memories) == 1
    assert len(memories[0].sources) == 5


def test_different_facts_about_the_same_thing_stay_apart(alice: Persona) -> None:
    for text in [
        "The user's name is Ada.",
        "The user's name is Bob.",
        "The user's order is 4411.",
        "The user's order is 5522.",
    ]:
        memory_upsert(
            actor=SYSTEM, tenant=alice.tenant, user_id="u1", text=text, source=Source("api")
        )
    assert Memory.objects.filter(tenant=alice.tenant, user_id="u1").count() == 4


def test_search_ranks_by_similarity_and_scores(alice: Persona) -> None:
    for text in ["The user's name is Ada.", "The user lives in Lisbon.", "The user loves hiking."]:
        _create(alice, "u1", text)
    response = alice.client().post(
        "/api/v1/memories/search/",
        {"user_id": "u1", "query": "Where do I live?", "k": 2},
        format="json",
    )
    assert response.status_code == 200
    hits = response.json()
    assert len(hits) == 2
    assert hits[0]["text"] == "The user lives in Lisbon."
    assert hits[0]["score"] >= hits[1]["score"]


def test_search_never_returns_another_tenants_or_users_rows(alice: Persona, bob: Persona) -> None:
    _create(alice, "u1", "The user's name is Ada.")
    _create(alice, "u2", "The user's name is Ada.")
    _create(bob, "u1", "The user's name is Ada.")
    hits = memory_search(tenant=alice.tenant, user_id="u1", query="name Ada", k=10)
    assert len(hits) == 1
    assert hits[0].memory.tenant_id == alice.tenant.pk and hits[0].memory.user_id == "u1"
    foreign = (
        bob.client()
        .post("/api/v1/memories/search/", {"user_id": "u2", "query": "Ada"}, format="json")
        .json()
    )
    assert foreign == []


def test_another_tenants_memory_is_404(alice: Persona, bob: Persona) -> None:
    memory_id = _create(alice, "u1", "The user's name is Ada.").json()["id"]
    for method in ("get", "delete"):
        assert getattr(bob.client(), method)(f"/api/v1/memories/{memory_id}/").status_code == 404
    listed = bob.client().get("/api/v1/memories/").json()["results"]
    assert listed == []
    assert Memory.objects.filter(pk=memory_id).exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"user_id": "u", "text": ""},
        {"text": "x"},
        {"user_id": "u", "text": 5},
        {"user_id": "u", "text": "x", "agent": "nope"},
        {"user_id": "u", "text": "x", "extra": 1},
    ],
)
def test_bad_memory_input_is_422(alice: Persona, payload: dict) -> None:
    assert alice.client().post("/api/v1/memories/", payload, format="json").status_code == 422


def test_a_memory_for_another_tenants_agent_is_404(alice: Persona, bob: Persona) -> None:
    response = bob.client().post(
        "/api/v1/memories/",
        {"user_id": "u", "text": "x", "agent": str(alice.agent.pk)},
        format="json",
    )
    assert response.status_code == 404


def test_filtered_search_returns_k_rows_whenever_k_exist_across_many_tenants(db: None) -> None:
    from agentplatform.core.services import tenant_create

    tenants = [tenant_create(actor=SYSTEM, slug=f"t{i:02d}")[0] for i in range(50)]
    for tenant in tenants:
        for index in range(6):
            memory_upsert(
                actor=SYSTEM,
                tenant=tenant,
                user_id="same-user",
                text=f"The user's order {index} is 44{index}.",
                source=Source("api"),
            )
    for tenant in tenants[::7]:
        hits = memory_search(tenant=tenant, user_id="same-user", query="order number", k=5)
        assert len(hits) == 5
        assert {h.memory.tenant_id for h in hits} == {tenant.pk}


def test_reembed_updates_vectors_made_by_another_model(alice: Persona) -> None:
    from io import StringIO

    import numpy as np
    from django.core.management import call_command

    memory, _ = memory_upsert(
        actor=SYSTEM,
        tenant=alice.tenant,
        user_id="u1",
        text="The user's name is Ada.",
        source=Source("api"),
    )
    Memory.objects.filter(pk=memory.pk).update(
        embedding=np.ones(384, dtype=np.float32) / np.sqrt(384), embedding_model="old-model"
    )
    out, err = StringIO(), StringIO()
    call_command("reembed", "alice", stdout=out, stderr=err)
    memory.refresh_from_db()
    assert memory.embedding_model == get_embedder().name
    assert "100.0%" in err.getvalue() and "Re-embedded 1" in out.getvalue()
    hits = memory_search(tenant=alice.tenant, user_id="u1", query="my name is Ada", k=1)
    assert hits[0].score > 0.6  # a real embedding again, not the constant vector


def test_a_large_partition_is_searched_through_hnsw_in_the_tenants_scope(
    alice: Persona, bob: Persona
) -> None:
    """Above EXACT_SCAN_LIMIT the search takes the HNSW path (iterative scan, its own
    transaction settings), through the API: under row-level security, as the app's role."""
    for persona in (alice, bob):
        for index in range(6):
            memory_upsert(
                actor=SYSTEM,
                tenant=persona.tenant,
                user_id="big",
                text=f"The user's order {index} is 44{index}.",
                source=Source("api"),
            )
    with override_settings(MEMORY={**getattr(settings, "MEMORY", {}), "EXACT_SCAN_LIMIT": 3}):
        response = alice.client().post(
            "/api/v1/memories/search/", {"user_id": "big", "query": "order", "k": 5}, format="json"
        )
    assert response.status_code == 200, response.content
    hits = response.json()
    mine = Memory.objects.filter(tenant=alice.tenant).values_list("pk", flat=True)
    own = {str(pk) for pk in mine}
    assert len(hits) == 5 and {hit["id"] for hit in hits} <= own
