"""Undo of a sync run over the sandbox (loopback HTTP): it restores the records the run changed,
skips the ones changed since (a manual change between the run and the undo), lists the records
the run created without deleting them, writes nothing in a dry run, reports a 412 as skipped,
refuses to undo an undo, and finds the journals of every batch of a run by its id."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ScenarioBuilder, contract_of, gid, services_for, writes
from work365_fn.adapters.odata_batch import BatchOperation
from work365_fn.composition import Services
from work365_fn.entrypoints.cli.main import main
from work365_fn.entrypoints.cli.undo import print_undo
from work365_fn.operations.run_documents import JournalNotFoundError, load_journals
from work365_fn.operations.sync import SyncRequest
from work365_fn.operations.undo import UndoRefusedError, UndoRequest, run_undo
from work365_fn.sandbox import Sandbox

SUBS = "work365_subscriptions"
DEFAULT = gid("con", 10)
OTHER = gid("con", 11)
KEPT, MOVED, EMPTIED, DELETED, EDITED = (gid("rec", n) for n in (1, 2, 3, 4, 5))
OLD_ONE = gid("rec", 9)  # on a contract before the run: never the run's, never undone


def tenant(world: ScenarioBuilder, *, unsynced: int = 0) -> ScenarioBuilder:
    account = world.account(1)  # one active default: contract 10
    world.contract(11, account, default=False)
    customer = world.customer(1, account_id=account)
    for n in range(1, 6):
        world.new_subscription(n, customer, account_id=account)
    world.new_subscription(9, customer, account_id=account, contract_id=OTHER)
    for n in range(unsynced):
        world.pc_subscription(20 + n, customer)  # in Partner Center, no record yet
    return world


def undo(services: Services, run_id: str, **request: Any) -> dict[str, Any]:
    return run_undo(services.undo_deps(), UndoRequest(undo_of=run_id, **request))


def by_record(result: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {i["recordId"]: i for i in result["items"]}


def etag_of(box: Sandbox, record_id: str) -> str:
    row = next(r for r in box.dataverse.rows(SUBS) if r["work365_subscriptionid"] == record_id)
    return str(row["@odata.etag"])


def bind(contract: str | None) -> dict[str, Any]:
    return {"work365_BillingContract@odata.bind": f"/work365_billingcontracts({contract})"}


def manual_changes(box: Sandbox, services: Services) -> None:
    """What billing admins do between the run and the undo."""
    dv = services.dataverse
    dv.update(SUBS, MOVED, bind(OTHER), etag=etag_of(box, MOVED))  # moved to another contract
    dv.clear_lookup(SUBS, EMPTIED, "work365_BillingContract", etag=etag_of(box, EMPTIED))
    dv.update(SUBS, EDITED, {"work365_name": "checked by billing"}, etag=etag_of(box, EDITED))
    gone = BatchOperation("DELETE", f"{dv.api}{SUBS}({DELETED})", {}, None)
    assert dv.batch([gone])[0].status == 204


def test_undo_restores_what_the_sync_changed_and_skips_what_changed_since(
    world: ScenarioBuilder, start: Any
) -> None:
    box = start(tenant(world).scenario())
    services = services_for(box)
    run = services.sync(SyncRequest()).to_json()
    assert run["counts"]["assigned"] == 5
    assert all(contract_of(box, r) == DEFAULT for r in (KEPT, MOVED, EMPTIED, EDITED))
    manual_changes(box, services)
    box.reset_counts()

    result = undo(services, run["runId"], apply=True)

    assert contract_of(box, KEPT) is None  # restored: as before the run
    assert contract_of(box, EDITED) is None  # other columns edited: the lookup is still ours
    assert contract_of(box, MOVED) == OTHER  # their choice stands
    assert contract_of(box, OLD_ONE) == OTHER  # never the run's
    assert box.counts()["dataverse"]["PATCH work365_subscriptions"] == 2  # conditional clears
    items = by_record(result)
    assert {r: (i["result"], i["why"]) for r, i in items.items()} == {
        KEPT: ("cleared", None),
        EDITED: ("cleared", None),
        MOVED: ("changed", "changed-since"),
        EMPTIED: ("skipped", "already-cleared"),
        DELETED: ("skipped", "deleted"),
    }
    assert OTHER in items[MOVED]["message"]
    assert (result["kind"], result["undoOf"], result["status"]) == (
        "undo",
        run["runId"],
        "succeeded",
    )
    assert result["counts"]["cleared"] == 2


def test_a_dry_run_undo_writes_nothing(world: ScenarioBuilder, start: Any) -> None:
    box = start(tenant(world).scenario())
    services = services_for(box)
    run_id = services.sync(SyncRequest()).run_id
    store = services.run_store()
    documents = store.names(run_id)
    box.reset_counts()

    result = undo(services, run_id)

    assert writes(box) == 0
    assert store.names(run_id) == documents  # no mark on the journal either
    assert {i["result"] for i in result["items"]} == {"planned"}
    assert all(contract_of(box, r) == DEFAULT for r in (KEPT, MOVED, EMPTIED, DELETED, EDITED))
    assert result["apply"] is False


def test_records_the_run_created_are_listed_not_deleted(world: ScenarioBuilder, start: Any) -> None:
    box = start(tenant(world, unsynced=2).scenario())
    services = services_for(box, WORK365_CREATE_MISSING="true")
    run = services.sync(SyncRequest()).to_json()
    created = {d["recordId"] for d in run["subscriptions"] if d["action"] == "create"}
    assert len(created) == 2
    rows_before = len(box.dataverse.rows(SUBS))
    box.reset_counts()

    result = undo(services, run["runId"], apply=True)

    assert len(box.dataverse.rows(SUBS)) == rows_before  # nothing deleted
    assert not any(k.startswith("DELETE") for k in box.counts()["dataverse"])
    listed = {i["recordId"] for i in result["items"] if i["created"]}
    assert listed == created
    assert result["counts"]["created"] == 2
    assert all(contract_of(box, r) is None for r in created)  # the lookup the run set: cleared


def test_a_412_during_the_undo_is_reported_as_skipped(world: ScenarioBuilder, start: Any) -> None:
    box = start(tenant(world).scenario())
    services = services_for(box)
    run_id = services.sync(SyncRequest()).run_id
    box.faults.add(
        {
            "service": "dataverse",
            "method": "PATCH",
            "path": rf"{SUBS}\({KEPT}\)",
            "kind": "race",
            "set": {"work365_name": "edited while the undo ran"},
        }
    )

    result = undo(services, run_id, apply=True)

    item = by_record(result)[KEPT]
    assert (item["result"], item["why"]) == ("skipped", "changed-meanwhile")
    assert contract_of(box, KEPT) == DEFAULT  # left alone
    assert contract_of(box, MOVED) is None  # the others go on
    again = undo(services, run_id, apply=True)  # run again: it retries what was left
    assert by_record(again)[KEPT]["result"] == "cleared"
    done = by_record(again)[MOVED]
    assert done["why"] == "already-undone"
    # Named, not only by id, though the second undo does not read the record.
    assert (done["recordName"], done["billingContractName"]) == ("Record 2", "Contract 10")
    out = io.StringIO()
    print_undo(again, out)
    assert any("Record 2" in line and "Contract 10" in line for line in out.getvalue().splitlines())


def test_the_undo_keeps_a_journal_and_an_undo_is_not_undone(
    world: ScenarioBuilder, start: Any
) -> None:
    box = start(tenant(world).scenario())
    services = services_for(box)
    run_id = services.sync(SyncRequest()).run_id
    result = undo(services, run_id, apply=True)

    [own] = load_journals(services.run_store(), result["runId"])
    assert own.kind == "undo-journal"
    assert own.header["undoOf"] == run_id
    assert {(e["recordId"], e["previousContractId"], e["contractId"]) for e in own.entries} == {
        (r, DEFAULT, None) for r in (KEPT, MOVED, EMPTIED, DELETED, EDITED)
    }
    [undone] = load_journals(services.run_store(), run_id)
    assert {e["state"] for e in undone.entries} == {"undone"}
    assert {e["undo"]["runId"] for e in undone.entries} == {result["runId"]}
    with pytest.raises(UndoRefusedError, match="is an undo"):
        undo(services, result["runId"], apply=True)
    with pytest.raises(JournalNotFoundError, match="no journal for run"):
        undo(services, "00000000-0000-4000-8000-000000000000")


def test_the_journals_of_every_batch_of_a_run_are_undone_together(
    world: ScenarioBuilder, start: Any
) -> None:
    """A fanned-out run's batches write under one run id, each its own journal."""
    world.account(2)
    second = world.customer(2, account_id=gid("acc", 2))
    world.new_subscription(30, second, account_id=gid("acc", 2))
    box = start(tenant(world).scenario())
    services = services_for(box)
    run_id = "33333333-3333-4333-8333-333333333333"
    services.sync(SyncRequest(customer_ids=(gid("cus", 1),)), run_id=run_id)
    services.sync(SyncRequest(customer_ids=(gid("cus", 2),)), run_id=run_id)
    assert len(load_journals(services.run_store(), run_id)) == 2

    result = undo(services, run_id, apply=True)

    assert result["counts"]["cleared"] == 6
    assert contract_of(box, gid("rec", 30)) is None


