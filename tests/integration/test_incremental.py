"""Incremental runs against the sandbox: the watermark, the activity log, and request counts that
prove an incremental run lists only the customers that changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.conftest import (
    ScenarioBuilder,
    by_subscription,
    contract_of,
    gid,
    services_for,
)
from work365_fn.composition import Services
from work365_fn.operations.incremental import STATE_RUN_ID, WATERMARK_DOCUMENT
from work365_fn.operations.sync import SyncRequest
from work365_fn.rules.summary import RunSummary
from work365_fn.rules.timestamps import format_timestamp
from work365_fn.sandbox import Sandbox

NOW = datetime.now(UTC)


def three_customers(world: ScenarioBuilder) -> dict[str, str]:
    """Three mapped customers, one new unassigned subscription each."""
    ids = {}
    for n in (1, 2, 3):
        account = world.account(n)
        customer = world.customer(n, account_id=account)
        world.new_subscription(n, customer)
        ids[f"customer{n}"] = customer
    return ids


def run(services: Services, mode: str = "auto", **request: Any) -> RunSummary:
    return services.sync(SyncRequest(mode=mode, **request))


def watermark(services: Services) -> dict[str, Any] | None:
    return services.run_store().get(STATE_RUN_ID, WATERMARK_DOCUMENT)


def new_order(box: Sandbox, services: Services, n: int, customer: str, account: str) -> str:
    """What happens between two runs: an order in Partner Center, then the provider sync makes
    its Dataverse record (through the Web API, like the real one)."""
    sub = gid("sub", n)
    box.partner_center.add_subscription(customer, {"id": sub, "offerId": "CFQ7TTC0LFLX"})
    add_record(services, n, sub, account)
    return sub


def add_record(services: Services, n: int, sub: str, account: str) -> None:
    bindings = services.bindings()
    services.dataverse.create_only(
        "work365_subscriptions",
        gid("rec", n),
        {
            "work365_providersubscriptionid": sub,
            "work365_name": f"Record {n}",
            f"{bindings.account_nav}@odata.bind": f"/accounts({account})",
        },
    )


def test_a_first_run_is_full_and_writes_the_watermark(world: ScenarioBuilder, start: Any) -> None:
    three_customers(world)
    box = start(world.scenario())
    services = services_for(box)
    assert watermark(services) is None

    data = run(services).to_json()

    assert data["mode"] == "full"
    assert data["counts"]["assigned"] == 3
    mark = watermark(services)
    assert mark is not None
    assert mark["watermark"] == mark["lastFullAt"] == mark["lastRunAt"] == data["startedAt"]
    assert mark["pendingCustomers"] == []
    assert box.counts()["partnerCenter"].get("GET auditrecords", 0) == 0


def test_an_incremental_run_lists_only_the_customer_with_a_new_subscription(
    world: ScenarioBuilder, start: Any
) -> None:
    ids = three_customers(world)
    box = start(world.scenario())
    services = services_for(box)
    full = run(services).to_json()
    new = new_order(box, services, 9, ids["customer2"], gid("acc", 2))
    box.reset_counts()

    summary = run(services)
    data = summary.to_json()

    assert data["mode"] == "incremental"
    pc = box.counts()["partnerCenter"]
    assert pc == {"GET auditrecords": 1, "GET subscriptions": 1}  # no customer listing
    rows = by_subscription(summary)
    assert set(rows) == {gid("sub", 2), new}
    assert rows[new]["reason"] == "default-contract"
    assert rows[gid("sub", 2)]["reason"] == "already-assigned"  # the first run's write
    assert contract_of(box, gid("rec", 9)) == gid("con", 20)
    assert data["counts"]["customers"] == 1
    dv = box.counts()["dataverse"]
    assert dv["POST $batch"] == 1
    # records: the new-unassigned query, then one In chunk for the customer's subscriptions
    assert dv["GET work365_subscriptions"] == 2
    mark = watermark(services)
    assert mark is not None
    assert mark["watermark"] == data["startedAt"]
    assert mark["lastFullAt"] == full["startedAt"]  # still the first (full) run's


def test_a_record_made_after_its_order_brings_its_customer_in(
    world: ScenarioBuilder, start: Any
) -> None:
    """The order was seen by an earlier run (not-synced then); the provider sync made the record
    hours later: no new activity, but the new unassigned record names the customer."""
    ids = three_customers(world)
    late = world.pc_subscription(8, ids["customer3"])  # ordered long ago, no record yet
    box = start(world.scenario())
    services = services_for(box)
    first = by_subscription(run(services))
    assert first[late]["reason"] == "not-synced"
    add_record(services, 8, late, gid("acc", 3))
    box.reset_counts()

    summary = run(services)

    assert summary.mode == "incremental"
    assert by_subscription(summary)[late]["reason"] == "default-contract"
    assert box.counts()["partnerCenter"] == {"GET auditrecords": 1, "GET subscriptions": 1}
    assert contract_of(box, gid("rec", 8)) == gid("con", 30)


def test_scenario_activity_records_name_customers_too(world: ScenarioBuilder, start: Any) -> None:
    ids = three_customers(world)
    box = start(world.scenario())
    services = services_for(box)
    run(services)
    activity = [
        {
            "customerId": ids["customer1"],
            "operationType": "update_subscription",
            "operationDate": format_timestamp(datetime.now(UTC)),
        },
        {  # a licence assignment cannot change subscriptions
            "customerId": ids["customer3"],
            "resourceType": "license",
            "operationType": "update_customer_user_licenses",
            "operationDate": format_timestamp(datetime.now(UTC)),
        },
    ]
    box.partner_center.seed(
        world.scenario(partnerCenter={**world.raw["partnerCenter"], "auditRecords": activity})
    )

    summary = run(services)

    assert summary.mode == "incremental"
    assert {r["customerId"] for r in summary.to_json()["subscriptions"]} == {ids["customer1"]}


def test_no_watermark_makes_even_an_incremental_request_full(
    world: ScenarioBuilder, start: Any
) -> None:
    three_customers(world)
    box = start(world.scenario())
    summary = run(services_for(box), mode="incremental")
    assert summary.mode == "full"
    assert box.counts()["partnerCenter"]["GET customers"] == 1


def test_a_watermark_older_than_the_activity_log_forces_a_full_run(
    world: ScenarioBuilder, start: Any
) -> None:
    three_customers(world)
    box = start(world.scenario())
    services = services_for(box)
    old = format_timestamp(datetime.now(UTC) - timedelta(days=91))
    services.run_store().put(
        STATE_RUN_ID,
        WATERMARK_DOCUMENT,
        {"watermark": old, "lastRunAt": old, "lastFullAt": old, "pendingCustomers": []},
    )

    summary = run(services, mode="incremental")

    assert summary.mode == "full"
    assert box.counts()["partnerCenter"].get("GET auditrecords", 0) == 0
    assert box.counts()["partnerCenter"]["GET customers"] == 1


def test_auto_runs_a_full_reconciliation_when_one_is_due(
    world: ScenarioBuilder, start: Any
) -> None:
    three_customers(world)
    box = start(world.scenario())
    services = services_for(box)
    recent = format_timestamp(datetime.now(UTC) - timedelta(hours=1))
    stale = format_timestamp(datetime.now(UTC) - timedelta(hours=25))
    store = services.run_store()
    store.put(
        STATE_RUN_ID,
        WATERMARK_DOCUMENT,
        {"watermark": recent, "lastRunAt": recent, "lastFullAt": stale},
    )

    assert run(services).mode == "full"  # last full run 25 h ago, default every 24 h
    assert run(services).mode == "incremental"
    assert run(services_for(box, WORK365_FULL_SYNC_EVERY_HOURS="1"), mode="full").mode == "full"


def test_an_unreadable_watermark_means_a_full_run(world: ScenarioBuilder, start: Any) -> None:
    three_customers(world)
    box = start(world.scenario())
    services = services_for(box)
    services.run_store().put(STATE_RUN_ID, WATERMARK_DOCUMENT, {"watermark": "yesterday"})
    assert run(services, mode="incremental").mode == "full"
    mark = watermark(services)
    assert mark is not None and mark["watermark"] != "yesterday"


def test_dry_and_scoped_runs_leave_the_watermark_alone(world: ScenarioBuilder, start: Any) -> None:
    ids = three_customers(world)
    box = start(world.scenario())
    services = services_for(box)
    run(services, dry_run=True)
    assert watermark(services) is None
    box.reset_counts()
    scoped = run(services, mode="full", customer_ids=(ids["customer1"],))
    assert scoped.mode == "full"
    assert watermark(services) is None
    # a scoped run reads only that customer's rows, and its name (no full run kept the names)
    assert box.counts()["partnerCenter"] == {"GET subscriptions": 1, "GET customer": 1}
    assert box.counts()["dataverse"]["GET work365_provideraccounts"] == 1  # In (customer ids)


def test_a_customer_that_failed_is_taken_again_by_the_next_incremental_run(
    world: ScenarioBuilder, start: Any
) -> None:
    ids = three_customers(world)
    world.customer(4, account_id=gid("acc", 1), relationship=False)  # 403 20002, every run
    box = start(world.scenario())
    services = services_for(box, WORK365_MAX_ATTEMPTS="1")
    box.faults.add(
        {"service": "partnerCenter", "path": ids["customer2"], "kind": "500", "every": 1}
    )
    first = run(services)
    assert first.status == "partial"
    assert {e["customerId"] for e in first.errors} == {ids["customer2"], gid("cus", 4)}
    mark = watermark(services)
    assert mark is not None and mark["pendingCustomers"] == [ids["customer2"]]
    box.faults.clear()
    box.reset_counts()

    again = run(services)

    assert again.mode == "incremental"
    assert by_subscription(again)[gid("sub", 2)]["reason"] == "default-contract"
    assert box.counts()["partnerCenter"] == {"GET auditrecords": 1, "GET subscriptions": 1}
    mark = watermark(services)
    assert mark is not None and mark["pendingCustomers"] == []


def test_an_incremental_run_with_nothing_changed_reads_almost_nothing(
    world: ScenarioBuilder, start: Any
) -> None:
    three_customers(world)
    box = start(world.scenario())
    services = services_for(box)
    run(services)
    box.reset_counts()

    summary = run(services)

    assert (summary.mode, summary.status, summary.decisions) == ("incremental", "succeeded", [])
    assert box.counts()["partnerCenter"] == {"GET auditrecords": 1}
    dv = box.counts()["dataverse"]
    assert "GET work365_provideraccounts" not in dv
    assert "GET work365_billingcontracts" not in dv
    assert dv["GET work365_subscriptions"] == 1  # the new-unassigned-records query
