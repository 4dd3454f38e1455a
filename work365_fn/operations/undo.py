"""Undo of any run that wrote: clear exactly the lookups the run set, where they are still its.

Every live run that writes keeps a journal (operations/run_documents.py: `Journal`): a sync run
through `write_journaled` below (its writes go out in slices, each journaled `pending` before it
is sent and settled after), a backfill run write by write. `run_undo` reads every journal of the
run (a fanned-out run has one per batch attempt) and, for each write it made:

- re-reads the record; clears its Billing Contract lookup only where it still points to the
  contract the run set, with `If-Match` on the ETag just read (a 412 leaves it: skipped);
- reports every record it leaves, with why: changed since (now on another contract), deleted,
  already cleared, already undone, a write the run may not have finished;
- never deletes a record the run created: it is listed (`created: true`), its lookup cleared
  like any other;
- is a dry run unless `apply`; applied, it marks each entry of the undone run's journal
  (pending, then undone) and keeps a journal of its own (`undo-journal`);
- with notes on (WORK365_WRITE_NOTES), sends each clear and its note (operations/notes.py,
  `note_for_undo`) in one `$batch` change set: both happen or neither;
- refuses to undo an undo (UndoRefusedError): to assign again, run sync or backfill;
- leaves a record a later run assigned again (`reassigned-by`): every writing run names itself
  as the record's last assigner (`note_assigners`, one small document per record under the
  run store's `assigned-by` id) before its write is sent, and undo clears only when that is
  still the run being undone. Same contract, same lookup: only this tells A's write from B's.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from work365_fn.adapters.dataverse_metadata import SubscriptionBindings
from work365_fn.adapters.dataverse_repository import Repository
from work365_fn.adapters.storage import RunStore
from work365_fn.errors import ApiError, AuthError, ConflictError, NotFoundError, Work365Error
from work365_fn.errors import error_json as _error_json
from work365_fn.logs import RunLog
from work365_fn.operations.inputs import BadRequest, boolean, guid_list, optional_guid
from work365_fn.operations.notes import note_for_undo
from work365_fn.operations.run_documents import (
    Journal,
    JournalNotFoundError,
    load_journals,
    new_journal_name,
)
from work365_fn.operations.writer import BatchWriter, WriteLimits
from work365_fn.rules import Action, Decision, Reason, World
from work365_fn.rules.model import SubscriptionRecord, norm_id
from work365_fn.rules.summary import RunSummary
from work365_fn.rules.timestamps import format_timestamp

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SYNC_LIMIT = 100  # HTTP: more journal entries than this run off the request (202)
UNDO_JOURNAL = "undo-journal"
ASSIGNER_WORKERS = 8
ASSIGNED_BY = "assigned-by"  # the run store id whose document <record id> names its last assigner

__all__ = [
    "SYNC_LIMIT",
    "JournalNotFoundError",
    "UndoDeps",
    "UndoRefusedError",
    "UndoRequest",
    "entries_to_undo",
    "last_assigner",
    "note_assigners",
    "run_undo",
    "undo_job",
    "write_journaled",
]


class UndoRefusedError(Work365Error):
    """The run named is an undo itself: undoing an undo is refused (run sync or backfill)."""


@dataclass(frozen=True)
class UndoDeps:
    """What an undo uses: the repository it re-reads and writes through, the run store the
    journals live in, its clocks, and, with notes on (WORK365_WRITE_NOTES), the subscription
    bindings that carry the note's navigation property."""

    repository: Repository
    run_store: RunStore
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    monotonic: Callable[[], float] = time.monotonic
    run_deadline_seconds: float | None = None  # a queued undo: no clear after this long
    note_bindings: Callable[[], SubscriptionBindings] | None = None  # None: notes off


@dataclass(frozen=True)
class UndoRequest:
    undo_of: str  # the run id whose writes to undo
    apply: bool = False
    customer_ids: tuple[str, ...] = ()
    budget_seconds: float | None = None  # no clear after this long

    FIELDS = ("apply", "customerIds")

    def __post_init__(self) -> None:
        norm_id(self.undo_of)  # ValueError: run ids are GUIDs

    @classmethod
    def from_payload(
        cls, undo_of: str, payload: Mapping[str, Any], budget_seconds: float | None = None
    ) -> UndoRequest:
        """The body of `POST /api/runs/{id}/undo` (without `async`), checked field by field
        (BadRequest naming the field)."""
        unknown = sorted(set(payload) - set(cls.FIELDS))
        if unknown:
            raise BadRequest(unknown[0], f"unknown field '{unknown[0]}'")
        return cls(
            undo_of=undo_of.lower(),
            apply=boolean(payload, "apply"),
            customer_ids=guid_list(payload, "customerIds"),
            budget_seconds=budget_seconds,
        )

    def payload(self) -> dict[str, Any]:
        """The input of a queued `undo` job (`undo_job` reads it back)."""
        return {"undoOf": self.undo_of, "apply": self.apply, "customerIds": list(self.customer_ids)}


