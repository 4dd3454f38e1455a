"""The timer's schedule read for its longest gap between runs (rules/schedule.py), as NCrontab
fires it: the health check allows twice that since the last success."""

from __future__ import annotations

from datetime import timedelta

import pytest

from work365_fn.errors import InvalidSettingError
from work365_fn.rules.schedule import ScheduleError, schedule_period
from work365_fn.settings import Settings

BASE = {
    "WORK365_TENANT_ID": "5a4f0e1c-8b2d-4c3e-9f6a-7b8c9d0e1f2a",
    "WORK365_CLIENT_ID": "3c2b1a09-8f7e-4d6c-b5a4-938271605f4e",
    "WORK365_CLIENT_SECRET": "secret-value",
    "WORK365_DATAVERSE_URL": "https://contoso.crm.dynamics.com",
}


@pytest.mark.parametrize(
    ("expression", "period"),
    [
        ("0 0 * * * *", timedelta(hours=1)),  # the default: hourly
        ("0 */30 * * * *", timedelta(minutes=30)),  # local.settings.sample.json
        ("0 15 2 * * *", timedelta(days=1)),  # daily at 02:15
        ("0 0 9 * * 1-5", timedelta(days=3)),  # weekdays: Friday 09:00 to Monday 09:00
        ("0 0 9 * * MON-FRI", timedelta(days=3)),  # the same, by name
        ("0 0 6,18 * * *", timedelta(hours=12)),
        ("0 0 8-17/3 * * *", timedelta(hours=15)),  # 08, 11, 14, 17, then 08 next day
        ("0 0 0 1 * *", timedelta(days=31)),  # monthly: the longest month
        ("0 0 0 1 jan,jul *", timedelta(days=184)),
        ("30 * * * * *", timedelta(minutes=1)),
    ],
)
def test_the_period_is_the_longest_gap_between_two_runs(expression: str, period: timedelta) -> None:
    assert schedule_period(expression) == period


def test_day_of_month_and_day_of_week_must_both_match_as_in_ncrontab() -> None:
    # the 13th when it is a Friday: NCrontab ANDs the fields (classic cron would OR them)
    assert schedule_period("0 0 0 13 * 5") > timedelta(days=180)


@pytest.mark.parametrize(
    "expression",
    ["0 0 * * *", "0 0 * * * 7", "0 */0 * * * *", "0 0 0 31 2 *", "0 0 x * * *", "0 0 25-3 * * *"],
)
def test_a_schedule_that_cannot_be_read_or_never_fires_is_refused(expression: str) -> None:
    with pytest.raises(ScheduleError):
        schedule_period(expression)


def test_settings_refuse_such_a_schedule_naming_the_setting() -> None:
    with pytest.raises(InvalidSettingError) as caught:
        Settings.from_env({**BASE, "WORK365_SYNC_SCHEDULE": "0 0 0 31 2 *"})
    assert caught.value.key == "WORK365_SYNC_SCHEDULE"
    assert "never fires" in str(caught.value)
