"""The fault matrix: every call the sync makes x every fault the services throw at it.

For each (call, fault) the run finishes; every Partner Center subscription ends with exactly one
reason; and either the final Dataverse state equals the fault-free run's (transient faults: the
retries absorb them), or the run says what it could not do (`error` subscriptions, a customer in
`errors`, or a failed run) and a second, clean run completes it to the fault-free state.

Rows of calls the sync does not make (PATCH once writes go through `$batch`, or `$batch` before
they do) are skipped, as seen from the request kinds of the fault-free run. Each row asserts that
its fault really fired.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ScenarioBuilder, gid
from tests.integration.reliability import final_state, reasons, rows_by_subscription, run

READ_TIMEOUT = "0.2"  # seconds: the "timeout" fault answers after SLOW_MS
SLOW_MS = 600
ATTEMPTS = "3"  # persistent faults: attempts per call (bounded)
CREATE = {"WORK365_CREATE_MISSING": "true", "WORK365_BATCH_SIZE": "2"}


def matrix_world(world: ScenarioBuilder) -> dict[str, str]:
    """A world in which every call is made: an assignment, a create (create mode), a record
    with no default contract, one already assigned; two customers."""
    a1 = world.account(1)
    a2 = world.account(2, default_contracts=0)
    c1 = world.customer(1, account_id=a1)
    c2 = world.customer(2, account_id=a2)
    return {
        "assign": world.new_subscription(1, c1),
        "create": world.pc_subscription(2, c1),
        "no-default": world.new_subscription(3, c2),
        "already": world.new_subscription(4, c1, contract_id=gid("con", 10)),
        "assign-2": world.new_subscription(5, c2, account_id=a1),  # account-mismatch
    }


@dataclass(frozen=True)
class Call:
    name: str
    rule: dict[str, Any]  # service, method, path of the fault rule
    kind: tuple[str, str]  # (service, request kind) the sandbox counts for this call
    writes: bool = False


CALLS = [
    Call(
        "token-discovery",
        {"service": "token", "path": "openid-configuration"},
        ("token", "GET openid-configuration"),
    ),
    Call("token", {"service": "token", "path": "oauth2/v2.0/token"}, ("token", "POST token")),
    Call(
        "customers",
        {"service": "partnerCenter", "path": "/v1/customers$"},
        ("partnerCenter", "GET customers"),
    ),
    Call(
        "subscriptions",
        {"service": "partnerCenter", "path": "/subscriptions$"},
        ("partnerCenter", "GET subscriptions"),
    ),
    Call(
        "setting",
        {"service": "dataverse", "path": "work365_adminhubsettings"},
        ("dataverse", "GET work365_adminhubsettings"),
    ),
    Call(
        "audit-history",
        {"service": "dataverse", "path": "RetrieveAttributeChangeHistory"},
        ("dataverse", "GET RetrieveAttributeChangeHistory"),
    ),
    Call(
        "audit-rows",
        {"service": "dataverse", "path": "/audits"},
        ("dataverse", "GET audits"),
    ),
    Call(
        "provider-accounts",
        {"service": "dataverse", "path": "work365_provideraccounts"},
        ("dataverse", "GET work365_provideraccounts"),
    ),
    Call(
        "contracts",
        {"service": "dataverse", "path": "work365_billingcontracts"},
        ("dataverse", "GET work365_billingcontracts"),
    ),
    Call(
        "records",
        {"service": "dataverse", "method": "GET", "path": "work365_subscriptions$"},
        ("dataverse", "GET work365_subscriptions"),
    ),
    Call(
        "metadata",
        {"service": "dataverse", "path": "EntityDefinitions"},
        ("dataverse", "GET EntityDefinitions"),
    ),
    # Assignments and creates both travel in `$batch` (writer.py), so the batch row covers them;
    # single-operation PATCHes are only made by backfill (tests/integration/test_backfill.py).
    Call(
        "batch",
        {"service": "dataverse", "method": "POST", "path": r"\$batch"},
        ("dataverse", "POST $batch"),
        writes=True,
    ),
]

FAULTS: dict[str, dict[str, Any]] = {
    "429": {"kind": "429", "retryAfter": 2},
    "503": {"kind": "503"},
    "500": {"kind": "500"},
    "timeout": {"kind": "slow", "delayMs": SLOW_MS},
    "drop": {"kind": "drop"},
    "malformed-json": {"kind": "malformed-json"},
    "401": {"kind": "401"},
}

# The token endpoint's 401 is a refused credential (invalid_client), not an expired token:
# nothing to retry. The run fails before it reads anything; the next (clean) run completes.
FAILS_THE_RUN = {("token", "401"), ("token-discovery", "401")}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The fault-free run of the matrix world: its final state, reasons and request kinds."""
    from work365_fn.sandbox import Sandbox

    world = ScenarioBuilder()
    subs = matrix_world(world)
    scenario = world.scenario()
    with Sandbox.start(scenario) as box:
        summary = run(box, str(tmp_path_factory.mktemp("clean")), **CREATE)
        assert summary.status == "succeeded"
        return {
            "scenario": scenario,
            "subs": subs,
            "state": final_state(box),
            "reasons": reasons(summary),
            "counts": box.counts(),
            "created": summary.created,
        }


