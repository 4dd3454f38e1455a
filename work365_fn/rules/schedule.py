"""The timer's schedule (`WORK365_SYNC_SCHEDULE`, six-field NCRONTAB) read just enough to know
the longest time between two runs: the health check's yardstick. Pure.

`{second} {minute} {hour} {day} {month} {day-of-week}`, each field `*`, a number, a range
`a-b`, a step `*/n`, `a-b/n` or `a/n`, or a comma list of those; months and days of the week
also by their English three-letter names (JAN, MON). As in NCrontab, the library the Functions
host uses, a day must match the day-of-month AND the day-of-week fields, and Sunday is 0
(https://github.com/atifaziz/NCrontab/blob/master/NCrontab/CrontabSchedule.cs,
`TryGetNextOccurrence`). Schedules are UTC on Flex Consumption (no time zone setting).
"""

from __future__ import annotations

from datetime import date, timedelta
from itertools import pairwise

_FIELDS = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 6),
)
_NAMES = {
    "month": ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
    "day-of-week": ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"),
}
# Four whole years from a Monday, a leap day among them: every calendar pattern a month or
# day-of-week field can make repeats inside (28-year cycles aside, which change no gap).
_FIRST_DAY = date(2024, 1, 1)
_DAYS = 4 * 366
_DAY_SECONDS = 86400


class ScheduleError(ValueError):
    """The expression is not a six-field NCRONTAB expression this module understands."""


def schedule_period(expression: str) -> timedelta:
    """The longest gap between two consecutive runs of the schedule (ScheduleError when the
    expression cannot be read or never fires)."""
    parts = expression.split()
    if len(parts) != len(_FIELDS):
        raise ScheduleError(f"{len(parts)} fields, not six")
    values = [_field(text, *spec) for text, spec in zip(parts, _FIELDS, strict=True)]
    seconds, minutes, hours, days, months, weekdays = values
    times = sorted(h * 3600 + m * 60 + s for h in hours for m in minutes for s in seconds)
    dates = [
        offset
        for offset in range(_DAYS)
        if _fires_on(_FIRST_DAY + timedelta(days=offset), days, months, weekdays)
    ]
    if len(dates) < 2:
        raise ScheduleError("it never fires, or fires on one day only")
    within_day = max((b - a for a, b in pairwise(times)), default=0)
    across_days = max((b - a) * _DAY_SECONDS - times[-1] + times[0] for a, b in pairwise(dates))
    return timedelta(seconds=max(within_day, across_days))


def _fires_on(day: date, days: set[int], months: set[int], weekdays: set[int]) -> bool:
    return day.day in days and day.month in months and (day.isoweekday() % 7) in weekdays


def _field(text: str, name: str, low: int, high: int) -> set[int]:
    found: set[int] = set()
    for item in text.split(","):
        found |= _item(item, name, low, high)
    return found


def _item(item: str, name: str, low: int, high: int) -> set[int]:
    span, _, step_text = item.partition("/")
    step = _number(step_text, name) if step_text else 1
    if step < 1:
        raise ScheduleError(f"the {name} field has a step of 0")
    if span == "*":
        first, last = low, high
    elif "-" in span:
        start, _, end = span.partition("-")
        first, last = _value(start, name), _value(end, name)
    else:
        first = _value(span, name)
        last = high if step_text else first  # `a/n`: from a to the end, every n
    if not low <= first <= last <= high:
        raise ScheduleError(f"the {name} field goes outside {low}-{high}")
    return set(range(first, last + 1, step))


def _value(text: str, name: str) -> int:
    names = _NAMES.get(name, ())
    upper = text.upper()
    if upper in names:
        return names.index(upper) + (1 if name == "month" else 0)
    return _number(text, name)


def _number(text: str, name: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 4:
        # the text is not echoed: a setting's value stays out of messages
        raise ScheduleError(f"the {name} field is not a number, a range, a step or a list")
    return int(text)
