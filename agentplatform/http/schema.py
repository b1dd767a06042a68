"""OpenAPI: API-key authentication as HTTP bearer, and drf-spectacular's generator saying
what the serializers enforce (unknown fields refused, string patterns, list bounds)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import force_instance
from rest_framework import serializers

from agentplatform.http.serializers import NO_NUL, StrictSerializer

# PostgreSQL text cannot hold NUL, so every string field refuses it (DRF's CharField); a
# field that may not be blank refuses whitespace alone too (StrictCharField.require_text).
# Whitespace is Python's (str.isspace, what the server strips), spelled out: a schema's `\s`
# is ECMAScript's, which leaves out U+001C-U+001F and U+0085.
WHITESPACE = (
    "\\u0009-\\u000d\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a"
    "\\u2028-\\u2029\\u202f\\u205f\\u3000"
)
NOT_BLANK = f"^[^\\u0000]*[^\\u0000{WHITESPACE}][^\\u0000]*$"
SLUG = "^[-a-zA-Z0-9_]+$"  # DRF's SlugField (ASCII)
_BLANK = {"type": "string", "maxLength": 0}


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "agentplatform.http.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "ap_<prefix>_<secret>"}


class PlatformAutoSchema(AutoSchema):
    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        schema: dict[str, Any] = super()._map_basic_serializer(serializer, direction)
        # A StrictSerializer refuses fields it does not know: say so, so that a generated
        # client (or a fuzzer) does not send them as valid.
        if direction == "request" and isinstance(force_instance(serializer), StrictSerializer):
            schema["additionalProperties"] = False
        return schema

    def _map_serializer_field(
        self, field: Any, direction: str, bypass_extensions: bool = False
    ) -> dict[str, Any]:
        schema: dict[str, Any] = super()._map_serializer_field(field, direction, bypass_extensions)
        text = isinstance(field, serializers.CharField) and not isinstance(
            field, serializers.ChoiceField | serializers.UUIDField
        )
        if direction == "request" and text and schema.get("type") == "string":
            schema.setdefault("pattern", _text_pattern(field))
        if isinstance(field, serializers.ListSerializer):  # nested `many=True`: not mapped
            _list_bounds(schema, field)
        return schema

    def _insert_field_validators(self, field: Any, schema: dict[str, Any]) -> None:
        super()._insert_field_validators(field, schema)
        if _BLANK in schema.get("oneOf", []):
            # drf-spectacular offers "" beside a constrained string with oneOf, but "" may
            # match the constraint too (a pattern allowing it): either is valid, so anyOf.
            schema["anyOf"] = schema.pop("oneOf")


def _text_pattern(field: serializers.CharField) -> str:
    if isinstance(field, serializers.SlugField):
        return SLUG
    if not field.allow_blank and (field.trim_whitespace or getattr(field, "require_text", False)):
        return NOT_BLANK
    return NO_NUL


def _list_bounds(schema: dict[str, Any], field: serializers.ListSerializer) -> None:
    # getattr: DRF has min_length/max_length on list serializers; its type stubs do not.
    least, most = getattr(field, "min_length", None), getattr(field, "max_length", None)
    least = least if least is not None else int(not field.allow_empty)
    if least:
        schema["minItems"] = least
    if most is not None:
        schema["maxItems"] = most
