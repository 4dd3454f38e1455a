"""Each fault kind of the sandbox against the real sync: the run completes with the same result
as a clean run, and the retries show in the request counts and the (injected) sleeps."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import ScenarioBuilder, by_subscription, contract_of, gid, sync


def small_world(world: ScenarioBuilder) -> dict[str, str]:
    a1 = world.account(1)
    a2 = world.account(2, default_contracts=0)
    c1 = world.customer(1, account_id=a1)
    c2 = world.customer(2, account_id=a2)
    return {
        "assign": world.new_subscription(1, c1),
        "no-default": world.new_subscription(2, c2),
    }


CLEAN = {"assign": "default-contract", "no-default": "no-default-contract"}

FAULTS = [
    pytest.param(
        {"service": "partnerCenter", "path": "/v1/customers$", "kind": "429", "retryAfter": 3},
        "GET customers",
        3.0,
        id="429-customers",
    ),
    pytest.param(
        {"service": "partnerCenter", "path": "subscriptions", "kind": "503", "times": 2},
        "GET subscriptions",
        None,
        id="503-subscriptions",
    ),
    pytest.param(
        {"service": "dataverse", "path": "work365_subscriptions", "method": "GET", "kind": "500"},
        "GET work365_subscriptions",
        None,
        id="500-records",
    ),
    pytest.param(
        {"service": "dataverse", "path": "work365_billingcontracts", "kind": "malformed-json"},
        "GET work365_billingcontracts",
        None,
        id="malformed-contracts",
    ),
    pytest.param(
        {"service": "dataverse", "method": "POST", "path": r"\$batch", "kind": "drop"},
        "POST $batch",
        None,
        id="drop-batch",
    ),
    pytest.param(
        {
            "service": "dataverse",
            "method": "POST",
            "path": r"\$batch",
            "kind": "429",
            "retryAfter": 2,
        },
        "POST $batch",
        2.0,
        id="429-batch",
    ),
    pytest.param(
        {"service": "dataverse", "path": "work365_provideraccounts", "kind": "slow", "delayMs": 50},
        None,
        None,
        id="slow-provider-accounts",
    ),
]


@pytest.mark.parametrize(("rule", "retried_kind", "slept"), FAULTS)
def test_run_survives_the_fault_with_the_clean_result(
    world: ScenarioBuilder,
    start: Any,
    rule: dict[str, Any],
    retried_kind: str | None,
    slept: float | None,
) -> None:
    subs = small_world(world)
    clean_box = start(world.scenario())
    sync(clean_box)
    clean_counts = clean_box.counts()

    box = start(world.scenario())
    box.faults.add(rule)
    sleeps: list[float] = []
    summary = sync(box, sleeps=sleeps)

    rows = by_subscription(summary)
    assert {name: rows[sub]["reason"] for name, sub in subs.items()} == CLEAN
    assert summary.status == "succeeded"
    assert contract_of(box, gid("rec", 1)) == gid("con", 10)
    assert contract_of(box, gid("rec", 2)) is None
    if retried_kind is not None:
        service = rule["service"]
        extra = box.counts()[service][retried_kind] - clean_counts[service][retried_kind]
        assert extra == rule.get("times", 1)
        assert len(sleeps) == rule.get("times", 1)
    if slept is not None:
        assert sleeps == [slept]


def test_expired_token_is_refreshed_once_and_the_run_completes(
    world: ScenarioBuilder, start: Any
) -> None:
    subs = small_world(world)
    box = start(world.scenario())
    box.faults.add({"service": "dataverse", "path": "work365_provideraccounts", "kind": "401"})
    summary = sync(box)
    assert by_subscription(summary)[subs["assign"]]["reason"] == "default-contract"
    assert box.counts()["token"]["POST token"] == 3  # dataverse, partner center, the refresh


def test_upstream_down_fails_the_run_cleanly(world: ScenarioBuilder, start: Any) -> None:
    small_world(world)
    box = start(world.scenario())
    box.faults.add({"service": "dataverse", "kind": "503", "every": 1})
    sleeps: list[float] = []
    data = sync(box, sleeps=sleeps, WORK365_MAX_ATTEMPTS="3").to_json()
    assert data["status"] == "failed"
    [error] = data["errors"]
    assert (error["service"], error["status"]) == ("dataverse", 503)
    assert len(sleeps) == 2  # three attempts, bounded
    assert data["subscriptions"] == []


def test_subscriptions_failing_for_one_customer_do_not_stop_the_others(
    world: ScenarioBuilder, start: Any
) -> None:
    subs = small_world(world)
    box = start(world.scenario())
    box.faults.add({"service": "partnerCenter", "path": gid("cus", 2), "kind": "500", "every": 1})
    data = sync(box, WORK365_MAX_ATTEMPTS="2").to_json()
    assert data["status"] == "partial"
    assert [e["customerId"] for e in data["errors"]] == [gid("cus", 2)]
    assert [r["subscriptionId"] for r in data["subscriptions"]] == [subs["assign"]]
    assert contract_of(box, gid("rec", 1)) == gid("con", 10)


def test_a_scoped_run_that_fails_in_dataverse_still_reports_what_partner_center_said(
    world: ScenarioBuilder, start: Any
) -> None:
    a1 = world.account(1)
    c1 = world.customer(1, account_id=a1)
    world.new_subscription(1, c1)
    c2 = world.customer(2, account_id=a1, relationship=False)
    box = start(world.scenario())
    box.faults.add({"service": "dataverse", "path": "work365_provideraccounts", "kind": "503"})
    data = sync(box, customers=(c1, c2), WORK365_MAX_ATTEMPTS="1").to_json()
    assert data["status"] == "failed"
    assert data["counts"]["customers"] == 2
    assert [(e["customerId"], e["service"], e["status"]) for e in data["errors"]] == [
        (c2, "partnerCenter", 403),  # read before Dataverse failed: kept
        (None, "dataverse", 503),
    ]
