"""JSON for the paths every turn takes: its frames, its working memory, its write.

orjson encodes and decodes several times faster than the standard library: it matters on
a path that re-encodes the whole working memory each turn (bench/turn_overhead.py). The
text is the same JSON, except that non-ASCII characters stay UTF-8 instead of \\u escapes,
and a value JSON has no type for is written as its str() (as `default=str` did).
"""

from __future__ import annotations

from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps_bytes(value: Any) -> bytes:
    return orjson.dumps(value, default=str, option=_OPTIONS)


def dumps(value: Any) -> str:
    return dumps_bytes(value).decode()


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)
