"""Work that runs off the request: the queue message schema, the job registry and the run state.

A job message (JSON text, Base64 on the wire) names a run, a kind of job and its input:

    {"schemaVersion": 1, "runId": "<GUID>", "kind": "sync|report|backfill",
     "payload": {...the job's input...}, "enqueuedAt": "2026-11-26T22:00:00Z",
     "batch": {"index": 3, "count": 12, "customerIds": ["<GUID>", ...]}}

`batch` is optional: it marks one slice of a fanned-out run (a timer run split into customer
batches, one message per batch, the run's summary aggregated later from the batch documents).
Unknown fields are ignored; a change old readers must not ignore bumps `schemaVersion`. A message
that does not parse is logged and dropped (never retried forever).

Run documents, in the RunStore under the run id:

- `state`: {"runId", "kind", "status": "queued|running|succeeded|partial|failed", "createdAt",
  "startedAt", "finishedAt", "request": {...the payload...}, "error": null|{"code", "message"}}
- `result`: the job's JSON (for `sync`, the run summary), written before the final state;
- `batch-NNNN` (a batched message), written once, when the batch is over: {"runId", "kind",
  "index", "count", "customerIds", "status", "startedAt", "finishedAt", "result", "error"}; so
  counting them counts the finished batches. The run's `state` is the fan-out's to keep: the
  last batch of a `sync` run aggregates them into the run's `result` (fanout.py).

Job kinds resolve lazily by import path, so a kind whose module is missing fails its run with a
clear error instead of breaking the app. A job is `(services, payload, run_id) -> result JSON`.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from work365_fn.adapters.storage import LeaseTakenError, RunStore
from work365_fn.errors import ConfigError, Work365Error
from work365_fn.rules.model import is_guid
from work365_fn.rules.timestamps import format_timestamp, parse_timestamp

if TYPE_CHECKING:
    from work365_fn.composition import Services

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount
MAX_BATCH_CUSTOMERS = 1000

QUEUED, RUNNING = "queued", "running"
SUCCEEDED, PARTIAL, FAILED = "succeeded", "partial", "failed"
DONE = frozenset({SUCCEEDED, PARTIAL, FAILED})

JobFunction = Callable[["Services", dict[str, Any], str], dict[str, Any]]

JOB_KINDS: dict[str, str] = {
    "sync": "work365_fn.operations.jobs:sync_job",
    "report": "work365_fn.operations.report:report_job",
    "backfill": "work365_fn.operations.backfill:backfill_job",
}


class BadMessage(ValueError):
    """A queue message that does not follow the schema. `field` names the offending part."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class JobUnavailable(Work365Error):
    """The message names a kind of job this build cannot run."""


@dataclass(frozen=True)
class Batch:
    index: int
    count: int
    customer_ids: tuple[str, ...]

    @property
    def document(self) -> str:
        return f"batch-{self.index:04d}"

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "count": self.count, "customerIds": list(self.customer_ids)}


@dataclass(frozen=True)
class JobMessage:
    run_id: str
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    enqueued_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    batch: Batch | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": SCHEMA_VERSION,
            "runId": self.run_id,
            "kind": self.kind,
            "payload": self.payload,
            "enqueuedAt": format_timestamp(self.enqueued_at),
        }
        if self.batch is not None:
            out["batch"] = self.batch.to_json()
        return out

    @classmethod
    def parse(cls, body: bytes | str) -> JobMessage:
        """The message the queue trigger received (already Base64-decoded by the host)."""
        try:
            text = body.decode("utf-8") if isinstance(body, bytes) else body
            data = json.loads(text)
        except (UnicodeDecodeError, ValueError):
            raise BadMessage("body", "the message is not JSON text") from None
        if not isinstance(data, dict):
            raise BadMessage("body", "the message must be a JSON object")
        version = data.get("schemaVersion")
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise BadMessage("schemaVersion", f"'schemaVersion' must be {SCHEMA_VERSION}")
        run_id = data.get("runId")
        if not isinstance(run_id, str) or not is_guid(run_id):
            raise BadMessage("runId", "'runId' must be a GUID")
        kind = data.get("kind")
        if not isinstance(kind, str) or not kind or len(kind) > 40 or not kind.isascii():
            raise BadMessage("kind", "'kind' must be a job kind like 'sync'")
        payload = data.get("payload", {})
        if not isinstance(payload, dict):
            raise BadMessage("payload", "'payload' must be a JSON object")
        enqueued = data.get("enqueuedAt")
        when = parse_timestamp(enqueued) if isinstance(enqueued, str) else None
        if when is None:
            raise BadMessage("enqueuedAt", "'enqueuedAt' must be an ISO-8601 timestamp")
        batch = _parse_batch(data["batch"]) if data.get("batch") is not None else None
        return cls(run_id.lower(), kind, payload, when, batch)


