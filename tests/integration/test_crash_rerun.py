"""Crash and rerun: the process dies after N Dataverse writes (N swept over the whole run, the
Nth write either lost on the way or landed with its answer lost), then a clean run follows.

The final records equal one uninterrupted run's; no record is duplicated (create mode too:
deterministic ids or the alternate key, created with If-None-Match: *); nothing is assigned twice
(what the dead run wrote, the rerun reports as already assigned); nothing is lost (what it did not
write, the rerun writes).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.integration.conftest import ScenarioBuilder, gid
from tests.integration.reliability import (
    Killed,
    KillingSession,
    Row,
    final_state,
    reasons,
    rows_by_subscription,
    run,
)
from work365_fn.sandbox import Sandbox


def crash_world(world: ScenarioBuilder) -> None:
    """Five writes in create mode (three assignments, two creates), three without it; and
    subscriptions that never get a write, so the rerun's reasons can be checked for all."""
    a1 = world.account(1)
    a2 = world.account(2)
    a3 = world.account(3, default_contracts=0)
    c1 = world.customer(1, account_id=a1)
    c2 = world.customer(2, account_id=a2)
    c3 = world.customer(3, account_id=a3)
    world.new_subscription(1, c1)
    world.new_subscription(2, c1)
    world.new_subscription(3, c2)
    world.pc_subscription(4, c1)  # create mode: created on the default contract
    world.pc_subscription(5, c3)  # create mode: created without a contract (no default)
    world.new_subscription(6, c3)  # no-default-contract: never written
    world.new_subscription(7, c2, contract_id=gid("con", 20))  # already assigned


def comparable(state: list[Row], alternate_key: bool) -> list[tuple[object, ...]]:
    """With an alternate key Dataverse picks the ids of created records: compare without them."""
    return sorted(row[1:] if alternate_key else row for row in state)


# One write per $batch sweeps the kill over every single write; two per batch kills between
# (and inside) multi-operation batches.
MODES = [
    pytest.param({"WORK365_CREATE_MISSING": "false"}, False, "1", id="assign-only"),
    pytest.param({"WORK365_CREATE_MISSING": "true"}, False, "1", id="create-mode"),
    pytest.param({"WORK365_CREATE_MISSING": "true"}, False, "2", id="create-mode-batches-of-2"),
    pytest.param({"WORK365_CREATE_MISSING": "true"}, True, "1", id="create-mode-alternate-key"),
]


@pytest.mark.parametrize(("settings", "alternate_key", "batch_size"), MODES)
def test_a_run_killed_after_any_write_and_rerun_ends_as_one_uninterrupted_run(
    world: ScenarioBuilder,
    tmp_path: Path,
    settings: dict[str, str],
    alternate_key: bool,
    batch_size: str,
) -> None:
    crash_world(world)
    scenario = world.scenario(alternateKey=alternate_key)
    settings = {**settings, "WORK365_BATCH_SIZE": batch_size}

    with Sandbox.start(scenario) as box:  # the uninterrupted run, its write requests counted
        counter = KillingSession(kill_at=10**6, when="after")
        clean = run(box, str(tmp_path / "clean"), session=counter, **settings)
        clean_state = comparable(final_state(box), alternate_key)
        clean_reasons = reasons(clean)
    assert clean.status == "succeeded"
    total = counter.writes
    assert total >= 1
    done_by_the_run = {s for s, r in clean_reasons.items() if r == "default-contract"}
    created_by_the_run = clean.created

    cases = [(n, "before") for n in range(1, total + 1)] + [
        (n, "after") for n in range(1, total + 1)
    ]
    for kill_at, when in cases:
        with Sandbox.start(scenario) as box:
            killer = KillingSession(kill_at=kill_at, when=when)
            with pytest.raises(Killed):
                run(box, str(tmp_path / f"killed-{when}-{kill_at}"), session=killer, **settings)
            after_crash = {r[1]: r for r in final_state(box)}

            rerun = run(box, str(tmp_path / f"rerun-{when}-{kill_at}"), **settings)
            where = f"killed {when} write {kill_at} of {total}"
            assert rerun.status == "succeeded", where
            # The same records as one uninterrupted run: nothing lost, nothing extra.
            assert comparable(final_state(box), alternate_key) == clean_state, where
            # No duplicates: one record per Partner Center subscription.
            per_sub = Counter(r[1] for r in final_state(box))
            assert max(per_sub.values()) == 1, where
            # Nothing assigned twice: what the dead run wrote is already assigned now; the
            # rerun writes only the rest.
            rows = rows_by_subscription(rerun)
            written_before = {
                sub
                for sub in done_by_the_run
                if sub in after_crash and after_crash[sub][3] is not None
            }
            for sub in done_by_the_run:
                expected = "already-assigned" if sub in written_before else "default-contract"
                assert rows[sub]["reason"] == expected, (where, sub, rows[sub])
            for sub, reason in clean_reasons.items():
                if sub not in done_by_the_run:
                    assert rows[sub]["reason"] == reason, (where, sub)
            # Records the dead run created (subscriptions 4 and 5 have none before the run).
            created_before = sum(1 for sub in (gid("sub", 4), gid("sub", 5)) if sub in after_crash)
            assert rerun.created + created_before == created_by_the_run, where
