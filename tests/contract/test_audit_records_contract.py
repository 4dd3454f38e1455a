"""Partner Center's activity log (`GET /v1/auditrecords`) as the client reads it: the window in
the query, seek paging like the customers, the documented record shape ("Get a record of Partner
Center activity", https://learn.microsoft.com/partner-center/developer/get-a-record-of-partner-center-activity-by-user)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import responses
from responses import matchers

from work365_fn.operations.incremental import changed_customers

from .clients import CORRELATION_ID, TOKEN, pc_client, policy
from .shapes import PC

AUDIT_URL = f"{PC}/v1/auditrecords"
START = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
END = datetime(2026, 11, 26, 10, 30, tzinfo=UTC)
QUERY = "startDate=2026-11-26&endDate=2026-11-26&size=2"  # whole days, the end day included
TOKEN_1 = "c2tpcFRva2VuPTI="

# The first item of the documented response example (resourceNewValue shortened).
ORDER_RECORD: dict[str, Any] = {
    "partnerId": "3b33e682-00c3-41ee-9dd2-a548adf56438",
    "customerId": "0c39d6d5-c70d-4c55-bc02-f620844f3fd1",
    "customerName": "Relecloud",
    "userPrincipalName": "admin@domain.onmicrosoft.com",
    "resourceType": "order",
    "resourceNewValue": '{"Id":"d51a052e-043c-4a2a-aa37-2bb938cef6c1"}',
    "operationType": "create_order",
    "operationDate": "2017-06-15T22:56:05.0589308Z",
    "operationStatus": "succeeded",
    "customizedData": [{"key": "OrderId", "value": "d51a052e-043c-4a2a-aa37-2bb938cef6c1"}],
    "attributes": {"objectType": "AuditRecord"},
}
# Its second item: a licence assignment, which cannot change subscriptions.
LICENSE_RECORD: dict[str, Any] = {
    **ORDER_RECORD,
    "customerId": "7b26b357-9ca3-48b8-a58e-4febe2662a5d",
    "resourceType": "license",
    "operationType": "update_customer_user_licenses",
}


def page(items: list[dict[str, Any]], continuation: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "totalCount": len(items),
        "items": items,
        "links": {"self": {"uri": f"/auditrecords?{QUERY}", "method": "GET", "headers": []}},
        "attributes": {"objectType": "Collection"},
    }
    if continuation:
        body["links"]["next"] = {
            "uri": f"/auditrecords?{QUERY}&seekOperation=Next",
            "method": "GET",
            "headers": [{"key": "MS-ContinuationToken", "value": continuation}],
        }
        body["continuationToken"] = continuation
    return body


def test_the_window_is_read_page_by_page(rsps: responses.RequestsMock, sleeps: list[float]) -> None:
    headers = {
        "Accept": "application/json",
        "MS-CorrelationId": CORRELATION_ID,
        "Authorization": f"Bearer {TOKEN}",
    }
    rsps.get(
        AUDIT_URL,
        match=[matchers.query_string_matcher(QUERY), matchers.header_matcher(headers)],
        json=page([ORDER_RECORD, LICENSE_RECORD], TOKEN_1),
    )
    rsps.get(
        AUDIT_URL,
        match=[
            matchers.query_string_matcher(f"{QUERY}&seekOperation=Next"),
            matchers.header_matcher({**headers, "MS-ContinuationToken": TOKEN_1}),
        ],
        json=page([{**ORDER_RECORD, "customerId": "53eb21cb-6b2d-4ee5-9e92-27dfc927e93c"}]),
    )

    records = list(pc_client(policy(sleeps), page_size=2).audit_records(START.date(), END.date()))

    assert len(records) == 3
    assert changed_customers(records) == {
        "0c39d6d5-c70d-4c55-bc02-f620844f3fd1",
        "53eb21cb-6b2d-4ee5-9e92-27dfc927e93c",
    }