def test_a_run_whose_journal_cannot_be_saved_writes_nothing(
    world: ScenarioBuilder, start: Any, tmp_path: Path
) -> None:
    box = start(tenant(world).scenario())
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the run store's folder should be")
    services = services_for(box, WORK365_STATE_DIR=str(blocked))
    box.reset_counts()

    summary = services.sync(SyncRequest(customer_ids=(gid("cus", 1),))).to_json()

    assert writes(box) == 0
    assert summary["counts"]["failed"] == 5
    assert any("journal could not be saved" in w for w in summary["warnings"])


# ---- the CLI -------------------------------------------------------------------------------


def test_cli_sync_then_undo_on_one_state_file(
    world: ScenarioBuilder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("WORK365_"):
            monkeypatch.delenv(key)
    scenario = tmp_path / "tenant.json"
    scenario.write_text(json.dumps(tenant(world).raw), encoding="utf-8")
    state = str(tmp_path / "tenant.sqlite")

    def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        where = ["--sandbox", "--scenario", str(scenario), "--state", state]
        return main([*argv, *where], out=out), out.getvalue()

    code, text = run("sync", "--json")
    summary = json.loads(text)
    assert (code, summary["counts"]["assigned"]) == (0, 5)

    code, text = run("undo", summary["runId"])
    assert code == 0
    assert "dry run, nothing is cleared; add --apply" in text
    assert text.count("planned") == 5

    code, text = run("undo", summary["runId"], "--apply", "--json")
    result = json.loads(text)
    assert (code, result["counts"]["cleared"]) == (0, 5)

    code, text = run("undo", result["runId"])
    assert code == 2  # an undo is not undone
    code, _ = run("undo", "00000000-0000-4000-8000-000000000000")
    assert code == 2
    code, _ = run("undo", "not-a-run-id")
    assert code == 2


def test_a_sync_journals_each_write_before_it_is_sent(world: ScenarioBuilder, start: Any) -> None:
    """`pending` entries are in the run store before the $batch goes out, settled after."""
    box = start(tenant(world).scenario())
    services = services_for(box)
    inner = Services.run_store(services)
    puts: list[tuple[int, list[str]]] = []

    class Recording:
        def put(self, run_id: str, name: str, document: dict[str, Any]) -> None:
            if name.startswith("journal-"):
                puts.append((writes(box), [e["state"] for e in document.get("entries", [])]))
            inner.put(run_id, name, document)

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    services.run_store = Recording  # type: ignore[method-assign, assignment]
    box.reset_counts()
    run_id = services.sync(SyncRequest(customer_ids=(gid("cus", 1),))).run_id

    assert puts[0] == (0, ["pending"] * 5)  # journaled before any write reached Dataverse
    assert (puts[1][0], puts[1][1]) == (1, ["assigned"] * 5)  # one $batch, then settled
    [journal] = load_journals(inner, run_id)
    assert journal.kind == "sync-journal"
    assert journal.header["status"] == "finished"
    entry = next(e for e in journal.entries if e["recordId"] == KEPT)
    assert (entry["contractId"], entry["previousContractId"], entry["operation"]) == (
        DEFAULT,
        None,
        "updated",
    )
    assert entry["navigation"] == "work365_BillingContract"
    assert (entry["recordName"], entry["contractName"]) == ("Record 1", "Contract 10")
    # The ETag the write's answer carried (the sandbox sends it on a $batch part), no extra read.
    assert entry["etagBefore"] and entry["etagAfter"] == etag_of(box, KEPT) != entry["etagBefore"]


def test_with_notes_on_each_clear_leaves_its_note(world: ScenarioBuilder, start: Any) -> None:
    box = start(tenant(world).scenario())
    services = services_for(box, WORK365_WRITE_NOTES="true")
    run_id = services.sync(SyncRequest()).run_id
    subject = f"Billing contract cleared by undo of run {run_id}"
    assert not [n for n in box.dataverse.rows("annotations") if n["subject"] == subject]

    result = undo(services, run_id, apply=True)

    notes = [n for n in box.dataverse.rows("annotations") if n["subject"] == subject]
    assert result["counts"]["cleared"] == len(notes) == 5
    assert all(result["runId"] in n["notetext"] and DEFAULT in n["notetext"] for n in notes)
    assert all(f"Contract 10 ({DEFAULT})" in n["notetext"] for n in notes)  # named, not id only


def test_undo_leaves_a_lookup_a_later_run_set_again(world: ScenarioBuilder, start: Any) -> None:
    """Run A assigns, a billing admin clears the lookup, run B assigns the same contract: the
    lookup is B's now, and undoing A must not clear it."""
    box = start(tenant(world).scenario())
    services = services_for(box)
    first = services.sync(SyncRequest()).run_id
    dv = services.dataverse
    dv.clear_lookup(SUBS, KEPT, "work365_BillingContract", etag=etag_of(box, KEPT))
    second = services.sync(SyncRequest()).to_json()
    assert [d["recordId"] for d in second["subscriptions"] if d["action"] == "assign"] == [KEPT]
    assert contract_of(box, KEPT) == DEFAULT

    result = undo(services, first, apply=True)

    item = by_record(result)[KEPT]
    assert (item["result"], item["why"], item["reassignedBy"]) == (
        "skipped",
        "reassigned-by",
        second["runId"],
    )
    assert second["runId"] in item["message"]
    assert contract_of(box, KEPT) == DEFAULT  # B's write stands
    assert contract_of(box, EDITED) is None  # still A's: cleared
    again = undo(services, second["runId"], apply=True)  # B's own undo clears it
    assert by_record(again)[KEPT]["result"] == "cleared"
    assert contract_of(box, KEPT) is None


def test_an_undo_item_shows_both_etags_when_the_record_changed_since_the_write(
    world: ScenarioBuilder, start: Any
) -> None:
    box = start(tenant(world).scenario())
    services = services_for(box)
    run_id = services.sync(SyncRequest()).run_id
    [journal] = load_journals(services.run_store(), run_id)
    written = next(e["etagAfter"] for e in journal.entries if e["recordId"] == EDITED)
    services.dataverse.update(SUBS, EDITED, {"work365_name": "x"}, etag=etag_of(box, EDITED))

    items = by_record(undo(services, run_id))

    assert (items[EDITED]["etagAfter"], items[EDITED]["etagNow"]) == (
        written,
        etag_of(box, EDITED),
    )
    assert written != etag_of(box, EDITED)
    assert "etagNow" not in items[KEPT]  # untouched since the write: nothing to show