# ---- the last run that assigned each record -------------------------------------------------


def note_assigners(
    store: RunStore, run_id: str, record_ids: Sequence[str], clock: Callable[[], datetime]
) -> None:
    """Name `run_id` the last run that assigned each record: put before the write is sent (a
    crash after the write still leaves it named), so an undo of an earlier run never clears a
    lookup this run set. A run whose write then fails stays named: undo of the earlier run
    leaves the record (the safe side). Work365Error when the store cannot be written."""
    at = format_timestamp(clock())
    unique = list(dict.fromkeys(r.lower() for r in record_ids))

    def put(record_id: str) -> None:
        store.put(ASSIGNED_BY, record_id, {"recordId": record_id, "runId": run_id, "at": at})

    if len(unique) <= 1:
        for record_id in unique:
            put(record_id)
        return
    # One small document per record: written side by side (a slice is at most the batch size),
    # so a slice of 100 writes costs about one storage round trip per ASSIGNER_WORKERS records.
    with ThreadPoolExecutor(max_workers=min(ASSIGNER_WORKERS, len(unique))) as pool:
        list(pool.map(put, unique))  # re-raises the first failure: the slice is then not sent


def last_assigner(store: RunStore, record_id: str) -> str | None:
    """The run that last assigned the record, None when no run named itself (a run from before
    this document existed)."""
    document = store.get(ASSIGNED_BY, record_id.lower()) or {}
    run_id = document.get("runId")
    return run_id.lower() if isinstance(run_id, str) and run_id else None


# ---- the journal of a sync run's writes ------------------------------------------------------


@dataclass(frozen=True)
class WriteJournal:
    """Where a sync run journals its writes: the run store, the run id, the lookup's
    navigation property (what undo clears), the clock, and the writes' deadline clock."""

    store: RunStore
    run_id: str
    navigation: str
    clock: Callable[[], datetime]
    monotonic: Callable[[], float] = time.monotonic


class WritingDeps(Protocol):
    """What a run that writes decisions needs (SyncDeps and RecordsDeps both have it)."""

    @property
    def repository(self) -> Repository: ...
    @property
    def bindings(self) -> Callable[[], SubscriptionBindings]: ...
    @property
    def clock(self) -> Callable[[], datetime]: ...
    @property
    def monotonic(self) -> Callable[[], float]: ...
    @property
    def sleep(self) -> Callable[[float], None]: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def run_store(self) -> RunStore | None: ...


def write_decisions(
    deps: WritingDeps,
    world: World,
    decisions: Sequence[Decision],
    summary: RunSummary,
    rlog: RunLog,
    deadline: float | None,
) -> list[Decision]:
    """The writes of a run (sync or records): `$batch`es with If-Match (and notes), journaled
    for undo when there is a run store; without one, nothing to undo the run with."""
    writer = BatchWriter(
        deps.repository,
        world,
        deps.bindings(),
        summary,
        rlog,
        WriteLimits(
            batch_size=deps.batch_size,
            deadline=deadline,
            monotonic=deps.monotonic,
            sleep=deps.sleep,
            max_throttled=deps.max_attempts,
        ),
    )
    rlog.info(
        "writing %d subscriptions in batches of %d",
        sum(1 for d in decisions if d.action is not Action.NONE),
        writer.batch_size,
    )
    if deps.run_store is None:
        return writer.write(list(decisions))
    journal = WriteJournal(
        deps.run_store,
        summary.run_id,
        deps.bindings().billing_contract_nav,
        deps.clock,
        deps.monotonic,
    )
    return write_journaled(writer, decisions, journal, summary, deadline)


