"""Two syncs at once over the same Dataverse (no lease: the CLI on a laptop, or the lease gone),
and a person changing a record between our read and our write.

Both runs read everything before either writes (a barrier at each run's first write), so every
write of one meets the other's: the conditional writes (If-Match, If-None-Match: *) alone keep the
records right. No duplicate record, no overwritten manual assignment, and both summaries tell the
truth: each subscription is assigned (or created) by exactly one run, the other reports it
already assigned.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests

from tests.integration.conftest import ScenarioBuilder, gid
from tests.integration.reliability import (
    final_state,
    is_dataverse_write,
    reasons,
    rows_by_subscription,
    run,
    services,
)
from work365_fn.adapters.transport import build_session
from work365_fn.entrypoints.functions import handlers as triggers
from work365_fn.rules.summary import RunSummary
from work365_fn.sandbox import Sandbox


class MeetAtFirstWrite(requests.Session):
    """Holds the run's first Dataverse write until the other run reaches its own."""

    def __init__(self, barrier: threading.Barrier) -> None:
        super().__init__()
        for prefix, adapter in build_session().adapters.items():
            self.mount(prefix, adapter)
        self._barrier = barrier
        self._met = False

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        m = method.decode() if isinstance(method, bytes) else method
        if not self._met and is_dataverse_write(m, str(url)):
            self._met = True
            self._barrier.wait(timeout=30)
        return super().request(method, url, *args, **kwargs)


def concurrency_world(world: ScenarioBuilder) -> None:
    a1 = world.account(1)
    a2 = world.account(2)
    a3 = world.account(3, default_contracts=0)
    c1 = world.customer(1, account_id=a1)
    c2 = world.customer(2, account_id=a2)
    c3 = world.customer(3, account_id=a3)
    for n in range(1, 4):
        world.new_subscription(n, c1)
    world.new_subscription(4, c2)
    world.new_subscription(5, c3)  # no default contract
    world.new_subscription(6, c2, contract_id=gid("con", 20))  # already assigned
    world.pc_subscription(7, c1)  # create mode: created on the default contract
    world.pc_subscription(8, c3)  # create mode: created without a contract


def in_threads(*jobs: Any) -> list[Any]:
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def target(i: int, job: Any) -> None:
        try:
            results[i] = job()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


@pytest.mark.parametrize("create", ["false", "true"], ids=["assign-only", "create-mode"])
def test_two_syncs_at_once_write_each_subscription_once_and_both_tell_the_truth(
    world: ScenarioBuilder, tmp_path: Path, create: str
) -> None:
    concurrency_world(world)
    scenario = world.scenario()
    settings = {"WORK365_CREATE_MISSING": create, "WORK365_BATCH_SIZE": "2"}
    with Sandbox.start(scenario) as box:
        clean = run(box, str(tmp_path / "clean"), **settings)
        clean_state, clean_reasons = final_state(box), reasons(clean)

    with Sandbox.start(scenario) as box:
        barrier = threading.Barrier(2)
        a, b = in_threads(
            lambda: run(box, str(tmp_path / "a"), session=MeetAtFirstWrite(barrier), **settings),
            lambda: run(box, str(tmp_path / "b"), session=MeetAtFirstWrite(barrier), **settings),
        )
        assert not barrier.broken
        state = final_state(box)

    assert state == clean_state
    assert max(Counter(row[1] for row in state).values()) == 1  # no duplicate record
    assert (a.status, b.status) == ("succeeded", "succeeded")
    assert_each_write_claimed_once(a, b, clean, clean_reasons)


def assert_each_write_claimed_once(
    a: RunSummary, b: RunSummary, clean: RunSummary, clean_reasons: dict[str, str]
) -> None:
    rows_a, rows_b = rows_by_subscription(a), rows_by_subscription(b)
    clean_rows = rows_by_subscription(clean)
    for sub, reason in clean_reasons.items():
        pair = sorted([rows_a[sub]["reason"], rows_b[sub]["reason"]])
        if reason == "default-contract":
            assert pair == ["already-assigned", "default-contract"], (sub, pair)
            contract = clean_rows[sub]["billingContractId"]
            assert rows_a[sub]["billingContractId"] == rows_b[sub]["billingContractId"] == contract
            winner = rows_a[sub] if rows_a[sub]["reason"] == "default-contract" else rows_b[sub]
            loser = rows_b[sub] if winner is rows_a[sub] else rows_a[sub]
            assert winner["action"] == clean_rows[sub]["action"]
            assert loser["action"] == "none"
        else:
            assert pair == [reason, reason], (sub, pair)
    assert a.created + b.created == clean.created


