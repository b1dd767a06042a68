from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.llm.scripted import ScriptedBackend, Step
from agents.models import Message, Session
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def test_chat_streams_replies_and_stores_the_conversation(
    alice: Persona, llm: ScriptedBackend, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    llm.script(Step(reply="Hi there, Ada."), Step(reply="Bye."))
    monkeypatch.setattr("sys.stdin", io.StringIO("I am Ada\nbye\n/quit\n"))
    call_command("chat", "--tenant", "alice", "--user-id", "cli")
    printed = capsys.readouterr().out
    assert "agent> Hi there, Ada." in printed
    session = Session.objects.get(tenant=alice.tenant, user_id="cli")
    contents = list(Message.objects.filter(session=session).values_list("content", flat=True))
    assert contents == ["I am Ada", "Hi there, Ada.", "bye", "Bye."]


def test_chat_refuses_an_unknown_tenant(db: None) -> None:
    with pytest.raises(CommandError, match="No tenant"):
        call_command("chat", "--tenant", "nobody")


def test_chat_cannot_open_another_tenants_session(alice: Persona, bob: Persona) -> None:
    with pytest.raises(CommandError, match="No such session"):
        call_command("chat", "--tenant", "bob", "--session", str(alice.session.pk))
