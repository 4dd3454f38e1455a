"""Records decided alone (POST /api/records, the Dataverse webhook) are named as the sync names
them: the Account and contract names from the Dataverse reads' formatted values, the customers'
names from the map the last full run kept, and the same fix sentences. And when an upstream
stops the request, the records left unread are labelled with the service that failed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import ScenarioBuilder, gid
from work365_fn.composition import Services
from work365_fn.operations.records import NOT_STARTED, RecordsRequest
from work365_fn.operations.sync import SyncRequest
from work365_fn.sandbox import Sandbox
from work365_fn.settings import Settings

Json = dict[str, Any]
NAMES = ("customerName", "accountName", "billingContractName", "subscriptionName")


def a_tenant() -> tuple[ScenarioBuilder, list[str]]:
    """One record per reason an admin reads a fix for, plus one that lands."""
    world = ScenarioBuilder()
    records = []
    lands = world.account(1, name="Contoso Ltd")
    customer = world.customer(1, account_id=lands)
    world.new_subscription(1, customer, account_id=lands)
    records.append(gid("rec", 1))
    two = world.account(2, default_contracts=2, name="Fabrikam Inc")
    customer = world.customer(2, account_id=two)
    world.new_subscription(2, customer, account_id=two)
    records.append(gid("rec", 2))
    none = world.account(3, default_contracts=0, name="Northwind Traders")
    customer = world.customer(3, account_id=none)
    world.new_subscription(3, customer, account_id=none)
    records.append(gid("rec", 3))
    first, second = world.account(4, name="Litware East"), world.account(5, name="Litware West")
    customer = world.customer(4, account_id=first)
    world.raw["providerAccounts"].append(
        {"id": gid("pa", 45), "customerId": customer, "accountId": second, "name": "PA 45"}
    )
    world.new_subscription(4, customer, account_id=first)
    records.append(gid("rec", 4))
    return world, records


def by_subscription(summary: Json) -> dict[str, Json]:
    return {row["subscriptionId"]: row for row in summary["subscriptions"]}


def test_a_records_answer_names_things_as_the_sync_does(
    start: Callable[..., Sandbox], clean_env: None
) -> None:
    world, records = a_tenant()
    box = start(world.scenario())
    services = Services.build(Settings.from_env({}, overrides=box.env))
    # The full timer run (dry): its names come from the customer listing and the reads.
    timer = by_subscription(services.sync(SyncRequest(dry_run=True)).to_json())
    # A full run that writes keeps the customers' names for the runs that do not list them.
    services.sync(SyncRequest())

    alone = by_subscription(
        services.records(RecordsRequest(tuple(records), dry_run=True)).summary.to_json()
    )

    assert set(alone) == set(timer)
    for sub, row in alone.items():
        expected = timer[sub]
        assert {k: row[k] for k in NAMES} == {k: expected[k] for k in NAMES}, sub
        assert row["accountName"] and row["customerName"], row
        if row["reason"] == expected["reason"]:  # the one that landed is now already-assigned
            assert row["fix"] == expected["fix"], sub
    reasons = {r["reason"] for r in alone.values()}
    assert reasons == {
        "already-assigned",
        "multiple-default-contracts",
        "no-default-contract",
        "ambiguous-provider-account",
    }
    ambiguous = next(r for r in alone.values() if r["reason"] == "ambiguous-provider-account")
    assert "Litware East" in ambiguous["fix"] and "Litware West" in ambiguous["fix"]


def test_without_a_full_run_the_customer_name_is_null_and_no_extra_request_is_made(
    start: Callable[..., Sandbox], clean_env: None
) -> None:
    world, records = a_tenant()
    box = start(world.scenario())
    services = Services.build(Settings.from_env({}, overrides=box.env))
    services.records(RecordsRequest((records[0],), dry_run=True))  # warm: setting, metadata
    box.reset_counts()

    [row] = services.records(RecordsRequest((records[2],), dry_run=True)).summary.to_json()[
        "subscriptions"
    ]

    assert row["customerName"] is None  # not guessed from the Provider Account's name
    assert row["accountName"] == "Northwind Traders"
    assert box.counts()["partnerCenter"] == {"GET subscription": 1}  # no customer read
    assert "GET accounts" not in box.counts()["dataverse"]  # named by the formatted values


@pytest.mark.parametrize("service", ["partnerCenter", "dataverse"])
def test_records_left_unread_name_the_service_that_failed(
    start: Callable[..., Sandbox], clean_env: None, service: str
) -> None:
    world, records = a_tenant()
    box = start(world.scenario())
    services = Services.build(Settings.from_env({}, overrides=box.env))
    services.records(RecordsRequest((records[0],), dry_run=True))  # warm: setting, metadata
    # a Retry-After past the event's retry budget: the first record fails at once
    box.faults.add({"service": service, "kind": "429", "retryAfter": 120, "times": 1})

    outcome = services.records(RecordsRequest(tuple(records[1:]), dry_run=True))

    first, *left = outcome.summary.to_json()["errors"]
    assert (first["service"], first["status"]) == (service, 429), first
    assert len(left) == 2
    for error in left:
        assert (error["service"], error["status"]) == (service, 429)
        assert NOT_STARTED in error["message"]
    assert outcome.needs_retry