def write_journaled(
    writer: BatchWriter,
    decisions: Sequence[Decision],
    journal: WriteJournal,
    summary: RunSummary,
    deadline: float | None,
) -> list[Decision]:
    """`writer.write(decisions)`, slice by slice: each slice's writes are journaled `pending`
    before they are sent and settled after, so a crash leaves a truthful journal. No write is
    sent unjournaled: when the journal cannot be saved, the remaining writes become errors."""
    final = list(decisions)
    todo = [i for i, d in enumerate(decisions) if d.action is not Action.NONE]
    book = Journal(
        journal.store, journal.run_id, journal.clock, name=new_journal_name(), kind="sync-journal"
    )
    while todo:
        if deadline is not None and journal.monotonic() >= deadline:
            chunk, todo = todo, []  # the writer turns each into a deadline error, unsent
            for i, after in zip(chunk, writer.write([decisions[i] for i in chunk]), strict=True):
                final[i] = after
            break
        size = max(writer.batch_size, 100)
        chunk, todo = todo[:size], todo[size:]
        entries = [_pending(decisions[i], journal.navigation, writer) for i in chunk]
        try:
            book.add_all(entries)
            _name_assigner(journal, entries, "updated")
        except Work365Error as exc:
            _unjournaled(final, [*chunk, *todo], summary, exc)
            return final
        for i, entry, after in zip(
            chunk, entries, writer.write([decisions[i] for i in chunk]), strict=True
        ):
            final[i] = after
            _settle(entry, after)
        try:
            book.commit(entries)
            _name_assigner(journal, entries, "created")  # their ids are known only now
        except Work365Error as exc:
            _unjournaled(final, todo, summary, exc)
            return final
    try:
        book.set_status("finished")
    except Work365Error as exc:
        summary.warnings.append(f"the run's journal could not be closed ({exc})")
    return final


def _name_assigner(journal: WriteJournal, entries: Sequence[dict[str, Any]], op: str) -> None:
    """`note_assigners` for the slice's entries of operation `op` that set a contract: updates
    before they are sent, creates once written (no earlier run can have set a new record)."""
    ids = [
        str(e["recordId"])
        for e in entries
        if e.get("operation") == op
        and e.get("recordId")
        and e.get("contractId")
        and e.get("state") in ("pending", "assigned")
    ]
    note_assigners(journal.store, journal.run_id, ids, journal.clock)


def _pending(decision: Decision, navigation: str, writer: BatchWriter) -> dict[str, Any]:
    record = decision.record
    return {
        "recordId": record.id.lower() if record is not None else None,
        # The names at write time, so that undo (and a second undo) can name what it clears.
        "recordName": record.name if record is not None else "",
        "subscriptionId": decision.subscription.id.lower(),
        "customerId": decision.subscription.customer_id.lower(),
        "contractId": decision.contract_id,
        "contractName": writer.contract_name(decision.contract_id),
        "previousContractId": None,  # a run only sets empty lookups
        "operation": "updated" if decision.action is Action.ASSIGN else "created",
        "navigation": navigation,
        "etagBefore": record.etag if record is not None else None,
        "etagAfter": None,  # `_settle`: the write's answer's ETag, when it carries one
        "state": "pending",
    }


def _settle(entry: dict[str, Any], after: Decision) -> None:
    """The entry after the write: `assigned` (written), `failed`, or `conflict` (re-decided
    after a 412: nothing written)."""
    if after.reason is Reason.ERROR:
        entry.update(state="failed", error=after.message[:300])
    elif after.action is Action.NONE:
        entry.update(state="conflict")
    else:
        record = after.record
        # The ETag the write's answer carried (BatchWriter puts it on the record), null when it
        # carried none: docs/undo.md, "etagAfter".
        etag = record.etag if record is not None else None
        entry.update(
            state="assigned",
            operation="updated" if after.action is Action.ASSIGN else "created",
            recordId=record.id.lower() if record is not None else None,
            contractId=after.contract_id,
            etagAfter=etag if etag and etag != entry.get("etagBefore") else None,
        )


def _unjournaled(
    final: list[Decision], left: Sequence[int], summary: RunSummary, exc: Work365Error
) -> None:
    message = f"not written: the run's journal could not be saved ({exc}); the next run does it"
    summary.warnings.append(
        f"the run's journal could not be saved ({exc}): {len(left)} writes were not made"
    )
    for i in left:
        d = final[i]
        final[i] = Decision(
            d.subscription, d.record, Reason.ERROR, Action.NONE, d.account_id, message=message
        )


# ---- undo ------------------------------------------------------------------------------------


