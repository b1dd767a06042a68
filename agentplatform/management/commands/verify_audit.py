from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from agentplatform.core import rls
from agentplatform.core.audit import audit_chain, audit_verify
from agentplatform.management.base import PlatformCommand
from agentplatform.management.progress import ProgressBar
from agentplatform.models import AuditEvent


class Command(PlatformCommand):
    help = (
        "Chain the pending audit events, then check every tenant's audit chain; report the "
        "first break of each (exit 1 if any)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        with rls.cross_tenant(rls.CrossTenantReason.AUDIT_CHAINING, "verify_audit"):
            linked = audit_chain()
        if linked:
            self.stderr.write(f"Chained {linked} pending event(s).")
        progress = ProgressBar(AuditEvent.objects.count(), "verifying audit chains", self.stderr)
        breaks, last = [], 0
        for checked, found in audit_verify():
            progress.advance(checked - last)
            last = checked
            if found is not None:
                breaks.append(found)
        progress.finish()
        for found in breaks:
            self.stdout.write(
                f"BROKEN chain of tenant {found.tenant_id or '(platform)'} at event "
                f"{found.event_id}: {found.reason}"
            )
        if breaks:
            raise CommandError(f"{len(breaks)} audit chain(s) broken.")
        self.stdout.write(self.style.SUCCESS(f"All audit chains verify ({last} events)."))
