"""Partner Center REST: the client and the emulator against Microsoft's documented examples.

Two tests per documented operation: the client parses the documented answer (`responses`, exact
URLs and headers), and the emulator answers the documented request with the documented status,
headers and body shape. Fixtures and their pages: `fixtures/partner_center.py`; the table of
operation, page and tests: docs/fidelity.md.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from work365_fn.adapters.partner_center import is_no_relationship
from work365_fn.errors import ApiError, ThrottledError
from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.core import Response as SandboxResponse
from work365_fn.sandbox.faults import Limiter, Limits

from ..contract.clients import CORRELATION_ID, TOKEN, pc_client, policy
from .fixtures import partner_center as doc
from .seed import AUDIT_DAY, CUS, NO_RELATIONSHIP, PSUB, Service, token_for
from .shape import assert_shape

PC_HEADERS = {
    "Accept": "application/json",
    "MS-CorrelationId": CORRELATION_ID,
    "Authorization": f"Bearer {TOKEN}",
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
CUSTOMER = doc.CUSTOMER_IDS[0]


class CountingTokens:
    """A token provider that counts how often the client dropped its token."""

    def __init__(self) -> None:
        self.invalidated = 0

    def token(self) -> str:
        return TOKEN

    def invalidate(self) -> None:
        self.invalidated += 1


def _json(response: requests.Response) -> Any:
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    return response.json()


def _error(response: requests.Response, status: int) -> dict[str, Any]:
    """The documented error body: exactly {code, description, data, source}."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = _json(response)
    assert set(body) == doc.ERROR_KEYS, body
    assert isinstance(body["description"], str) and body["description"]
    assert isinstance(body["source"], str)
    assert isinstance(body["data"], list)
    return body


# ==== customers, seek paging with MS-ContinuationToken ==========================================


