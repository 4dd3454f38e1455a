"""`backfill` over the sandbox: a dry run writes nothing, `--apply` assigns exactly the eligible
existing records (never one with billing references), a second `--apply` writes nothing, a race
leaves the record alone, and `--undo` clears exactly what a run set, conditionally."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import OLD, ScenarioBuilder, contract_of, gid, services_for, writes
from work365_fn.composition import Services
from work365_fn.entrypoints.cli.main import main
from work365_fn.operations.backfill import (
    JOURNAL,
    BackfillRequest,
    JournalNotFoundError,
    load_journal,
    run_backfill,
)
from work365_fn.sandbox import Sandbox, Scenario

ELIGIBLE = gid("rec", 1)
ELIGIBLE_TOO = gid("rec", 7)
WITH_REFERENCES = gid("rec", 2)
ASSIGNED = gid("rec", 3)
NEW = gid("rec", 4)
TWO_DEFAULTS = gid("rec", 5)
UNMAPPED = gid("rec", 6)
DEFAULT = gid("con", 10)
OTHER = gid("con", 99)


def tenant(world: ScenarioBuilder) -> ScenarioBuilder:
    """Existing records of every kind; two of them (rec 1 and 7) are eligible."""
    a1 = world.account(1)  # one default: contract 10
    world.contract(99, a1, default=False)
    c1 = world.customer(1, account_id=a1)
    world.record(1, world.pc_subscription(1, c1), account_id=a1, created_on=OLD)
    world.record(
        2,
        world.pc_subscription(2, c1),
        created_on=OLD,
        billing_references={"work365_lastinvoicenumber": "INV-0042"},
    )
    world.record(3, world.pc_subscription(3, c1), contract_id=OTHER, created_on=OLD)
    world.new_subscription(4, c1)  # new: the sync's business, not backfill's
    a2 = world.account(2, default_contracts=2)
    c2 = world.customer(2, account_id=a2)
    world.record(5, world.pc_subscription(5, c2), created_on=OLD)
    c3 = world.customer_without_provider_account(3)
    world.record(6, world.pc_subscription(6, c3), created_on=OLD)
    world.record(7, world.pc_subscription(7, c1), created_on=OLD)
    return world


def backfill(box: Sandbox, services: Services | None = None, **request: Any) -> dict[str, Any]:
    return run_backfill((services or services_for(box)).backfill_deps(), BackfillRequest(**request))


def items(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {i["recordId"]: (i["reason"], i["result"]) for i in result["items"]}


def contracts(box: Sandbox) -> dict[str, str | None]:
    return {
        row["work365_subscriptionid"]: row.get("_work365_billingcontract_value")
        for row in box.dataverse.rows("work365_subscriptions")
    }


def journal(box: Sandbox, run_id: str) -> dict[str, Any]:
    doc = load_journal(services_for(box).run_store(), run_id)
    assert doc is not None
    return doc


def test_dry_run_plans_and_writes_nothing(world: ScenarioBuilder, start: Any) -> None:
    box = start(tenant(world).scenario())
    before = contracts(box)
    result = backfill(box)
    assert writes(box) == 0
    assert contracts(box) == before
    assert result["apply"] is False
    assert items(result) == {
        ELIGIBLE: ("default-contract", "planned"),
        ELIGIBLE_TOO: ("default-contract", "planned"),
        WITH_REFERENCES: ("billing-references", "skipped"),
        TWO_DEFAULTS: ("multiple-default-contracts", "skipped"),
        UNMAPPED: ("unmapped-customer", "skipped"),
    }
    assert result["counts"] == {
        "candidates": 5,
        "eligible": 2,
        "assigned": 0,
        "changed": 0,
        "skipped": 3,
        "failed": 0,
    }
    eligible = next(i for i in result["items"] if i["recordId"] == ELIGIBLE)
    assert (eligible["action"], eligible["billingContractId"]) == ("assign", DEFAULT)
    refs = next(i for i in result["items"] if i["recordId"] == WITH_REFERENCES)
    assert "work365_lastinvoicenumber" in refs["message"]
    assert services_for(box).run_store().names(result["runId"]) == []  # no journal either


def test_apply_assigns_exactly_the_eligible_records(world: ScenarioBuilder, start: Any) -> None:
    box = start(tenant(world).scenario())
    before = contracts(box)
    result = backfill(box, apply=True)
    after = contracts(box)
    assert {r for r in after if after[r] != before[r]} == {ELIGIBLE, ELIGIBLE_TOO}
    assert after[ELIGIBLE] == after[ELIGIBLE_TOO] == DEFAULT
    assert after[WITH_REFERENCES] is None  # billing references: never touched
    assert after[ASSIGNED] == OTHER
    assert box.counts()["dataverse"]["PATCH work365_subscriptions"] == 2
    assert result["counts"]["assigned"] == 2
    assert result["status"] == "succeeded"


def test_a_second_apply_writes_nothing(world: ScenarioBuilder, start: Any) -> None:
    box = start(tenant(world).scenario())
    backfill(box, apply=True)
    box.reset_counts()
    again = backfill(box, apply=True)
    assert writes(box) == 0
    assert again["counts"]["eligible"] == 0
    assert ELIGIBLE not in items(again)  # already assigned now: out of scope


def test_the_journal_records_each_write_before_and_after_it(
    world: ScenarioBuilder, start: Any
) -> None:
    box = start(tenant(world).scenario())
    services = services_for(box)
    recorder = RecordingStore(services, box)
    services.run_store = lambda: recorder  # type: ignore[method-assign]
    result = backfill(box, services, apply=True)

    states = [
        (writes_then, entry["recordId"], entry["state"])
        for writes_then, doc in recorder.puts
        for entry in doc["entries"]
        if entry["recordId"] == ELIGIBLE
    ]
    first_pending = next(s for s in states if s[2] == "pending")
    first_assigned = next(s for s in states if s[2] == "assigned")
    assert first_pending[0] == 0  # journaled before the sandbox saw any write
    assert first_assigned[0] >= 1
    doc = journal(box, result["runId"])
    [entry] = [e for e in doc["entries"] if e["recordId"] == ELIGIBLE]
    row = next(
        r
        for r in box.dataverse.rows("work365_subscriptions")
        if r["work365_subscriptionid"] == ELIGIBLE
    )
    assert entry["etagAfter"] == row["@odata.etag"]  # the ETag after our write
    assert entry["etagBefore"] != entry["etagAfter"]
    assert (entry["contractId"], entry["navigation"]) == (DEFAULT, "work365_BillingContract")
    assert doc["status"] == "finished"


def test_a_record_assigned_by_someone_else_between_plan_and_apply_is_left(
    world: ScenarioBuilder, start: Any
) -> None:
    box = start(tenant(world).scenario())
    box.faults.add(
        {
            "service": "dataverse",
            "method": "PATCH",
            "path": rf"work365_subscriptions\({ELIGIBLE}\)",
            "kind": "race",
            "set": {"_work365_billingcontract_value": OTHER},
        }
    )
    result = backfill(box, apply=True)
    assert contract_of(box, ELIGIBLE) == OTHER  # their choice stands
    assert items(result)[ELIGIBLE] == ("default-contract", "changed")
    assert "assigned by someone else" in next(
        i["message"] for i in result["items"] if i["recordId"] == ELIGIBLE
    )
    assert contract_of(box, ELIGIBLE_TOO) == DEFAULT  # the rest goes on
    assert [e["state"] for e in journal(box, result["runId"])["entries"]] == [
        "conflict",
        "assigned",
    ]


def test_a_harmless_change_between_plan_and_apply_is_retried(
    world: ScenarioBuilder, start: Any
) -> None:
    box = start(tenant(world).scenario())
    box.faults.add(
        {
            "service": "dataverse",
            "method": "PATCH",
            "path": rf"work365_subscriptions\({ELIGIBLE}\)",
            "kind": "race",
            "set": {"work365_name": "renamed by a colleague"},
        }
    )
    result = backfill(box, apply=True)
    assert contract_of(box, ELIGIBLE) == DEFAULT
    assert items(result)[ELIGIBLE] == ("default-contract", "assigned")
    assert box.counts()["dataverse"]["PATCH work365_subscriptions"] == 3  # 412, retry, rec 7


def test_references_added_between_plan_and_apply_stop_the_write(
    world: ScenarioBuilder, start: Any
) -> None:
    box = start(tenant(world).scenario())
    box.faults.add(
        {
            "service": "dataverse",
            "method": "PATCH",
            "path": rf"work365_subscriptions\({ELIGIBLE}\)",
            "kind": "race",
            "set": {"work365_lastlclid": "LCL-7"},
        }
    )
    result = backfill(box, apply=True)
    assert contract_of(box, ELIGIBLE) is None
    assert items(result)[ELIGIBLE] == ("billing-references", "changed")


def test_undo_clears_exactly_what_the_run_set(world: ScenarioBuilder, start: Any) -> None:
    box = start(tenant(world).scenario())
    before = contracts(box)
    run = backfill(box, apply=True)["runId"]
    box.reset_counts()

    dry = backfill(box, undo=run)
    assert writes(box) == 0
    assert {i["recordId"]: i["result"] for i in dry["items"]} == {
        ELIGIBLE: "planned",
        ELIGIBLE_TOO: "planned",
    }

    done = backfill(box, undo=run, apply=True)
    assert contracts(box) == before
    assert box.counts()["dataverse"]["PATCH work365_subscriptions"] == 2  # conditional clears
    assert done["counts"]["cleared"] == 2
    assert (done["kind"], done["undoOf"]) == ("undo", run)
    assert {e["state"] for e in journal(box, run)["entries"]} == {"undone"}

    box.reset_counts()
    again = backfill(box, undo=run, apply=True)
    assert writes(box) == 0
    assert {(i["result"], i["why"]) for i in again["items"]} == {("skipped", "already-undone")}
    assert again["counts"]["cleared"] == 0


def test_undo_clears_a_record_edited_since_in_other_columns(
    world: ScenarioBuilder, start: Any
) -> None:
    """Undo looks at the lookup the run set (docs/undo.md): an edit of another column since the
    run does not keep the contract; the clear is still conditional on the ETag just read."""
    box = start(tenant(world).scenario())
    run = backfill(box, apply=True)["runId"]
    # A colleague edits rec 7 afterwards (same contract, other column): its ETag moves on.
    services = services_for(box)
    [record] = [r for r, _ in services.repository().subscription_rows() if r.id == ELIGIBLE_TOO]
    assert record.etag is not None
    services.dataverse.update(
        "work365_subscriptions",
        ELIGIBLE_TOO,
        {"work365_name": "checked by billing"},
        etag=record.etag,
    )
    box.reset_counts()
    result = backfill(box, undo=run, apply=True)
    assert contract_of(box, ELIGIBLE) is None
    assert contract_of(box, ELIGIBLE_TOO) is None
    assert box.counts()["dataverse"]["PATCH work365_subscriptions"] == 2
    assert result["counts"]["cleared"] == 2


def test_undo_leaves_a_record_moved_to_another_contract_alone(
    world: ScenarioBuilder, start: Any
) -> None:
    box = start(tenant(world).scenario())
    run = backfill(box, apply=True)["runId"]
    services = services_for(box)
    [record] = [r for r, _ in services.repository().subscription_rows() if r.id == ELIGIBLE]
    assert record.etag is not None
    services.dataverse.update(
        "work365_subscriptions",
        ELIGIBLE,
        {"work365_BillingContract@odata.bind": f"/work365_billingcontracts({OTHER})"},
        etag=record.etag,
    )
    result = backfill(box, undo=run, apply=True)
    assert contract_of(box, ELIGIBLE) == OTHER
    moved = next(i for i in result["items"] if i["recordId"] == ELIGIBLE)
    assert (moved["result"], moved["why"]) == ("changed", "changed-since")
    assert OTHER in moved["message"]


def test_undo_of_an_unknown_run_says_so(world: ScenarioBuilder, start: Any) -> None:
    box = start(tenant(world).scenario())
    with pytest.raises(JournalNotFoundError, match="no journal for run"):
        backfill(box, undo="00000000-0000-4000-8000-000000000000", apply=True)


def test_a_crash_after_a_write_leaves_a_truthful_journal(
    world: ScenarioBuilder, start: Any
) -> None:
    box = start(tenant(world).scenario())
    services = services_for(box)
    recorder = RecordingStore(services, box, crash_when="assigned")
    services.run_store = lambda: recorder  # type: ignore[method-assign]
    with pytest.raises(Crash):
        run_backfill(
            services.backfill_deps(),
            BackfillRequest(apply=True),
            "11111111-1111-4111-8111-111111111111",
        )
    doc = journal(box, "11111111-1111-4111-8111-111111111111")
    [entry] = doc["entries"]
    assert entry["state"] == "pending"  # the write happened, the journal says it may have
    assert contract_of(box, entry["recordId"]) == DEFAULT

    box.reset_counts()
    undo = backfill(box, undo="11111111-1111-4111-8111-111111111111", apply=True)
    assert writes(box) == 0  # nothing proves the record unchanged since: never guessed
    assert contract_of(box, entry["recordId"]) == DEFAULT
    assert "check it by hand" in undo["items"][0]["message"]


def test_the_customer_scope_limits_the_backfill(world: ScenarioBuilder, start: Any) -> None:
    box = start(tenant(world).scenario())
    result = backfill(box, customer_ids=(gid("cus", 2),))
    assert set(items(result)) == {TWO_DEFAULTS}


def test_the_setting_off_stops_every_backfill(start: Any) -> None:
    box = start(Scenario.builtin("setting-off"))
    result = backfill(box, apply=True)
    assert writes(box) == 0
    assert result["counts"]["assigned"] == 0
    assert {i["reason"] for i in result["items"]} <= {"setting-off"}


def test_demo_backfill_assigns_contosos_old_office_subscription(start: Any) -> None:
    box = start(Scenario.builtin("demo"))
    result = backfill(box, apply=True)
    assert {i["subscriptionId"]: i["reason"] for i in result["items"]} == {
        "5ab00004-0000-4000-8000-000000000004": "default-contract",
        "5ab00012-0000-4000-8000-000000000012": "unmapped-customer",
    }
    assert contract_of(box, "5b000004-0000-4000-8000-000000000004") == (
        "bc000001-0000-4000-8000-000000000001"
    )


# ---- the CLI -------------------------------------------------------------------------------


def test_cli_dry_run_apply_and_undo_on_one_state_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("WORK365_"):
            monkeypatch.delenv(key)
    state = str(tmp_path / "demo.sqlite")

    def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        return main(["backfill", "--sandbox", "--state", state, *argv], out=out), out.getvalue()

    code, text = run()
    assert code == 0
    assert "1 to assign (dry run: nothing is written; add --apply)" in text
    assert text.index("backfill plan") < text.index("counts:")

    code, text = run("--apply", "--json")
    result = json.loads(text)
    assert (code, result["counts"]["assigned"]) == (0, 1)

    code, text = run("--undo", result["runId"], "--apply")
    assert code == 0
    assert "cleared" in text

    code, _ = run("--undo", "00000000-0000-4000-8000-000000000000")
    assert code == 2
    code, _ = run("--undo", "not-a-run-id")
    assert code == 2


# ---- helpers -------------------------------------------------------------------------------


class Crash(Exception):
    pass


class RecordingStore:
    """The services' run store, recording each document put (and how many writes the sandbox
    had served by then); with `crash_when`, stops the process (raises) at the first put that
    would record an entry in that state."""

    def __init__(self, services: Services, box: Sandbox, crash_when: str | None = None) -> None:
        self.inner = Services.run_store(services)
        self.box = box
        self.crash_when = crash_when
        self.puts: list[tuple[int, dict[str, Any]]] = []

    def put(self, run_id: str, name: str, document: dict[str, Any]) -> None:
        if self.crash_when and any(
            e.get("state") == self.crash_when for e in document.get("entries", [])
        ):
            raise Crash
        if "entries" in document:  # the journal's pages, not the last-assigner documents
            self.puts.append((writes(self.box), copy.deepcopy(document)))
        self.inner.put(run_id, name, document)

    def get(self, run_id: str, name: str) -> dict[str, Any] | None:
        return self.inner.get(run_id, name)

    def names(self, run_id: str, prefix: str = "") -> list[str]:
        return self.inner.names(run_id, prefix)

    def delete(self, run_id: str, name: str) -> None:
        self.inner.delete(run_id, name)


def test_no_write_starts_after_the_time_budget(world: ScenarioBuilder, start: Any) -> None:
    box = start(tenant(world).scenario())
    now = [0.0]

    def plan_took_long(_: Any) -> None:
        now[0] = 100.0  # the plan used up the budget

    result = run_backfill(
        services_for(box).backfill_deps(),
        BackfillRequest(apply=True, budget_seconds=30),
        on_plan=plan_took_long,
        monotonic=lambda: now[0],
    )
    assert writes(box) == 0
    assert items(result)[ELIGIBLE] == ("default-contract", "deadline")
    assert result["status"] == "partial"


def test_a_retried_run_continues_its_journal(world: ScenarioBuilder, start: Any) -> None:
    """A job the host retries runs again under the same run id: the journal keeps the first
    attempt's writes, so the undo of that run still clears them."""
    box = start(tenant(world).scenario())
    run = "22222222-2222-4222-8222-222222222222"
    box.faults.add(
        {
            "service": "dataverse",
            "method": "PATCH",
            "path": rf"work365_subscriptions\({ELIGIBLE_TOO}\)",
            "kind": "500",
            "times": 1,
        }
    )
    first = run_backfill(
        services_for(box, WORK365_MAX_ATTEMPTS="1").backfill_deps(),
        BackfillRequest(apply=True),
        run,
    )
    assert items(first)[ELIGIBLE_TOO] == ("default-contract", "failed")
    run_backfill(services_for(box).backfill_deps(), BackfillRequest(apply=True), run)  # retry
    assert contract_of(box, ELIGIBLE) == contract_of(box, ELIGIBLE_TOO) == DEFAULT
    states = [(e["recordId"], e["state"]) for e in journal(box, run)["entries"]]
    assert states == [(ELIGIBLE, "assigned"), (ELIGIBLE_TOO, "failed"), (ELIGIBLE_TOO, "assigned")]
    backfill(box, undo=run, apply=True)
    assert contract_of(box, ELIGIBLE) is None
    assert contract_of(box, ELIGIBLE_TOO) is None


def test_a_long_journal_is_paged_and_undone_whole(
    world: ScenarioBuilder, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("work365_fn.operations.backfill.JOURNAL_PAGE", 1)
    box = start(tenant(world).scenario())
    run = backfill(box, apply=True)["runId"]
    store = services_for(box).run_store()
    assert store.names(run) == [JOURNAL, f"{JOURNAL}-0001"]
    first = store.get(run, JOURNAL)
    assert first is not None
    assert (first["status"], len(first["entries"])) == ("finished", 1)
    assert len(journal(box, run)["entries"]) == 2
    backfill(box, undo=run, apply=True)
    assert contract_of(box, ELIGIBLE) is None
    assert contract_of(box, ELIGIBLE_TOO) is None
    assert {e["state"] for e in journal(box, run)["entries"]} == {"undone"}
