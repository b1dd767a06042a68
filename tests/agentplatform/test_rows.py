"""Hand-written statements' helpers (agentplatform.infra.rows)."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from agentplatform.infra.rows import array_param

pytestmark = pytest.mark.django_db


def test_an_array_parameter_reads_back_as_the_same_list_whatever_its_text() -> None:
    values = ["plain", 'a "quoted" one', "back\\slash", "comma, and {braces}", "", "NULL", "é"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::text[]", [array_param(values)])
        assert cursor.fetchone()[0] == values
        ids = [uuid.uuid4(), uuid.uuid4()]
        cursor.execute("SELECT %s::uuid[]", [array_param(ids)])
        assert cursor.fetchone()[0] == ids
        cursor.execute("SELECT %s::uuid[]", [array_param([])])
        assert cursor.fetchone()[0] == []
