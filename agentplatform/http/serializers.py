from __future__ import annotations

import json
from typing import Any

from django.db import models
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request

MAX_METADATA_BYTES = 16_384


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, so a typo is an error instead of a silent no-op."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


def validate_metadata(value: Any) -> None:
    if not isinstance(value, dict):
        raise serializers.ValidationError("Must be a JSON object.")
    if len(json.dumps(value)) > MAX_METADATA_BYTES:
        raise serializers.ValidationError(f"Must be at most {MAX_METADATA_BYTES} bytes as JSON.")
    if _holds_nul(value):
        raise serializers.ValidationError(NUL_REFUSED)


# PostgreSQL's text and jsonb cannot hold U+0000: refused with this message wherever it hides,
# and by this pattern where a schema states it.
NUL_REFUSED = "Must not contain NUL characters (U+0000)."
NO_NUL = "^[^\\u0000]*$"


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


class StrictCharField(serializers.CharField):
    """A string field that takes exactly what the schema describes: a number or a boolean is
    refused instead of coerced, and the value is kept as sent (not trimmed, so `maxLength`
    holds for what the client sent). Unless blank is allowed, whitespace alone is refused."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        self.require_text = not self.allow_blank

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        if self.require_text and not data.strip():
            self.fail("blank")
        return str(super().to_internal_value(data))


class StrictSlugField(StrictCharField, serializers.SlugField):
    pass


class StrictBooleanField(serializers.BooleanField):
    """true or false, as the schema says: not 0, 1, "yes" or "on" (DRF's coercions)."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictModelSerializer(StrictSerializer, serializers.ModelSerializer):
    """A model serializer whose text fields are strict too."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
        models.SlugField: StrictSlugField,
        models.BooleanField: StrictBooleanField,
    }


@extend_schema_field({"type": "object", "additionalProperties": True})
class JSONObjectField(serializers.JSONField):
    """A JSON object (metadata, task state, configuration) of at most MAX_METADATA_BYTES.
    Typed as an object in the schema, so generated clients do not send other JSON."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("validators", [validate_metadata])
        super().__init__(**kwargs)


def sources_field(**kwargs: Any) -> serializers.ListField:
    """A memory's or summary's sources: a list of JSON objects."""
    return serializers.ListField(child=serializers.DictField(), read_only=True, **kwargs)


def query_filters(request: Request, filters: type[serializers.Serializer]) -> dict[str, Any]:
    """A list's filters from the query string, validated by `filters` (a serializer that is
    also the operation's documented parameters): a malformed one is a 422, never ignored."""
    # A plain dict: from a QueryDict, DRF reads an empty optional value as absent.
    names = list(filters().fields.keys())
    given = {name: request.query_params[name] for name in names if name in request.query_params}
    serializer = filters(data=given)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