def entries_to_undo(store: RunStore, undo_of: str) -> int:
    """How many writes of the run an undo looks at (JournalNotFoundError, UndoRefusedError)."""
    return len(_targets(_journals(store, undo_of, lambda: datetime.now(UTC)), ()))


def _journals(store: RunStore, undo_of: str, clock: Callable[[], datetime]) -> list[Journal]:
    journals = load_journals(store, undo_of.lower(), clock)
    if any(j.kind == UNDO_JOURNAL for j in journals):
        raise UndoRefusedError(
            f"run {undo_of.lower()} is an undo: an undo is not undone; to assign again, run "
            "sync (or backfill) again"
        )
    return journals


def _targets(
    journals: Sequence[Journal], customers: Sequence[str]
) -> list[tuple[Journal, dict[str, Any]]]:
    """The entries an undo looks at: the writes made (or maybe made), in the scope."""
    scope = {c.lower() for c in customers}
    return [
        (journal, entry)
        for journal in journals
        for entry in journal.entries
        if entry.get("state") in ("assigned", "pending", "undone")
        and (not scope or str(entry.get("customerId") or "").lower() in scope)
    ]


@dataclass
class _Undo:
    """One undo run: its dependencies, request, id, log, its own journal (made at the first
    clear), its errors, and its deadline in monotonic seconds."""

    deps: UndoDeps
    request: UndoRequest
    run_id: str
    rlog: RunLog
    deadline: float | None
    own: Journal | None = None
    errors: list[dict[str, object]] = field(default_factory=list)

    def now(self) -> str:
        return format_timestamp(self.deps.clock())

    def mark(self, journal: Journal, entry: dict[str, Any], what: str, **changes: Any) -> None:
        """Record on the undone run's journal entry what this undo did to it (`what`)."""
        journal.update(
            entry, undo={"runId": self.run_id, "state": what, "at": self.now()}, **changes
        )

    def record(self, item: dict[str, Any], entry: dict[str, Any], etag: str | None) -> None:
        """This undo's own journal: one entry per lookup cleared."""
        if self.own is None:
            self.own = Journal(
                self.deps.run_store,
                self.run_id,
                self.deps.clock,
                name=new_journal_name(),
                kind=UNDO_JOURNAL,
            )
            self.own.header["undoOf"] = self.request.undo_of
        self.own.add(
            {
                "recordId": item["recordId"],
                "subscriptionId": item["subscriptionId"],
                "customerId": item["customerId"],
                "contractId": None,
                "previousContractId": item["billingContractId"],
                "operation": "cleared",
                "navigation": entry.get("navigation"),
                "etagBefore": etag,
                "etagAfter": None,
                "state": "cleared",
            }
        )


def run_undo(
    deps: UndoDeps,
    request: UndoRequest,
    run_id: str | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
) -> dict[str, Any]:
    """Undo (or, without `apply`, say what undo would do to) the writes of `request.undo_of`.
    JournalNotFoundError / UndoRefusedError propagate (usage errors); upstream failures make
    the status `failed`."""
    run_id = run_id or str(uuid.uuid4())
    if clock is not None:
        deps = replace(deps, clock=clock)
    started = deps.clock()
    rlog = RunLog(log, {"run_id": run_id})
    budget = request.budget_seconds
    deadline = deps.monotonic() + budget if budget else None
    undo = _Undo(deps, request, run_id, rlog, deadline)
    journals = _journals(deps.run_store, request.undo_of, deps.clock)
    rlog.info("undo of run %s started (apply: %s)", request.undo_of, request.apply)
    items: list[dict[str, Any]] = []
    status = None
    try:
        for journal, entry in _targets(journals, request.customer_ids):
            items.append(_undo_one(undo, journal, entry))
    except (ApiError, AuthError) as exc:
        rlog.error("undo failed: %s", exc)
        undo.errors.append(_error_json(exc, None))
        status = "failed"
    result = _result(undo, items, started, status)
    if undo.own is not None:
        undo.own.set_status("finished", counts=result["counts"], outcome=result["status"])
    rlog.info("undo of run %s %s: %s", request.undo_of, result["status"], result["counts"])
    return result