def test_the_timer_and_an_http_call_at_once(
    world: ScenarioBuilder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The two Functions entry points themselves, each with its own worker's services."""
    concurrency_world(world)
    scenario = world.scenario()
    settings = {"WORK365_CREATE_MISSING": "true", "WORK365_BATCH_SIZE": "2"}
    with Sandbox.start(scenario) as box:
        clean = run(box, str(tmp_path / "clean"), **settings)
        clean_state = final_state(box)

    caplog.set_level(logging.INFO)
    with Sandbox.start(scenario) as box:
        barrier = threading.Barrier(2)

        def worker(name: str) -> Any:
            built = services(
                box, str(tmp_path / name), session=MeetAtFirstWrite(barrier), **settings
            )
            return lambda: built

        timer_services, http_services = worker("timer"), worker("http")
        request = func.HttpRequest(
            method="POST", url="http://localhost:7071/api/sync", body=b"{}", headers={}
        )
        _, response = in_threads(
            lambda: triggers.sync_timer(_Timer(), timer_services),
            lambda: triggers.sync_http(request, http_services),
        )
        state = final_state(box)

    assert state == clean_state
    http_summary = json.loads(response.get_body())
    assert response.status_code == 200
    [timer_log] = [
        r.summary  # type: ignore[attr-defined]
        for r in caplog.records
        if hasattr(r, "summary") and r.summary["runId"] != http_summary["runId"]
    ]
    for key in ("assigned", "created"):
        assert (
            timer_log["counts"][key] + http_summary["counts"][key]
            == (clean.to_json()["counts"][key])
        )
    both = timer_log["byReason"]["already-assigned"] + http_summary["byReason"]["already-assigned"]
    assert (
        both
        == clean.to_json()["byReason"]["already-assigned"] * 2
        + (clean.to_json()["counts"]["assigned"])
    )


class _Timer:
    past_due = False


def race_rules(changes: dict[str, object]) -> list[dict[str, Any]]:
    """A person's change just before our write request, whichever way writes are sent."""
    base = {"service": "dataverse", "kind": "race", "set": changes, "times": 1}
    return [
        {**base, "method": "PATCH", "path": r"work365_subscriptions\("},
        {**base, "method": "POST", "path": r"\$batch"},
    ]


def test_a_person_assigning_a_contract_between_our_read_and_write_keeps_it(
    world: ScenarioBuilder, tmp_path: Path
) -> None:
    a1 = world.account(1)
    theirs = world.contract(99, a1, default=False)
    c1 = world.customer(1, account_id=a1)
    sub = world.new_subscription(1, c1)
    untouched = world.new_subscription(2, world.customer(2, account_id=world.account(2)))
    with Sandbox.start(world.scenario()) as box:
        for rule in race_rules({"_work365_billingcontract_value": theirs}):
            box.faults.add(rule)
        summary = run(box, str(tmp_path), WORK365_BATCH_SIZE="1")
        fired = box.faults.fired()
        by_record = {row[0]: row for row in final_state(box)}

    assert sum(fired) == 1
    assert by_record[gid("rec", 1)][3] == theirs  # their choice, not our default
    row = rows_by_subscription(summary)[sub]
    assert (row["reason"], row["action"], row["billingContractId"]) == (
        "already-assigned",
        "none",
        theirs,
    )
    assert rows_by_subscription(summary)[untouched]["reason"] == "default-contract"
    assert by_record[gid("rec", 2)][3] == gid("con", 20)
    assert summary.status == "succeeded"


def test_a_person_changing_something_else_meanwhile_does_not_stop_the_assignment(
    world: ScenarioBuilder, tmp_path: Path
) -> None:
    a1 = world.account(1)
    sub = world.new_subscription(1, world.customer(1, account_id=a1))
    with Sandbox.start(world.scenario()) as box:
        for rule in race_rules({"work365_name": "renamed by a billing admin"}):
            box.faults.add(rule)
        summary = run(box, str(tmp_path), WORK365_BATCH_SIZE="1")
        [record] = final_state(box)

    assert record[3:] == (gid("con", 10), "renamed by a billing admin")  # both changes kept
    assert rows_by_subscription(summary)[sub]["reason"] == "default-contract"