def made(clean: dict[str, Any], call: Call) -> bool:
    service, kind = call.kind
    return clean["counts"].get(service, {}).get(kind, 0) > 0


def assert_one_reason_each(summary: Any, clean: dict[str, Any]) -> None:
    """Every Partner Center subscription of a customer the run could read has exactly one
    reason (reasons() fails on a duplicate); a failed run lists none."""
    data = summary.to_json()
    got = reasons(summary)
    if data["status"] == "failed":
        assert got == {} and data["errors"]
        return
    unread = {e["customerId"] for e in data["errors"] if e["customerId"]} | {
        s["customerId"] for s in data["skippedCustomers"]
    }
    for sub in clean["reasons"]:
        customer = _customer_of(sub)
        if sub not in got:  # only a customer the run could not read is missing, as a whole
            assert customer in unread, (sub, "has no reason")
            assert not any(_customer_of(s) == customer for s in got)
    assert set(got) <= set(clean["reasons"])


def _customer_of(sub: str) -> str:
    return gid("cus", 2) if sub in (gid("sub", 3), gid("sub", 5)) else gid("cus", 1)


def assert_completed_by_a_clean_rerun(box: Any, state_dir: str, clean: dict[str, Any]) -> None:
    box.faults.clear()
    again = run(box, state_dir, **CREATE)
    assert again.status == "succeeded"
    assert final_state(box) == clean["state"]
    assert set(reasons(again)) == set(clean["reasons"])


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("call", CALLS, ids=[c.name for c in CALLS])
def test_a_transient_fault_in_any_call_leaves_the_fault_free_result(
    clean: dict[str, Any], start: Any, tmp_path: Path, call: Call, fault: str
) -> None:
    assert made(clean, call), f"the fault-free run makes no {call.kind[1]} call: drop the row"
    box = start(clean["scenario"])
    box.faults.add({**call.rule, **FAULTS[fault], "times": 1})
    settings = dict(CREATE)
    if fault == "timeout":
        settings["WORK365_HTTP_READ_TIMEOUT"] = READ_TIMEOUT

    summary = run(box, str(tmp_path), **settings)

    assert box.faults.fired() == [1], "the fault never fired: the row proves nothing"
    assert_one_reason_each(summary, clean)
    if (call.name, fault) in FAILS_THE_RUN:
        data = summary.to_json()
        assert data["status"] == "failed"
        [error] = data["errors"]
        assert (error["status"], error["code"]) in ((401, "invalid_client"), (401, "discovery"))
        assert final_state(box) == _seeded_state(clean)  # nothing written
        assert_completed_by_a_clean_rerun(box, str(tmp_path), clean)
        return
    # Retries absorb a transient fault: the same records, the same reasons.
    assert summary.status == "succeeded", summary.to_json()["errors"]
    assert final_state(box) == clean["state"]
    got = reasons(summary)
    for sub, reason in clean["reasons"].items():
        if call.writes and fault == "timeout" and reason == "default-contract":
            # The write landed but its answer was lost: the retry meets a 412, re-reads the
            # record and finds it done. Either way it is assigned once, to the same contract.
            assert got[sub] in ("default-contract", "already-assigned")
        else:
            assert got[sub] == reason, (sub, got[sub], reason)


