"""The REST turn's body check (agents.api.serializers.message_create_data) against
MessageCreateSerializer: its fast path must accept exactly what the serializer accepts, with
the same validated data, and leave every other body to the serializer (and its errors)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.exceptions import ValidationError

from agentplatform.http.serializers import MAX_METADATA_BYTES
from agents.api.serializers import (
    MAX_CLIENT_MESSAGE_ID_CHARS,
    MAX_CONTENT_CHARS,
    MessageCreateSerializer,
    _message_create_fast,
    message_create_data,
)

VALID: list[Any] = [
    {"content": "hello"},
    {"content": " padded \n"},
    {"content": "x" * MAX_CONTENT_CHARS},
    {"content": "naïve café ✓ 日本語 😀"},
    {"content": "line\u2028sep"},
    {"content": "hi", "client_message_id": "c" * MAX_CLIENT_MESSAGE_ID_CHARS},
    {"content": "hi", "client_message_id": "é-1"},
    {"content": "hi", "metadata": {}},
    {"content": "hi", "metadata": {"a": [1, 2.5, None, True, {"b": "ü"}]}},
    {"metadata": {"k": "v"}, "client_message_id": "m1", "content": "keys in another order"},
    {"content": "hi", "metadata": {"big": "v" * (MAX_METADATA_BYTES - 20)}},
]
INVALID: list[Any] = [
    {},
    [],
    ["content"],
    "content",
    None,
    {"content": ""},
    {"content": "   "},
    {"content": "\n\t\u3000"},
    {"content": None},
    {"content": 5},
    {"content": 5.5},
    {"content": True},
    {"content": ["hi"]},
    {"content": {"text": "hi"}},
    {"content": "x" * (MAX_CONTENT_CHARS + 1)},
    {"content": "nul\x00here"},
    {"content": "lone \ud800 surrogate"},
    {"content": "hi", "extra": 1},
    {"content": "hi", "client_message_id": None},
    {"content": "hi", "client_message_id": ""},
    {"content": "hi", "client_message_id": " "},
    {"content": "hi", "client_message_id": 7},
    {"content": "hi", "client_message_id": "c" * (MAX_CLIENT_MESSAGE_ID_CHARS + 1)},
    {"content": "hi", "client_message_id": "a\x00"},
    {"content": "hi", "client_message_id": "\udfff"},
    {"content": "hi", "metadata": None},
    {"content": "hi", "metadata": []},
    {"content": "hi", "metadata": "x"},
    {"content": "hi", "metadata": {"k": "nul\x00"}},
    {"content": "hi", "metadata": {"nul\x00": 1}},
    {"content": "hi", "metadata": {"big": "v" * MAX_METADATA_BYTES}},
    {"content": "hi", "metadata": {"k": object()}},
]


def _serializer(data: Any) -> MessageCreateSerializer:
    serializer = MessageCreateSerializer(data=data)
    serializer.is_valid()
    return serializer


@pytest.mark.parametrize("data", VALID)
def test_a_valid_body_takes_the_fast_path_with_the_serializers_data(data: Any) -> None:
    serializer = _serializer(data)
    assert serializer.errors == {}
    fast = _message_create_fast(data)
    assert fast == serializer.validated_data
    assert list(fast or {}) == list(serializer.validated_data)  # the same key order
    assert message_create_data(data) == serializer.validated_data


@pytest.mark.parametrize("data", INVALID)
def test_an_invalid_body_gets_the_serializers_own_errors(data: Any) -> None:
    serializer = _serializer(data)
    assert serializer.errors
    assert _message_create_fast(data) is None
    with pytest.raises(ValidationError) as raised:
        message_create_data(data)
    assert raised.value.detail == serializer.errors
