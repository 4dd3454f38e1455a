"""Which mode a run takes, the activity-log windows, and which records name a changed customer."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest

from work365_fn.operations.incremental import (
    Mode,
    Watermark,
    audit_windows,
    changed_customers,
    choose_mode,
    parse_mode,
    pending_customers,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CUSTOMER = "0c39d6d5-c70d-4c55-bc02-f620844f3fd1"


def mark(hours_ago: float, full_hours_ago: float | None = None) -> Watermark:
    when = NOW - timedelta(hours=hours_ago)
    full = None if full_hours_ago is None else NOW - timedelta(hours=full_hours_ago)
    return Watermark(watermark=when, last_run_at=when, last_full_at=full)


def choose(requested: Mode, state: Watermark | None) -> Mode:
    return choose_mode(requested, state, NOW, overlap_hours=6, full_every_hours=24).mode


@pytest.mark.parametrize("requested", [Mode.INCREMENTAL, Mode.AUTO])
def test_without_a_watermark_every_mode_is_full(requested: Mode) -> None:
    assert choose(requested, None) is Mode.FULL


def test_full_is_full_whatever_the_watermark() -> None:
    assert choose(Mode.FULL, mark(1, 1)) is Mode.FULL


@pytest.mark.parametrize("requested", [Mode.INCREMENTAL, Mode.AUTO])
def test_a_watermark_the_activity_log_no_longer_covers_means_full(requested: Mode) -> None:
    # The query starts at midnight of the window's first day, and that midnight must be within
    # 90 days of now (12:00): the window may start at 00:00 89.5 days ago, the watermark 6 h
    # (the overlap) later.
    assert choose(requested, mark(89.5 * 24 - 6, 1)) is Mode.INCREMENTAL
    assert choose(requested, mark(89.5 * 24 - 5.99, 1)) is Mode.FULL


def test_auto_is_full_when_the_last_full_run_is_older_than_the_schedule() -> None:
    assert choose(Mode.AUTO, mark(1, 23.9)) is Mode.INCREMENTAL
    assert choose(Mode.AUTO, mark(1, 24)) is Mode.FULL
    assert choose(Mode.AUTO, mark(1, None)) is Mode.FULL


def test_an_explicit_incremental_ignores_the_full_schedule() -> None:
    assert choose(Mode.INCREMENTAL, mark(1, 1000)) is Mode.INCREMENTAL


def test_the_window_starts_at_the_watermark_minus_the_overlap() -> None:
    choice = choose_mode(Mode.INCREMENTAL, mark(2), NOW, overlap_hours=6, full_every_hours=24)
    assert choice.since == NOW - timedelta(hours=8)


def test_windows_are_whole_days_at_most_thirty_with_the_end_day_included() -> None:
    since = NOW - timedelta(days=75)  # 2026-09-12T12:00Z
    windows = audit_windows(since, NOW)
    assert [(last - first).days + 1 for first, last in windows] == [30, 30, 16]
    assert windows[0][0] == date(2026, 9, 12) and windows[-1][1] == date(2026, 11, 26)
    assert all(a[1] + timedelta(days=1) == b[0] for a, b in itertools.pairwise(windows))
    assert audit_windows(NOW, NOW) == [(date(2026, 11, 26), date(2026, 11, 26))]


def test_watermark_documents_round_trip_and_bad_ones_are_refused() -> None:
    state = Watermark(NOW, NOW, NOW - timedelta(days=1), ("a", "b"))
    assert Watermark.from_json(state.to_json()) == state
    assert state.to_json()["watermark"] == "2026-11-26T12:00:00Z"
    assert Watermark.from_json({"watermark": "not a date"}) is None
    assert Watermark.from_json({"watermark": "2026-11-26T12:00:00Z", "pendingCustomers": 3}) is None


def test_records_about_subscriptions_name_their_customer() -> None:
    records = [
        {"customerId": CUSTOMER.upper(), "resourceType": "order", "operationType": "create_order"},
        {"customerId": "not-a-guid", "resourceType": "order"},
        {"resourceType": "subscription"},  # no customer
    ]
    assert changed_customers(records) == {CUSTOMER}


@pytest.mark.parametrize(
    "record",
    [
        {"resourceType": "license", "operationType": "update_customer_user_licenses"},
        {"resourceType": "customer_user", "operationType": "create_customer_user"},
        {"resourceType": "order", "operationType": "create_order", "operationStatus": "failed"},
    ],
)
def test_activity_that_cannot_change_subscriptions_is_ignored(record: dict[str, str]) -> None:
    assert changed_customers([{"customerId": CUSTOMER, **record}]) == set()


def test_unknown_resource_types_count() -> None:
    assert changed_customers([{"customerId": CUSTOMER, "resourceType": "something_new"}]) == {
        CUSTOMER
    }


def test_modes_are_parsed_with_a_clear_error() -> None:
    assert parse_mode(" Auto ") is Mode.AUTO
    with pytest.raises(ValueError, match="full, incremental, auto"):
        parse_mode("sometimes")


def test_only_partner_center_says_a_customer_is_lost_for_good() -> None:
    c1, c2, c3 = (f"c000000{i}-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
    errors = [
        {"customerId": c1, "service": "partnerCenter", "status": 404, "code": ""},
        {"customerId": c2, "service": "partnerCenter", "status": 403, "code": "20002"},
        # a fan-out batch that failed on Dataverse blames each of its customers
        {"customerId": c3, "service": "dataverse", "status": 404, "code": "0x80060888"},
    ]
    assert pending_customers([], errors, []) == {c3}
