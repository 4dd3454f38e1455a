"""The Partner Center emulator's activity log: records derived from the scenario, the documented
windows (whole days, 90 days back, 30 days per request) and seek paging like the customers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from work365_fn.rules.timestamps import format_timestamp
from work365_fn.sandbox.core import Headers, Request, TokenIssuer
from work365_fn.sandbox.partner_center import PC_AUDIENCE, PartnerCenterEmulator
from work365_fn.sandbox.scenario import ScenarioError, parse_scenario

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
C1 = "c0000000-0000-4000-8000-000000000001"
C2 = "c0000000-0000-4000-8000-000000000002"


def scenario(**pc: Any) -> Any:
    return parse_scenario(
        {
            "partnerCenter": {
                "customers": [
                    {
                        "id": C1,
                        "companyName": "Contoso",
                        "subscriptions": [
                            {
                                "id": f"5ab00000-0000-4000-8000-00000000000{n}",
                                "creationDate": format_timestamp(NOW - timedelta(days=n)),
                            }
                            for n in range(1, 4)
                        ]
                        + [{"id": "5ab00000-0000-4000-8000-000000000009"}],  # no date: no record
                    },
                    {"id": C2, "companyName": "Fabrikam", "subscriptions": []},
                ],
                **pc,
            }
        }
    )


@pytest.fixture
def emulator(tmp_path: Path) -> tuple[PartnerCenterEmulator, str]:
    tokens = TokenIssuer(b"k" * 32, clock=NOW.timestamp)
    pc = PartnerCenterEmulator(str(tmp_path / "pc.sqlite"), tokens, clock=lambda: NOW)
    pc.seed(scenario())
    token, _ = tokens.issue(PC_AUDIENCE, "client")
    return pc, token


def get(
    pc: PartnerCenterEmulator, token: str, params: dict[str, str], continuation: str = ""
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    if continuation:
        headers["MS-ContinuationToken"] = continuation
    request = Request("GET", "/v1/auditrecords", urlencode(params), Headers(headers))
    response = pc.handle(request)
    return response.status, json.loads(response.body)


def window(days: int, end_days: int = 0, **extra: str) -> dict[str, str]:
    """Whole days, yyyy-mm-dd, as the activity log's REST reference types them."""
    return {
        "startDate": (NOW - timedelta(days=days)).date().isoformat(),
        "endDate": (NOW - timedelta(days=end_days)).date().isoformat(),
        **extra,
    }


def test_each_dated_subscription_has_its_create_order_record(
    emulator: tuple[PartnerCenterEmulator, str],
) -> None:
    pc, token = emulator
    status, body = get(pc, token, window(30))
    assert status == 200
    items = body["items"]
    assert [i["operationType"] for i in items] == ["create_order"] * 3
    assert [i["operationDate"] for i in items] == sorted(i["operationDate"] for i in items)
    assert {i["customerId"] for i in items} == {C1}
    assert items[0]["resourceType"] == "order"
    assert items[0]["attributes"] == {"objectType": "AuditRecord"}
    order = json.loads(items[-1]["resourceNewValue"])
    assert order["LineItems"][0]["SubscriptionId"] == "5ab00000-0000-4000-8000-000000000001"


def test_the_window_selects_by_operation_date(
    emulator: tuple[PartnerCenterEmulator, str],
) -> None:
    pc, token = emulator
    _, body = get(pc, token, window(2, 2))  # one day: its records, the end day included
    assert [i["operationDate"] for i in body["items"]] == [
        format_timestamp(NOW - timedelta(days=2))
    ]


def test_records_are_seek_paged_like_the_customers(
    emulator: tuple[PartnerCenterEmulator, str],
) -> None:
    pc, token = emulator
    status, first = get(pc, token, window(30, size="2"))
    assert (status, first["totalCount"]) == (200, 2)
    nxt = first["links"]["next"]
    assert nxt["uri"].endswith("&seekOperation=Next")
    assert nxt["headers"][0]["key"] == "MS-ContinuationToken"
    status, second = get(
        pc, token, window(30, size="2", seekOperation="Next"), nxt["headers"][0]["value"]
    )
    assert (status, second["totalCount"]) == (200, 1)
    assert "next" not in second["links"]


@pytest.mark.parametrize(
    ("params", "why"),
    [
        (window(91, 80), "90 days"),
        (window(31), "30 days"),
        (window(1, 2), "30 days"),
        ({"startDate": "last tuesday"}, "startDate"),
        (window(1, size="0"), "size"),
    ],
)
def test_requests_outside_the_documented_limits_are_refused(
    emulator: tuple[PartnerCenterEmulator, str], params: dict[str, str], why: str
) -> None:
    pc, token = emulator
    status, body = get(pc, token, params)
    assert status == 400
    assert why in body["description"]


def test_new_orders_and_scenario_records_are_served(
    emulator: tuple[PartnerCenterEmulator, str],
) -> None:
    pc, token = emulator
    pc.seed(
        scenario(
            auditRecords=[
                {
                    "customerId": C2,
                    "operationType": "update_subscription",
                    "operationDate": format_timestamp(NOW - timedelta(hours=1)),
                }
            ]
        )
    )
    pc.add_subscription(C2, {"id": "5ab00000-0000-4000-8000-000000000010"})
    _, body = get(pc, token, window(0))
    assert [(i["customerId"], i["operationType"]) for i in body["items"]] == [
        (C2, "update_subscription"),
        (C2, "create_order"),
    ]
    assert body["items"][0]["resourceType"] == "subscription"


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"operationType": "create_order", "operationDate": "2026-11-26T00:00:00Z"}, "customerId"),
        ({"customerId": C1, "operationType": "create_order"}, "operationDate"),
        ({"customerId": C1, "operationDate": "2026-11-26T00:00:00Z"}, "operationType"),
        (
            {
                "customerId": C1,
                "operationType": "x",
                "operationDate": "2026-11-26T00:00:00Z",
                "when": "now",
            },
            "when",
        ),
    ],
)
def test_scenario_activity_records_are_validated(record: dict[str, Any], field: str) -> None:
    with pytest.raises(ScenarioError, match=rf"auditRecords\[0\]\.{field}"):
        scenario(auditRecords=[record])
