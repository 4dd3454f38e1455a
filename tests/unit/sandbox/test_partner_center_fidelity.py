"""The Partner Center emulator as strict as Microsoft's documentation, and no stricter than it
(issue 11, defects 3, 4 and 6).

- Activity log dates: yyyy-mm-dd days, endDate included, the strictest reading of
  https://learn.microsoft.com/partner-center/developer/get-a-record-of-partner-center-activity-by-user
  and of the one-day query of
  https://learn.microsoft.com/partner-center/developer/api-throttling-guidance
- Throttling: `{"statusCode": 429, "message": "Rate limit is exceeded. Try again in N
  seconds."}` with Retry-After (the same throttling page), unlike its other errors.
- `size`: documented without a range
  (https://learn.microsoft.com/partner-center/developer/get-a-list-of-customers), so no range
  is invented.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from work365_fn.sandbox.core import Headers, Request, Response, TokenIssuer
from work365_fn.sandbox.faults import Limiter, Limits, Slot, parse_rule, respond
from work365_fn.sandbox.partner_center import PC_AUDIENCE, PartnerCenterEmulator
from work365_fn.sandbox.scenario import parse_scenario

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CUSTOMERS = [f"c0000000-0000-4000-8000-00000000000{n}" for n in range(1, 4)]
PC_ERROR_FIELDS = {"code", "description", "data", "source"}


def activity(*dates: str) -> list[dict[str, str]]:
    """One record per date, the customers in turn."""
    return [
        {"customerId": CUSTOMERS[n % 3], "operationType": "update_subscription", "operationDate": d}
        for n, d in enumerate(dates)
    ]


@pytest.fixture
def emulator(tmp_path: Path) -> tuple[PartnerCenterEmulator, str]:
    tokens = TokenIssuer(b"k" * 32, clock=NOW.timestamp)
    pc = PartnerCenterEmulator(str(tmp_path / "pc.sqlite"), tokens, clock=lambda: NOW)
    token, _ = tokens.issue(PC_AUDIENCE, "client")
    return pc, token


def seed(pc: PartnerCenterEmulator, records: list[dict[str, str]]) -> None:
    customers = [{"id": c, "companyName": f"Customer {c[-1]}"} for c in CUSTOMERS]
    pc.seed(parse_scenario({"partnerCenter": {"customers": customers, "auditRecords": records}}))


def get(
    pc: PartnerCenterEmulator, token: str, path: str, params: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    headers = Headers({"Authorization": f"Bearer {token}"})
    response = pc.handle(Request("GET", path, urlencode(params), headers))
    return response.status, json.loads(response.body)


def audit(emulator: tuple[PartnerCenterEmulator, str], **params: str) -> tuple[int, dict[str, Any]]:
    pc, token = emulator
    return get(pc, token, "/v1/auditrecords", params)


def dates_of(body: dict[str, Any]) -> list[str]:
    return [item["operationDate"] for item in body["items"]]


# --- defect 3: the activity log takes days, the end day included -----------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"startDate": "2026-11-25T00:00:00Z"},
        {"startDate": "2026-11-25", "endDate": "2026-11-26T10:30:00Z"},
        {"startDate": "6/1/2017 12:00:00 AM"},  # the REST reference's own example form
        {"startDate": "20261125"},
        {"startDate": "2026-11-31"},
    ],
)
def test_a_date_with_a_time_or_another_form_is_refused(
    emulator: tuple[PartnerCenterEmulator, str], params: dict[str, str]
) -> None:
    status, body = audit(emulator, **params)
    assert status == 400
    assert set(body) == PC_ERROR_FIELDS
    assert "yyyy-mm-dd" in body["description"]


def test_one_day_is_asked_with_the_same_start_and_end(
    emulator: tuple[PartnerCenterEmulator, str],
) -> None:
    seed(emulator[0], activity("2026-11-23T12:00:00Z", "2026-11-24T12:00:00Z"))
    status, body = audit(emulator, startDate="2026-11-24", endDate="2026-11-24")
    assert status == 200
    assert dates_of(body) == ["2026-11-24T12:00:00Z"]


def test_the_days_run_from_the_start_days_first_moment_to_the_end_days_last(
    emulator: tuple[PartnerCenterEmulator, str],
) -> None:
    seed(
        emulator[0],
        activity(
            "2026-11-23T23:59:59.9999999Z",  # the day before: out
            "2026-11-24T00:00:00Z",
            "2026-11-25T23:59:59.9999999Z",
            "2026-11-26T00:00:00Z",  # the day after: out
        ),
    )
    _, body = audit(emulator, startDate="2026-11-24", endDate="2026-11-25")
    assert dates_of(body) == ["2026-11-24T00:00:00Z", "2026-11-25T23:59:59.9999999Z"]


def test_without_dates_the_last_thirty_days_through_today_are_served(
    emulator: tuple[PartnerCenterEmulator, str],
) -> None:
    seed(
        emulator[0],
        activity("2026-10-26T23:00:00Z", "2026-10-27T00:00:00Z", "2026-11-26T12:00:00Z"),
    )
    status, body = audit(emulator)
    assert status == 200
    assert dates_of(body) == ["2026-10-27T00:00:00Z", "2026-11-26T12:00:00Z"]
    assert body["links"]["self"]["uri"] == (
        "/auditrecords?startDate=2026-10-27&endDate=2026-11-26&size=500"
    )


@pytest.mark.parametrize(
    ("start", "end", "status"),
    [
        ("2026-10-27", "2026-11-26", 200),  # as long as the documented default window
        ("2026-10-26", "2026-11-26", 400),
        ("2026-11-26", "2026-11-25", 400),
        # "a start date greater than 90 days prior to the current date", read strictly: its
        # midnight against the clock (12:00), so 90 days back is already too far
        ("2026-08-29", "2026-09-01", 200),
        ("2026-08-28", "2026-09-01", 400),
    ],
)
def test_the_documented_limits_hold_for_days(
    emulator: tuple[PartnerCenterEmulator, str], start: str, end: str, status: int
) -> None:
    assert audit(emulator, startDate=start, endDate=end)[0] == status


# --- defect 4: a 429 is shaped as Partner Center documents it ---------------------------------


def test_a_partner_center_429_fault_has_the_documented_shape() -> None:
    response = respond(
        parse_rule({"service": "partnerCenter", "kind": 429, "retryAfter": 2.5}), "partnerCenter"
    )
    assert response.status == 429
    assert response.headers["Retry-After"] == "3"
    assert json.loads(response.body) == {
        "statusCode": 429,
        "message": "Rate limit is exceeded. Try again in 3 seconds.",
    }


def test_the_partner_center_rate_limit_answers_the_documented_shape() -> None:
    limiter = Limiter(Limits(partner_center_requests=1, partner_center_window_seconds=30))
    assert isinstance(limiter.acquire("partnerCenter"), Slot)
    refused = limiter.acquire("partnerCenter")
    assert isinstance(refused, Response)
    assert set(json.loads(refused.body)) == {"statusCode", "message"}
    assert "Retry-After" in refused.headers


@pytest.mark.parametrize("kind", ["500", "503", "401"])
def test_other_partner_center_faults_keep_the_error_shape(kind: str) -> None:
    response = respond(parse_rule({"kind": kind}), "partnerCenter")
    assert set(json.loads(response.body)) == PC_ERROR_FIELDS


# --- defect 6: no size limit the documentation does not state ----------------------------------


@pytest.mark.parametrize("size", ["501", "1000", "5000", str(2**31 - 1)])
def test_a_page_size_beyond_500_is_served(
    emulator: tuple[PartnerCenterEmulator, str], size: str
) -> None:
    pc, token = emulator
    seed(pc, [])
    for path in ("/v1/customers", "/v1/auditrecords"):
        status, body = get(pc, token, path, {"size": size})
        assert status == 200
        assert "next" not in body["links"]
    assert get(pc, token, "/v1/customers", {"size": size})[1]["totalCount"] == len(CUSTOMERS)


@pytest.mark.parametrize("size", ["0", "-5", "ten", "1.5", "", str(2**31)])
def test_a_size_that_is_not_a_positive_integer_is_refused(
    emulator: tuple[PartnerCenterEmulator, str], size: str
) -> None:
    pc, token = emulator
    status, body = get(pc, token, "/v1/customers", {"size": size})
    assert status == 400
    assert "size" in body["description"]
