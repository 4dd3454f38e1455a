"""The Partner Center client against what Microsoft documents where its pages disagree or say
little (issue 11, defects 3 and 4).

- The activity log's REST reference types startDate/endDate as dates (yyyy-mm-dd), its example
  sends a date-time, and the throttling page asks for one day as startDate=endDate: the client
  queries whole UTC days, the end day included, and keeps the records of its window by
  operationDate itself.
  https://learn.microsoft.com/partner-center/developer/get-a-record-of-partner-center-activity-by-user
  https://learn.microsoft.com/partner-center/developer/api-throttling-guidance
- A 429 is documented as `{"statusCode": 429, "message": "Rate limit is exceeded. Try again in N
  seconds."}` with Retry-After; other errors as `{code, description, data, source}`: both read.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
import responses
from responses import matchers

from work365_fn.errors import ThrottledError
from work365_fn.operations.incremental import audit_windows, changed_customers

from .clients import pc_client, policy
from .shapes import PC, PC_SUBSCRIPTION, pc_subscriptions

AUDIT_URL = f"{PC}/v1/auditrecords"
CUSTOMER = "0c39d6d5-c70d-4c55-bc02-f620844f3fd1"
SUBSCRIPTIONS_URL = f"{PC}/v1/customers/{CUSTOMER}/subscriptions"
RATE_LIMITED = {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 7 seconds."}


def record(customer: str, when: str | None) -> dict[str, Any]:
    """An order record of the documented response example, with its customer and date."""
    item: dict[str, Any] = {
        "customerId": customer,
        "resourceType": "order",
        "operationType": "create_order",
        "operationStatus": "succeeded",
        "attributes": {"objectType": "AuditRecord"},
    }
    if when is not None:
        item["operationDate"] = when
    return item


def page(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "totalCount": len(items),
        "items": items,
        "links": {"self": {"uri": "/auditrecords", "method": "GET", "headers": []}},
        "attributes": {"objectType": "Collection"},
    }


def test_the_query_names_whole_days_the_end_day_included(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        AUDIT_URL,
        match=[matchers.query_string_matcher("startDate=2026-11-25&endDate=2026-11-26&size=500")],
        json=page([]),
    )

    assert (
        list(pc_client(policy(sleeps)).audit_records(date(2026, 11, 25), date(2026, 11, 26))) == []
    )


def test_a_datetime_given_as_a_day_puts_no_time_in_the_query(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    late_in_new_york = datetime(2026, 11, 26, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    rsps.get(
        AUDIT_URL,
        match=[matchers.query_string_matcher("startDate=2026-11-27&endDate=2026-11-27&size=500")],
        json=page([]),
    )

    list(pc_client(policy(sleeps)).audit_records(late_in_new_york, late_in_new_york))


def test_an_incremental_window_reads_its_days_and_keeps_what_happened_since_its_start(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    since = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)  # the watermark minus the overlap
    until = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # this run's start
    before, at_start, during, undated, after = (
        f"{n}c39d6d5-c70d-4c55-bc02-f620844f3fd1" for n in range(1, 6)
    )
    rsps.get(
        AUDIT_URL,
        match=[matchers.query_string_matcher("startDate=2026-11-25&endDate=2026-11-26&size=500")],
        json=page(
            [
                record(before, "2026-11-25T19:59:59.9999999Z"),  # the day, but before `since`
                record(at_start, "2026-11-25T20:00:00Z"),
                record(during, "2026-11-26T11:59:00.0589308Z"),
                record(undated, None),  # cannot be placed: counted
                record(after, "2026-11-26T12:30:00Z"),  # after the run's start: still a change
            ]
        ),
    )
    client = pc_client(policy(sleeps))

    changed: set[str] = set()
    for first_day, last_day in audit_windows(since, until):
        changed |= changed_customers(client.audit_records(first_day, last_day), since)

    assert changed == {at_start, during, undated, after}


def test_a_long_window_is_cut_into_thirty_day_requests_without_gaps(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    since = datetime(2026, 9, 12, 12, 0, tzinfo=UTC)
    until = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    for query in (
        "startDate=2026-09-12&endDate=2026-10-11",
        "startDate=2026-10-12&endDate=2026-11-10",
        "startDate=2026-11-11&endDate=2026-11-26",
    ):
        rsps.get(
            AUDIT_URL, match=[matchers.query_string_matcher(f"{query}&size=500")], json=page([])
        )
    client = pc_client(policy(sleeps))

    for first_day, last_day in audit_windows(since, until):
        list(client.audit_records(first_day, last_day))


def test_the_documented_429_waits_for_retry_after_then_succeeds(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(SUBSCRIPTIONS_URL, status=429, headers={"Retry-After": "7"}, json=RATE_LIMITED)
    rsps.get(SUBSCRIPTIONS_URL, json=pc_subscriptions(CUSTOMER, PC_SUBSCRIPTION))

    assert len(pc_client(policy(sleeps)).subscriptions(CUSTOMER)) == 1
    assert sleeps == [7.0]


@pytest.mark.parametrize(
    "body",
    [RATE_LIMITED, {"code": 429, "description": RATE_LIMITED["message"], "data": []}],
    ids=["documented-statusCode-message", "code-description"],
)
def test_a_429_is_reported_the_same_in_either_shape(
    rsps: responses.RequestsMock, sleeps: list[float], body: dict[str, Any]
) -> None:
    rsps.get(SUBSCRIPTIONS_URL, status=429, headers={"Retry-After": "200"}, json=body)

    with pytest.raises(ThrottledError) as caught:
        pc_client(policy(sleeps)).subscriptions(CUSTOMER)

    error = caught.value
    assert (error.status, error.code, error.retry_after) == (429, "429", 200.0)
    assert "Rate limit is exceeded. Try again in 7 seconds." in error.detail
