"""Backfill: the Work 365 "manual cleanup", made safe.

Assigns existing subscriptions (reason `existing-subscription`: created before the cutoff, no
contract) to their Account's single default contract, deciding each one with the association
rules as if it were new (`decide_for_record` over a world without a cutoff). Only records that
would then be `default-contract` are written, never one that carries billing references.

- Dry run unless `apply`; the plan is computed (and printed by the CLI) before any write.
- Every write is a PATCH with `If-Match` (the ETag read); a 412 re-reads the record and leaves it
  alone if it was assigned or changed in a way that matters (else it retries once).
- Every write is journaled in the run store (`<run id>/backfill-journal`) before and after it,
  so a crash leaves a truthful journal. `--undo RUN_ID` is the one undo of any run
  (operations/undo.py): it clears exactly the lookups the run set, where they still point to
  the contract the run set.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from work365_fn.adapters.dataverse_metadata import SubscriptionBindings
from work365_fn.adapters.dataverse_repository import Repository
from work365_fn.adapters.schema import SubscriptionTable
from work365_fn.adapters.storage import RunStore
from work365_fn.errors import (
    ApiError,
    AuthError,
    ConflictError,
    NotFoundError,
    error_json,
)
from work365_fn.logs import RunLog
from work365_fn.operations.inputs import BadRequest, boolean, guid_list, optional_guid
from work365_fn.operations.notes import NoteContext, note_for_write
from work365_fn.operations.reader import ReaderDeps, ReadOptions, read_tenant
from work365_fn.operations.run_documents import BACKFILL_JOURNAL, Journal, JournalNotFoundError
from work365_fn.operations.undo import UndoDeps, UndoRequest, note_assigners, run_undo
from work365_fn.rules import Action, Decision, Reason, World, decide_for_record, plan
from work365_fn.rules.fixes import billing_references_fix
from work365_fn.rules.model import AssociationSetting, PcSubscription, SubscriptionRecord, norm_id
from work365_fn.rules.names import account_names_read, contract_names_read
from work365_fn.rules.reasons import LANDS
from work365_fn.rules.summary import setting_json
from work365_fn.rules.timestamps import format_timestamp

log = logging.getLogger(__name__)

_LANDING_VALUES = frozenset(r.value for r in LANDS)

SCHEMA_VERSION = 1
JOURNAL = BACKFILL_JOURNAL
JOURNAL_PAGE = 100  # entries per journal document
BILLING_REFERENCES = "billing-references"  # the skip reason of records carrying references

__all__ = [
    "JOURNAL",
    "BackfillDeps",
    "BackfillPlan",
    "BackfillRequest",
    "JournalNotFoundError",
    "backfill_job",
    "load_journal",
    "run_backfill",
    "undo_backfill",
]


@dataclass(frozen=True)
class BackfillDeps:
    """What backfill uses: the tenant read, the repository it writes through, the write
    bindings, where its journal lives, and the subscription table's names."""

    reader: ReaderDeps
    repository: Repository
    bindings: Callable[[], SubscriptionBindings]
    run_store: RunStore
    table: SubscriptionTable
    run_deadline_seconds: float | None = None


@dataclass(frozen=True)
class BackfillRequest:
    apply: bool = False
    customer_ids: tuple[str, ...] = ()
    undo: str | None = None  # the run id of a backfill to undo
    budget_seconds: float | None = None  # no new write after this long (HTTP runs)

    FIELDS = ("apply", "customerIds", "undo")

    def __post_init__(self) -> None:
        if self.undo is not None:
            norm_id(self.undo)  # ValueError: run ids are GUIDs

    @classmethod
    def from_payload(
        cls, payload: Mapping[str, Any], budget_seconds: float | None = None
    ) -> BackfillRequest:
        """The backfill input of `POST /api/backfill` and of a queued `backfill` job, checked
        field by field (BadRequest naming the field): the one copy of these rules."""
        unknown = sorted(set(payload) - set(cls.FIELDS))
        if unknown:
            raise BadRequest(unknown[0], f"unknown field '{unknown[0]}'")
        return cls(
            apply=boolean(payload, "apply"),
            customer_ids=guid_list(payload, "customerIds"),
            undo=optional_guid(payload, "undo"),
            budget_seconds=budget_seconds,
        )

    def payload(self) -> dict[str, Any]:
        """The job input of a queued run (`from_payload` reads it back)."""
        return {"apply": self.apply, "customerIds": list(self.customer_ids), "undo": self.undo}


