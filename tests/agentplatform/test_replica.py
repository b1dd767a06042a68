"""Reads that tolerate lag go to a real streaming replica; reads after writes do not.

The replica is a hot standby of the test cluster, made with `pg_basebackup -R` from the
embedded binaries after pytest-django created and migrated the test database, listening on
a loopback port. Its replay is paused to make lag as large as a test needs, so "it is not
there yet" is a state, not a race. The tests are transactional: a `db` test's rows live in
a transaction the replica never sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.db import connections, router, transaction
from django.test import Client

from agentplatform.core import rls
from agentplatform.core.audit import SYSTEM
from agentplatform.core.dbrouter import REPLICA, read_alias, reads_from_primary, reads_may_lag
from agentplatform.devtools.replica import StreamingReplica
from agentplatform.devtools.testing import wait_until
from agentplatform.http.lag import PRIMARY_AFTER_WRITE_COOKIE
from agentplatform.project.databases import replica_database
from agents.engine.turn import turn_run
from agents.models import Agent, Session
from agents.services import session_open
from memory.accounting import storage_usage
from memory.models import Summary
from tests.conftest import Persona

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", REPLICA])


@pytest.fixture(scope="module")
def replica(django_db_setup: None, django_db_blocker: Any) -> Iterator[StreamingReplica]:
    """A hot standby of the migrated test cluster, added as the `replica` alias exactly as
    DATABASE_REPLICA_URL would add it (same backend, pool and role). Module-scoped, not
    session-scoped: once this module is done, the alias is gone and the replica stopped, so
    no later test's lists read from a replica that cannot see its uncommitted rows."""
    primary = connections["default"].settings_dict
    standby = StreamingReplica(
        primary_host=primary["HOST"],
        primary_port=int(primary["PORT"] or 5432),
        owner=settings.DATABASE_OWNER["USER"],
    )
    url = f"postgresql://{primary['USER']}@127.0.0.1:{standby.port}/{primary['NAME']}"
    settings.DATABASES[REPLICA] = connections.settings[REPLICA] = replica_database(primary, url)
    try:
        yield standby
    finally:
        with django_db_blocker.unblock():
            connections[REPLICA].close()
            connections[REPLICA].close_pool()  # type: ignore[attr-defined]
        del connections[REPLICA]
        del connections.settings[REPLICA]
        settings.DATABASES.pop(REPLICA, None)
        standby.stop()


