"""The string patterns the OpenAPI schema states are what the server enforces."""

from __future__ import annotations

import re

from agentplatform.http.schema import NO_NUL, NOT_BLANK


def test_not_blank_means_what_the_server_strips() -> None:
    # Every code point alone: text exactly when Python's str.strip() would not empty it.
    pattern = re.compile(NOT_BLANK)
    wrong = [
        hex(code)
        for code in range(0x110000)
        if bool(pattern.fullmatch(chr(code))) != (code != 0 and not chr(code).isspace())
    ]
    assert wrong == []
    assert pattern.fullmatch(" \u001d a \u3000")
    assert not pattern.fullmatch("a\u0000")


def test_no_nul_refuses_only_nul() -> None:
    assert re.fullmatch(NO_NUL, "any \u001d text")
    assert re.fullmatch(NO_NUL, "")
    assert not re.fullmatch(NO_NUL, "a\u0000b")
