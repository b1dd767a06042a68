from __future__ import annotations

from rest_framework.pagination import CursorPagination


class CreatedCursorPagination(CursorPagination):
    """Stable cursor pages, newest first; `page_size` may be lowered or raised to 200."""

    ordering = "-created_at"
    page_size_query_param = "page_size"
    max_page_size = 200