def catch_up(standby: StreamingReplica) -> None:
    """Wait until the replica has replayed everything the primary has written so far."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        (lsn,) = cursor.fetchone()
    wait_until(lambda: standby.replayed(lsn), what=f"the replica to replay up to {lsn}")


@contextmanager
def replay_paused(standby: StreamingReplica) -> Iterator[None]:
    """The replica frozen at the primary's present: what is written in the block is on the
    primary only, until the block ends."""
    catch_up(standby)
    standby.pause_replay()
    try:
        yield
    finally:
        standby.resume_replay()
        catch_up(standby)


def in_recovery(alias: str) -> bool:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        (recovering,) = cursor.fetchone()
    return bool(recovering)


def names(response: Any) -> set[str]:
    assert response.status_code == 200, response.content
    return {row["name"] for row in response.json()["results"]}


def test_lag_tolerant_reads_use_the_replica_and_every_other_read_the_primary(
    replica: StreamingReplica,
) -> None:
    assert read_alias() == "default" and not in_recovery(read_alias())
    assert router.db_for_read(Agent) == "default"
    with reads_may_lag():
        assert read_alias() == REPLICA and in_recovery(read_alias())
        assert Agent.objects.all().db == REPLICA
        with reads_from_primary():
            assert Agent.objects.all().db == "default"
        with transaction.atomic():  # a transaction on the primary reads its own writes
            assert Agent.objects.all().db == "default"
    assert router.db_for_write(Agent) == "default"
    assert not router.allow_migrate(REPLICA, "agents")


def test_a_client_reads_its_own_writes_from_the_primary_while_lists_lag(
    replica: StreamingReplica, alice: Persona
) -> None:
    client = alice.client()
    session_url = f"/api/v1/sessions/{alice.session.pk}"
    with replay_paused(replica):
        created = client.post("/api/v1/agents/", {"name": "written while lagging"}, format="json")
        assert created.status_code == 201, created.content
        assert "written while lagging" not in names(client.get("/api/v1/agents/"))
        detail = client.get(f"/api/v1/agents/{created.json()['id']}/")
        assert detail.status_code == 200 and detail.json()["name"] == "written while lagging"

        turn = client.post(
            f"{session_url}/messages/", {"content": "hello while lagging"}, format="json",
            HTTP_IDEMPOTENCY_KEY="lagging-turn-1",
        )  # fmt: skip
        assert turn.status_code == 201, turn.content
        messages = client.get(f"{session_url}/messages/").json()["results"]
        assert [m["content"] for m in messages][-2] == "hello while lagging"
        assert messages[-1]["role"] == "assistant"
        repeat = client.post(
            f"{session_url}/messages/", {"content": "hello while lagging"}, format="json",
            HTTP_IDEMPOTENCY_KEY="lagging-turn-1",
        )  # fmt: skip
        assert repeat.status_code == 201 and repeat.json() == turn.json()
        assert client.get(f"{session_url}/runs/").json()["results"], "the turn's run"
        assert len(client.get(f"{session_url}/checkpoints/").json()["results"]) >= 1

        memory = {"user_id": alice.user_id, "text": "Keeps bees on the roof."}
        assert client.post("/api/v1/memories/", memory, format="json").status_code == 201
        listed = client.get("/api/v1/memories/", {"user_id": alice.user_id}).json()["results"]
        assert "Keeps bees on the roof." not in {m["text"] for m in listed}
        search = {"user_id": alice.user_id, "query": "bees on the roof", "k": 3}
        found = client.post("/api/v1/memories/search/", search, format="json")
        assert found.status_code == 200 and found.json() == []

    assert "written while lagging" in names(client.get("/api/v1/agents/"))
    listed = client.get("/api/v1/memories/", {"user_id": alice.user_id}).json()["results"]
    assert "Keeps bees on the roof." in {m["text"] for m in listed}
    found = client.post("/api/v1/memories/search/", search, format="json").json()
    assert found and found[0]["text"] == "Keeps bees on the roof."


def test_row_level_security_binds_the_application_on_the_replica(
    replica: StreamingReplica, alice: Persona, bob: Persona
) -> None:
    catch_up(replica)
    with reads_may_lag(), rls.tenant_scope(alice.tenant.pk):
        with connections[REPLICA].cursor() as cursor:
            cursor.execute(
                "SELECT current_user, rolsuper OR rolbypassrls, pg_is_in_recovery() "
                "FROM pg_roles WHERE rolname = current_user"
            )
            assert cursor.fetchone() == (settings.DATABASE_APP["USER"], False, True)
        # No tenant filter: the policy alone keeps bob's rows out.
        assert set(Session.objects.values_list("tenant_id", flat=True)) == {alice.tenant.pk}
        assert Agent.objects.all().db == REPLICA
    with reads_may_lag(), rls.tenant_scope():
        assert Session.objects.count() == 0


def test_another_tenants_key_gets_404_on_the_lists_read_from_the_replica(
    replica: StreamingReplica, alice: Persona, bob: Persona
) -> None:
    catch_up(replica)
    foreign = bob.client()
    for path in ("summaries", "schedules"):
        response = foreign.get(f"/api/v1/sessions/{alice.session.pk}/{path}/")
        assert response.status_code == 404, (path, response.content)
        assert alice.client().get(f"/api/v1/sessions/{alice.session.pk}/{path}/").status_code == 200
    search = {"user_id": alice.user_id, "query": "x", "agent": str(alice.agent.pk)}
    assert foreign.post("/api/v1/memories/search/", search, format="json").status_code == 404
    listed = foreign.get("/api/v1/sessions/").json()["results"]
    assert {row["id"] for row in listed} == {str(bob.session.pk)}


def test_console_pages_read_from_the_replica_until_the_operator_writes(
    replica: StreamingReplica, alice: Persona
) -> None:
    browser = Client()
    browser.force_login(alice.operator)
    changelist = "/admin/agents/session/"
    inspector = f"/admin/agents/session/{alice.session.pk}/inspect/"
    with replay_paused(replica):
        session_open(actor=SYSTEM, tenant=alice.tenant, agent=alice.agent, user_id="late-user")
        Summary.objects.create(
            tenant=alice.tenant, session=alice.session, user_id=alice.user_id, kind="compaction",
            first_seq=1, last_seq=2, text="summarised while lagging", method="extractive",
            model="extractive", prompt_version="v1", source_tokens=10, summary_tokens=4,
        )  # fmt: skip
        assert "late-user" not in browser.get(changelist).content.decode()
        assert "summarised while lagging" not in browser.get(inspector).content.decode()

        # Any POST to the console (here an action with nothing selected) makes its next
        # pages read from the primary.
        posted = browser.post(changelist, {"action": "delete_selected"})
        assert posted.status_code in (200, 302)
        assert browser.cookies[PRIMARY_AFTER_WRITE_COOKIE].value == "1"
        assert "late-user" in browser.get(changelist).content.decode()
        assert "summarised while lagging" in browser.get(inspector).content.decode()

    fresh = Client()
    fresh.force_login(alice.operator)
    assert "late-user" in fresh.get(changelist).content.decode()
    assert "summarised while lagging" in fresh.get(inspector).content.decode()


def test_the_lists_of_a_session_just_opened_find_it_on_the_primary(
    replica: StreamingReplica, alice: Persona
) -> None:
    client = alice.client()
    with replay_paused(replica):
        opened = client.post(
            "/api/v1/sessions/", {"agent": str(alice.agent.pk), "user_id": "new"}, format="json"
        )
        assert opened.status_code == 201, opened.content
        assert opened.json()["id"] not in {
            r["id"] for r in client.get("/api/v1/sessions/").json()["results"]
        }
        for path in ("summaries", "schedules", "messages", "checkpoints", "runs"):
            listed = client.get(f"/api/v1/sessions/{opened.json()['id']}/{path}/")
            assert listed.status_code == 200, (path, listed.content)
            assert listed.json()["results"] == []


def test_storage_accounting_counts_on_the_replica(
    replica: StreamingReplica, alice: Persona
) -> None:
    def messages() -> int:
        usage = storage_usage(tenant=alice.tenant)
        return next(u.rows for u in usage if u.store == "messages")

    with replay_paused(replica):
        before = messages()
        turn_run(session=alice.session, content="counted later")
        assert messages() == before
    assert messages() == before + 2
