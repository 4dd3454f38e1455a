"""Fan-out on Azure Functions: a timer full run over many customers, split into queue batches.

1. The timer decides its mode as an in-process run would (`auto`: incremental unless a full run
   is due). Without app storage, with WORK365_FANOUT_THRESHOLD = 0, for an incremental run or
   for a tenant of at most WORK365_FANOUT_THRESHOLD customers it runs in-process as before.
2. Otherwise it takes the full-sync lease, lists the customers (Partner Center paging), sorts
   them, writes the run's `state` (`running`, `fanout: {batches, batchSize, customers}`) and the
   fan-out marker, enqueues one `sync` job message per WORK365_FANOUT_BATCH_SIZE customers (the
   message's `batch` field, jobs.py) and releases the lease.
3. The queue function runs each batch as a scoped sync (reads and memory scale with the batch)
   and writes `batch-NNNN` when the batch is over. A message the host gives up on becomes a
   `batch-NNNN` whose customers each get an error (`service: "queue"`).
4. Whoever finds every `batch-` document there aggregates them (two batches finishing at once
   both may: the result is the same): the run summary of DESIGN.md, streamed to the `result`
   document through a temporary file, then the final `state` and the watermark. The first to
   claim the run's `aggregated` document (create-only) logs the summary record and notifies.

The marker (run store: run id `full-sync`, document `fanout`: {"runId", "startedAt",
"expiresAt", "batches"}) keeps every other whole-tenant run out while batches are in flight:
taking the full-sync lease (composition.Services.full_sync_lease) also checks it, so the
timer skips, HTTP answers 409 and the CLI exits 1, all naming the fan-out run. A run that is
not aggregated by `expiresAt` (WORK365_FANOUT_TIMEOUT_MINUTES after it started: the
coordinator crashed, or batches are lost) no longer blocks: the next full run marks it
`failed` (`timed-out`) and starts.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from work365_fn.adapters.partner_center import PartnerCenterClient
from work365_fn.adapters.storage import FULL_SYNC_LOCK, JobQueue, LeaseTakenError, RunStore
from work365_fn.errors import ApiError, AuthError, ConfigError, Work365Error, error_json
from work365_fn.logs import log_summary_json, run_context
from work365_fn.operations.customer_names import save_customer_names
from work365_fn.operations.incremental import (
    Mode,
    Watermark,
    choose_mode,
    load_watermark,
    pending_customers,
    save_watermark,
)
from work365_fn.operations.run_documents import (
    DONE,
    FAILED,
    MAX_DEQUEUE_COUNT,
    PARTIAL,
    RUNNING,
    SUCCEEDED,
    CustomerBatch,
    JobMessage,
    batch_document,
    error_document,
    state_document,
)
from work365_fn.rules import LISTED, Reason, count_groups, count_reasons
from work365_fn.rules.model import is_guid
from work365_fn.rules.summary import SCHEMA_VERSION, RunSummary, setting_json
from work365_fn.rules.timestamps import format_timestamp, parse_timestamp


@dataclass(frozen=True)
class FanoutSettings:
    threshold: int  # WORK365_FANOUT_THRESHOLD (0: never fan out)
    batch_size: int  # WORK365_FANOUT_BATCH_SIZE
    timeout_minutes: float  # WORK365_FANOUT_TIMEOUT_MINUTES
    overlap_hours: float
    full_every_hours: float


@dataclass(frozen=True)
class FanoutDeps:
    """What fan-out uses. `run_store` / `job_queue` are None without app storage."""

    settings: FanoutSettings
    run_store: RunStore | None
    job_queue: Callable[[], JobQueue]
    partner_center: Callable[[str], PartnerCenterClient]
    full_sync_lease: Callable[[str], AbstractContextManager[object]]
    notify: Callable[[dict[str, Any]], bool]  # the summary JSON -> sent (never raises)


log = logging.getLogger(__name__)

MARKER_RUN_ID = "full-sync"  # the marker's place in the run store
MARKER = "fanout"
FANOUT_REQUEST = {"dryRun": False, "customerIds": [], "mode": "full"}  # the timer's run
CLAIM = "aggregated"  # create-only: whoever makes it logs the summary and notifies
BATCH_PREFIX = "batch-"
POISONED_MESSAGE = f"batch failed after {MAX_DEQUEUE_COUNT} attempts"
COUNT_KEYS = ("customers", *count_groups(()))  # the run summary's counts but `created`
LISTED_REASONS = frozenset(r.value for r in LISTED)  # what the notification lists

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FanoutRun:
    """A timer run that was split into batches (the batches run later, off this invocation)."""

    run_id: str
    customers: int
    batches: int
    batch_size: int


def split(customer_ids: Sequence[str], size: int) -> list[tuple[str, ...]]:
    """Consecutive batches of at most `size` ids, in the given order."""
    return [tuple(customer_ids[i : i + size]) for i in range(0, len(customer_ids), size)]


# ---- the timer: split the run -----------------------------------------------------------------


def start_timer_run(
    deps: FanoutDeps, *, clock: Clock | None = None
) -> FanoutRun | RunSummary | None:
    """Fan the timer's run out when it should be. None: run it in-process as before. A
    `RunSummary` (failed): the customers could not be listed. Raises LeaseTakenError while
    another whole-tenant run (or a fan-out run's batches) is under way."""
    settings = deps.settings
    store = deps.run_store
    if settings.threshold == 0 or store is None:
        return None
    now = clock or _utcnow
    started = now()
    if not _full_run_due(settings, store, started):
        return None  # an incremental run lists the changed customers only: in-process
    run_id = str(uuid.uuid4())
    with run_context(run_id), deps.full_sync_lease(run_id):
        try:
            pc = deps.partner_center(run_id)
            listed = list(pc.iter_customers())
            customers = sorted({c.id.lower() for c in listed})
        except (ApiError, AuthError) as exc:
            log.error("listing the customers failed: %s", exc)
            return _failed_listing(run_id, started, exc, now)
        if len(customers) <= settings.threshold:
            log.info(
                "%d customers (fan-out above %d): running in-process",
                len(customers),
                settings.threshold,
            )
            return None
        try:  # the names the listing read, for the incremental and scoped runs until the next
            save_customer_names(store, listed, started)
        except Work365Error as exc:
            log.warning("could not keep the customer names: %s", exc)
        names = {c.id.lower(): c.company_name for c in listed}
        return _fan_out(deps, store, run_id, {c: names.get(c, "") for c in customers}, started, now)


def _full_run_due(settings: FanoutSettings, store: RunStore, now: datetime) -> bool:
    try:
        mark = load_watermark(store)
    except Work365Error as exc:
        log.warning("could not read the watermark (%s): this run is a full one", exc)
        mark = None
    choice = choose_mode(
        Mode.AUTO,
        mark,
        now,
        overlap_hours=settings.overlap_hours,
        full_every_hours=settings.full_every_hours,
    )
    return choice.mode is Mode.FULL


def _failed_listing(
    run_id: str, started: datetime, exc: ApiError | AuthError, now: Clock
) -> RunSummary:
    summary = RunSummary(run_id=run_id, started_at=started, fatal=True)
    summary.errors.append(error_json(exc, None))
    summary.finished_at = now()
    return summary


def _fan_out(
    deps: FanoutDeps,
    store: RunStore,
    run_id: str,
    named: dict[str, str],  # every customer id (sorted) -> its name ("" when it has none)
    started: datetime,
    now: Clock,
) -> FanoutRun:
    settings = deps.settings
    customers = list(named)
    size = settings.batch_size
    batches = split(customers, size)
    stamp = format_timestamp(started)
    # The marker first: until the state says `running` it blocks nothing, and a state is never
    # left `running` without a marker that lets it time out.
    expires = started + timedelta(minutes=settings.timeout_minutes)
    store.put(
        MARKER_RUN_ID,
        MARKER,
        {
            "runId": run_id,
            "startedAt": stamp,
            "expiresAt": format_timestamp(expires),
            "batches": len(batches),
        },
    )
    store.put(
        run_id,
        "state",
        state_document(
            run_id,
            "sync",
            RUNNING,
            created_at=stamp,
            started_at=stamp,
            request=dict(FANOUT_REQUEST),
            fanout={"batches": len(batches), "batchSize": size, "customers": len(customers)},
        ),
    )
    queue = deps.job_queue()
    payload = {"dryRun": False, "mode": "full"}
    for index, ids in enumerate(batches):
        batch = CustomerBatch(index, len(batches), ids)
        message = _with_names(JobMessage(run_id, "sync", payload, started, batch), named)
        try:
            queue.send(message.to_json())
        except ApiError as exc:
            _not_queued(store, run_id, batches, index, exc, now)
            after_batch(deps, run_id, len(batches), clock=now)
            break
    log.info(
        "fan-out: %d customers in %d batches of %d queued on %s; the run's summary is "
        "aggregated when the last batch is done",
        len(customers),
        len(batches),
        size,
        queue.name,
    )
    return FanoutRun(run_id, len(customers), len(batches), size)


# Azure Queue Storage takes messages of up to 64 KiB; ours are Base64 on the wire (4 bytes per 3),
# so the JSON may take 48 KiB. https://learn.microsoft.com/azure/storage/queues/storage-queues-introduction
QUEUE_MESSAGE_MAX_JSON = 48 * 1024


def _with_names(message: JobMessage, names: dict[str, str]) -> JobMessage:
    """The batch's message carrying its customers' names (the listing read them: the batch then
    names its customers without a request), as many as fit the queue's message size; the
    customers left out are named from the stored map (operations/customer_names.py). With the
    default batch of 50, names of up to ~700 characters each fit."""
    assert message.batch is not None
    pairs = [(c, names[c]) for c in message.batch.customer_ids if names.get(c)]
    while pairs:
        batch = replace(message.batch, customer_names=tuple(pairs))
        candidate = replace(message, batch=batch)
        if len(json.dumps(candidate.to_json()).encode()) <= QUEUE_MESSAGE_MAX_JSON:
            return candidate
        pairs = pairs[: len(pairs) // 2]
    return message


def _not_queued(
    store: RunStore,
    run_id: str,
    batches: list[tuple[str, ...]],
    first: int,
    exc: ApiError,
    now: Clock,
) -> None:
    """Batches that could not be queued are recorded as failed: nothing is lost silently."""
    log.error(
        "could not queue batch %d of %d (%s): the remaining %d batches are recorded as failed",
        first,
        len(batches),
        exc,
        len(batches) - first,
    )
    error = error_document("not-queued", f"the batch could not be queued: {exc}")
    for index in range(first, len(batches)):
        batch = CustomerBatch(index, len(batches), batches[index])
        store.put(
            run_id,
            batch.document,
            batch_document(
                run_id,
                "sync",
                batch,
                FAILED,
                started_at=None,
                finished_at=format_timestamp(now()),
                error=error,
            ),
        )


# ---- the guard: one whole-tenant run at a time ----------------------------------------------


@dataclass(frozen=True)
class _InFlight:
    run_id: str
    state: dict[str, Any]
    expires_at: datetime | None
    started_at: datetime | None


def _in_flight(store: RunStore) -> _InFlight | None:
    """The fan-out run the marker names, when its state says it is not over."""
    marker = store.get(MARKER_RUN_ID, MARKER)
    holder = marker.get("runId") if marker else None
    if not marker or not isinstance(holder, str) or not is_guid(holder):
        return None
    state = store.get(holder, "state")
    if state is None or state.get("status") in DONE:
        return None
    return _InFlight(
        holder,
        state,
        parse_timestamp(str(marker.get("expiresAt") or "")),
        parse_timestamp(str(marker.get("startedAt") or "")),
    )


def live_fanout(store: RunStore, now: datetime | None = None) -> str | None:
    """The id of a fan-out run whose batches are still in flight (read only)."""
    found = _in_flight(store)
    moment = now or _utcnow()
    if found is None or found.expires_at is None or moment >= found.expires_at:
        return None
    return found.run_id


def refuse_while_fanned_out(store: RunStore, run_id: str, now: datetime | None = None) -> None:
    """Called with the full-sync lease held: LeaseTakenError naming the fan-out run while its
    batches are in flight. A fan-out run past its `expiresAt` is marked failed (timed-out)."""
    found = _in_flight(store)
    if found is None or found.run_id == run_id:
        return
    moment = now or _utcnow()
    if found.expires_at is not None and moment < found.expires_at:
        raise LeaseTakenError(FULL_SYNC_LOCK, found.run_id)
    total = (found.state.get("fanout") or {}).get("batches")
    done = len(store.names(found.run_id, BATCH_PREFIX))
    minutes = (
        round((found.expires_at - found.started_at).total_seconds() / 60)
        if found.expires_at and found.started_at
        else None
    )
    message = (
        f"the fan-out run was not aggregated within {minutes} minutes "
        f"({done} of {total} batches done); run {run_id} started after it"
    )
    log.warning("[run %s] fan-out run %s timed out: %s", run_id, found.run_id, message)
    store.put(
        found.run_id,
        "state",
        {
            **found.state,
            "status": FAILED,
            "finishedAt": format_timestamp(moment),
            "error": {"code": "timed-out", "message": message},
        },
    )


# ---- the batches: aggregate when the last one is done ---------------------------------------


def after_batch(
    deps: FanoutDeps, run_id: str, count: int, *, clock: Clock | None = None
) -> dict[str, Any] | None:
    """After a `batch-NNNN` landed: aggregate the run when all `count` are there and nobody has
    yet. Returns the summary's log line when this call aggregated."""
    store = _store(deps)
    names = store.names(run_id, BATCH_PREFIX)
    if len(names) < count:
        log.info("[run %s] %d of %d batches done", run_id, len(names), count)
        return None
    if store.get(run_id, CLAIM) is not None:
        return None  # aggregated already (a message delivered again)
    return aggregate_run(deps, run_id, names, clock=clock)


def aggregate_run(
    deps: FanoutDeps, run_id: str, names: Sequence[str], *, clock: Clock | None = None
) -> dict[str, Any]:
    """Aggregate the batch documents into the run's `result` and final `state`. Idempotent:
    a second call writes the same documents (only `finishedAt` moves)."""
    store = _store(deps)
    now = (clock or _utcnow)()
    log.info("[run %s] all %d batches done: aggregating the run's summary", run_id, len(names))
    state = store.get(run_id, "state") or _lost_state(run_id)
    started = parse_timestamp(str(state.get("startedAt") or "")) or now
    aggregation = Aggregation(run_id, format_timestamp(started), format_timestamp(now))
    with aggregation:
        for name in names:
            document = store.get(run_id, name)
            if document is not None:
                aggregation.add(document)
        aggregation.write(store)
    line = aggregation.log_line()
    store.put(
        run_id,
        "state",
        {**state, "status": line["status"], "finishedAt": line["finishedAt"], "error": None},
    )
    _advance_watermark(store, run_id, started, aggregation.pending_customers())
    if store.put_new(run_id, CLAIM, {"runId": run_id, "at": line["finishedAt"]}):
        log_summary_json(aggregation.notification())  # with its unassigned and failed rows
        deps.notify(aggregation.notification())
    return line


def _store(deps: FanoutDeps) -> RunStore:
    if deps.run_store is None:  # batches only exist where there is app storage
        raise ConfigError("a fanned-out run needs the app's storage (WORK365_STORAGE)")
    return deps.run_store


def _lost_state(run_id: str) -> dict[str, Any]:
    log.warning("[run %s] the fan-out run has no state document: writing one", run_id)
    return state_document(run_id, "sync", RUNNING, created_at=None, request=dict(FANOUT_REQUEST))


def _advance_watermark(store: RunStore, run_id: str, started: datetime, pending: set[str]) -> None:
    """As an in-process full run does: the next run starts where this one started, with the
    customers it could not finish pending. Never moves a newer run's watermark back."""
    try:
        current = load_watermark(store)
        if current is not None and current.last_run_at > started:
            log.info("[run %s] a later run moved the watermark: left as it is", run_id)
            return
        save_watermark(store, Watermark(started, started, started, tuple(sorted(pending))))
    except Work365Error as exc:
        log.error(
            "[run %s] could not save the watermark (the next run is a full one): %s", run_id, exc
        )


@dataclass
class Aggregation:
    """The run summary of a fanned-out run, accumulated one batch document at a time. The
    per-subscription rows go to a temporary file, so memory grows with a batch, not the tenant
    (the errors, warnings and skipped customers are kept: they are few)."""

    run_id: str
    started_at: str
    finished_at: str
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((*COUNT_KEYS, "created"), 0)
    )
    by_reason: dict[str, int] = field(default_factory=lambda: count_reasons(()))
    skipped: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: dict[str, None] = field(default_factory=dict)
    setting: dict[str, Any] | None = None
    batches: int = 0
    failed_batches: int = 0
    listed: list[dict[str, Any]] = field(default_factory=list)  # unassigned and failed rows
    error_customers: set[str] = field(default_factory=set)
    _rows: IO[bytes] | None = None
    _row_count: int = 0
    _last_key: tuple[str, str] = ("", "")
    _in_order: bool = True

    def __enter__(self) -> Aggregation:
        self._rows = tempfile.TemporaryFile()  # closed by __exit__
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rows is not None:
            self._rows.close()
            self._rows = None

    def add(self, document: dict[str, Any]) -> None:
        ids = [str(c) for c in document.get("customerIds") or []]
        self.batches += 1
        self.counts["customers"] += len(ids)
        raw = document.get("result")
        result = raw if isinstance(raw, dict) else None
        if result is None or result.get("status") == FAILED:
            self.failed_batches += 1
            self.errors.extend(_batch_errors(document, ids, result))
            if result is not None:
                self._merge_warnings(result)
            return
        counts = result.get("counts") or {}
        for key in self.counts:
            if key != "customers":
                self.counts[key] += int(counts.get(key) or 0)
        for reason, n in (result.get("byReason") or {}).items():
            self.by_reason[reason] = self.by_reason.get(reason, 0) + int(n or 0)
        self._merge_setting(result.get("setting"), document)
        rows = sorted(
            result.get("subscriptions") or [],
            key=lambda r: (str(r.get("customerId")), str(r.get("subscriptionId"))),
        )
        for row in rows:
            self._write_row(row)
        self.skipped.extend(result.get("skippedCustomers") or [])
        self.errors.extend(result.get("errors") or [])
        self._merge_warnings(result)

    def _write_row(self, row: dict[str, Any]) -> None:
        assert self._rows is not None, "use Aggregation as a context manager"
        key = (str(row.get("customerId")), str(row.get("subscriptionId")))
        if key < self._last_key:
            self._in_order = False
        self._last_key = key
        reason = row.get("reason")
        if reason in LISTED_REASONS:
            self.listed.append(row)
        if reason == Reason.ERROR.value:
            self.error_customers.add(key[0])
        text = json.dumps(row, separators=(",", ":")).encode("utf-8")
        self._rows.write(b"," + text if self._row_count else text)
        self._row_count += 1

    def _merge_setting(self, setting: Any, document: dict[str, Any]) -> None:
        if not isinstance(setting, dict):
            return
        if self.setting is None:
            self.setting = setting
        elif setting != self.setting:
            self.warnings[
                f"batch {document.get('index')} saw the setting as {json.dumps(setting)} and an "
                f"earlier batch as {json.dumps(self.setting)}: it changed during the run"
            ] = None

    def _merge_warnings(self, result: dict[str, Any]) -> None:
        for warning in result.get("warnings") or []:
            self.warnings[str(warning)] = None

    @property
    def status(self) -> str:
        """The worst of the batches: failed only when every batch failed; partial when
        anything failed (a batch, a customer or a subscription)."""
        if self.batches and self.failed_batches == self.batches:
            return FAILED
        if self.failed_batches or self.errors or self.counts["failed"]:
            return PARTIAL
        return SUCCEEDED

    def _head(self) -> dict[str, Any]:
        return {
            "schemaVersion": SCHEMA_VERSION,
            "runId": self.run_id,
            "mode": "full",
            "dryRun": False,
            "status": self.status,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "setting": self.setting or setting_json(None),
            "counts": dict(self.counts),
            "byReason": dict(self.by_reason),
        }

    def _tail(self) -> dict[str, Any]:
        return {
            "skippedCustomers": list(self.skipped),
            "errors": list(self.errors),
            "warnings": list(self.warnings),
        }

    def log_line(self) -> dict[str, Any]:
        """The summary without the per-subscription list (what the logs carry)."""
        return {**self._head(), **self._tail()}

    def notification(self) -> dict[str, Any]:
        """The summary with only the unassigned and failed subscriptions (the whole list is in
        the run's `result`)."""
        return {**self._head(), "subscriptions": list(self.listed), **self._tail()}

    def pending_customers(self) -> set[str]:
        """Customers the next incremental run must take (the rule of incremental.py)."""
        return pending_customers(self.skipped, self.errors, self.error_customers)

    def write(self, store: RunStore) -> None:
        """The `result` document: head, the rows from the temporary file, tail."""
        assert self._rows is not None, "use Aggregation as a context manager"
        if not self._in_order:  # batches are sorted ranges of customers: should not happen
            log.warning("[run %s] batch rows out of order: sorting them in memory", self.run_id)
            self._sort_rows()
        head = json.dumps(self._head(), separators=(",", ":"))[:-1]
        tail = json.dumps(self._tail(), separators=(",", ":"))[1:]
        with tempfile.TemporaryFile() as out:
            out.write(head.encode("utf-8") + b',"subscriptions":[')
            self._rows.seek(0)
            shutil.copyfileobj(self._rows, out)
            out.write(b"]," + tail.encode("utf-8"))
            out.seek(0)
            store.put_stream(self.run_id, "result", out)

    def _sort_rows(self) -> None:
        assert self._rows is not None
        self._rows.seek(0)
        rows = json.loads(b"[" + self._rows.read() + b"]")
        rows.sort(key=lambda r: (str(r.get("customerId")), str(r.get("subscriptionId"))))
        self._rows.seek(0)
        self._rows.truncate()
        self._rows.write(b",".join(json.dumps(r, separators=(",", ":")).encode() for r in rows))
        self._in_order = True


def _batch_errors(
    document: dict[str, Any], ids: list[str], result: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """One error per customer of a batch that failed as a whole."""
    error = document.get("error") if isinstance(document.get("error"), dict) else {}
    assert isinstance(error, dict)
    if result is None:
        code = str(error.get("code") or "failed")
        service, status = "queue", 0
        if code == "poisoned":
            message = POISONED_MESSAGE
        else:
            message = f"batch failed: {error.get('message') or code}"
    else:  # the batch's sync could not read what it needs: its run-level error says why
        errors = [e for e in result.get("errors") or [] if isinstance(e, dict)]
        # Per-customer errors (a 403 20002, say) come first; the fatal one has no customer.
        # Blaming a customer's own error on the whole batch would drop it from the retry list.
        fatal = [e for e in errors if not e.get("customerId")]
        first: dict[str, Any] = fatal[-1] if fatal else (errors[-1] if errors else {})
        service = str(first.get("service") or "queue")
        status = int(first.get("status") or 0)
        code = str(first.get("code") or "failed")
        message = f"batch failed: {first.get('message') or code}"
    return [
        {"customerId": c, "service": service, "status": status, "code": code, "message": message}
        for c in ids
    ]
