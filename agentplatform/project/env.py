"""Typed readers for configuration from the environment.

Each reader refuses a bad value with an error that names the variable, so a typo in a
deployment stops start-up instead of surfacing later as odd behaviour.
"""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ImproperlyConfigured):
    """A configuration variable holds a value the platform cannot use."""


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value.strip()


def env_str(name: str, default: str) -> str:
    value = _raw(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean (use 1/0, true/false, yes/no).")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer.") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name}={number} is below the minimum of {minimum}.")
    return number


def env_choice(name: str, default: str, *, choices: tuple[str, ...]) -> str:
    value = env_str(name, default)
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of: {', '.join(choices)}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_url(name: str, default: str | None, *, schemes: tuple[str, ...]) -> str | None:
    """A URL whose scheme is one of `schemes`; `default` when unset."""
    value = _raw(name)
    if value is None or value == "":
        return default
    parsed = urlparse(value)
    if parsed.scheme not in schemes:
        allowed = ", ".join(schemes)
        raise ConfigError(f"{name}={value!r} must be a URL with a scheme among: {allowed}.")
    return value


def env_rate(name: str, default: str) -> str:
    """A DRF throttle rate such as `600/min`."""
    value = env_str(name, default)
    count, _, period = value.partition("/")
    if not count.isdigit() or period[:1] not in {"s", "m", "h", "d"}:
        raise ConfigError(f"{name}={value!r} is not a rate like '600/min' or '10/s'.")
    return value


_HOST_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.?)+$", re.I)


def env_networks(name: str, default: list[str]) -> list[str]:
    """Comma-separated CIDRs (or single addresses) and host names."""
    items = env_list(name, default)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            if not _HOST_NAME.match(item):
                problem = f"{name}: {item!r} is neither a network nor a host name."
                raise ConfigError(problem) from None
    return items


def env_seconds_list(name: str, default: list[float]) -> list[float]:
    """Comma-separated durations in seconds (a retry schedule), each at least 0."""
    raw = env_list(name, [str(value) for value in default])
    try:
        values = [float(item) for item in raw]
    except ValueError:
        raise ConfigError(f"{name}={','.join(raw)!r} is not a list of seconds.") from None
    if not values or any(value < 0 for value in values):
        raise ConfigError(f"{name} must list one or more durations of 0 seconds or more.")
    return values
