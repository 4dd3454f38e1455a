"""The sync's writes in Dataverse `$batch` requests, against the sandbox: batch counts, a race
inside a batch, independent operations, and the batch size backing off on execution time."""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

import pytest

from tests.integration.conftest import ScenarioBuilder, contract_of, gid, sync
from work365_fn.adapters.dataverse_repository import RECORD_NAMESPACE


def by_subscription(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["subscriptionId"]: row for row in data["subscriptions"]}


def many_new(world: ScenarioBuilder, n: int, customers: int = 3) -> list[str]:
    """`n` new unassigned subscriptions spread over mapped customers (one default each)."""
    owners = []
    for c in range(1, customers + 1):
        owners.append((world.customer(c, account_id=world.account(c)), c))
    return [world.new_subscription(i, owners[i % customers][0]) for i in range(1, n + 1)]


@pytest.mark.parametrize(("writes", "size"), [(7, 3), (7, 7), (12, 5), (1, 100)])
def test_batches_are_ceil_of_writes_over_the_batch_size(
    world: ScenarioBuilder, start: Any, writes: int, size: int
) -> None:
    subs = many_new(world, writes)
    box = start(world.scenario())
    data = sync(box, WORK365_BATCH_SIZE=str(size)).to_json()

    assert data["counts"]["assigned"] == writes
    assert all(r["reason"] == "default-contract" for r in data["subscriptions"])
    dataverse = box.counts()["dataverse"]
    assert dataverse["POST $batch"] == math.ceil(writes / size)
    assert "PATCH work365_subscriptions" not in dataverse
    for i, _ in enumerate(subs, start=1):
        assert contract_of(box, gid("rec", i)) is not None


def test_create_mode_writes_in_batches_too(world: ScenarioBuilder, start: Any) -> None:
    a1 = world.account(1)
    c1 = world.customer(1, account_id=a1)
    missing = [world.pc_subscription(n, c1) for n in range(1, 6)]
    box = start(world.scenario())
    data = sync(box, WORK365_CREATE_MISSING="true", WORK365_BATCH_SIZE="2").to_json()

    assert data["counts"]["created"] == 5
    assert box.counts()["dataverse"]["POST $batch"] == 3
    rows = {
        r["work365_providersubscriptionid"]: r for r in box.dataverse.rows("work365_subscriptions")
    }
    assert set(rows) == set(missing)
    assert {r["_work365_billingcontract_value"] for r in rows.values()} == {gid("con", 10)}


def test_a_race_on_every_row_of_a_batch_is_reread_and_sent_again(
    world: ScenarioBuilder, start: Any
) -> None:
    subs = many_new(world, 4)
    box = start(world.scenario())
    box.faults.add(
        {
            "service": "dataverse",
            "method": "POST",
            "path": r"\$batch",
            "kind": "race",
            "set": {"work365_name": "renamed by a person"},
            "times": 1,
        }
    )
    data = sync(box).to_json()

    assert data["status"] == "succeeded"
    rows = by_subscription(data)
    assert all(rows[s]["reason"] == "default-contract" for s in subs)
    dataverse = box.counts()["dataverse"]
    assert dataverse["POST $batch"] == 2  # 4 x 412, then the 4 again in one later batch
    assert dataverse["GET work365_subscriptions"] == 1 + 4  # bulk read + one re-read each
    for i in range(1, 5):
        assert contract_of(box, gid("rec", i)) == gid("con", 10 * (i % 3 + 1))


def test_a_race_that_assigns_by_hand_is_kept_for_every_row_of_the_batch(
    world: ScenarioBuilder, start: Any
) -> None:
    subs = many_new(world, 3)
    other = world.contract(99, gid("acc", 1), default=False)
    box = start(world.scenario())
    box.faults.add(
        {
            "service": "dataverse",
            "method": "POST",
            "path": r"\$batch",
            "kind": "race",
            "set": {"_work365_billingcontract_value": other},
        }
    )
    data = sync(box).to_json()
    rows = by_subscription(data)

    assert {rows[s]["reason"] for s in subs} == {"already-assigned"}
    assert {rows[s]["billingContractId"] for s in subs} == {other}
    assert box.counts()["dataverse"]["POST $batch"] == 1  # nothing left to send again
    assert data["status"] == "succeeded"