@dataclass
class Item:
    """One subscription of the plan, and what became of it."""

    customer_id: str
    subscription_id: str
    record: SubscriptionRecord
    contract_id: str | None  # the contract it would get (or got)
    account_id: str | None
    reason: str  # default-contract, billing-references, or the rule that stops it
    message: str = ""
    result: str = "skipped"  # planned | assigned | changed | failed | skipped | deadline

    @property
    def eligible(self) -> bool:
        return self.reason in _LANDING_VALUES  # default-contract, or landing-rule

    def to_json(self, *, action: str) -> dict[str, Any]:
        return {
            "customerId": self.customer_id,
            "subscriptionId": self.subscription_id,
            "recordId": self.record.id.lower(),
            "recordName": self.record.name,
            "accountId": self.account_id,
            "billingContractId": self.contract_id,
            "action": action,
            "reason": self.reason,
            "result": self.result,
            "message": self.message,
        }


@dataclass
class BackfillPlan:
    run_id: str
    request: BackfillRequest
    setting: AssociationSetting
    world: World  # the cutoff-free world the items were decided in
    subscriptions: dict[str, PcSubscription]
    items: list[Item]
    candidates: int
    started_at: datetime
    errors: list[dict[str, object]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped_customers: list[dict[str, str]] = field(default_factory=list)


# ---- plan ----------------------------------------------------------------------------------


def plan_backfill(
    deps: BackfillDeps,
    request: BackfillRequest,
    run_id: str,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    deadline: float | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> BackfillPlan:
    """Read in bulk (with the billing reference columns) and plan. No write. Customers not read
    by `deadline` (monotonic seconds) are listed as skipped."""
    started = clock()
    options = ReadOptions(
        scope=request.customer_ids or None,
        reference_columns=deps.table.billing_references,
        deadline=deadline,
    )
    snapshot = read_tenant(replace(deps.reader, monotonic=monotonic), run_id, options)
    world = snapshot.world()
    existing = [d for d in plan(world) if d.reason is Reason.EXISTING_SUBSCRIPTION]
    # The same rules, with the cutoff out of the way: these are decided as if they were new.
    as_new = replace(world, setting=replace(snapshot.setting, since=None, since_source=None))
    items = []
    for d in existing:
        assert d.record is not None  # existing-subscription always has its record
        item = _item(as_new, d.subscription, d.record, snapshot.references.get(d.record.id))
        items.append(item)
    items.sort(key=lambda i: (i.customer_id, i.subscription_id))
    for item in items:
        item.result = "planned" if item.eligible else "skipped"
    return BackfillPlan(
        run_id=run_id,
        request=request,
        setting=snapshot.setting,
        world=as_new,
        subscriptions={s.id.lower(): s for s in snapshot.subscriptions},
        items=items,
        candidates=len(existing),
        started_at=started,
        errors=list(snapshot.errors),
        warnings=list(snapshot.warnings),
        skipped_customers=list(snapshot.skipped_customers),
    )


def _item(
    world: World,
    sub: PcSubscription,
    record: SubscriptionRecord,
    references: Mapping[str, str] | None,
) -> Item:
    decision = decide_for_record(world, sub, record)
    item = Item(
        customer_id=sub.customer_id.lower(),
        subscription_id=sub.id.lower(),
        record=record,
        contract_id=decision.contract_id,
        account_id=decision.account_id,
        reason=decision.reason.value,
        message=decision.message,
    )
    if references:
        item.reason = BILLING_REFERENCES
        item.contract_id = None
        item.message = (
            f"carries billing references ({', '.join(sorted(references))}): "
            + billing_references_fix()
        )
    elif decision.reason not in LANDS:
        item.contract_id = None
    return item


# ---- apply ---------------------------------------------------------------------------------


def apply_backfill(
    deps: BackfillDeps,
    bf: BackfillPlan,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    deadline: float | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Write the eligible items, each conditionally and journaled before and after; none is
    started after `deadline` (monotonic seconds)."""
    rlog = RunLog(log, {"run_id": bf.run_id})
    eligible = [i for i in bf.items if i.eligible]
    if not eligible:
        rlog.info("backfill: nothing to write")
        return
    writing = _Writing(
        repo=deps.repository,
        bindings=deps.bindings(),
        columns=deps.table.billing_references,
        journal=_journal(deps.run_store, bf.run_id, clock),
        rlog=rlog,
        contract_names=contract_names_read(bf.world.contracts, bf.world.records),
    )
    writing.journal.set_status("running")
    for item in eligible:
        if deadline is not None and monotonic() >= deadline:
            item.result = "deadline"
            item.message = "not written: the run's time budget ran out; run backfill again"
            continue
        _write(writing, bf, item)
    writing.journal.set_status("finished")


@dataclass(frozen=True)
class _Writing:
    """What the writes of one backfill run go through: the repository and the subscription
    lookups' bindings, the billing reference columns a re-read checks, the run's journal, its
    log."""

    repo: Repository
    bindings: SubscriptionBindings
    columns: Sequence[str]
    journal: Journal
    rlog: RunLog
    contract_names: Mapping[str, str]  # for the journal: undo names what it clears


def _write(writing: _Writing, bf: BackfillPlan, item: Item) -> None:
    repo, bindings, journal, rlog = writing.repo, writing.bindings, writing.journal, writing.rlog
    record = item.record
    for attempt in range(2):
        assert item.contract_id is not None and record.etag is not None
        entry = journal.add(
            {
                "recordId": record.id.lower(),
                "recordName": record.name,
                "subscriptionId": item.subscription_id,
                "customerId": item.customer_id,
                "contractId": item.contract_id,
                "contractName": writing.contract_names.get(item.contract_id.lower()),
                "previousContractId": None,
                "operation": "updated",
                "navigation": bindings.billing_contract_nav,
                "etagBefore": record.etag,
                "etagAfter": None,
                "state": "pending",
            }
        )
        try:
            note_assigners(journal.store, bf.run_id, [record.id], journal.clock)
            etag = _assign(writing, bf, item, record)
        except ConflictError:
            journal.update(entry, state="conflict")
            rlog.info("record %s changed since read (412): re-reading", record.id)
            if attempt == 1:
                item.result, item.message = "changed", "the record kept changing; left alone"
                return
            changed = _reread(repo, bf, item, writing.columns)
            if changed is None:
                return
            record = changed
            continue
        except ApiError as exc:
            journal.update(entry, state="failed", error=str(exc))
            item.result, item.message = "failed", str(exc)
            bf.errors.append(error_json(exc, item.customer_id))
            rlog.error("record %s: write failed: %s", record.id, exc)
            return
        if not etag:
            # Dataverse may answer 204 without an ETag: read it (the lookup must be ours).
            after, _ = repo.record_row(record.id)
            if (after.billing_contract_id or "").lower() == item.contract_id:
                etag = after.etag
        journal.update(entry, state="assigned", etagAfter=etag)
        item.record = record
        item.result = "assigned"
        rlog.info("record %s assigned to contract %s", record.id, item.contract_id)
        return


def _assign(
    writing: _Writing, bf: BackfillPlan, item: Item, record: SubscriptionRecord
) -> str | None:
    """The conditional PATCH of one record; with notes on (WORK365_WRITE_NOTES, the bindings
    carry the note's navigation property) in one `$batch` change set with its note, exactly as
    the sync writes (operations/writer.py): both happen or neither."""
    repo, bindings = writing.repo, writing.bindings
    assert item.contract_id is not None
    if bindings.note_nav is None:
        return repo.assign(record, item.contract_id, bindings)
    sub = bf.subscriptions.get(item.subscription_id) or PcSubscription(
        item.subscription_id, item.customer_id
    )
    why = "backfill --apply of a record created before the cutoff"
    decision = Decision(
        subscription=sub,
        record=record,
        reason=Reason(item.reason),
        action=Action.ASSIGN,
        account_id=item.account_id,
        contract_id=item.contract_id,
        message=f"{why}; {item.message}" if item.message else why,
    )
    accounts = account_names_read(bf.world.provider_accounts, bf.world.contracts, bf.world.records)
    contracts = contract_names_read(bf.world.contracts, bf.world.records)
    note = note_for_write(
        decision,
        NoteContext(bf.run_id, bf.setting.since, bf.setting.since_source),
        contract_name=contracts.get(item.contract_id.lower()),
        account_name=accounts.get((item.account_id or "").lower()),
    )
    write = repo.assign_operation(record, item.contract_id, bindings)
    return repo.write_with_note(
        write, repo.note_operation(record.id, note.subject, note.text, bindings)
    )


def _reread(
    repo: Repository, bf: BackfillPlan, item: Item, columns: Sequence[str]
) -> SubscriptionRecord | None:
    """After a 412: the record to try again with, or None (the item says why it is left)."""
    try:
        record, values = repo.record_row(item.record.id, columns)
    except NotFoundError:
        item.result, item.message = "changed", "the record was deleted since it was read"
        return None
    refs = {c: str(v) for c, v in values.items() if v not in (None, "")}
    sub = bf.subscriptions.get(item.subscription_id)
    if record.billing_contract_id:
        item.result = "changed"
        item.message = (
            f"assigned by someone else since it was read (contract "
            f"{record.billing_contract_id.lower()}): left as it is"
        )
        return None
    fresh = _item(bf.world, sub, record, refs) if sub is not None else None
    if fresh is None or not fresh.eligible or fresh.contract_id != item.contract_id:
        item.result = "changed"
        item.reason = fresh.reason if fresh else item.reason
        item.message = "changed since it was read: " + (
            fresh.message or fresh.reason if fresh else "left alone"
        )
        return None
    return record


# ---- undo ----------------------------------------------------------------------------------


def undo_backfill(
    deps: BackfillDeps,
    request: BackfillRequest,
    run_id: str,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """`backfill --undo RUN_ID`: the one undo of any run (operations/undo.py)."""
    assert request.undo is not None
    undo = UndoRequest(
        undo_of=request.undo.lower(),
        apply=request.apply,
        customer_ids=request.customer_ids,
        budget_seconds=request.budget_seconds,
    )
    deps_undo = UndoDeps(
        repository=deps.repository,
        run_store=deps.run_store,
        clock=clock,
        monotonic=deps.reader.monotonic,
        note_bindings=deps.bindings,  # the note's navigation property when notes are on
    )
    return run_undo(deps_undo, undo, run_id)


# ---- the whole run -------------------------------------------------------------------------


def _journal(store: RunStore, run_id: str, clock: Callable[[], datetime]) -> Journal:
    """The backfill run's journal, continued when it exists (a job retried after a failure
    keeps the entries of its first attempt, so an undo still sees every write of the run)."""
    journal = Journal(store, run_id, clock, name=JOURNAL, page_size=JOURNAL_PAGE)
    journal.load()
    return journal


def load_journal(store: RunStore, run_id: str) -> dict[str, Any] | None:
    """A backfill run's whole journal as one document (None when it has none)."""
    journal = Journal(store, run_id, lambda: datetime.now(UTC), name=JOURNAL)
    return journal.to_json() if journal.load() else None


def result_json(bf: BackfillPlan, finished: datetime, *, applied: bool) -> dict[str, Any]:
    items = bf.items
    failed = sum(i.result == "failed" for i in items)
    late = sum(i.result == "deadline" for i in items)
    status = "partial" if bf.errors or failed or late or bf.skipped_customers else "succeeded"
    setting = bf.setting
    return {
        "schemaVersion": SCHEMA_VERSION,
        "runId": bf.run_id,
        "kind": "backfill",
        "undoOf": None,
        "apply": applied,
        "status": status,
        "startedAt": format_timestamp(bf.started_at),
        "finishedAt": format_timestamp(finished),
        "setting": setting_json(setting),
        "counts": {
            "candidates": bf.candidates,
            "eligible": sum(i.eligible for i in items),
            "assigned": sum(i.result == "assigned" for i in items),
            "changed": sum(i.result == "changed" for i in items),
            "skipped": sum(i.result in ("skipped", "deadline") for i in items),
            "failed": failed,
        },
        "items": [i.to_json(action="assign" if i.eligible else "none") for i in items],
        "skippedCustomers": list(bf.skipped_customers),
        "errors": list(bf.errors),
        "warnings": list(bf.warnings),
    }


def failed_result(
    run_id: str, request: BackfillRequest, error: dict[str, object]
) -> dict[str, Any]:
    now = format_timestamp(datetime.now(UTC))
    return {
        "schemaVersion": SCHEMA_VERSION,
        "runId": run_id,
        "kind": "undo" if request.undo else "backfill",
        "undoOf": request.undo,
        "apply": request.apply,
        "status": "failed",
        "startedAt": now,
        "finishedAt": now,
        "setting": None,
        "counts": {},
        "items": [],
        "skippedCustomers": [],
        "errors": [error],
        "warnings": [],
    }


def run_backfill(
    deps: BackfillDeps,
    request: BackfillRequest,
    run_id: str | None = None,
    *,
    on_plan: Callable[[BackfillPlan], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    monotonic: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Plan, show the plan (`on_plan`), then write when `apply`. Or undo a run. Upstream
    failures make status `failed`; JournalNotFoundError propagates (a usage error)."""
    run_id = run_id or str(uuid.uuid4())
    rlog = RunLog(log, {"run_id": run_id})
    monotonic = monotonic or deps.reader.monotonic  # the reader's clock unless one is given
    deadline = monotonic() + request.budget_seconds if request.budget_seconds else None
    try:
        if request.undo:
            rlog.info("backfill undo of %s (apply: %s)", request.undo, request.apply)
            return undo_backfill(deps, request, run_id, clock=clock)
        rlog.info("backfill started (apply: %s)", request.apply)
        bf = plan_backfill(
            deps, request, run_id, clock=clock, deadline=deadline, monotonic=monotonic
        )
        rlog.info(
            "backfill plan: %d existing unassigned, %d eligible",
            bf.candidates,
            sum(i.eligible for i in bf.items),
        )
        if on_plan is not None:
            on_plan(bf)
        if request.apply:
            apply_backfill(deps, bf, clock=clock, deadline=deadline, monotonic=monotonic)
        return result_json(bf, clock(), applied=request.apply)
    except (ApiError, AuthError) as exc:
        rlog.error("backfill failed: %s", exc)
        return failed_result(run_id, request, error_json(exc, None))


def backfill_job(deps: BackfillDeps, payload: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The async job (jobs registry "backfill"); `payload` is the validated HTTP body. Writes
    stop at the run deadline (WORK365_RUN_DEADLINE_SECONDS), below the host's timeout."""
    request = BackfillRequest.from_payload(payload, budget_seconds=deps.run_deadline_seconds)
    return run_backfill(deps, request, run_id)