PERSISTENT = [
    pytest.param(
        "subscriptions", {"service": "partnerCenter", "path": "/subscriptions$", "kind": "503"},
        id="subscriptions-503",
    ),
    pytest.param(
        "customers", {"service": "partnerCenter", "path": "/v1/customers$", "kind": "429",
                      "retryAfter": 1},
        id="customers-429",
    ),
    pytest.param(
        "records", {"service": "dataverse", "method": "GET", "path": "work365_subscriptions$",
                    "kind": "500"},
        id="records-500",
    ),
    pytest.param("token", {"service": "token", "path": "oauth2/v2.0/token", "kind": "503"},
                 id="token-503"),
    pytest.param(
        "writes", {"service": "dataverse", "method": "PATCH|POST", "kind": "500"},
        id="writes-500",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "rule"), PERSISTENT)
def test_a_fault_that_does_not_pass_costs_bounded_attempts_and_the_next_run_completes(
    clean: dict[str, Any], start: Any, tmp_path: Path, name: str, rule: dict[str, Any]
) -> None:
    rule = dict(rule)
    methods = rule.pop("method", None)
    box = start(clean["scenario"])
    for method in methods.split("|") if methods else [None]:
        box.faults.add({**rule, **({"method": method} if method else {}), "every": 1})
    sleeps: list[float] = []
    summary = run(box, str(tmp_path), sleep=sleeps.append, WORK365_MAX_ATTEMPTS=ATTEMPTS, **CREATE)
    data = summary.to_json()
    attempts = int(ATTEMPTS)
    assert_one_reason_each(summary, clean)
    fired = sum(box.faults.fired())

    if name == "subscriptions":  # each customer: its attempts, then reported; the run goes on
        assert data["status"] == "partial"
        assert sorted(e["customerId"] for e in data["errors"]) == [gid("cus", 1), gid("cus", 2)]
        assert {(e["service"], e["status"]) for e in data["errors"]} == {("partnerCenter", 503)}
        assert fired == 2 * attempts
    elif name == "writes":  # every write: its attempts, then `error`; nothing half-written
        assert data["status"] == "partial"
        rows = rows_by_subscription(summary)
        for sub, reason in clean["reasons"].items():
            if reason == "default-contract":
                assert rows[sub]["reason"] == "error" and rows[sub]["action"] == "none"
                assert rows[sub]["message"]
            else:
                assert rows[sub]["reason"] == reason
        assert final_state(box) == _seeded_state(clean)
        assert 0 < fired <= 3 * attempts  # per write request, never more than its attempts
    else:  # the run cannot read what it needs: it fails, bounded, and writes nothing
        assert data["status"] == "failed"
        [error] = data["errors"]
        assert error["service"] in ("partnerCenter", "dataverse")
        assert fired == attempts
        assert len(sleeps) == attempts - 1
        assert final_state(box) == _seeded_state(clean)

    assert_completed_by_a_clean_rerun(box, str(tmp_path), clean)


def _seeded_state(clean: dict[str, Any]) -> list[Any]:
    """The records as seeded: the fault-free state without the writes of the run."""
    seeded = []
    for row in clean["state"]:
        record_id, sub, account, contract, name = row
        if sub == gid("sub", 2):  # created by the run
            continue
        if sub == gid("sub", 1):  # assigned by the run
            contract = None
        seeded.append((record_id, sub, account, contract, name))
    return sorted(seeded)
