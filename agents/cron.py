"""Cron expressions and time zones of schedules: checked once, here, for the API, the
console and the services alike.

An expression is accepted only if both parsers that will read it do: Celery's (beat turns
the stored fields into a `crontab` and fires by it) and django-celery-beat's validators
(the same ones its CrontabSchedule model and admin run). So nothing is stored that beat
would later refuse or read differently.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import datetime, timedelta

from celery.schedules import ParseException, crontab
from django.core.exceptions import ValidationError
from django_celery_beat.models import CrontabSchedule
from django_celery_beat.tzcrontab import TzAwareCrontab
from django_celery_beat.validators import crontab_validator

# The order of a five-field expression, as CrontabSchedule names its columns.
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
# What OpenAPI can state: five fields of cron characters separated by single spaces. The
# ranges (minute 0-59, ...) are checked by the parsers, with CRON_INVALID in the message.
CRON_PATTERN = r"^[0-9A-Za-z*/,-]+( [0-9A-Za-z*/,-]+){4}$"
CRON_MAX_LENGTH = 120
CRON_INVALID = "Not a valid cron expression"
CRON_HELP = (
    "Five fields: minute hour day-of-month month day-of-week, e.g. `0 9 * * mon-fri`; "
    "`*`, lists, ranges, steps and month/day names. Day of week 0-6, Sunday is 0."
)
TIMEZONE_INVALID = "Not a known IANA time zone."
# What OpenAPI states of a time zone name (every IANA name has this form); which names
# exist is checked by validate_timezone.
TIMEZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
TIMEZONE_MAX_LENGTH = 64


def cron_fields(expression: str) -> dict[str, str]:
    """The expression as CrontabSchedule's fields (call after `validate_cron`)."""
    return dict(zip(CRON_FIELDS, expression.split(" "), strict=True))


def validate_cron(value: object) -> None:
    """A five-field cron expression that beat can run; else a ValidationError saying why."""
    if not isinstance(value, str) or len(value.split(" ")) != len(CRON_FIELDS):
        raise ValidationError(f"{CRON_INVALID}: give five fields separated by single spaces.")
    fields = cron_fields(value)
    for name, part in fields.items():
        limit = CrontabSchedule._meta.get_field(name).max_length or CRON_MAX_LENGTH
        if not part or len(part) > limit:
            raise ValidationError(f"{CRON_INVALID}: the {name} field is empty or too long.")
    try:
        crontab(**fields)
        crontab_validator(value)
    except (ParseException, ValueError, ValidationError) as error:
        detail = "; ".join(error.messages) if isinstance(error, ValidationError) else str(error)
        raise ValidationError(f"{CRON_INVALID}: {detail}") from None


@functools.cache
def time_zones() -> tuple[str, ...]:
    """The IANA names this deployment knows (zoneinfo's), but the machine-dependent
    `localtime`: a schedule means the same wherever beat runs."""
    return tuple(sorted(zoneinfo.available_timezones() - {"localtime"}))


def validate_timezone(value: object) -> None:
    if not isinstance(value, str) or value not in time_zones():
        raise ValidationError(TIMEZONE_INVALID)


def next_fire(expression: str, timezone: str, *, now: datetime) -> datetime:
    """When beat will next fire this expression after `now` (aware), as beat computes it
    (django-celery-beat's time-zone aware crontab), to the minute."""
    zone = zoneinfo.ZoneInfo(timezone)
    schedule = TzAwareCrontab(tz=zone, **cron_fields(expression))
    local_now = now.astimezone(zone)
    estimate = local_now + schedule.remaining_estimate(local_now)
    # The estimate is taken against the clock a few microseconds later: round it back.
    return (estimate + timedelta(seconds=30)).replace(second=0, microsecond=0)
