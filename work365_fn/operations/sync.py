"""Orchestration: read in bulk -> plan -> write conditionally -> RunSummary."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from work365_fn.adapters.dataverse_metadata import SubscriptionBindings
from work365_fn.adapters.dataverse_repository import Repository
from work365_fn.adapters.partner_center import PartnerCenterClient
from work365_fn.adapters.storage import RunStore
from work365_fn.adapters.transport import failure_fields
from work365_fn.errors import ApiError, AuthError, Work365Error, error_json
from work365_fn.logs import RunLog, run_context, run_requests
from work365_fn.operations.customer_names import name_customers, save_customer_names
from work365_fn.operations.incremental import (
    MODES,
    Mode,
    ModeChoice,
    Watermark,
    audit_windows,
    changed_customers,
    choose_mode,
    load_watermark,
    parse_mode,
    pending_customers,
    save_watermark,
)
from work365_fn.operations.inputs import BadRequest, guid_list
from work365_fn.operations.reader import (
    ReaderDeps,
    ReadOptions,
    Snapshot,
    fill,
    read_account_names,
    read_setting,
)
from work365_fn.operations.undo import write_decisions
from work365_fn.operations.writer import (
    MAX_WRITE_ATTEMPTS,
    refuse_without_notes,
)
from work365_fn.rules import Action, Decision, Reason, World, plan
from work365_fn.rules.expiry import CredentialExpiry, expiry_warnings
from work365_fn.rules.fixes import Namer
from work365_fn.rules.landing import LandingRules
from work365_fn.rules.model import is_guid, norm_id
from work365_fn.rules.names import account_names_read, contract_names_read, unnamed
from work365_fn.rules.summary import RunSummary, accounts_to_name, counts_sentence, run_kind

log = logging.getLogger(__name__)

WRITE_GRACE_MAX_SECONDS = 60.0  # see _write_deadline

__all__ = ["MAX_WRITE_ATTEMPTS", "RunLog", "SyncDeps", "SyncRequest", "run_sync", "scoped_ids"]


@dataclass(frozen=True)
class SyncRequest:
    dry_run: bool = False
    customer_ids: tuple[str, ...] = ()
    budget_seconds: float | None = None  # stop taking new customers (and writes) after this long
    # "full" | "incremental" | "auto" (incremental.Mode). Scoped runs (customer_ids) are full
    # runs over those customers and never read or move the watermark.
    mode: str = "full"
    # (customer id, name) pairs a fan-out batch's message carries (the listing read them);
    # never taken from HTTP input (operations/customer_names.py).
    customer_names: tuple[tuple[str, str], ...] = ()

    FIELDS = ("dryRun", "customerIds", "mode")

    @classmethod
    def from_payload(
        cls,
        payload: Mapping[str, Any],
        budget_seconds: float | None = None,
        *,
        queued: bool = False,
    ) -> SyncRequest:
        """The sync input of `POST /api/sync` and of a queued `sync` job, checked field by
        field (BadRequest naming the field): the one copy of these rules. `queued`: a job
        message, which may also carry `customerNames` (a fan-out batch's)."""
        allowed = (*cls.FIELDS, "customerNames") if queued else cls.FIELDS
        unknown = sorted(set(payload) - set(allowed))
        if unknown:
            raise BadRequest(unknown[0], f"unknown field '{unknown[0]}'")
        dry_run = payload.get("dryRun", False)
        if not isinstance(dry_run, bool):
            raise BadRequest("dryRun", "'dryRun' must be true or false")
        ids = guid_list(payload, "customerIds")
        mode = payload.get("mode", "full")
        if mode not in MODES:
            raise BadRequest("mode", f"'mode' must be one of {', '.join(MODES)}")
        if ids and mode != "full":
            raise BadRequest("mode", "'mode' must be full (or absent) when customerIds is given")
        return cls(
            dry_run, ids, budget_seconds, str(mode), _name_pairs(payload.get("customerNames"))
        )

    def payload(self) -> dict[str, Any]:
        """The job input of a queued run (`from_payload` reads it back)."""
        return {"dryRun": self.dry_run, "customerIds": list(self.customer_ids), "mode": self.mode}


def _name_pairs(raw: object) -> tuple[tuple[str, str], ...]:
    """`customerNames` of a job message: an object of customer id -> name."""
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not all(
        is_guid(str(k)) and isinstance(v, str) and len(v) <= MAX_NAME for k, v in raw.items()
    ):
        raise BadRequest(
            "customerNames", f"'customerNames' must map GUIDs to names of {MAX_NAME} characters"
        )
    return tuple(sorted((str(k).lower(), str(v)) for k, v in raw.items()))


MAX_NAME = 500


@dataclass(frozen=True)
class SyncDeps:
    repository: Repository
    partner_center: Callable[[str], PartnerCenterClient]  # correlation id -> client
    bindings: Callable[[], SubscriptionBindings]  # cached per worker by the caller
    create_missing: bool
    associate_since: datetime | None
    concurrency: int = 8
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    monotonic: Callable[[], float] = time.monotonic
    batch_size: int = 100  # writes per $batch (WORK365_BATCH_SIZE)
    sleep: Callable[[float], None] = time.sleep  # Retry-After waits between write batches
    max_attempts: int = 5  # whole-batch 429s in a row before the writes give up
    run_store: RunStore | None = None  # where the watermark lives; None: no incremental runs
    overlap_hours: float = 6.0
    full_every_hours: float = 24.0
    landing: LandingRules | None = None  # WORK365_LANDING_RULES_FILE, checked at start
    write_notes: bool = False  # WORK365_WRITE_NOTES: checked at start (see _notes_ready)
    # The credentials whose expiry is known: warned in every summary from 30 days before.
    credential_expiries: tuple[CredentialExpiry, ...] = ()

    def reader(self) -> ReaderDeps:
        return ReaderDeps(
            self.repository,
            self.partner_center,
            self.associate_since,
            self.concurrency,
            self.monotonic,
            self.create_missing,
            self.clock,
            landing=self.landing,
        )


def run_sync(deps: SyncDeps, request: SyncRequest, run_id: str | None = None) -> RunSummary:
    run_id = run_id or str(uuid.uuid4())
    # Every line logged during the run (clients and worker threads included) carries its id.
    with run_context(run_id):
        summary = _run_sync(deps, request, run_id)
        summary.requests = run_requests()  # the log record's work365.requests.* dimensions
        return summary


def _run_sync(deps: SyncDeps, request: SyncRequest, run_id: str) -> RunSummary:
    rlog = RunLog(log, {"run_id": run_id})
    started = deps.monotonic()
    deadline = started + request.budget_seconds if request.budget_seconds else None
    summary = RunSummary(run_id=run_id, started_at=deps.clock(), dry_run=request.dry_run)
    summary.warnings.extend(expiry_warnings(deps.credential_expiries, summary.started_at))
    rlog.info(
        "sync started (%s, customers: %s, create mode: %s)",
        run_kind(request.dry_run),
        ",".join(request.customer_ids) or "all",
        deps.create_missing,
    )
    try:
        _run(deps, request, summary, rlog, deadline)
    except (ApiError, AuthError) as exc:
        summary.fatal = True
        summary.errors.append(error_json(exc, None))
        rlog.error("sync failed: %s", exc, extra=failure_fields(exc))
    summary.finished_at = deps.clock()
    rlog.info(
        "sync %s in %.1f s (%s): %s",
        summary.status,
        deps.monotonic() - started,
        run_kind(request.dry_run),
        counts_sentence(summary.counts(), request.dry_run),
    )
    return summary


def _write_deadline(intake_deadline: float | None, budget: float | None) -> float | None:
    """New write batches may start until a grace after the run stops taking customers: what a
    run read gets written (a run that reads until its deadline still makes progress instead of
    leaving every write to a next run that would stop the same way), and the last batch still
    ends before the host's limit (timer: 480 s + 60 s of a 600 s functionTimeout; HTTP: 90 s +
    11 s)."""
    if intake_deadline is None or budget is None:
        return None
    return intake_deadline + min(WRITE_GRACE_MAX_SECONDS, budget / 8)


def _run(
    deps: SyncDeps,
    request: SyncRequest,
    summary: RunSummary,
    rlog: RunLog,
    deadline: float | None,
) -> None:
    if not _notes_ready(deps, summary, rlog):
        return
    reader = deps.reader()
    setting = read_setting(reader, rlog)
    summary.setting = setting[0]
    summary.warnings.extend(setting[1])
    tracked = not request.customer_ids and not request.dry_run and deps.run_store is not None
    state, choice = _choose_mode(deps, request, summary, rlog)
    summary.mode = choice.mode.value
    scope: list[str] | None = list(request.customer_ids) if request.customer_ids else None
    if choice.mode is Mode.INCREMENTAL:
        assert state is not None and choice.since is not None
        scope = _changed_customers(deps, summary, rlog, state, choice.since)
    snapshot = Snapshot(summary.run_id, setting[0], [], create_missing=deps.create_missing)
    try:
        fill(reader, snapshot, ReadOptions(scope=scope, deadline=deadline))
    finally:  # a failed read still reports the customers it read and their errors
        summary.customers = len(snapshot.customers)
        summary.errors.extend(snapshot.errors)
        summary.skipped_customers.extend(snapshot.skipped_customers)
    world = snapshot.world()
    summary.decisions = _plan_and_write(deps, request, world, summary, rlog, deadline)
    customers = _customer_names(deps, request, snapshot, summary, rlog, listed=scope is None)
    summary.namer = _names(reader, snapshot, summary, rlog, customers)
    if tracked:
        _advance_watermark(deps, summary, rlog, state, choice)


def _notes_ready(deps: SyncDeps, summary: RunSummary, rlog: RunLog) -> bool:
    """With notes on, the run first checks that notes can be written (refuse_without_notes)."""
    if not deps.write_notes:
        return True
    refusal = refuse_without_notes(deps.bindings, summary)
    if refusal is not None:
        rlog.error("sync refused to start: %s", refusal)
    return refusal is None


def _plan_and_write(
    deps: SyncDeps,
    request: SyncRequest,
    world: World,
    summary: RunSummary,
    rlog: RunLog,
    deadline: float | None,
) -> list[Decision]:
    decisions = plan(world)
    writes = [d for d in decisions if d.action is not Action.NONE]
    if request.dry_run or not writes:
        rlog.info(
            "%d writes %s",
            len(writes),
            "would be made (dry run: nothing written)" if request.dry_run and writes else "planned",
        )
        return decisions
    write_deadline = _write_deadline(deadline, request.budget_seconds)
    return write_decisions(deps, world, decisions, summary, rlog, write_deadline)  # undo.py


def _customer_names(
    deps: SyncDeps,
    request: SyncRequest,
    snapshot: Snapshot,
    summary: RunSummary,
    rlog: RunLog,
    *,
    listed: bool,
) -> dict[str, str]:
    """The customers' names. A run that `listed` every customer has them, and keeps them for
    the runs that do not (when it is tracked: app storage, not a dry run); the others get them
    from operations/customer_names.py (given, stored, else one Partner Center call each)."""
    if listed:
        if not request.dry_run and deps.run_store is not None and snapshot.customers:
            try:
                save_customer_names(deps.run_store, snapshot.customers, summary.started_at)
            except Work365Error as exc:
                rlog.warning("could not keep the customer names: %s", exc)
        return snapshot.customer_names()
    names, warnings = name_customers(
        [d.subscription.customer_id for d in summary.decisions],
        dict(request.customer_names),
        deps.run_store,
        lambda: deps.partner_center(summary.run_id),
        deps.concurrency,
        rlog,
    )
    summary.warnings.extend(warnings)
    return names


def _names(
    reader: ReaderDeps,
    snapshot: Snapshot,
    summary: RunSummary,
    rlog: RunLog,
    customers: Mapping[str, str],
) -> Namer:
    """The names the summary shows and its fix sentences use: Partner Center's company names,
    the Account and contract names the Dataverse reads carried (the lookups' formatted values:
    rules/names.py), and, for an Account no read named (rare: none in a consistent tenant), one
    `In` query after the writes; a failure of that read is a warning."""
    names = account_names_read(snapshot.provider_accounts, snapshot.contracts, snapshot.records)
    missing = unnamed(accounts_to_name(summary.decisions, snapshot.provider_accounts), names)
    try:
        names.update(read_account_names(reader, missing))
    except (ApiError, AuthError) as exc:
        summary.warnings.append(f"the Account names could not be read ({exc}): ids are shown")
        rlog.warning("account names not read: %s", exc, extra=failure_fields(exc))
    return Namer(
        provider_accounts=snapshot.provider_accounts,
        contracts=snapshot.contracts,
        account_names=names,
        since=snapshot.setting.since,
        customer_names=customers,
    ).with_contract_names(contract_names_read(snapshot.contracts, snapshot.records))


def _choose_mode(
    deps: SyncDeps, request: SyncRequest, summary: RunSummary, rlog: RunLog
) -> tuple[Watermark | None, ModeChoice]:
    requested = parse_mode(request.mode)
    if request.customer_ids or requested is Mode.FULL or deps.run_store is None:
        why = "scoped run" if request.customer_ids else "full run requested"
        return None, ModeChoice(Mode.FULL, why)
    try:
        state = load_watermark(deps.run_store)
    except Work365Error as exc:
        summary.warnings.append(f"could not read the watermark ({exc}): this run is a full one")
        state = None
    choice = choose_mode(
        requested,
        state,
        summary.started_at,
        overlap_hours=deps.overlap_hours,
        full_every_hours=deps.full_every_hours,
    )
    rlog.info("mode %s (asked %s): %s", choice.mode.value, requested.value, choice.why)
    return state, choice


def _changed_customers(
    deps: SyncDeps, summary: RunSummary, rlog: RunLog, state: Watermark, since: datetime
) -> list[str]:
    """The customers an incremental run lists (incremental.py says which and why)."""
    pc = deps.partner_center(summary.run_id)
    audited: set[str] = set()
    for first_day, last_day in audit_windows(since, summary.started_at):
        audited |= changed_customers(pc.audit_records(first_day, last_day), since)
    fresh = deps.repository.unassigned_records_since(since)
    accounts = sorted({r.account_id for r in fresh if r.account_id})
    mapped = {
        pa.customer_id
        for pa in (deps.repository.provider_accounts_of_accounts(accounts) if accounts else [])
        if pa.customer_id
    }
    orphans = sum(1 for r in fresh if not r.account_id)
    if orphans:
        summary.warnings.append(
            f"{orphans} unassigned subscription records created since {since.isoformat()} "
            "have no Account, so their customer is unknown to an incremental run: the next "
            "full run takes them"
        )
    pending = {c.lower() for c in state.pending_customers}
    customers = sorted(audited | mapped | pending)
    rlog.info(
        "incremental: %d customers (%d in the activity log, %d with new unassigned records, "
        "%d left over from the last run)",
        len(customers),
        len(audited),
        len(mapped),
        len(pending),
    )
    return customers


def _advance_watermark(
    deps: SyncDeps,
    summary: RunSummary,
    rlog: RunLog,
    state: Watermark | None,
    choice: ModeChoice,
) -> None:
    """The next run starts where this one started. Customers this run could not finish are
    kept in `pendingCustomers` for the next incremental run."""
    assert deps.run_store is not None
    pending = pending_customers(
        summary.skipped_customers,
        summary.errors,
        (d.subscription.customer_id for d in summary.decisions if d.reason is Reason.ERROR),
    )
    full = choice.mode is Mode.FULL
    last_full = summary.started_at if full else (state.last_full_at if state else None)
    mark = Watermark(summary.started_at, summary.started_at, last_full, tuple(sorted(pending)))
    try:
        save_watermark(deps.run_store, mark)
    except Work365Error as exc:
        summary.warnings.append(f"could not save the watermark ({exc}): the next run is a full one")
        rlog.error("could not save the watermark: %s", exc)
        return
    rlog.info(
        "watermark moved to %s (%d customers pending)", mark.to_json()["watermark"], len(pending)
    )


def scoped_ids(values: Sequence[str]) -> tuple[str, ...]:
    """Customer ids validated as GUIDs, lower-cased, de-duplicated in order (ValueError)."""
    seen: dict[str, None] = {}
    for value in values:
        seen[norm_id(value)] = None
    return tuple(seen)
