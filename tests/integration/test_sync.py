"""The real sync over loopback HTTPS against the sandbox: every reason, writes, dry run, create
mode, races, cutoff sources, customer failures."""

from __future__ import annotations

import uuid
from typing import Any

from tests.integration.conftest import (
    OLD,
    ScenarioBuilder,
    by_subscription,
    contract_of,
    gid,
    services_for,
    sync,
    writes,
)
from work365_fn.adapters.dataverse_repository import RECORD_NAMESPACE
from work365_fn.operations.sync import SyncRequest
from work365_fn.rules import Reason, count_groups, count_reasons


def reason_of(case: str) -> str:
    """The reason each case of `every_reason` gets: its own name, but for the inactive default."""
    return "no-default-contract" if case == "inactive-default" else case


def every_reason(world: ScenarioBuilder) -> dict[str, str]:
    """One subscription per reason that can co-occur with the setting on (case -> PC id)."""
    a1 = world.account(1)  # one default
    a2 = world.account(2, default_contracts=0)  # none
    a3 = world.account(3, default_contracts=2)  # two
    a4 = world.account(4, default_contracts=0)
    world.contract(40, a4, default=True, active=False)  # inactive default only
    c1 = world.customer(1, account_id=a1)
    c2 = world.customer(2, account_id=a2)
    c3 = world.customer(3, account_id=a3)
    c4 = world.customer(4, account_id=a4)
    c5 = world.customer_without_provider_account(5)
    c6 = world.customer(6, account_id=a1)
    world.raw["providerAccounts"].append(
        {"id": gid("pa", 66), "customerId": c6, "accountId": a2, "name": "PA 66"}
    )
    return {
        "default-contract": world.new_subscription(1, c1),
        "not-synced": world.pc_subscription(2, c1),
        "already-assigned": world.new_subscription(3, c1, contract_id=gid("con", 10)),
        "existing-subscription": world.new_subscription(4, c1, created_on=OLD),
        "account-mismatch": world.new_subscription(5, c1, account_id=a2),
        "no-default-contract": world.new_subscription(6, c2),
        "multiple-default-contracts": world.new_subscription(7, c3),
        "inactive-default": world.new_subscription(8, c4),
        "unmapped-customer": world.new_subscription(9, c5),
        "ambiguous-provider-account": world.new_subscription(10, c6),
    }


def test_every_reason_in_one_run_and_only_the_default_is_written(
    world: ScenarioBuilder, start: Any
) -> None:
    subs = every_reason(world)
    box = start(world.scenario())
    summary = sync(box)
    data = summary.to_json()
    rows = by_subscription(summary)

    assert set(rows) == set(subs.values())
    for case, sub in subs.items():
        assert rows[sub]["reason"] == reason_of(case), (case, rows[sub])
    assert rows[subs["default-contract"]]["action"] == "assign"
    assert rows[subs["default-contract"]]["billingContractId"] == gid("con", 10)
    assert rows[subs["already-assigned"]]["billingContractId"] == gid("con", 10)
    assert all(r["action"] == "none" for s, r in rows.items() if s != subs["default-contract"])

    assert contract_of(box, gid("rec", 1)) == gid("con", 10)
    for record in world.raw["subscriptions"]:  # every other record keeps what it had
        if record["providerSubscriptionId"] != subs["default-contract"]:
            assert contract_of(box, record["id"]) == record["billingContractId"], record
    assert box.counts()["dataverse"].get("POST $batch") == 1
    assert "PATCH work365_subscriptions" not in box.counts()["dataverse"]

    reasons = [reason_of(case) for case in subs]
    customers = len(world.raw["partnerCenter"]["customers"])
    assert data["counts"] == {"customers": customers, **count_groups(reasons), "created": 0}
    assert data["byReason"] == count_reasons(reasons)
    assert set(data["byReason"]) == {reason.value for reason in Reason}
    assert data["status"] == "succeeded"
    assert data["setting"] == {
        "associateDefaultBillingContract": True,
        "since": "2026-01-01T00:00:00Z",
        "sinceSource": "audit",
        "read": True,
    }
    ordered = [(r["customerId"], r["subscriptionId"]) for r in data["subscriptions"]]
    assert ordered == sorted(ordered)


def test_second_run_sees_its_own_writes_and_writes_nothing(
    world: ScenarioBuilder, start: Any
) -> None:
    subs = every_reason(world)
    box = start(world.scenario())
    sync(box)
    box.reset_counts()
    again = by_subscription(sync(box))
    assert again[subs["default-contract"]]["reason"] == "already-assigned"
    assert again[subs["default-contract"]]["billingContractId"] == gid("con", 10)
    assert writes(box) == 0


