"""Requests a run costs, counted by the sandbox: constant Dataverse reads for a full run, scoped
reads for a scoped run, metadata once per worker."""

from __future__ import annotations

import math
from typing import Any

from tests.integration.conftest import ScenarioBuilder, gid, services_for, sync
from work365_fn.operations.sync import SyncRequest


def tenant(world: ScenarioBuilder, customers: int, subscriptions_each: int) -> list[str]:
    ids = []
    n = 0
    for c in range(1, customers + 1):
        customer = world.customer(c, account_id=world.account(c))
        ids.append(customer)
        for _ in range(subscriptions_each):
            n += 1
            world.new_subscription(n, customer)
    return ids


def dataverse_reads(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    return {k: v for k, v in counts["dataverse"].items() if k.startswith("GET ")}


def test_a_full_run_reads_dataverse_in_the_same_queries_whatever_the_size(
    world: ScenarioBuilder, start: Any
) -> None:
    small = ScenarioBuilder()
    tenant(small, 2, 1)
    tenant(world, 6, 7)
    small_box = start(small.scenario())
    big_box = start(world.scenario())

    small_data = sync(small_box).to_json()
    big_data = sync(big_box).to_json()

    assert (small_data["counts"]["assigned"], big_data["counts"]["assigned"]) == (2, 42)
    assert dataverse_reads(small_box.counts()) == dataverse_reads(big_box.counts())
    assert big_box.counts()["partnerCenter"] == {"GET customers": 1, "GET subscriptions": 6}
    # the names of the Accounts and contracts come with those reads (formatted values)
    assert "GET accounts" not in dataverse_reads(big_box.counts())
    assert {r["accountName"] for r in big_data["subscriptions"]} == {
        f"Account {n}" for n in range(1, 7)
    }


def test_the_names_come_with_the_reads_without_a_request_per_account(
    world: ScenarioBuilder, start: Any
) -> None:
    tenant(world, 150, 1)
    box = start(world.scenario())
    data = sync(box, dry_run=True).to_json()
    assert {r["accountName"] for r in data["subscriptions"]} == {
        f"Account {n}" for n in range(1, 151)
    }
    assert {r["billingContractName"] for r in data["subscriptions"]} != {None}
    assert "GET accounts" not in box.counts()["dataverse"]


def test_page_size_alone_adds_record_pages(world: ScenarioBuilder, start: Any) -> None:
    tenant(world, 3, 5)
    box = start(world.scenario())
    sync(box, WORK365_DATAVERSE_PAGE_SIZE="4")
    assert box.counts()["dataverse"]["GET work365_subscriptions"] == math.ceil(15 / 4)


def test_metadata_is_read_once_per_worker(world: ScenarioBuilder, start: Any) -> None:
    tenant(world, 2, 2)
    box = start(world.scenario())
    services = services_for(box)
    services.sync(SyncRequest())
    scoped = services.sync(SyncRequest(customer_ids=(gid("cus", 1),)))
    assert scoped.status == "succeeded"
    assert box.counts()["dataverse"]["GET EntityDefinitions"] == 3


def test_a_scoped_run_reads_only_that_customers_rows_in_chunks(
    world: ScenarioBuilder, start: Any
) -> None:
    customers = tenant(world, 2, 1)
    extra = [world.new_subscription(100 + i, customers[0]) for i in range(150)]
    box = start(world.scenario())

    data = sync(box, customers=(customers[0],)).to_json()

    assert data["counts"]["subscriptions"] == 151
    assert data["counts"]["assigned"] == 151
    assert {r["subscriptionId"] for r in data["subscriptions"]} >= set(extra)
    dv = box.counts()["dataverse"]
    assert dv["GET work365_subscriptions"] == 2  # 151 ids, 100 per In query
    assert dv["GET work365_provideraccounts"] == 1
    assert dv["GET work365_billingcontracts"] == 1
    assert dv["POST $batch"] == 2
    assert "GET accounts" not in dv  # the Account's name came with the reads
    # no full run kept the customer names yet: one call for the one customer's name
    assert box.counts()["partnerCenter"] == {"GET subscriptions": 1, "GET customer": 1}
    assert {r["customerName"] for r in data["subscriptions"]} == {"Customer 1"}


def test_a_scoped_run_after_a_full_run_names_its_customers_without_a_request(
    world: ScenarioBuilder, start: Any
) -> None:
    customers = tenant(world, 3, 1)
    box = start(world.scenario())
    sync(box)  # lists every customer and keeps their names
    box.reset_counts()

    data = sync(box, customers=(customers[1],), dry_run=True).to_json()

    assert {r["customerName"] for r in data["subscriptions"]} == {"Customer 2"}
    assert box.counts()["partnerCenter"] == {"GET subscriptions": 1}
