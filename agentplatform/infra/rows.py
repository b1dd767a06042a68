"""Model instances from the rows of a hand-written statement, converted as the ORM would.

For the few statements on every request's path whose building by the ORM costs more than
running them (a `select_related` lookup compiles its SQL anew on each call: ~0.4 ms of CPU
for a one-row read that PostgreSQL answers in a tenth of that). The select list names every
concrete field's column in the model's field order, and each value goes through the field's
own converters (a JSONField's `from_db_value`), so the instance is the one the ORM would build.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Any, TypeVar

from django.db import connections
from django.db.models import Model

M = TypeVar("M", bound=Model)
Converter = Callable[[Any, Any, Any], Any]


def select_list(model: type[Model], source: str) -> str:
    """`source."column", ...` for every concrete field of `model`, in its field order;
    `source` is a table alias (`s`) or a row-valued expression (`(c.api_key)`)."""
    return ", ".join(f'{source}."{field.column}"' for field in model._meta.concrete_fields)


def width(model: type[Model]) -> int:
    """How many columns of a row `select_list(model, ...)` takes."""
    return len(model._meta.concrete_fields)


def from_row(model: type[M], values: Sequence[Any], using: str) -> M:
    """The instance of `model` whose `select_list` columns are `values`, as loaded from
    the database `using` (not adding, its db set: saves are updates)."""
    connection = connections[using]
    converted = list(values)
    for index, converters, expression in _converters(model, using):
        for converter in converters:
            converted[index] = converter(converted[index], expression, connection)
    return model.from_db(using, attnames(model), converted)


@cache
def attnames(model: type[Model]) -> list[str]:
    """The attribute names of `model`'s concrete fields, in the order of `select_list`."""
    return [field.attname for field in model._meta.concrete_fields]


@cache
def _converters(model: type[Model], using: str) -> list[tuple[int, list[Converter], Any]]:
    connection = connections[using]
    found = []
    for index, field in enumerate(model._meta.concrete_fields):
        expression = field.get_col(model._meta.db_table)
        # As the ORM's compiler asks for them (SQLCompiler.get_converters).
        converters = connection.ops.get_db_converters(expression) + expression.get_db_converters(
            connection
        )
        if converters:
            found.append((index, converters, expression))
    return found


def array_param(values: Iterable[object]) -> str:
    """A list parameter of a hand-written statement as PostgreSQL's array literal, for the
    statement to cast (`= ANY(%s::uuid[])`): psycopg adapts a Python list element by element
    in Python (~100 calls for a few items, on every turn's path). Each element is quoted, so
    any text is safe."""
    quoted = (str(value).replace("\\", "\\\\").replace('"', '\\"') for value in values)
    return "{" + ",".join(f'"{item}"' for item in quoted) + "}"
