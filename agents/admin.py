from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone as django_timezone

from agentplatform.core.console import (
    TenantScopedAdmin,
    is_superuser,
    managed_tenants,
    operator_actor,
)
from agents import runs, schedules
from agents.cron import next_fire, time_zones
from agents.entry import content_validate
from agents.errors import ContentInvalid
from agents.models import Agent, Message, Run, Schedule, Session, TenantTool
from agents.tools import Approval


@admin.register(Agent)
class AgentAdmin(TenantScopedAdmin):
    list_display = ["name", "tenant", "checkpoint_policy", "double_text_policy", "created_at"]
    list_filter = ["tenant", "checkpoint_policy", "double_text_policy"]
    search_fields = ["name"]


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ("seq", "role", "status", "content", "token_count", "created_at")
    readonly_fields = fields
    can_delete = False
    ordering = ["seq"]


@admin.register(Session)
class SessionAdmin(TenantScopedAdmin):
    list_display = ["id", "tenant", "agent", "user_id", "status", "last_activity_at"]
    list_filter = ["tenant", "status"]
    search_fields = ["user_id", "id"]
    autocomplete_fields = ["agent"]
    ordering = ["-last_activity_at"]
    readonly_fields = ["next_seq", "last_activity_at", "created_at"]
    inlines = [MessageInline]
    # The changelist never counts every session of a big tenant.
    show_full_result_count = False


@admin.register(Message)
class MessageAdmin(TenantScopedAdmin):
    list_display = ["session", "seq", "role", "status", "token_count", "created_at"]
    list_filter = ["tenant", "role", "status"]
    raw_id_fields = ["session"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # messages are written by turns (fenced, with their seqs)


@admin.register(Run)
class RunAdmin(TenantScopedAdmin):
    """Runs, read only, and the pending-approvals page: calls waiting for an operator's
    decision, which managers approve or deny (audited as `run.answered`)."""

    list_display = ["id", "tenant", "session", "status", "background", "created_at", "finished_at"]
    list_filter = ["tenant", "status", "background"]
    raw_id_fields = ["session", "user_message", "assistant_message"]
    readonly_fields = [
        "status", "background", "content", "metadata", "turn_key", "required_action",
        "action_results", "usage", "error", "cancel_requested_at", "expires_at", "started_at",
        "finished_at",
    ]  # fmt: skip
    show_full_result_count = False
    change_list_template = "admin/agents/run/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs are started by the API, the chat page and schedules

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # a run changes by its turn, cancel and answers, not by a form

    def get_urls(self) -> list[Any]:
        own = [
            path("approvals/", self.admin_site.admin_view(self.approvals_view),
                 name="agents_run_approvals"),
        ]  # fmt: skip
        return own + super().get_urls()

    def approvals_view(self, request: HttpRequest) -> HttpResponse:
        waiting = self.get_queryset(request).filter(status=Run.Status.REQUIRES_ACTION)
        if request.method == "POST":
            return self._decide(request, waiting)
        pending = [
            (run, call)
            for run in waiting.select_related("session").order_by("expires_at")[:200]
            for call in (run.required_action or {}).get("tool_calls", [])
            if call.get("approval") == Approval.OPERATOR
            and call["id"] not in (run.action_results or {})
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Pending approvals",
            "pending": [(run, call, self._may_decide(request, run)) for run, call in pending],
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/agents/run/approvals.html", context)

    def _may_decide(self, request: HttpRequest, run: Run) -> bool:
        # Managers decide; viewers see what waits.
        return TenantScopedAdmin.has_change_permission(self, request, run)

    def _decide(self, request: HttpRequest, waiting: Any) -> HttpResponse:
        run = get_object_or_404(waiting, pk=request.POST.get("run"))
        if not self._may_decide(request, run):
            raise PermissionDenied
        answer = runs.Answer(
            request.POST.get("tool_call_id", ""),
            approve=request.POST.get("decision") == "approve",
            reason=request.POST.get("reason", "")[:2000],
        )
        try:
            runs.run_act(
                run=run,
                answers=[answer],
                decided_by=Approval.OPERATOR,
                actor=operator_actor(request),
            )
        except (runs.RunConflict, runs.ActionInvalid) as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            verdict = "Approved" if answer.approve else "Denied"
            self.message_user(request, f"{verdict} call {answer.tool_call_id} of run {run.pk}.")
        return HttpResponseRedirect(reverse("admin:agents_run_approvals"))


@admin.register(TenantTool)
class TenantToolAdmin(TenantScopedAdmin):
    """Tenants' own tools, to look at (and delete): they are defined through the API, whose
    checks (the JSON Schema, the URL's address, the secrets named) a form would bypass."""

    list_display = ["name", "tenant", "kind", "approval", "timeout_seconds", "updated_at"]
    list_filter = ["tenant", "kind", "approval"]
    search_fields = ["name"]
    exclude = ["secret_ciphertext"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ScheduleForm(forms.ModelForm):
    timezone = forms.ChoiceField(choices=[(zone, zone) for zone in time_zones()], initial="UTC")

    class Meta:
        model = Schedule
        fields = ["session", "cron", "timezone", "content", "metadata", "enabled"]

    def clean_content(self) -> str:
        # The service's check, here, so that the operator sees it on the form.
        try:
            return content_validate(self.cleaned_data.get("content"))
        except ContentInvalid as error:
            raise forms.ValidationError(str(error)) from None


@admin.register(Schedule)
class ScheduleAdmin(TenantScopedAdmin):
    """Schedules, editable by managers; every save and delete goes through agents.schedules,
    which keeps the schedule's periodic task (what beat fires) in step and audits it."""

    form = ScheduleForm
    list_display = ["cron", "timezone", "session", "tenant", "enabled", "next_run_at",
                    "last_fired_at"]  # fmt: skip
    list_filter = ["tenant", "enabled"]
    search_fields = ["cron", "session__id"]
    raw_id_fields = ["session"]
    readonly_fields = ["next_run_at", "last_run", "last_fired_at", "created_at", "updated_at"]
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        # A schedule stays on its session; make another one on the other session.
        return [*self.readonly_fields, *(["session"] if obj is not None else [])]

    @admin.display(description="Next run")
    def next_run_at(self, schedule: Schedule) -> Any:
        if not schedule.pk or not schedule.enabled:
            return None
        return next_fire(schedule.cron, schedule.timezone, now=django_timezone.now())

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        session = obj.session
        if not is_superuser(request) and session.tenant_id not in managed_tenants(request):
            raise Http404("No such tenant.")
        actor = operator_actor(request)
        if change:
            fields = {name: form.cleaned_data[name] for name in form.changed_data}
            schedules.schedule_update(schedule=obj, actor=actor, **fields)
            return
        data = {name: form.cleaned_data[name] for name in schedules.SCHEDULE_EDITABLE}
        created = schedules.schedule_create(session=session, actor=actor, **data)
        # The admin goes on with `obj` (its message, log entry and redirect name it).
        obj.pk, obj.tenant_id = created.pk, created.tenant_id
        obj.periodic_task = created.periodic_task

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        schedules.schedule_delete(schedule=obj, actor=operator_actor(request))