def test_dry_run_writes_nothing_and_says_what_would_happen(
    world: ScenarioBuilder, start: Any
) -> None:
    subs = every_reason(world)
    box = start(world.scenario())
    before = box.dataverse.rows("work365_subscriptions")
    summary = sync(box, dry_run=True)
    row = by_subscription(summary)[subs["default-contract"]]
    assert (row["action"], row["billingContractId"]) == ("assign", gid("con", 10))
    assert summary.to_json()["dryRun"] is True
    assert writes(box) == 0
    assert box.dataverse.rows("work365_subscriptions") == before


def test_setting_off_leaves_new_subscriptions_alone(world: ScenarioBuilder, start: Any) -> None:
    subs = every_reason(world)
    world.raw["settings"]["associateDefaultBillingContract"] = False
    box = start(world.scenario())
    summary = sync(box)
    rows = by_subscription(summary)
    assert rows[subs["default-contract"]]["reason"] == "setting-off"
    assert rows[subs["existing-subscription"]]["reason"] == "existing-subscription"
    assert summary.to_json()["setting"]["associateDefaultBillingContract"] is False
    assert writes(box) == 0


def test_cutoff_override_wins_over_audit(world: ScenarioBuilder, start: Any) -> None:
    subs = every_reason(world)
    box = start(world.scenario())
    summary = sync(box, dry_run=True, WORK365_ASSOCIATE_SINCE="2026-06-01T00:00:00Z")
    data = summary.to_json()
    assert data["setting"]["sinceSource"] == "setting"
    assert by_subscription(summary)[subs["default-contract"]]["reason"] == "existing-subscription"
    assert "GET RetrieveAttributeChangeHistory" not in box.counts()["dataverse"]


def test_without_audit_the_cutoff_is_modifiedon_with_a_warning(
    world: ScenarioBuilder, start: Any
) -> None:
    every_reason(world)
    world.raw["settings"]["auditEnabled"] = False
    box = start(world.scenario())
    data = sync(box, dry_run=True).to_json()
    assert data["setting"]["sinceSource"] == "modifiedon"
    assert data["setting"]["since"] == "2026-01-01T00:00:00Z"
    assert any("modifiedon" in w for w in data["warnings"])


def test_scoped_run_only_reads_the_given_customers(world: ScenarioBuilder, start: Any) -> None:
    subs = every_reason(world)
    box = start(world.scenario())
    summary = sync(box, customers=(gid("cus", 2).upper(),))
    assert set(by_subscription(summary)) == {subs["no-default-contract"]}
    assert summary.customers == 1
    assert box.counts()["partnerCenter"].get("GET customers", 0) == 0


def test_customer_without_relationship_is_reported_and_others_go_on(
    world: ScenarioBuilder, start: Any
) -> None:
    subs = every_reason(world)
    lost = world.customer(7, account_id=gid("acc", 1), relationship=False)
    box = start(world.scenario())
    data = sync(box).to_json()
    assert data["status"] == "partial"
    assert [(e["customerId"], e["status"], e["code"]) for e in data["errors"]] == [
        (lost, 403, "20002")
    ]
    assert by_subscription_json(data)[subs["default-contract"]]["reason"] == "default-contract"
    assert contract_of(box, gid("rec", 1)) == gid("con", 10)


def by_subscription_json(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["subscriptionId"]: row for row in data["subscriptions"]}


def test_create_mode_creates_each_missing_record_once(world: ScenarioBuilder, start: Any) -> None:
    a1 = world.account(1)
    c1 = world.customer(1, account_id=a1)
    missing = world.pc_subscription(1, c1)
    unmapped_customer = world.customer_without_provider_account(2)
    missing_unmapped = world.pc_subscription(2, unmapped_customer)
    box = start(world.scenario())

    data = sync(box, WORK365_CREATE_MISSING="true").to_json()
    rows = by_subscription_json(data)
    assert (rows[missing]["reason"], rows[missing]["action"]) == ("default-contract", "create")
    assert rows[missing_unmapped]["reason"] == "unmapped-customer"
    assert rows[missing_unmapped]["action"] == "create"
    assert data["counts"]["created"] == 2
    expected_id = str(uuid.uuid5(RECORD_NAMESPACE, missing))
    assert rows[missing]["recordId"] == expected_id
    created = {
        r["work365_providersubscriptionid"]: r for r in box.dataverse.rows("work365_subscriptions")
    }
    assert created[missing]["work365_subscriptionid"] == expected_id
    assert created[missing]["_work365_billingcontract_value"] == gid("con", 10)
    assert created[missing]["_work365_account_value"] == a1
    assert created[missing_unmapped]["_work365_billingcontract_value"] is None

    box.reset_counts()
    again = sync(box, WORK365_CREATE_MISSING="true").to_json()
    assert again["counts"]["created"] == 0
    assert by_subscription_json(again)[missing]["reason"] == "already-assigned"
    assert len(box.dataverse.rows("work365_subscriptions")) == 2
    assert writes(box) == 0