def _result(
    undo: _Undo, items: list[dict[str, Any]], started: datetime, status: str | None
) -> dict[str, Any]:
    late = any(i["result"] in ("failed", "deadline") for i in items)
    return {
        "schemaVersion": SCHEMA_VERSION,
        "runId": undo.run_id,
        "kind": "undo",
        "undoOf": undo.request.undo_of,
        "apply": undo.request.apply,
        "status": status or ("partial" if undo.errors or late else "succeeded"),
        "startedAt": format_timestamp(started),
        "finishedAt": undo.now(),
        "setting": None,
        "counts": {
            "entries": len(items),
            "eligible": sum(i["action"] == "clear" for i in items),
            "cleared": sum(i["result"] == "cleared" for i in items),
            "changed": sum(i["result"] == "changed" for i in items),
            "skipped": sum(i["result"] in ("skipped", "deadline") for i in items),
            "failed": sum(i["result"] == "failed" for i in items),
            "created": sum(bool(i["created"]) for i in items),
        },
        "items": items,
        "skippedCustomers": [],
        "errors": undo.errors,
        "warnings": [],
    }


def _item(entry: dict[str, Any]) -> dict[str, Any]:
    """The undo's item for a journal entry, before the record is read: skipped, no action."""
    record_id = entry.get("recordId")
    return {
        "customerId": entry.get("customerId"),
        "subscriptionId": entry.get("subscriptionId"),
        "recordId": str(record_id).lower() if record_id else None,
        "recordName": str(entry.get("recordName") or ""),
        "accountId": None,
        "billingContractId": entry.get("contractId"),
        "billingContractName": entry.get("contractName") or None,
        "action": "none",
        "reason": "undo",
        "result": "skipped",
        "why": None,
        "created": entry.get("operation") == "created",
        "message": "",
    }


def _skip(item: dict[str, Any], why: str, message: str, result: str = "skipped") -> dict[str, Any]:
    item.update(result=result, why=why, message=message)
    return item


def _undo_one(undo: _Undo, journal: Journal, entry: dict[str, Any]) -> dict[str, Any]:
    """Undo one journaled write (or say what undo would do): the item of the undo's result."""
    item = _item(entry)
    done = _settled(entry, item)
    if done is not None:
        return done
    try:
        record, _ = undo.deps.repository.record_row(item["recordId"])
    except NotFoundError:
        return _skip(item, "deleted", "the record no longer exists")
    item["recordName"] = record.name or item["recordName"]
    item["accountId"] = (record.account_id or "").lower() or None
    written = entry.get("etagAfter")
    if written and record.etag and written != record.etag:  # the record changed since the write
        item.update(etagAfter=written, etagNow=record.etag)
    if _left_alone(undo, journal, entry, record, item) or _reassigned(undo, item):
        return item
    item["action"] = "clear"
    if not undo.request.apply:
        item["result"] = "planned"
        return item
    if undo.deadline is not None and undo.deps.monotonic() >= undo.deadline:
        return _skip(
            item, "deadline", "not cleared: the time budget ran out; undo again", "deadline"
        )
    _clear(undo, journal, entry, record, item)
    return item


def _settled(entry: dict[str, Any], item: dict[str, Any]) -> dict[str, Any] | None:
    """The item when the journal alone decides it (no read needed), else None."""
    if entry.get("state") == "undone":
        by = (entry.get("undo") or {}).get("runId") or "an earlier undo"
        return _skip(item, "already-undone", f"already undone by run {by}")
    if entry.get("state") == "pending" and item["recordId"] is None:
        return _skip(
            item,
            "mid-write",
            f"the run stopped mid-write: a record for subscription {item['subscriptionId']} "
            "may have been created; check it by hand",
        )
    if item["billingContractId"] is None:
        return _skip(item, "no-contract", "created by the run without a contract: nothing to clear")
    if item["recordId"] is None:
        return _skip(
            item,
            "unknown-record",
            f"created by the run, but its id was not read back: find the record of subscription "
            f"{item['subscriptionId']} and check its contract by hand",
        )
    return None