def _parse_batch(raw: Any) -> Batch:
    if not isinstance(raw, dict):
        raise BadMessage("batch", "'batch' must be an object")
    index, count, ids = raw.get("index"), raw.get("count"), raw.get("customerIds")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise BadMessage("batch.count", "'batch.count' must be a positive integer")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
        raise BadMessage("batch.index", "'batch.index' must be an integer from 0 to count - 1")
    if not isinstance(ids, list) or len(ids) > MAX_BATCH_CUSTOMERS:
        raise BadMessage(
            "batch.customerIds",
            f"'batch.customerIds' must be a list of at most {MAX_BATCH_CUSTOMERS} GUIDs",
        )
    for i, value in enumerate(ids):
        if not isinstance(value, str) or not is_guid(value):
            raise BadMessage(f"batch.customerIds[{i}]", f"'batch.customerIds[{i}]' is not a GUID")
    return Batch(index, count, tuple(v.lower() for v in ids))


def resolve(kind: str) -> JobFunction:
    """The job function of a kind, imported on first use."""
    target = JOB_KINDS.get(kind)
    if target is None:
        raise JobUnavailable(f"unknown job kind '{kind}' (known: {', '.join(sorted(JOB_KINDS))})")
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        function = getattr(module, attribute)
    except (ImportError, AttributeError):
        raise JobUnavailable(
            f"job kind '{kind}' is not available in this build ({target} not found)"
        ) from None
    if not callable(function):
        raise JobUnavailable(f"job kind '{kind}': {target} is not callable")
    return function  # type: ignore[no-any-return]