def test_create_mode_uses_the_alternate_key_when_the_org_has_one(
    world: ScenarioBuilder, start: Any
) -> None:
    a1 = world.account(1)
    c1 = world.customer(1, account_id=a1)
    missing = world.pc_subscription(1, c1)
    box = start(world.scenario(alternateKey=True))
    data = sync(box, WORK365_CREATE_MISSING="true").to_json()
    row = by_subscription_json(data)[missing]
    assert row["action"] == "create"
    assert row["recordId"] != str(uuid.uuid5(RECORD_NAMESPACE, missing))
    [created] = box.dataverse.rows("work365_subscriptions")
    assert created["work365_subscriptionid"] == row["recordId"]
    assert created["_work365_billingcontract_value"] == gid("con", 10)


def test_create_mode_does_not_duplicate_a_record_created_meanwhile(
    world: ScenarioBuilder, start: Any
) -> None:
    """Another writer created the deterministic record between our read and our create: the
    412 makes us re-read it and assign it instead of creating a second one."""
    a1 = world.account(1)
    c1 = world.customer(1, account_id=a1)
    missing = world.pc_subscription(1, c1)
    box = start(world.scenario())
    record_id = str(uuid.uuid5(RECORD_NAMESPACE, missing))
    box.faults.add(
        {
            "service": "dataverse",
            "method": "POST",
            "path": r"\$batch",
            "kind": "race",
            "set": {
                "work365_name": "created by someone else",
                "work365_providersubscriptionid": missing,
            },
            "times": 1,
        }
    )
    data = sync(box, WORK365_CREATE_MISSING="true").to_json()
    [row] = box.dataverse.rows("work365_subscriptions")
    assert row["work365_name"] == "created by someone else"
    summary_row = by_subscription_json(data)[missing]
    assert (summary_row["reason"], summary_row["action"]) == ("default-contract", "assign")
    assert summary_row["recordId"] == record_id
    assert data["counts"]["created"] == 0
    assert contract_of(box, record_id) == gid("con", 10)
    assert box.counts()["dataverse"]["POST $batch"] == 2  # 412, then assign


def test_manual_assignment_between_read_and_write_is_kept(
    world: ScenarioBuilder, start: Any
) -> None:
    a1 = world.account(1)
    other = world.contract(99, a1, default=False)
    c1 = world.customer(1, account_id=a1)
    sub = world.new_subscription(1, c1)
    box = start(world.scenario())
    box.faults.add(
        {
            "service": "dataverse",
            "method": "POST",
            "path": r"\$batch",
            "kind": "race",
            "set": {"_work365_billingcontract_value": other},
            "times": 1,
        }
    )
    data = sync(box).to_json()
    row = by_subscription_json(data)[sub]
    assert (row["reason"], row["action"], row["billingContractId"]) == (
        "already-assigned",
        "none",
        other,
    )
    assert contract_of(box, gid("rec", 1)) == other
    assert data["status"] == "succeeded"


def test_unrelated_change_between_read_and_write_is_retried(
    world: ScenarioBuilder, start: Any
) -> None:
    a1 = world.account(1)
    c1 = world.customer(1, account_id=a1)
    sub = world.new_subscription(1, c1)
    box = start(world.scenario())
    box.faults.add(
        {
            "service": "dataverse",
            "method": "POST",
            "path": r"\$batch",
            "kind": "race",
            "set": {"work365_name": "renamed"},
            "times": 1,
        }
    )
    data = sync(box).to_json()
    assert by_subscription_json(data)[sub]["reason"] == "default-contract"
    assert contract_of(box, gid("rec", 1)) == gid("con", 10)
    assert box.counts()["dataverse"]["POST $batch"] == 2


def test_run_budget_skips_the_remaining_customers_and_says_so(
    world: ScenarioBuilder, start: Any
) -> None:
    every_reason(world)
    box = start(world.scenario())
    summary = services_for(box).sync(SyncRequest(budget_seconds=1e-9))
    data = summary.to_json()
    assert data["subscriptions"] == []
    assert sorted(s["customerId"] for s in data["skippedCustomers"]) == sorted(
        c["id"] for c in world.raw["partnerCenter"]["customers"]
    )
    assert {s["why"] for s in data["skippedCustomers"]} == {"deadline"}
    assert box.counts()["partnerCenter"].get("GET subscriptions", 0) == 0
    assert data["status"] == "succeeded"
