"""Create mode through the alternate key, over real HTTP against the sandbox: the emulator answers
a key-addressed create with the key in OData-EntityId (as Dataverse does), so the record id
comes from the row Dataverse is asked to return, or from reading the record back by key
(issue 11, defect 2)."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import (
    ScenarioBuilder,
    by_subscription,
    contract_of,
    gid,
    services_for,
    sync,
)
from work365_fn.operations.sync import SyncRequest
from work365_fn.rules.model import PcSubscription

SUBS = "work365_subscriptions"


def test_a_batch_create_through_the_key_reads_the_id_back_once(
    world: ScenarioBuilder, start: Any
) -> None:
    a1 = world.account(1)
    c1 = world.customer(1, account_id=a1)
    missing = [world.pc_subscription(n, c1) for n in (1, 2, 3)]
    box = start(world.scenario(alternateKey=True))
    before = box.counts()["dataverse"].get(f"GET {SUBS}", 0)

    data = sync(box, WORK365_CREATE_MISSING="true").to_json()

    assert data["errors"] == []
    assert data["counts"]["created"] == 3
    created = {r["work365_providersubscriptionid"]: r for r in box.dataverse.rows(SUBS)}
    rows = {r["subscriptionId"]: r for r in data["subscriptions"]}
    for sub in missing:
        assert rows[sub]["action"] == "create"
        assert rows[sub]["recordId"] == created[sub]["work365_subscriptionid"]
        assert contract_of(box, rows[sub]["recordId"]) == gid("con", 10)
    counts = box.counts()["dataverse"]
    assert counts["POST $batch"] == 1
    # the bulk read of the records, then one read-back of the three created by key
    assert counts[f"GET {SUBS}"] - before == 2


def test_a_created_record_is_found_again_by_the_next_run(
    world: ScenarioBuilder, start: Any
) -> None:
    a1 = world.account(1)
    missing = world.pc_subscription(1, world.customer(1, account_id=a1))
    box = start(world.scenario(alternateKey=True))
    first = by_subscription(services_for(box, WORK365_CREATE_MISSING="true").sync(SyncRequest()))[
        missing
    ]

    again = by_subscription(sync(box, WORK365_CREATE_MISSING="true"))[missing]

    assert (again["reason"], again["action"]) == ("already-assigned", "none")
    assert again["recordId"] == first["recordId"]
    assert len(box.dataverse.rows(SUBS)) == 1


def test_a_single_create_through_the_key_reads_the_id_from_the_returned_row(
    world: ScenarioBuilder, start: Any
) -> None:
    a1 = world.account(1)
    customer = world.customer(1, account_id=a1)
    box = start(world.scenario(alternateKey=True))
    services = services_for(box)
    sub = PcSubscription(id=gid("sub", 9).upper(), customer_id=customer, offer_name="E5")
    box.reset_counts()

    record_id = services.repository().create(sub, a1, None, services.bindings())

    [row] = box.dataverse.rows(SUBS)
    assert record_id == row["work365_subscriptionid"]
    assert row["work365_providersubscriptionid"] == gid("sub", 9)  # the key, from the URL
    assert row["_work365_account_value"] == a1
    counts = box.counts()["dataverse"]
    assert counts.get(f"PATCH {SUBS}") == 1
    assert counts.get(f"GET {SUBS}") is None  # no read-back: the 201 carried the id
