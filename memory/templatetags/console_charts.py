"""`{% console_charts %}`: the admin index's charts for the operator's tenants."""

from __future__ import annotations

import datetime
from typing import Any

from django import template
from django.core.cache import cache
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.http import HttpRequest
from django.utils import timezone

from agentplatform.core.console import is_superuser, operator_roles
from agents.models import Message, Session
from memory.charts import Series, daily, line_chart
from memory.models import StorageSample

register = template.Library()
DAYS = 30
CACHE_SECONDS = 300  # the index is opened often; the per-day sums change slowly


@register.inclusion_tag("admin/console_charts.html", takes_context=True)
def console_charts(context: dict[str, Any]) -> dict[str, Any]:
    request: HttpRequest = context["request"]
    tenants = None if is_superuser(request) else sorted(map(str, operator_roles(request)))
    if tenants == []:
        return {"charts": []}
    key = f"console-charts:{','.join(tenants) if tenants else 'all'}"
    charts = cache.get(key)
    if charts is None:
        charts = [str(chart) for chart in _charts(tenants)]
        cache.set(key, charts, CACHE_SECONDS)
    return {"charts": charts}


def _charts(tenants: list[str] | None) -> list[Any]:
    today = timezone.localdate()
    since = timezone.now() - datetime.timedelta(days=DAYS)
    scope: dict[str, Any] = {} if tenants is None else {"tenant_id__in": tenants}
    sessions = _per_day(Session.objects.filter(created_at__gte=since, **scope), Count("pk"))
    messages = Message.objects.filter(created_at__gte=since, **scope)
    turns = _per_day(messages.filter(role=Message.Role.ASSISTANT), Count("pk"))
    tokens = _per_day(messages, Sum("token_count"))
    storage = dict(
        StorageSample.objects.filter(taken_on__gte=since.date(), **scope)
        .values("taken_on")
        .annotate(total=Sum("bytes"))
        .values_list("taken_on", "total")
    )
    return [
        line_chart(Series("Sessions started per day", "count", daily(sessions, DAYS, today))),
        line_chart(Series("Turns per day", "count", daily(turns, DAYS, today))),
        line_chart(Series("Tokens per day", "count", daily(tokens, DAYS, today))),
        line_chart(Series("Storage (all stores)", "bytes", _sampled(storage, today))),
    ]


def _per_day(queryset: Any, aggregate: Any) -> dict[datetime.date, float]:
    rows = queryset.annotate(day=TruncDate("created_at")).values("day").annotate(value=aggregate)
    return {row["day"]: float(row["value"] or 0) for row in rows}


def _sampled(values: dict[datetime.date, Any], today: datetime.date) -> list[Any]:
    return [(day, float(total)) for day, total in sorted(values.items()) if day <= today]
