from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser

from agentplatform.core.audit import command_actor
from agentplatform.management.base import PlatformCommand
from agentplatform.models import Tenant
from agents.engine.turn import TURN_FAILURES
from agents.entry import Sink, turn_begin
from agents.errors import SessionNotFound, TurnRefused
from agents.models import Agent, Session
from agents.selectors import session_find
from agents.services import session_open

COMMAND = command_actor(__name__)


class Command(PlatformCommand):
    help = "Chat with an agent of a tenant in the terminal; replies stream as they come."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="tenant slug, e.g. demo")
        parser.add_argument("--agent", help="agent id (default: the tenant's first agent)")
        parser.add_argument("--session", help="continue this session id")
        parser.add_argument("--user-id", default="terminal", help="end-user id of the session")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant {options['tenant']!r}.")
        session = self._session(tenant, options)
        self.stdout.write(
            f"Session {session.pk} with {session.agent.name}. Type /quit or Ctrl-D to leave.\n"
        )
        while True:
            try:
                line = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                self.stdout.write("")
                return
            if line in {"/quit", "/exit"}:
                return
            if line:
                self._turn(session, line)

    def _session(self, tenant: Tenant, options: dict[str, Any]) -> Session:
        if options["session"]:
            try:
                return session_find(id=options["session"], tenant_ids=[tenant.pk])
            except SessionNotFound:
                raise CommandError("No such session for this tenant.") from None
        agents = Agent.objects.for_tenant(tenant).order_by("created_at")
        agent = agents.filter(pk=options["agent"]).first() if options["agent"] else agents.first()
        if agent is None:
            raise CommandError("The tenant has no such agent.")
        return session_open(actor=COMMAND, tenant=tenant, agent=agent, user_id=options["user_id"])

    def _turn(self, session: Session, content: str) -> None:
        def emit(event: str, payload: dict[str, Any]) -> None:
            if event == "token":
                sys.stdout.write(payload["delta"])
                sys.stdout.flush()
            elif event == "queued":
                sys.stdout.write(f"[queued, position {payload['position']}] ")

        sys.stdout.write("agent> ")
        try:
            turn_begin(session=session, content=content).run(Sink(emit=emit))
        except (TurnRefused, *TURN_FAILURES) as error:
            sys.stdout.write(f"\n[error: {error}]")
        sys.stdout.write("\n")
