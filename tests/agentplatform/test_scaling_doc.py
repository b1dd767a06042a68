"""The schema facts docs/scaling.md rests on, checked against the migrated schema.

The doc's lists (between `<!-- schema: NAME -->` and `<!-- /schema -->`) are parsed here and
compared with what pg_catalog says, so the doc and the schema cannot drift apart: a new
table, constraint or foreign key that changes the path to Citus fails this test until the
doc says so.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.db import connection

from agentplatform.core import rls

DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"
TENANT_TABLE = "agentplatform_tenant"

pytestmark = pytest.mark.django_db


def doc_rows(name: str) -> set[tuple[str, ...]]:
    """The rows of the markdown table between the doc's markers `name`: each row's cells,
    backticks removed, with the header and rule rows left out."""
    match = re.search(rf"<!-- schema: {name} -->(.*?)<!-- /schema -->", DOC.read_text(), re.S)
    assert match, f"docs/scaling.md has no list {name!r}"
    rows = [line.strip() for line in match.group(1).splitlines() if line.strip().startswith("|")]
    cells = [tuple(c.strip().strip("`") for c in row.strip("|").split("|")) for row in rows]
    return {row for row in cells[2:]}


def query(sql: str) -> set[tuple[str, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return {tuple(str(value) for value in row) for row in cursor.fetchall()}


def tenant_owned() -> set[str]:
    return {table for table, _ in rls.protected_tables() if table != TENANT_TABLE}


# Index and constraint columns, in order, as one "a, b" string.
COLUMNS = """
    (SELECT string_agg(a.attname, ', ' ORDER BY k.n)
       FROM unnest({keys}) WITH ORDINALITY AS k(attnum, n)
       JOIN pg_attribute a ON a.attrelid = {rel} AND a.attnum = k.attnum)
"""
TABLES_WITH_TENANT = """
    SELECT c.relname FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
    WHERE s.nspname = 'public' AND c.relkind = 'r'
"""
LEADING_TENANT_INDEX = """
    SELECT DISTINCT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
    WHERE a.attname = 'tenant_id'
"""
UNIQUE_INDEXES = f"""
    SELECT c.relname, {COLUMNS.format(keys="i.indkey::int2[]", rel="c.oid")},
           i.indisprimary, i.indpred IS NOT NULL
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
    JOIN pg_namespace s ON s.oid = c.relnamespace
    WHERE i.indisunique AND s.nspname = 'public'
"""
FOREIGN_KEYS = f"""
    SELECT c.relname, {COLUMNS.format(keys="f.conkey", rel="c.oid")}, r.relname
    FROM pg_constraint f JOIN pg_class c ON c.oid = f.conrelid
    JOIN pg_class r ON r.oid = f.confrelid
    JOIN pg_namespace s ON s.oid = c.relnamespace
    WHERE f.contype = 'f' AND s.nspname = 'public'
"""
SEQUENCED_IDS = """
    SELECT table_name FROM information_schema.columns
    WHERE table_schema = 'public' AND column_name = 'id'
      AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')
"""


def test_every_table_with_a_tenant_id_is_protected_by_row_level_security() -> None:
    assert {row[0] for row in query(TABLES_WITH_TENANT)} == tenant_owned()


def test_every_tenant_owned_table_has_an_index_led_by_tenant_id() -> None:
    assert tenant_owned() - {row[0] for row in query(LEADING_TENANT_INDEX)} == set()


def test_tenant_id_is_not_null_everywhere_but_in_the_audit_trail() -> None:
    nullable = query(
        "SELECT c.relname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE a.attname = 'tenant_id' AND NOT a.attnotnull AND c.relkind = 'r'"
    )
    assert nullable == {("agentplatform_auditevent",)}


def test_every_tenant_owned_primary_key_is_the_id_alone() -> None:
    keys = {(table, columns) for table, columns, primary, _ in query(UNIQUE_INDEXES)
            if primary == "True" and table in tenant_owned()}  # fmt: skip
    assert keys == {(table, "id") for table in tenant_owned()}


def test_the_docs_unique_constraints_without_tenant_id_are_the_schemas() -> None:
    found = {
        (table, columns)
        for table, columns, primary, _ in query(UNIQUE_INDEXES)
        if table in tenant_owned() and primary == "False" and "tenant_id" not in columns
    }
    assert {row[:2] for row in doc_rows("unique-without-tenant")} == found


def test_the_docs_foreign_keys_are_the_schemas() -> None:
    owned = tenant_owned()
    keys = {row for row in query(FOREIGN_KEYS) if row[0] in owned and row[1] != "tenant_id"}
    between = {row for row in keys if row[2] in owned}
    assert doc_rows("tenant-foreign-keys") == between
    assert doc_rows("foreign-keys-out") == keys - between - {
        row for row in keys if row[2] == TENANT_TABLE
    }
    to_tenant = {row[0] for row in query(FOREIGN_KEYS) if row[1] == "tenant_id"}
    assert owned - to_tenant == {"agentplatform_auditevent"}  # no constraint: outlives it


def test_the_docs_sequenced_ids_are_the_schemas() -> None:
    found = {row for row in query(SEQUENCED_IDS) if row[0] in tenant_owned()}
    assert doc_rows("sequenced-ids") == found


def test_the_doc_reads_its_own_lists() -> None:
    """The parser sees every row the doc lists (a malformed row would shrink the lists)."""
    text = DOC.read_text()
    names = ("unique-without-tenant", "tenant-foreign-keys", "foreign-keys-out", "sequenced-ids")
    for name in names:
        block = text.split(f"<!-- schema: {name} -->")[1].split("<!-- /schema -->")[0]
        assert len(doc_rows(name)) == block.count("\n|") - 2