def test_client_pages_customers_with_the_continuation_token(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    first, last = doc.CUSTOMERS_FIRST_PAGE, doc.CUSTOMERS_LAST_PAGE
    rsps.get(
        first.url,
        match=[matchers.header_matcher(PC_HEADERS)],
        json=first.response_body,
        headers={k: v for k, v in first.response_headers.items() if k != "Content-Type"},
    )
    rsps.get(
        last.url,
        match=[
            matchers.header_matcher({**PC_HEADERS, "MS-ContinuationToken": doc.CONTINUATION_TOKEN})
        ],
        json=last.response_body,
    )

    customers = list(pc_client(policy(sleeps), page_size=40).iter_customers())

    assert [c.id for c in customers] == [*doc.CUSTOMER_IDS, "53eb21cb-6b2d-4ee5-9e92-27dfc927e93c"]
    assert {c.company_name for c in customers} == {"companyName"}
    # The next URL is built from the first (the documented links.next.uri is malformed).
    assert [c.request.url for c in rsps.calls] == [first.url, last.url]
    assert "MS-ContinuationToken" not in rsps.calls[0].request.headers
    ids = [c.request.headers["MS-RequestId"] for c in rsps.calls]
    assert all(GUID.fullmatch(i) for i in ids) and len(set(ids)) == 2


def test_emulator_pages_customers_as_documented(partner_center: Service) -> None:
    ids = {"MS-RequestId": doc.REQUEST_ID, "MS-CorrelationId": doc.CORRELATION_ID}
    pages = [partner_center.get("customers?size=2", **ids)]
    while "next" in pages[-1].json()["links"]:
        nxt = pages[-1].json()["links"]["next"]
        assert_shape(nxt, doc.NEXT_LINK_SHAPE, exact=True)
        (token,) = [h["value"] for h in nxt["headers"] if h["key"] == "MS-ContinuationToken"]
        pages.append(
            partner_center(
                "GET",
                "customers?size=2&seekOperation=Next",
                headers={**ids, "MS-ContinuationToken": token},
            )
        )
        assert len(pages) < 10

    for page in pages:
        assert page.status_code == 200, page.text
        assert page.headers["MS-RequestId"] == doc.REQUEST_ID
        assert page.headers["MS-CorrelationId"] == doc.CORRELATION_ID
        body = _json(page)
        assert_shape(body, doc.PAGE_SHAPE)
        assert body["totalCount"] == len(body["items"])
    assert [len(p.json()["items"]) for p in pages] == [2, 2, 1]
    seen = [c["id"].lower() for p in pages for c in p.json()["items"]]
    assert seen == [c.lower() for c in CUS[1:]]
    assert "next" not in pages[-1].json()["links"]


def test_emulator_refuses_a_next_page_without_a_valid_token(partner_center: Service) -> None:
    response = partner_center(
        "GET",
        "customers?size=2&seekOperation=Next",
        headers={"MS-ContinuationToken": doc.CONTINUATION_TOKEN},  # not one it issued
    )

    _error(response, 400)


# ==== a customer's subscriptions ================================================================


def test_client_reads_a_customers_subscriptions(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    url = doc.SUBSCRIPTIONS.url.replace("{customer-tenant-id}", CUSTOMER)
    rsps.get(
        url,
        match=[matchers.header_matcher(PC_HEADERS), matchers.query_string_matcher(None)],
        json=doc.SUBSCRIPTIONS.response_body,
    )

    legacy, nce = pc_client(policy(sleeps)).subscriptions(CUSTOMER)

    assert (legacy.id, legacy.offer_id, legacy.status) == (
        doc.LEGACY_SUBSCRIPTION["id"],
        "",
        "active",
    )
    assert legacy.creation_date == "2015-11-25T06: 41: 12Z"  # kept as sent, not parsed
    assert (nce.id, nce.offer_id, nce.offer_name, nce.quantity) == (
        doc.NCE_SUBSCRIPTION["id"],
        doc.NCE_SUBSCRIPTION["offerId"],
        "Microsoft 365 Business Basic",
        1,
    )
    assert (nce.billing_type, nce.raw["termDuration"], nce.raw["billingCycle"]) == (
        "license",
        "P1Y",
        "monthly",
    )
    assert {legacy.customer_id, nce.customer_id} == {CUSTOMER}


def test_emulator_serves_a_customers_subscriptions(partner_center: Service) -> None:
    response = partner_center.get(f"customers/{CUS[1]}/subscriptions")

    assert response.status_code == 200, response.text
    body = _json(response)
    assert_shape(
        body,
        {"totalCount": 37, "items": [doc.NCE_SUBSCRIPTION], "attributes": {"objectType": ""}},
    )
    assert body["attributes"]["objectType"] == "Collection"
    assert body["totalCount"] == len(body["items"]) == 2
    assert [i["id"] for i in body["items"]] == [PSUB[6], PSUB[7]]
    assert {i["attributes"]["objectType"] for i in body["items"]} == {"Subscription"}
    assert "next" not in body.get("links", {})  # not paged


# ==== the activity log ==========================================================================


def _records_page(items: list[dict[str, Any]], token: str | None, query: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "totalCount": len(items),
        "items": items,
        "links": {"self": {"uri": f"/auditrecords?{query}", "method": "GET", "headers": []}},
        "attributes": {"objectType": "Collection"},
    }
    if token:
        body["links"]["next"] = {
            "uri": f"/auditrecords?{query}?seekOperation=Next",
            "method": "GET",
            "headers": [{"key": "MS-ContinuationToken", "value": token}],
        }
    return body


def test_client_reads_whole_days_of_the_activity_log(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    query = f"startDate={doc.ONE_DAY}&endDate={doc.ONE_DAY}&size=50"
    first_items = doc.AUDIT_RECORDS.response_body["items"]
    rsps.get(
        f"{doc.PC}/v1/auditrecords",
        match=[matchers.query_string_matcher(query), matchers.header_matcher(PC_HEADERS)],
        json=_records_page(first_items, doc.CONTINUATION_TOKEN, query),
    )
    rsps.get(
        f"{doc.PC}/v1/auditrecords",
        match=[
            matchers.query_string_matcher(f"{query}&seekOperation=Next"),
            matchers.header_matcher({**PC_HEADERS, "MS-ContinuationToken": doc.CONTINUATION_TOKEN}),
        ],
        json=_records_page([doc.ORDER_RECORD], None, query),
    )
    day = date.fromisoformat(doc.ONE_DAY)

    records = list(pc_client(policy(sleeps), page_size=50).audit_records(day, day))

    assert [r["operationType"] for r in records] == [
        "update_customer_user_licenses",
        "create_order",
        "create_order",
    ]


def test_emulator_answers_whole_days_of_the_activity_log(partner_center: Service) -> None:
    day = AUDIT_DAY.isoformat()
    query = f"auditrecords?startDate={day}&endDate={day}&size=2"

    pages = [partner_center.get(query)]
    while "next" in pages[-1].json()["links"]:
        token = pages[-1].json()["links"]["next"]["headers"][0]["value"]
        pages.append(
            partner_center(
                "GET", f"{query}&seekOperation=Next", headers={"MS-ContinuationToken": token}
            )
        )
        assert len(pages) < 10

    for page in pages:
        assert page.status_code == 200, page.text
        assert_shape(_json(page), {**doc.AUDIT_RECORDS.response_body, "items": [doc.RECORD_SHAPE]})
    records = [r for p in pages for r in p.json()["items"]]
    # Early, mid and late on the day, endDate's day included; none of the neighbouring days.
    assert [r["operationDate"][:10] for r in records] == [day] * 3
    assert [r["operationDate"][11:16] for r in records] == ["00:30", "12:00", "23:30"]
    assert {r["attributes"]["objectType"] for r in records} == {"AuditRecord"}


def test_emulator_refuses_a_start_more_than_90_days_back(partner_center: Service) -> None:
    today = datetime.now(UTC).date()
    start, end = today - timedelta(days=doc.AUDIT_LOG_DAYS + 1), today - timedelta(days=85)

    response = partner_center.get(f"auditrecords?startDate={start}&endDate={end}&size=10")

    _error(response, 400)


# ==== 403 with code 20002: no reseller relationship ==============================================


@pytest.mark.parametrize("code", ["20002", 20002], ids=["documented-string", "live-number"])
def test_client_reports_no_reseller_relationship(
    rsps: responses.RequestsMock, sleeps: list[float], code: str | int
) -> None:
    rsps.get(
        doc.NO_RELATIONSHIP.url.replace("{customer-tenant-id}", CUSTOMER),
        status=403,
        json={**doc.NO_RELATIONSHIP.response_body, "code": code},
    )

    with pytest.raises(ApiError) as caught:
        pc_client(policy(sleeps)).subscriptions(CUSTOMER)

    error = caught.value
    assert (error.status, error.code) == (403, "20002")
    assert is_no_relationship(error)
    assert "no commerce relationship" in error.detail
    assert len(rsps.calls) == 1 and sleeps == []


def test_emulator_answers_403_20002_without_a_reseller_relationship(
    partner_center: Service,
) -> None:
    response = partner_center.get(f"customers/{NO_RELATIONSHIP}/subscriptions")

    body = _error(response, 403)
    assert str(body["code"]) == "20002"
    assert "no commerce relationship" in body["description"].lower()


# ==== 401 ========================================================================================


def test_client_refreshes_its_token_once_on_401(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    exchange = doc.UNAUTHORIZED
    for _ in range(2):
        rsps.get(
            exchange.url,
            status=401,
            headers=dict(exchange.response_headers),
            json=exchange.response_body,
        )
    tokens = CountingTokens()

    with pytest.raises(ApiError) as caught:
        list(pc_client(policy(sleeps), tokens=tokens, page_size=40).iter_customers())

    assert (caught.value.status, caught.value.code) == (401, "400")
    assert tokens.invalidated == 1
    assert len(rsps.calls) == 2 and sleeps == []


@pytest.mark.parametrize("case", ["no-token", "dataverse-token"])
def test_emulator_answers_401_as_documented(
    partner_center: Service, sandbox: Sandbox, http: requests.Session, case: str
) -> None:
    headers = {"Accept": "application/json"}
    if case == "dataverse-token":
        headers["Authorization"] = f"Bearer {token_for(sandbox, http, sandbox.url)}"

    response = http.get(partner_center.url("customers?size=2"), headers=headers, timeout=30)

    body = _error(response, 401)
    assert str(body["code"]) == "400"
    assert response.headers["WWW-Authenticate"].startswith("OAuth realm=urn:cpsvc:cpid:")


# ==== 429 ========================================================================================


def test_client_waits_for_retry_after_on_429(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    url = doc.THROTTLED.url.replace("{customer-tenant-id}", CUSTOMER)
    rsps.get(
        url,
        status=429,
        headers={"Retry-After": doc.THROTTLED.response_headers["Retry-After"]},
        json=doc.THROTTLED.response_body,
    )
    rsps.get(url, json=doc.SUBSCRIPTIONS.response_body)

    subscriptions = pc_client(policy(sleeps)).subscriptions(CUSTOMER)

    assert len(subscriptions) == 2
    assert sleeps == [57.0]
    ids = {c.request.headers["MS-RequestId"] for c in rsps.calls}
    assert len(ids) == 1  # the retry of one call keeps its request id


def test_client_reports_the_documented_429(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        doc.THROTTLED.url.replace("{customer-tenant-id}", CUSTOMER),
        status=429,
        headers={"Retry-After": "57"},
        json=doc.THROTTLED.response_body,
    )

    with pytest.raises(ThrottledError) as caught:
        pc_client(policy(sleeps, max_attempts=1)).subscriptions(CUSTOMER)

    error = caught.value
    assert (error.status, error.code, error.retry_after) == (429, "429", 57.0)
    assert "Rate limit is exceeded" in error.detail


def _assert_documented_429(status: int, headers: dict[str, str], body: Any) -> None:
    assert status == 429
    assert re.fullmatch(r"\d+", headers["Retry-After"]), headers
    assert_shape(body, doc.THROTTLED.response_body, exact=True)
    assert body["statusCode"] == 429
    assert body["message"].startswith("Rate limit is exceeded.")


def test_emulator_throttles_with_the_documented_body(
    partner_center: Service, sandbox: Sandbox
) -> None:
    sandbox.faults.add({"service": "partnerCenter", "kind": "429", "retryAfter": 57})

    response = partner_center.get(f"customers/{CUS[1]}/subscriptions")

    assert response.headers["Retry-After"] == "57"
    _assert_documented_429(response.status_code, dict(response.headers), _json(response))


def test_emulator_request_limit_answers_the_documented_429() -> None:
    limiter = Limiter(Limits(partner_center_requests=1), lambda: 1_000.0)
    assert not isinstance(limiter.acquire("partnerCenter"), SandboxResponse)

    answer = limiter.acquire("partnerCenter")

    assert isinstance(answer, SandboxResponse)
    _assert_documented_429(answer.status, dict(answer.headers), json.loads(answer.body))
