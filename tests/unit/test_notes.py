"""Notes (WORK365_WRITE_NOTES): the setting, and what a note says (operations/notes.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.builders import ACCOUNT, a_contract, a_record, a_subscription, a_world, only
from tests.unit.test_settings import settings
from work365_fn.errors import InvalidSettingError
from work365_fn.operations.notes import (
    SUBJECT_CLEARED,
    SUBJECT_CREATED,
    SUBJECT_SET,
    NoteContext,
    note_for_undo,
    note_for_write,
)
from work365_fn.rules import Action, Decision, Reason, plan
from work365_fn.sandbox.core import ScenarioError
from work365_fn.sandbox.faults import parse_rule
from work365_fn.sandbox.scenario import parse_scenario

CONTEXT = NoteContext("run-7", datetime(2026, 1, 1, tzinfo=UTC), "audit")


def test_notes_are_off_by_default_and_read_as_a_boolean() -> None:
    assert settings().write_notes is False
    assert settings(WORK365_WRITE_NOTES="true").write_notes is True
    with pytest.raises(InvalidSettingError) as caught:
        settings(WORK365_WRITE_NOTES="sometimes")
    assert caught.value.key == "WORK365_WRITE_NOTES"


def test_an_assignment_note_names_contract_account_rule_cutoff_and_run() -> None:
    contract = a_contract(name="Contoso Licences")
    decision = only(plan(a_world(contracts=[contract], records=[a_record()])))
    assert decision.action is Action.ASSIGN

    note = note_for_write(
        decision, CONTEXT, contract_name="Contoso Licences", account_name="Contoso Ltd"
    )

    assert note.subject == SUBJECT_SET
    assert note.text.splitlines()[:6] == [
        f"Billing contract set on this record: Contoso Licences ({contract.id})",
        f"Account: Contoso Ltd ({ACCOUNT})",
        "Chosen by: the Account's one active default contract (default-contract)",
        f"Partner Center subscription: {decision.subscription.id}",
        "Cutoff in force: 2026-01-01T00:00:00Z (from audit)",
        "Run: run-7",
    ]


def test_a_rule_named_in_the_message_is_the_one_the_note_names() -> None:
    decision = Decision(
        a_subscription(),
        None,
        Reason.LANDING_RULE,
        Action.CREATE,
        account_id=ACCOUNT,
        contract_id="cccccccc-0000-0000-0000-000000000009",
        message="rule 'Azure plan to arrears'",
    )

    note = note_for_write(decision, CONTEXT, contract_name=None, account_name=None)

    assert "set when this record was created" in note.text
    assert "Chosen by: landing-rule: rule 'Azure plan to arrears'" in note.text
    assert f"Account: {ACCOUNT}" in note.text  # no name known: the id alone


def test_a_creation_without_a_contract_says_why_and_no_cutoff_is_said_so() -> None:
    decision = Decision(a_subscription(), None, Reason.UNMAPPED_CUSTOMER, Action.CREATE)

    note = note_for_write(
        decision, NoteContext("run-8", None), contract_name=None, account_name=None
    )

    assert note.subject == SUBJECT_CREATED
    assert "without a billing contract (unmapped-customer)" in note.text
    assert "Account: none" in note.text
    assert "Cutoff in force: none known" in note.text


def test_an_undo_note_names_the_run_it_undoes() -> None:
    note = note_for_undo(
        undone_run_id="run-1", run_id="run-2", contract_id="c1", contract_name="Arrears"
    )

    assert note.subject == f"{SUBJECT_CLEARED} of run run-1"
    assert "Billing contract cleared: Arrears (c1)" in note.text
    assert "Run: run-2" in note.text


def test_the_scenario_notes_switch_is_checked_field_by_field() -> None:
    base = {"settings": {}}
    assert parse_scenario(base).notes.has_notes is True
    parsed = parse_scenario({**base, "notes": {"hasNotes": False, "missingPrivileges": []}})
    assert parsed.notes.has_notes is False
    with pytest.raises(ScenarioError, match=r"'notes.missingPrivileges\[0\]'"):
        parse_scenario({**base, "notes": {"missingPrivileges": ["CreateNote"]}})
    with pytest.raises(ScenarioError, match=r"'notes\.other'"):
        parse_scenario({**base, "notes": {"other": 1}})


def test_a_batch_part_fault_takes_only_status_kinds_on_dataverse() -> None:
    rule = parse_rule({"kind": "500", "batchPart": True, "path": "annotations$"})
    assert rule.batch_part is True
    for bad in (
        {"kind": "drop"},
        {"kind": "race", "set": {"x": 1}},
        {"kind": "500", "service": "token"},
    ):
        with pytest.raises(ScenarioError, match="batchPart"):
            parse_rule({**bad, "batchPart": True})
