"""WORK365_WRITE_NOTES against the sandbox over loopback: a note on each record the sync assigns
or creates, in the same `$batch` change set as the write (both or neither), the checks before a
run, and nothing at all with notes off."""

from __future__ import annotations

import io
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
)
from work365_fn.adapters.dataverse_repository import RECORD_NAMESPACE
from work365_fn.entrypoints.cli.table import header_lines, render
from work365_fn.operations.backfill import BackfillRequest, run_backfill
from work365_fn.operations.notes import SUBJECT_CLEARED, SUBJECT_CREATED, SUBJECT_SET
from work365_fn.operations.sync import SyncRequest
from work365_fn.operations.undo import UndoRequest, run_undo
from work365_fn.sandbox import Sandbox

NOTES_ON = {"WORK365_WRITE_NOTES": "true"}
NOTE_REQUESTS = ("GET WhoAmI", "GET systemusers", "POST annotations", "GET annotations")


def notes(box: Sandbox) -> dict[str, list[dict[str, Any]]]:
    """The notes in the org, by the record they are on."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in box.dataverse.rows("annotations"):
        out.setdefault(str(row["_objectid_value"]), []).append(row)
    return out


def two_new(world: ScenarioBuilder) -> tuple[str, str]:
    """Two new unassigned subscriptions of one mapped customer whose Account has one default."""
    account = world.account(1, name="Contoso Ltd")
    world.contract(11, account, default=False)
    customer = world.customer(1, account_id=account)
    return world.new_subscription(1, customer), world.new_subscription(2, customer)


def test_each_assignment_leaves_a_note_naming_contract_account_rule_cutoff_and_run(
    world: ScenarioBuilder, start: Any
) -> None:
    two_new(world)
    box = start(world.scenario())
    summary = sync(box, **NOTES_ON)

    assert summary.status == "succeeded"
    on_record = notes(box)
    assert set(on_record) == {gid("rec", 1), gid("rec", 2)}
    for record in (gid("rec", 1), gid("rec", 2)):
        (note,) = on_record[record]
        assert note["subject"] == SUBJECT_SET
        assert note["objecttypecode"] == "work365_subscription"
        text = note["notetext"]
        assert f"Contract 10 ({gid('con', 10)})" in text
        assert f"Account: Contoso Ltd ({gid('acc', 1)})" in text
        assert "default-contract" in text
        assert "Cutoff in force: 2026-01-01T00:00:00Z (from audit)" in text
        assert f"Run: {summary.run_id}" in text
        assert contract_of(box, record) == gid("con", 10)
    # The notes ride in the writes' change sets: still one $batch for both writes.
    assert box.counts()["dataverse"]["POST $batch"] == 1


def test_a_created_record_gets_its_note_bound_by_id_or_by_alternate_key(
    world: ScenarioBuilder, start: Any
) -> None:
    for keyed in (False, True):
        world = ScenarioBuilder()
        customer = world.customer(1, account_id=world.account(1))
        sub = world.pc_subscription(1, customer)
        box = start(world.scenario(alternateKey=keyed))
        summary = sync(box, WORK365_CREATE_MISSING="true", **NOTES_ON)

        row = by_subscription(summary)[sub]
        assert (row["action"], row["reason"]) == ("create", "default-contract")
        (record,) = box.dataverse.rows("work365_subscriptions")
        if not keyed:
            assert record["work365_subscriptionid"] == str(uuid.uuid5(RECORD_NAMESPACE, sub))
        (note,) = notes(box)[record["work365_subscriptionid"]]
        assert note["subject"] == SUBJECT_SET
        assert "set when this record was created" in note["notetext"]


def test_a_record_created_without_a_contract_says_why(world: ScenarioBuilder, start: Any) -> None:
    customer = world.customer(1, account_id=world.account(1, default_contracts=0))
    world.pc_subscription(1, customer)
    box = start(world.scenario())
    sync(box, WORK365_CREATE_MISSING="true", **NOTES_ON)

    (record,) = box.dataverse.rows("work365_subscriptions")
    (note,) = notes(box)[record["work365_subscriptionid"]]
    assert note["subject"] == SUBJECT_CREATED
    assert "no-default-contract" in note["notetext"]


def test_a_fault_on_the_note_rolls_back_the_assignment_and_the_run_reports_it(
    world: ScenarioBuilder, start: Any
) -> None:
    failing, fine = two_new(world)
    box = start(world.scenario())
    box.faults.add(
        {
            "service": "dataverse",
            "method": "POST",
            "path": "annotations$",
            "kind": "500",
            "batchPart": True,
            "times": 1,
        }
    )
    summary = sync(box, **NOTES_ON)
    rows = by_subscription(summary)

    assert summary.status == "partial"
    assert rows[failing]["reason"] == "error"
    assert "its note failed" in rows[failing]["message"]
    assert "rolled back" in rows[failing]["message"]
    assert contract_of(box, gid("rec", 1)) is None  # the change set was rolled back whole
    assert gid("rec", 1) not in notes(box)
    assert rows[fine]["reason"] == "default-contract"  # its own change set is untouched
    assert contract_of(box, gid("rec", 2)) == gid("con", 10)
    assert len(notes(box)[gid("rec", 2)]) == 1
    assert box.faults.fired() == [1]
    # The next run completes it, with its note.
    assert by_subscription(sync(box, **NOTES_ON))[failing]["reason"] == "default-contract"
    assert contract_of(box, gid("rec", 1)) == gid("con", 10)
    assert len(notes(box)[gid("rec", 1)]) == 1


def test_a_412_on_the_lookup_leaves_no_note(world: ScenarioBuilder, start: Any) -> None:
    """Someone assigns the record by hand between our read and our write: the PATCH meets a
    412, its change set is rolled back (no note), and the re-read finds it assigned."""
    customer = world.customer(1, account_id=world.account(1))
    sub = world.new_subscription(1, customer)
    by_hand = world.contract(99, gid("acc", 1), default=False)
    box = start(world.scenario())
    box.faults.add(
        {
            "service": "dataverse",
            "method": "POST",
            "path": r"\$batch",
            "kind": "race",
            "set": {"_work365_billingcontract_value": by_hand},
        }
    )
    summary = sync(box, **NOTES_ON)

    assert by_subscription(summary)[sub]["reason"] == "already-assigned"
    assert contract_of(box, gid("rec", 1)) == by_hand
    assert notes(box) == {}
    assert box.faults.fired() == [1]


def test_a_412_then_a_retry_leaves_exactly_one_note(world: ScenarioBuilder, start: Any) -> None:
    customer = world.customer(1, account_id=world.account(1))
    sub = world.new_subscription(1, customer)
    box = start(world.scenario())
    box.faults.add(
        {
            "service": "dataverse",
            "method": "POST",
            "path": r"\$batch",
            "kind": "race",
            "set": {"work365_name": "renamed by a person"},
        }
    )
    summary = sync(box, **NOTES_ON)

    assert by_subscription(summary)[sub]["reason"] == "default-contract"
    assert box.counts()["dataverse"]["POST $batch"] == 2
    assert len(notes(box)[gid("rec", 1)]) == 1


def test_notes_off_sends_no_note_request_and_the_same_requests_as_before(
    world: ScenarioBuilder, start: Any
) -> None:
    two_new(world)
    scenario = world.scenario()
    unset, off = start(scenario), start(scenario)
    first = sync(unset)
    second = sync(off, WORK365_WRITE_NOTES="false")

    assert first.counts() == second.counts()
    assert unset.counts() == off.counts()
    assert not any(kind in off.counts()["dataverse"] for kind in NOTE_REQUESTS)
    assert notes(off) == {}
    # With notes on: the checks once, and the same number of $batch requests.
    on = start(scenario)
    sync(on, **NOTES_ON)
    assert on.counts()["dataverse"]["POST $batch"] == off.counts()["dataverse"]["POST $batch"]
    assert on.counts()["dataverse"]["GET WhoAmI"] == 1


def test_a_run_with_notes_refuses_to_start_when_the_user_lacks_prv_create_note(
    world: ScenarioBuilder, start: Any
) -> None:
    two_new(world)
    box = start(world.scenario(notes={"missingPrivileges": ["prvCreateNote"]}))
    summary = sync(box, **NOTES_ON).to_json()

    assert summary["status"] == "failed"
    (error,) = summary["errors"]
    assert error["code"] == "notes-unavailable"
    assert "prvCreateNote" in error["message"]
    assert "WORK365_WRITE_NOTES" in error["message"]
    assert "POST $batch" not in box.counts()["dataverse"]
    assert box.counts()["partnerCenter"] == {}  # nothing read either
    assert contract_of(box, gid("rec", 1)) is None


def test_a_refused_run_says_the_setting_was_not_read_in_the_table(
    world: ScenarioBuilder, start: Any
) -> None:
    two_new(world)
    box = start(world.scenario(notes={"missingPrivileges": ["prvCreateNote"]}))
    refused = sync(box, **NOTES_ON).to_json()
    assert refused["setting"]["read"] is False
    out = io.StringIO()
    render(refused, out, width=200)
    assert "setting: not read" in out.getvalue()
    assert "Associate Default Billing Contract = No" not in out.getvalue()
    # A run that read it says what it read.
    read = sync(box).to_json()
    assert read["setting"]["read"] is True
    assert "setting: Associate Default Billing Contract = Yes, cutoff 2026-01-01" in "\n".join(
        header_lines(read)
    )


def test_a_run_with_notes_refuses_to_start_on_a_table_without_notes(
    world: ScenarioBuilder, start: Any
) -> None:
    two_new(world)
    box = start(world.scenario(notes={"hasNotes": False}))
    summary = sync(box, **NOTES_ON).to_json()

    assert summary["status"] == "failed"
    message = summary["errors"][0]["message"]
    assert "HasNotes" in message
    assert "Regarding (objectid) relationship" in message
    assert "POST $batch" not in box.counts()["dataverse"]


def test_check_schema_with_notes_names_each_missing_piece(
    world: ScenarioBuilder, start: Any
) -> None:
    box = start(
        world.scenario(
            notes={
                "hasNotes": False,
                "missingPrivileges": ["prvAppendNote", "prvAppendTowork365_Subscription"],
            }
        )
    )
    checks = services_for(box, **NOTES_ON).check_schema()
    failed = {c.name: c.detail for c in checks if not c.ok}

    assert set(failed) == {
        "notes on subscription records",
        "note navigation property",
        "privilege prvAppendNote",
        "privilege prvAppendTowork365_Subscription",
    }
    assert "HasNotes is false" in failed["notes on subscription records"]
    assert "lacks prvAppendNote" in failed["privilege prvAppendNote"]
    passed = {c.name for c in checks if c.ok}
    assert "privilege prvCreateNote" in passed


def test_check_schema_with_notes_passes_on_the_default_sandbox(
    world: ScenarioBuilder, start: Any
) -> None:
    box = start(world.scenario())
    on = services_for(box, **NOTES_ON).check_schema()
    off = services_for(box).check_schema()

    assert all(c.ok for c in on), [c for c in on if not c.ok]
    nav = next(c for c in on if c.name == "note navigation property")
    assert nav.detail.endswith("objectid_work365_subscription")
    assert len(on) == len(off) + 5  # HasNotes, navigation, three privileges


def test_the_notes_of_a_record_are_read_back_with_a_filter_on_the_regarding_lookup(
    world: ScenarioBuilder, start: Any
) -> None:
    two_new(world)
    box = start(world.scenario())
    sync(box, **NOTES_ON)
    repo = services_for(box).repository()

    (note,) = repo.notes_of(gid("rec", 2))
    assert note["subject"] == SUBJECT_SET
    assert gid("con", 10) in note["notetext"]
    assert repo.notes_of(gid("rec", 3)) == []
    assert box.counts()["dataverse"]["GET annotations"] == 2


def test_an_undo_with_notes_leaves_a_note_with_each_clear_and_none_where_it_skips(
    world: ScenarioBuilder, start: Any
) -> None:
    two_new(world)
    box = start(world.scenario())
    services = services_for(box, **NOTES_ON)
    run = services.sync(SyncRequest())
    # A person moves record 2 to another contract after the run: the undo leaves it alone.
    moved = by_hand_contract(box, services, gid("rec", 2))

    result = run_undo(services.undo_deps(), UndoRequest(undo_of=run.run_id, apply=True))

    cleared = [i for i in result["items"] if i.get("result") == "cleared"]
    assert [i["recordId"] for i in cleared] == [gid("rec", 1)]
    assert contract_of(box, gid("rec", 1)) is None
    subjects = [n["subject"] for n in notes(box)[gid("rec", 1)]]
    assert sorted(subjects) == sorted([SUBJECT_SET, f"{SUBJECT_CLEARED} of run {run.run_id}"])
    assert [n["subject"] for n in notes(box)[gid("rec", 2)]] == [SUBJECT_SET]
    assert contract_of(box, gid("rec", 2)) == moved


def by_hand_contract(box: Sandbox, services: Any, record_id: str) -> str:
    """Move a record to another contract of its Account, as a billing admin would."""
    row = next(
        r
        for r in box.dataverse.rows("work365_subscriptions")
        if r["work365_subscriptionid"] == record_id
    )
    contract = gid("con", 11)
    services.dataverse.update(
        "work365_subscriptions",
        record_id,
        {"work365_BillingContract@odata.bind": f"/work365_billingcontracts({contract})"},
        etag=str(row["@odata.etag"]),
    )
    return contract


def old_unassigned(world: ScenarioBuilder) -> str:
    """One record created before the cutoff, unassigned, of a customer whose Account has one
    default contract: what `backfill --apply` assigns. Returns the record id."""
    account = world.account(1, name="Contoso Ltd")
    customer = world.customer(1, account_id=account)
    world.record(1, world.pc_subscription(1, customer), account_id=account, created_on=OLD)
    return gid("rec", 1)


def backfill_apply(box: Sandbox, **settings: str) -> dict[str, Any]:
    deps = services_for(box, **settings).backfill_deps()
    return run_backfill(deps, BackfillRequest(apply=True))


def test_backfill_apply_leaves_a_note_with_each_assignment(
    world: ScenarioBuilder, start: Any
) -> None:
    record = old_unassigned(world)
    box = start(world.scenario())
    result = backfill_apply(box, **NOTES_ON)

    assert result["counts"]["assigned"] == 1
    assert contract_of(box, record) == gid("con", 10)
    (note,) = notes(box)[record]
    assert note["subject"] == SUBJECT_SET
    text = note["notetext"]
    assert f"Contract 10 ({gid('con', 10)})" in text
    assert f"Account: Contoso Ltd ({gid('acc', 1)})" in text
    assert "backfill --apply" in text
    assert "Cutoff in force: 2026-01-01T00:00:00Z (from audit)" in text
    assert f"Run: {result['runId']}" in text
    # The note rides in the write's change set: a $batch, no bare PATCH.
    dv = box.counts()["dataverse"]
    assert (dv["POST $batch"], dv.get("PATCH work365_subscriptions", 0)) == (1, 0)


def test_backfill_apply_with_a_failing_note_assigns_nothing(
    world: ScenarioBuilder, start: Any
) -> None:
    record = old_unassigned(world)
    box = start(world.scenario())
    box.faults.add(
        {
            "service": "dataverse",
            "method": "POST",
            "path": "annotations$",
            "kind": "500",
            "batchPart": True,
            "times": 1,
        }
    )
    result = backfill_apply(box, **NOTES_ON)

    assert result["counts"]["failed"] == 1
    assert contract_of(box, record) is None  # the change set was rolled back whole
    assert notes(box) == {}
    assert box.faults.fired() == [1]


def test_backfill_apply_with_notes_off_writes_no_note(world: ScenarioBuilder, start: Any) -> None:
    record = old_unassigned(world)
    box = start(world.scenario())
    backfill_apply(box)

    assert contract_of(box, record) == gid("con", 10)
    assert notes(box) == {}
    assert box.counts()["dataverse"]["PATCH work365_subscriptions"] == 1
