"""The run documents: the queue message schema, the run `state`, `result` and `batch-NNNN`
documents, built here and nowhere else.

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

"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from work365_fn import safe_json
from work365_fn.adapters.storage import RunStore
from work365_fn.rules.model import is_guid
from work365_fn.rules.timestamps import format_timestamp, parse_timestamp

SCHEMA_VERSION = 1
MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount
MAX_BATCH_CUSTOMERS = 1000

QUEUED, RUNNING = "queued", "running"
SUCCEEDED, PARTIAL, FAILED = "succeeded", "partial", "failed"
DONE = frozenset({SUCCEEDED, PARTIAL, FAILED})


class BadMessage(ValueError):
    """A queue message that does not follow the schema. `field` names the offending part."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class CustomerBatch:
    """One slice of a fanned-out run's customers (not an OData $batch)."""

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
    batch: CustomerBatch | None = None

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
            data = safe_json.loads(body, "the job message")
        except safe_json.JsonInputError as exc:
            raise BadMessage("body", str(exc)) from None
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


def _parse_batch(raw: Any) -> CustomerBatch:
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
    return CustomerBatch(index, count, tuple(v.lower() for v in ids))


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
        state = state_document(
            message.run_id,
            message.kind,
            QUEUED,
            created_at=format_timestamp(message.enqueued_at),
            request=message.payload,
        )
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


def state_document(
    run_id: str,
    kind: str,
    status: str,
    *,
    created_at: str | None,
    started_at: str | None = None,
    request: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A run's `state` document."""
    return {
        "runId": run_id,
        "kind": kind,
        "status": status,
        "createdAt": created_at,
        "startedAt": started_at,
        "finishedAt": None,
        "request": request if request is not None else {},
        "error": None,
        **extra,
    }


def batch_document(  # noqa: PLR0913 - the batch document's fields
    run_id: str,
    kind: str,
    batch: CustomerBatch,
    status: str,
    *,
    started_at: str | None,
    finished_at: str | None,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A `batch-NNNN` document (written once, when the batch is over)."""
    return {
        "runId": run_id,
        "kind": kind,
        **batch.to_json(),
        "status": status,
        "startedAt": started_at,
        "finishedAt": finished_at,
        "result": result,
        "error": error,
    }


def error_document(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "message": message, **extra}
