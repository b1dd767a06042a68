"""Admin for the memory tiers, with rollback and fork behind a confirmation page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html

from agentplatform.audit import audit_record
from agentplatform.console import TenantScopedAdmin, operator_actor
from agents.admin import SessionAdmin
from agents.engine.concurrency import SessionBusy
from agents.models import Message, Session
from memory import inspector
from memory.checkpoints import (
    REVERSIBLE,
    checkpoint_fork,
    checkpoint_rollback,
    side_effects_after,
)
from memory.models import Checkpoint, Memory, Summary


@admin.register(Checkpoint)
class CheckpointAdmin(TenantScopedAdmin):
    list_display = [
        "created_at",
        "session",
        "kind",
        "high_water_seq",
        "memory_tokens",
        "undo_links",
    ]
    list_filter = ["kind", "tenant"]
    autocomplete_fields = ["session"]
    raw_id_fields = ["parent"]
    readonly_fields = ["session", "parent", "kind", "high_water_seq", "memory_first_seq",
                       "memory_tokens", "task_state", "metadata", "created_at"]  # fmt: skip
    show_full_result_count = False

    @admin.display(description="")
    def undo_links(self, checkpoint: Checkpoint) -> str:
        rollback = reverse("admin:memory_checkpoint_rollback", args=[checkpoint.pk])
        fork = reverse("admin:memory_checkpoint_fork", args=[checkpoint.pk])
        return format_html(
            '<a href="{}">Roll back to here</a> · <a href="{}">Fork</a>', rollback, fork
        )

    def get_urls(self) -> list[Any]:
        own = [
            path("<uuid:pk>/rollback/", self.admin_site.admin_view(self.rollback_view),
                 name="memory_checkpoint_rollback"),
            path("<uuid:pk>/fork/", self.admin_site.admin_view(self.fork_view),
                 name="memory_checkpoint_fork"),
        ]  # fmt: skip
        return own + super().get_urls()

    def _managed_checkpoint(self, request: HttpRequest, pk: str) -> Checkpoint:
        checkpoint = get_object_or_404(self.get_queryset(request), pk=pk)
        if not self.has_change_permission(request, checkpoint):
            raise PermissionDenied  # viewers see the timeline; managers undo
        return checkpoint

    def rollback_view(self, request: HttpRequest, pk: str) -> HttpResponse:
        checkpoint = self._managed_checkpoint(request, pk)
        session = Session.objects.select_related("agent", "tenant").get(pk=checkpoint.session_id)
        if request.method == "POST":
            try:
                receipt = checkpoint_rollback(session=session, checkpoint=checkpoint)
            except SessionBusy as error:
                self.message_user(request, str(error), messages.ERROR)
                return HttpResponseRedirect(request.path)
            audit_record(
                tenant=session.tenant,
                actor=operator_actor(request),
                action="session.rollback",
                target=session,
                payload={
                    "checkpoint": str(checkpoint.pk),
                    "rolled_back_seqs": receipt.rolled_back_seqs,
                },
            )
            self.message_user(
                request, f"Rolled back: {len(receipt.rolled_back_seqs)} message(s) undone."
            )
            return HttpResponseRedirect(reverse("admin:agents_session_inspect", args=[session.pk]))
        undone = Message.objects.filter(
            session=session, seq__gt=checkpoint.high_water_seq, status__in=REVERSIBLE
        ).order_by("seq")
        context = {
            **self.admin_site.each_context(request),
            "title": "Roll back this session?",
            "checkpoint": checkpoint,
            "session": session,
            "undone": undone,
            "summaries": Summary.objects.filter(
                session=session, last_seq__gt=checkpoint.high_water_seq
            ),
            "side_effects": side_effects_after(session, checkpoint),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/memory/confirm_rollback.html", context)

    def fork_view(self, request: HttpRequest, pk: str) -> HttpResponse:
        checkpoint = self._managed_checkpoint(request, pk)
        session = Session.objects.select_related("agent", "tenant").get(pk=checkpoint.session_id)
        if request.method == "POST":
            fork = checkpoint_fork(session=session, checkpoint=checkpoint)
            audit_record(
                tenant=session.tenant,
                actor=operator_actor(request),
                action="session.fork",
                target=session,
                payload={"checkpoint": str(checkpoint.pk), "fork": str(fork.pk)},
            )
            self.message_user(request, f"Forked into session {fork.pk}.")
            return HttpResponseRedirect(reverse("admin:agents_session_change", args=[fork.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Fork this session?",
            "checkpoint": checkpoint,
            "session": session,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/memory/confirm_fork.html", context)


@admin.register(Memory)
class MemoryAdmin(TenantScopedAdmin):
    list_display = ["text", "tenant", "user_id", "status", "updated_at", "last_retrieved_at"]
    list_filter = ["status", "tenant"]
    search_fields = ["text", "user_id"]
    exclude = ["embedding"]
    readonly_fields = ["sources", "embedding_model", "created_at", "updated_at",
                       "last_retrieved_at"]  # fmt: skip
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # memories are embedded on write: add them through the API


@admin.register(Summary)
class SummaryAdmin(TenantScopedAdmin):
    list_display = ["session", "kind", "first_seq", "last_seq", "method", "created_at"]
    list_filter = ["kind", "method", "tenant"]
    raw_id_fields = ["session"]
    show_full_result_count = False


admin.site.unregister(Session)


@admin.register(Session)
class InspectableSessionAdmin(SessionAdmin):
    """The session admin with the inspector (the memory app owns most of what it shows)."""

    list_display = [*SessionAdmin.list_display, "inspect_link"]

    @admin.display(description="")
    def inspect_link(self, session: Session) -> str:
        url = reverse("admin:agents_session_inspect", args=[session.pk])
        return format_html('<a href="{}">Inspect</a>', url)

    def get_urls(self) -> list[Any]:
        own = [
            path("<uuid:pk>/inspect/", self.admin_site.admin_view(self.inspect_view),
                 name="agents_session_inspect"),
        ]  # fmt: skip
        return own + super().get_urls()

    def inspect_view(self, request: HttpRequest, pk: str) -> HttpResponse:
        session = get_object_or_404(
            self.get_queryset(request).select_related("agent", "tenant"), pk=pk
        )
        before_seq = _int(request.GET.get("before"))
        checkpoints_before = parse_datetime(request.GET.get("cp_before") or "")
        messages_page = inspector.message_page(session, before_seq)
        turns = inspector.turns_of(messages_page.rows)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Session {session.pk}",
            "session": session,
            "opts": self.model._meta,
            "live": inspector.live_state(session),
            "messages_page": messages_page,
            "turns": [(turn, inspector.context_parts(session, turn)) for turn in turns],
            "checkpoints_page": inspector.checkpoint_page(session, checkpoints_before),
            "summaries": inspector.session_summaries(session),
            "memories": inspector.learned_memories(session),
            "can_undo": self.has_change_permission(request, session),
        }
        return TemplateResponse(request, "admin/agents/session/inspect.html", context)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
