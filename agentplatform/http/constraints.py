"""The model's own checks, answered like the serializers' (422 with field pointers).

Serializers check what the schema promises; the model's `full_clean` and the database's
constraints hold whatever slips past them. An error from either must reach the client as the
same problem document, never as a 500, so the API layer converts them here. Each one is
logged: it means a serializer is missing a check it should have made.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.apps import apps
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from django.db.models import CheckConstraint, Q, UniqueConstraint
from rest_framework import exceptions
from rest_framework.serializers import as_serializer_error

logger = logging.getLogger(__name__)

# SQLSTATEs of the integrity errors a request can provoke.
UNIQUE_VIOLATION = "23505"
EXCLUSION_VIOLATION = "23P01"
NOT_NULL_VIOLATION = "23502"
FOREIGN_KEY_VIOLATION = "23503"


def model_error_as_api_error(exc: Exception) -> exceptions.APIException | None:
    """The API error for a model-level validation or integrity error (None for others)."""
    if isinstance(exc, DjangoValidationError):
        logger.warning("Model validation caught what the serializer did not: %s", exc)
        return exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, IntegrityError):
        logger.warning("A database constraint caught what the serializer did not: %s", exc)
        return _integrity_error(exc)
    if isinstance(exc, DataError):
        # A value the column cannot hold (U+0000 in text or jsonb, a number out of range).
        logger.warning("PostgreSQL refused a value the serializer let through: %s", exc)
        return exceptions.ValidationError([f"A value cannot be stored: {_first_line(exc)}"])
    return None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _integrity_error(exc: IntegrityError) -> exceptions.APIException:
    cause = exc.__cause__
    sqlstate = getattr(cause, "sqlstate", None)
    diag = getattr(cause, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    fields = constraint_fields().get(constraint or "") or _column(diag)
    if sqlstate in (UNIQUE_VIOLATION, EXCLUSION_VIOLATION):
        from agentplatform.http.problems import Conflict  # problems imports this module

        return Conflict(_already_exists(fields))
    message = {
        NOT_NULL_VIOLATION: "This field is required.",
        FOREIGN_KEY_VIOLATION: "No such object.",
    }.get(sqlstate or "", "This value is not allowed.")
    if not fields:
        return exceptions.ValidationError([message])
    return exceptions.ValidationError({field: [message] for field in fields})


def _already_exists(fields: list[str]) -> str:
    if not fields:
        return "An object with these values already exists."
    return f"An object with this {', '.join(fields)} already exists."


def _column(diag: Any) -> list[str]:
    column = getattr(diag, "column_name", None)
    return [column.removesuffix("_id")] if column else []


@functools.cache
def constraint_fields() -> dict[str, list[str]]:
    """Each named constraint of the installed models -> the fields a client sets that it
    checks (the tenant, which a client never sends, left out)."""
    fields: dict[str, list[str]] = {}
    for model in apps.get_models():
        for constraint in model._meta.constraints:
            if isinstance(constraint, UniqueConstraint):
                names = list(constraint.fields)
            elif isinstance(constraint, CheckConstraint):
                names = _condition_fields(constraint.condition)
            else:
                continue
            fields[constraint.name] = [name for name in names if name != "tenant"]
    return fields


def _condition_fields(condition: Any) -> list[str]:
    """The fields a CheckConstraint's Q names (`context_token_budget__gte` -> the field)."""
    found: set[str] = set()
    for child in condition.children if isinstance(condition, Q) else []:
        if isinstance(child, Q):
            found.update(_condition_fields(child))
        elif isinstance(child, tuple):
            found.add(child[0].split("__")[0])
    return sorted(found)