def test_one_412_in_a_batch_does_not_undo_the_others(world: ScenarioBuilder, start: Any) -> None:
    """Create mode: one record exists already at its deterministic id (made by another writer,
    without a provider subscription id, so the bulk read missed it). Its create meets a 412 in
    the first batch; the other create in that batch stays done."""
    a1 = world.account(1)
    c1 = world.customer(1, account_id=a1)
    clash = world.pc_subscription(1, c1)
    fine = world.pc_subscription(2, c1)
    clash_id = str(uuid.uuid5(RECORD_NAMESPACE, clash))
    world.raw["subscriptions"].append(
        {
            "id": clash_id,
            "providerSubscriptionId": None,
            "accountId": a1,
            "createdOn": "2026-03-02T00:00:00Z",
            "name": "made elsewhere",
        }
    )
    box = start(world.scenario())
    data = sync(box, WORK365_CREATE_MISSING="true").to_json()
    rows = by_subscription(data)

    assert (rows[fine]["action"], rows[fine]["reason"]) == ("create", "default-contract")
    assert (rows[clash]["action"], rows[clash]["recordId"]) == ("assign", clash_id)
    assert data["counts"]["created"] == 1
    assert box.counts()["dataverse"]["POST $batch"] == 2  # [create, create(412)], [assign]
    assert contract_of(box, clash_id) == gid("con", 10)
    assert contract_of(box, str(uuid.uuid5(RECORD_NAMESPACE, fine))) == gid("con", 10)


def test_execution_time_throttling_halves_the_batch_size_for_the_rest_of_the_run(
    world: ScenarioBuilder, start: Any, caplog: pytest.LogCaptureFixture
) -> None:
    many_new(world, 8)
    box = start(world.scenario())
    box.faults.add(
        {
            "service": "dataverse",
            "method": "POST",
            "path": r"\$batch",
            "kind": "429",
            "code": "0x80072321",
            "retryAfter": 4,
        }
    )
    sleeps: list[float] = []
    caplog.set_level(logging.WARNING)
    data = sync(box, sleeps=sleeps, WORK365_BATCH_SIZE="4").to_json()

    assert data["counts"]["assigned"] == 8
    assert data["status"] == "succeeded"
    assert sleeps == [4.0]
    # one refused batch of 4, then 8 writes in batches of 2
    assert box.counts()["dataverse"]["POST $batch"] == 1 + 4
    assert any("batch size 4 -> 2" in r.getMessage() for r in caplog.records)


def test_a_request_count_throttle_keeps_the_batch_size(world: ScenarioBuilder, start: Any) -> None:
    many_new(world, 8)
    box = start(world.scenario())
    box.faults.add({"service": "dataverse", "method": "POST", "kind": "429", "retryAfter": 1})
    sleeps: list[float] = []
    data = sync(box, sleeps=sleeps, WORK365_BATCH_SIZE="4").to_json()
    assert data["counts"]["assigned"] == 8
    assert sleeps == [1.0]
    assert box.counts()["dataverse"]["POST $batch"] == 1 + 2


def test_throttling_without_end_fails_the_writes_not_the_run(
    world: ScenarioBuilder, start: Any
) -> None:
    subs = many_new(world, 2)
    box = start(world.scenario())
    box.faults.add({"service": "dataverse", "method": "POST", "kind": "429", "every": 1})
    sleeps: list[float] = []
    data = sync(box, sleeps=sleeps, WORK365_MAX_ATTEMPTS="2").to_json()
    rows = by_subscription(data)

    assert data["status"] == "partial"
    assert {rows[s]["reason"] for s in subs} == {"error"}
    assert len(data["errors"]) == 2
    assert {e["status"] for e in data["errors"]} == {429}
    assert box.counts()["dataverse"]["POST $batch"] == 3  # first try + 2 retries
    assert contract_of(box, gid("rec", 1)) is None


def test_dry_run_sends_no_batch(world: ScenarioBuilder, start: Any) -> None:
    many_new(world, 5)
    box = start(world.scenario())
    data = sync(box, dry_run=True).to_json()
    assert data["byReason"]["default-contract"] == 5
    assert "POST $batch" not in box.counts()["dataverse"]
