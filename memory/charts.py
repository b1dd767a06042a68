"""Charts for the operators' console, drawn server-side as SVG (no script, no CDN)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT, PAD = 360, 140, 28


@dataclass(frozen=True)
class Series:
    title: str
    unit: str
    points: Sequence[tuple[datetime.date, float]]  # one per day, oldest first


def human(value: float, unit: str) -> str:
    if unit == "bytes":
        for suffix in ("B", "KB", "MB", "GB", "TB"):
            if abs(value) < 1000:
                return f"{value:.0f} {suffix}" if suffix == "B" else f"{value:.1f} {suffix}"
            value /= 1000
        return f"{value:.1f} PB"
    return f"{value:,.0f}"


def line_chart(series: Series) -> SafeString:
    """A small line chart with its last value, first and last day, and a max gridline."""
    points = list(series.points)
    title = escape(series.title)
    if not points:
        body = f'<text x="{PAD}" y="{HEIGHT // 2}" class="empty">no data yet</text>'
        return _frame(title, "", body)
    top = max(value for _, value in points) or 1.0
    span = max(1, len(points) - 1)
    coords = [
        (
            PAD + (WIDTH - 2 * PAD) * index / span,
            HEIGHT - PAD - (HEIGHT - 2 * PAD) * value / top,
        )
        for index, (_, value) in enumerate(points)
    ]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    last = human(points[-1][1], series.unit)
    body = (
        f'<line x1="{PAD}" y1="{PAD}" x2="{WIDTH - PAD}" y2="{PAD}" class="grid"/>'
        f'<text x="{PAD}" y="{PAD - 4}" class="axis">max {escape(human(top, series.unit))}</text>'
        f'<polyline points="{path}" class="line"/>'
        f'<text x="{PAD}" y="{HEIGHT - 8}" class="axis">{points[0][0]:%b %d}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" class="axis end">{points[-1][0]:%b %d}</text>'
    )
    return _frame(title, escape(last), body)


def _frame(title: str, last: str, body: str) -> SafeString:
    return mark_safe(  # noqa: S308 - every interpolated text is escaped above
        f'<figure class="console-chart"><figcaption>{title} <strong>{last}</strong></figcaption>'
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{title}">{body}</svg></figure>'
    )


def daily(
    values: dict[datetime.date, float], days: int, today: datetime.date
) -> list[tuple[datetime.date, float]]:
    """One point per day of the window, zero where nothing happened."""
    start = today - datetime.timedelta(days=days - 1)
    return [
        (
            start + datetime.timedelta(days=i),
            float(values.get(start + datetime.timedelta(days=i), 0)),
        )
        for i in range(days)
    ]
