"""An incremental run asks the activity log for whole days and keeps, by operationDate, only
what happened since its window's start (the watermark minus the overlap): the emulator answers
days, the end day included, as the strictest reading of Microsoft's pages has it
(https://learn.microsoft.com/partner-center/developer/get-a-record-of-partner-center-activity-by-user)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.conftest import ScenarioBuilder, gid, services_for
from work365_fn.operations.incremental import STATE_RUN_ID, WATERMARK_DOCUMENT
from work365_fn.operations.sync import SyncRequest
from work365_fn.rules.timestamps import format_timestamp


def test_activity_earlier_on_the_windows_first_day_does_not_list_its_customer(
    world: ScenarioBuilder, start: Any
) -> None:
    customers = []
    for n in (1, 2):
        customer = world.customer(n, account_id=world.account(n))
        world.new_subscription(n, customer)
        customers.append(customer)
    yesterday = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=1
    )
    since = yesterday + timedelta(hours=12)  # the window starts mid-day
    activity = [
        {  # the window's first day, an hour before it starts: already seen by the last run
            "customerId": customers[0],
            "operationType": "update_subscription",
            "operationDate": format_timestamp(since - timedelta(hours=1)),
        },
        {
            "customerId": customers[1],
            "operationType": "update_subscription",
            "operationDate": format_timestamp(since + timedelta(hours=1)),
        },
    ]
    box = start(
        world.scenario(partnerCenter={**world.raw["partnerCenter"], "auditRecords": activity})
    )
    services = services_for(box, WORK365_INCREMENTAL_OVERLAP_HOURS="6")
    mark = format_timestamp(since + timedelta(hours=6))
    services.run_store().put(
        STATE_RUN_ID,
        WATERMARK_DOCUMENT,
        {"watermark": mark, "lastRunAt": mark, "lastFullAt": mark, "pendingCustomers": []},
    )

    summary = services.sync(SyncRequest(mode="incremental"))

    assert summary.mode == "incremental"
    assert {r["customerId"] for r in summary.to_json()["subscriptions"]} == {customers[1]}
    # the one customer listed is the one named: no full run kept the names, so one GET customer
    assert box.counts()["partnerCenter"] == {
        "GET auditrecords": 1,
        "GET subscriptions": 1,
        "GET customer": 1,
    }
    assert {r["subscriptionId"] for r in summary.to_json()["subscriptions"]} == {gid("sub", 2)}
    assert {r["customerName"] for r in summary.to_json()["subscriptions"]} == {"Customer 2"}
