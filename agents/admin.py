from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from agentplatform.core.console import TenantScopedAdmin
from agents.models import Agent, Message, Session


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