class RunStates:
    """The `state` (and `result`) documents of runs, in a RunStore."""

    def __init__(self, store: RunStore, clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self._clock = clock or (lambda: datetime.now(UTC))

    def now(self) -> str:
        return format_timestamp(self._clock())

    def get(self, run_id: str) -> dict[str, Any] | None:
        return self.store.get(run_id, "state")

    def queued(self, message: JobMessage) -> dict[str, Any]:
        state = {
            "runId": message.run_id,
            "kind": message.kind,
            "status": QUEUED,
            "createdAt": format_timestamp(message.enqueued_at),
            "startedAt": None,
            "finishedAt": None,
            "request": message.payload,
            "error": None,
        }
        self.store.put(message.run_id, "state", state)
        return state

    def running(self, state: dict[str, Any]) -> dict[str, Any]:
        state = {**state, "status": RUNNING, "startedAt": self.now(), "error": None}
        self.store.put(state["runId"], "state", state)
        return state

    def finish(
        self,
        state: dict[str, Any],
        status: str,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if result is not None:
            self.store.put(state["runId"], "result", result)
        state = {**state, "status": status, "finishedAt": self.now(), "error": error}
        self.store.put(state["runId"], "state", state)
        return state


def result_status(result: dict[str, Any]) -> str:
    status = result.get("status")
    return status if status in DONE else SUCCEEDED


def sync_job(services: Services, payload: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The `sync` job: the payload of POST /api/sync (`dryRun`, `customerIds`, `mode`)."""
    from work365_fn.operations.incremental import MODES
    from work365_fn.operations.sync import SyncRequest

    unknown = sorted(set(payload) - {"dryRun", "customerIds", "mode"})
    if unknown:
        raise BadMessage(f"payload.{unknown[0]}", f"unknown field 'payload.{unknown[0]}'")
    dry_run = payload.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise BadMessage("payload.dryRun", "'payload.dryRun' must be true or false")
    ids = payload.get("customerIds") or []
    if not isinstance(ids, list) or not all(isinstance(v, str) and is_guid(v) for v in ids):
        raise BadMessage("payload.customerIds", "'payload.customerIds' must be a list of GUIDs")
    mode = payload.get("mode", "full")
    if mode not in MODES:
        raise BadMessage("payload.mode", f"'payload.mode' must be one of {', '.join(MODES)}")
    request = SyncRequest(
        dry_run=dry_run,
        customer_ids=tuple(v.lower() for v in ids),
        mode=str(mode),
        # a queued run gets the timer's margin below the host's functionTimeout
        budget_seconds=services.settings.run_deadline_seconds,
    )
    return services.sync(request, run_id=run_id).to_json()


def _error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "message": message, **extra}


def run_job(
    services: Services,
    body: bytes,
    dequeue_count: int | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
) -> None:
    """The queue trigger's work. Returns normally when the message is done with (run finished,
    failed for good, duplicate, or unreadable); raises to have the host retry it."""
    try:
        message = JobMessage.parse(body)
    except BadMessage as exc:
        log.error("dropped a job message that does not follow the schema (%s): %s", exc.field, exc)
        return
    attempt = dequeue_count or 1
    rlog = _RunLog(message.run_id)
    if message.batch is not None:
        return _run_batch(services, message, attempt, rlog, clock)
    states = RunStates(services.run_store(), clock)
    state = states.get(message.run_id)
    if state is None:
        rlog.warning("no state document for this run: recording it now")
        state = states.queued(message)
    if state.get("status") in DONE:
        rlog.info(
            "job message delivered again after the run finished (%s): ignored", state["status"]
        )
        return
    rlog.info("job %s started (attempt %d of %d)", message.kind, attempt, MAX_DEQUEUE_COUNT)
    state = states.running(state)
    outcome = _attempt(services, message, rlog, attempt)
    if outcome is None:
        return
    result, error = outcome
    status = result_status(result) if result is not None else FAILED
    states.finish(state, status, result, error)
    rlog.info("job %s %s", message.kind, status)


def _attempt(
    services: Services, message: JobMessage, rlog: _RunLog, attempt: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None] | None:
    """(result, None) or (None, error) when the run is over; raises for a retry."""
    try:
        job = resolve(message.kind)
        payload = message.payload
        if message.batch is not None:
            payload = {**payload, "customerIds": list(message.batch.customer_ids)}
        return job(services, payload, message.run_id), None
    except JobUnavailable as exc:
        rlog.error("%s", exc)
        return None, _error("unknown-kind", str(exc))
    except BadMessage as exc:
        rlog.error("the job's input is invalid (%s): %s", exc.field, exc)
        return None, _error("invalid-request", str(exc), field=exc.field)
    except LeaseTakenError as exc:
        rlog.warning("sync already running (run %s): this run is not started", exc.holder)
        return None, _error("conflict", "sync already running", holderRunId=exc.holder)
    except ConfigError as exc:
        rlog.error("configuration error: %s", exc)
        return None, _error("configuration", str(exc))
    except Exception as exc:
        rlog.error(
            "job %s failed on attempt %d of %d (%s): %s",
            message.kind,
            attempt,
            MAX_DEQUEUE_COUNT,
            type(exc).__name__,
            exc if isinstance(exc, Work365Error) else "see the traceback",
            exc_info=not isinstance(exc, Work365Error),
        )
        raise


def _run_batch(
    services: Services,
    message: JobMessage,
    attempt: int,
    rlog: _RunLog,
    clock: Callable[[], datetime] | None,
) -> None:
    """One batch of a fanned-out run: its outcome goes to `batch-NNNN` (written once, when it
    is over), then the run is aggregated if this was the last batch."""
    assert message.batch is not None
    batch = message.batch
    store = services.run_store()
    states = RunStates(store, clock)
    existing = store.get(message.run_id, batch.document)
    if existing is not None and existing.get("status") in DONE:
        rlog.info("%s delivered again after it finished: ignored", batch.document)
        _after_batch(services, message, clock)  # finishes an aggregation a crash cut short
        return
    started = states.now()
    rlog.info(
        "%s of %d (%s, %d customers) started, attempt %d",
        batch.document,
        batch.count,
        message.kind,
        len(batch.customer_ids),
        attempt,
    )
    outcome = _attempt(services, message, rlog, attempt)
    if outcome is None:
        return
    result, error = outcome
    status = result_status(result) if result is not None else FAILED
    store.put(
        message.run_id,
        batch.document,
        {
            "runId": message.run_id,
            "kind": message.kind,
            **batch.to_json(),
            "status": status,
            "startedAt": started,
            "finishedAt": states.now(),
            "result": result,
            "error": error,
        },
    )
    rlog.info("%s %s", batch.document, status)
    _after_batch(services, message, clock)


def _after_batch(
    services: Services, message: JobMessage, clock: Callable[[], datetime] | None
) -> None:
    """A `sync` batch landed: aggregate the run when it was the last one (fanout.py)."""
    if message.kind != "sync" or message.batch is None:
        return
    from work365_fn.operations.fanout import after_batch

    after_batch(services, message.run_id, message.batch.count, clock=clock)


def fail_poisoned(
    services: Services, body: bytes, *, clock: Callable[[], datetime] | None = None
) -> None:
    """A message the host gave up on (moved to `<queue>-poison`): mark its run failed."""
    try:
        message = JobMessage.parse(body)
    except BadMessage as exc:
        log.error(
            "dropped a poison message that does not follow the schema (%s): %s", exc.field, exc
        )
        return
    rlog = _RunLog(message.run_id)
    text = f"the job failed {MAX_DEQUEUE_COUNT} times; see the logs for run {message.run_id}"
    error = _error("poisoned", text)
    store = services.run_store()
    states = RunStates(store, clock)
    if message.batch is not None:
        name = message.batch.document
        document = store.get(message.run_id, name) or {
            "runId": message.run_id,
            "kind": message.kind,
            **message.batch.to_json(),
            "startedAt": None,
            "result": None,
        }
        if document.get("status") not in DONE:
            store.put(
                message.run_id,
                name,
                {**document, "status": FAILED, "finishedAt": states.now(), "error": error},
            )
        rlog.error("%s: %s", name, text)
        try:  # a poisoned batch still counts: the run's summary names its customers
            _after_batch(services, message, clock)
        except Work365Error as exc:
            rlog.error("could not aggregate the run after %s: %s", name, exc)
        return
    state = states.get(message.run_id) or states.queued(message)
    if state.get("status") in DONE:
        rlog.info("poison message for a finished run (%s): ignored", state["status"])
        return
    states.finish(state, FAILED, None, error)
    rlog.error("%s", text)


class _RunLog(logging.LoggerAdapter[logging.Logger]):
    def __init__(self, run_id: str) -> None:
        super().__init__(log, {"run_id": run_id})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs.setdefault("extra", {}).update(extra)
        return f"[run {extra.get('run_id')}] {msg}", kwargs
