"""The notes (Dataverse `annotation` rows) this service leaves on the subscription records it
writes, with WORK365_WRITE_NOTES=true: what they say. Pure text, no I/O; the writer sends each
note in the same `$batch` change set as its write (operations/writer.py), so both happen or
neither (docs/notes.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from work365_fn.rules import Action, Decision, Reason
from work365_fn.rules.timestamps import format_timestamp

SUBJECT_SET = "Billing contract set automatically"
SUBJECT_CREATED = "Subscription record created automatically"
SUBJECT_CLEARED = "Billing contract cleared by undo"
SIGNATURE = "Written by work365-fn (Associate Default Billing Contract)."
_RULE_OF = {
    Reason.DEFAULT_CONTRACT: "the Account's one active default contract (default-contract)",
}


@dataclass(frozen=True)
class Note:
    """One note: `subject` (the title the timeline shows) and `text` (its body, `notetext`)."""

    subject: str
    text: str


@dataclass(frozen=True)
class NoteContext:
    """What every note of one run names: the run and the cutoff in force."""

    run_id: str
    since: datetime | None
    since_source: str | None = None

    def cutoff(self) -> str:
        if self.since is None:
            return "none known"
        source = f" (from {self.since_source})" if self.since_source else ""
        return f"{format_timestamp(self.since)}{source}"


def _named(name: str | None, object_id: str | None) -> str:
    if not object_id:
        return "none"
    return f"{name} ({object_id})" if name else object_id


def chosen_by(decision: Decision) -> str:
    """The rule or default that chose the contract: the decision's reason, and its message
    (a landing rule puts the rule's name there)."""
    base = _RULE_OF.get(decision.reason, decision.reason.value)
    return f"{base}: {decision.message}" if decision.message else base


def note_for_write(
    decision: Decision,
    context: NoteContext,
    *,
    contract_name: str | None,
    account_name: str | None,
) -> Note:
    """The note of an assignment, or of a creation (with the contract it bound, if any)."""
    created = decision.action is Action.CREATE
    lines = []
    if decision.contract_id:
        subject = SUBJECT_SET
        what = "set when this record was created" if created else "set on this record"
        lines.append(f"Billing contract {what}: {_named(contract_name, decision.contract_id)}")
    else:
        subject = SUBJECT_CREATED
        lines.append(f"Record created without a billing contract ({decision.reason.value}).")
    lines += [
        f"Account: {_named(account_name, decision.account_id)}",
        f"Chosen by: {chosen_by(decision)}",
        f"Partner Center subscription: {decision.subscription.id.lower()}",
        f"Cutoff in force: {context.cutoff()}",
        f"Run: {context.run_id}",
        SIGNATURE,
    ]
    return Note(subject, "\n".join(lines))


def note_for_undo(
    *, undone_run_id: str, run_id: str, contract_id: str, contract_name: str | None = None
) -> Note:
    """The note of an undo that cleared the contract a run had set: subject "Billing contract
    cleared by undo of run <id>". Undo sends it in the same change set as the clear
    (`BatchWriter`-style: `Repository.note_operation` next to the clearing PATCH)."""
    lines = [
        f"Billing contract cleared: {_named(contract_name, contract_id)}",
        f"It had been set by run {undone_run_id}.",
        f"Run: {run_id}",
        SIGNATURE,
    ]
    return Note(f"{SUBJECT_CLEARED} of run {undone_run_id}", "\n".join(lines))
