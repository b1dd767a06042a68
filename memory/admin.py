"""Admin for the memory tiers, with rollback and fork behind a confirmation page."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html

from agentplatform.core.console import TenantScopedAdmin, operator_actor
from agentplatform.models import Tenant
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
from memory.erasure import user_erase
from memory.models import Checkpoint, Memory, RetentionPolicy, StorageSample, Summary
from memory.retention import (
    POLICY_FIELDS,
    RetentionCounts,
    retention_apply_ttl,
    retention_preview,
)


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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # written by turns, rollbacks and forks

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
                receipt = checkpoint_rollback(
                    session=session, checkpoint=checkpoint, actor=operator_actor(request)
                )
            except SessionBusy as error:
                self.message_user(request, str(error), messages.ERROR)
                return HttpResponseRedirect(request.path)
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
            fork = checkpoint_fork(
                session=session, checkpoint=checkpoint, actor=operator_actor(request)
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # written by compaction and session summaries


admin.site.unregister(Session)


@admin.register(Session)
class InspectableSessionAdmin(SessionAdmin):
    """The session admin with the inspector (the memory app owns most of what it shows)."""

    list_display = [*SessionAdmin.list_display, "inspect_link"]
    actions = ["erase_end_users"]

    @admin.action(
        description="Erase everything about these sessions' end users", permissions=["change"]
    )
    def erase_end_users(
        self, request: HttpRequest, queryset: QuerySet[Session]
    ) -> HttpResponse | None:
        people = sorted(
            {(s.tenant_id, s.user_id) for s in queryset if self.has_change_permission(request, s)}
        )
        if request.POST.get("confirm") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Erase these end users?",
                "people": [(Tenant.objects.get(pk=t), u) for t, u in people],
                "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                "opts": self.model._meta,
            }
            return TemplateResponse(request, "admin/agents/session/confirm_erase.html", context)
        for tenant_id, user_id in people:
            receipt = user_erase(
                tenant=Tenant.objects.get(pk=tenant_id),
                user_id=user_id,
                actor=operator_actor(request),
            )
            self.message_user(request, f"Erased {user_id}: {asdict(receipt)}", messages.SUCCESS)
        return None

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
        messages_page = inspector.message_page(session=session, before_seq=before_seq)
        turns = inspector.turns_of(messages_page.rows)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Session {session.pk}",
            "session": session,
            "opts": self.model._meta,
            "live": inspector.session_live_state(session=session),
            "messages_page": messages_page,
            "turns": [
                (turn, inspector.turn_context_parts(session=session, turn=turn)) for turn in turns
            ],
            "checkpoints_page": inspector.checkpoint_page(
                session=session, before=checkpoints_before
            ),
            "summaries": inspector.summary_list(session=session),
            "memories": inspector.memory_list_learned(session=session),
            "can_undo": self.has_change_permission(request, session),
            "runs": inspector.run_timeline(session=session),
            "schedules": inspector.schedule_list(session=session),
        }
        return TemplateResponse(request, "admin/agents/session/inspect.html", context)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


class RetentionPolicyForm(forms.ModelForm):
    preview_only = forms.BooleanField(
        required=False,
        label="Preview only",
        help_text="Show how many rows of each kind this policy would delete now; save nothing.",
    )
    preview: RetentionCounts | None = None

    class Meta:
        model = RetentionPolicy
        fields = ["tenant", "agent", *POLICY_FIELDS]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        tenant, agent = data.get("tenant"), data.get("agent")
        if tenant is not None and agent is not None and agent.tenant_id != tenant.pk:
            raise forms.ValidationError("The agent belongs to another tenant.")
        if data.get("preview_only") and not self.errors and tenant is not None:
            candidate = RetentionPolicy(
                pk=self.instance.pk,
                tenant=tenant,
                agent=agent,
                **{name: data.get(name) for name in POLICY_FIELDS},
            )
            self.preview = retention_preview(policy=candidate)
            raise forms.ValidationError("Preview only: nothing was saved.", code="preview")
        return data


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(TenantScopedAdmin):
    form = RetentionPolicyForm
    list_display = ["__str__", "tenant", *POLICY_FIELDS, "updated_at"]
    list_filter = ["tenant"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)  # audited there
        retention_apply_ttl(policy=obj)


@admin.register(StorageSample)
class StorageSampleAdmin(TenantScopedAdmin):
    list_display = ["taken_on", "tenant", "store", "rows", "bytes"]
    list_filter = ["store", "tenant"]
    date_hierarchy = "taken_on"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # sampled by the daily task

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
