from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from agentplatform.models import AuditEvent
from agents.engine.turn import turn_run
from agents.models import Message, Session
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db: None) -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_rollback_from_the_admin_goes_through_a_confirmation_page(
    alice: Persona, admin_client: Client
) -> None:
    session = Session.objects.select_related("agent").get(pk=alice.session.pk)
    first = turn_run(session=session, content="keep me")
    turn_run(session=session, content="undo me")
    url = f"/admin/memory/checkpoint/{first.checkpoint.id}/rollback/"
    page = admin_client.get(url)
    assert page.status_code == 200
    assert "undo me" in page.content.decode() and "keep me" not in page.content.decode()
    assert Message.objects.filter(session=session, status="rolled_back").count() == 0
    done = admin_client.post(url)
    assert done.status_code == 302
    assert Message.objects.filter(session=session, status="rolled_back").count() == 2
    event = AuditEvent.objects.get(action="session.rollback")
    assert event.actor_kind == "operator"


def test_fork_from_the_admin(alice: Persona, admin_client: Client) -> None:
    session = Session.objects.select_related("agent").get(pk=alice.session.pk)
    first = turn_run(session=session, content="one")
    url = f"/admin/memory/checkpoint/{first.checkpoint.id}/fork/"
    assert admin_client.get(url).status_code == 200
    assert admin_client.post(url).status_code == 302
    assert Session.objects.filter(tenant=alice.tenant).count() == 2


@pytest.mark.parametrize(
    "page",
    [
        "/admin/memory/checkpoint/",
        "/admin/memory/memory/",
        "/admin/memory/summary/",
        "/admin/agentplatform/auditevent/",
    ],
)
def test_memory_admin_pages_render(alice: Persona, admin_client: Client, page: str) -> None:
    turn_run(session=Session.objects.select_related("agent").get(pk=alice.session.pk), content="x")
    assert admin_client.get(page).status_code == 200