def _left_alone(
    undo: _Undo,
    journal: Journal,
    entry: dict[str, Any],
    record: SubscriptionRecord,
    item: dict[str, Any],
) -> bool:
    """True (the item says why) when the record's lookup is not this undo's to clear: the run
    stopped mid-write, the lookup is already empty, or it points to another contract now."""
    contract = str(item["billingContractId"]).lower()
    current = (record.billing_contract_id or "").lower()
    undo_state = (entry.get("undo") or {}).get("state")
    if entry.get("state") == "pending":
        # The run stopped between its write and the journal's update: the write may or may not
        # have happened. Never guess.
        if not current:
            _skip(
                item,
                "mid-write",
                "the run stopped mid-write: nothing to clear (the lookup is empty)",
            )
        else:
            _skip(
                item,
                "mid-write",
                f"the run stopped mid-write: the record is on contract {current}, but nothing "
                "proves the run set it; check it by hand",
            )
        return True
    if not current:
        if undo.request.apply and undo_state == "pending":  # an undo stopped after its clear
            undo.mark(journal, entry, "cleared", state="undone")
            _skip(
                item,
                "already-cleared",
                "the lookup is empty: cleared by an earlier undo",
                "cleared",
            )
            return True
        _skip(item, "already-cleared", "the lookup is already empty")
        return True
    if current != contract:
        _skip(
            item,
            "changed-since",
            f"changed since the run (now on contract {current}): left alone",
            "changed",
        )
        return True
    return False


def _reassigned(undo: _Undo, item: dict[str, Any]) -> bool:
    """True (the item says why) when a later run assigned the record since: the lookup is on
    the same contract, but it is that run's write now, not this run's."""
    by = last_assigner(undo.deps.run_store, item["recordId"])
    if by is None or by == undo.request.undo_of.lower():
        return False
    _skip(
        item,
        "reassigned-by",
        f"assigned again by a later run ({by}) after it was cleared: left alone; undo run {by} "
        "to clear it",
    )
    item["reassignedBy"] = by
    return True


def _clear(
    undo: _Undo,
    journal: Journal,
    entry: dict[str, Any],
    record: SubscriptionRecord,
    item: dict[str, Any],
) -> None:
    """Clear the lookup (If-Match: the ETag just read), marked on the undone run's journal
    before and after; with notes on, the note goes in the same changeset."""
    record_id, contract = item["recordId"], item["billingContractId"]
    assert record.etag is not None
    navigation = str(entry.get("navigation") or "")
    undo.mark(journal, entry, "pending")
    try:
        _clear_lookup(
            undo, record_id, navigation, record.etag, contract, item["billingContractName"]
        )
    except ConflictError:
        undo.mark(journal, entry, "changed")
        _skip(
            item,
            "changed-meanwhile",
            "modified while undoing (412): left alone; undo again to retry",
        )
        return
    except ApiError as exc:
        undo.mark(journal, entry, "failed")
        item.update(result="failed", why="failed", message=str(exc))
        undo.errors.append(_error_json(exc, item["customerId"]))
        return
    # The record's name kept on the entry: a second undo names it without reading it.
    undo.mark(journal, entry, "cleared", state="undone", recordName=item["recordName"])
    undo.record(item, entry, record.etag)
    undo.rlog.info(
        "record %s: contract %s cleared (undo of %s)", record_id, contract, undo.request.undo_of
    )
    item["result"] = "cleared"


def _clear_lookup(
    undo: _Undo,
    record_id: str,
    navigation: str,
    etag: str,
    contract: str,
    contract_name: str | None,
) -> None:
    """The conditional clear; with notes on, the clear and its note in one change set (both
    happen or neither; a 412 leaves no note)."""
    repo = undo.deps.repository
    bindings = undo.deps.note_bindings() if undo.deps.note_bindings is not None else None
    if bindings is None or bindings.note_nav is None:
        repo.clear_contract(record_id, navigation, etag=etag)
        return
    note = note_for_undo(
        undone_run_id=undo.request.undo_of,
        run_id=undo.run_id,
        contract_id=contract,
        contract_name=contract_name,
    )
    repo.write_with_note(
        repo.clear_operation(record_id, navigation, etag=etag),
        repo.note_operation(record_id, note.subject, note.text, bindings),
    )


def undo_job(deps: UndoDeps, payload: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The queued job (jobs registry "undo"): `payload` is `UndoRequest.payload()`. Clears
    stop at the run deadline (WORK365_RUN_DEADLINE_SECONDS), below the host's timeout. A run
    without a journal, or an undo, fails the queued run with the reason (no retry)."""
    body = dict(payload)
    undo_of = optional_guid(body, "undoOf")
    if undo_of is None:
        raise BadRequest("undoOf", "'undoOf' must be the run id to undo")
    body.pop("undoOf", None)
    request = UndoRequest.from_payload(undo_of, body, budget_seconds=deps.run_deadline_seconds)
    try:
        return run_undo(deps, request, run_id)
    except (JournalNotFoundError, UndoRefusedError) as exc:
        raise BadRequest("undoOf", str(exc)) from None
