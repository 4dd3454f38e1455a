"""The run documents: the queue message schema, the run `state`, `result` and `batch-NNNN`
documents, built here and nowhere else.

A job message (JSON text, Base64 on the wire) names a run, a kind of job and its input:

    {"schemaVersion": 1, "runId": "<GUID>", "kind": "sync|report|backfill|undo",
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
- journals (`Journal` below): every run that writes records each write in its journal, so that
  `undo` (operations/undo.py) can clear exactly what the run set. A sync run (each attempt of a
  fan-out batch too, under the same run id) keeps `journal-<12 hex>`, then
  `journal-<12 hex>-0001`, ... with the next pages; a backfill run keeps `backfill-journal`
  (and its pages). Each head holds {"schemaVersion", "runId", "kind": "sync-journal|
  backfill-journal|undo-journal", "status": "running|finished", "startedAt", "updatedAt",
  "page": 0, "entries": [...]}; an entry is {"recordId", "subscriptionId", "customerId",
  "contractId" (the contract set, null for a record created without one),
  "previousContractId" (null: the run only sets empty lookups), "operation":
  "updated|created|cleared", "navigation", "etagBefore", "etagAfter" (null when the answer did
  not carry it), "state": "pending|assigned|conflict|failed|undone|cleared", "at", "undo":
  {"runId", "state", "at"} once an undo touched it}.

"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from work365_fn import safe_json
from work365_fn.adapters.storage import RunStore
from work365_fn.errors import Work365Error
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
    # (id, company name) pairs the fan-out listing read: the batch's summary names its customers
    # without a request (operations/customer_names.py). Left out when the message would be too
    # large for the queue (fanout.py).
    customer_names: tuple[tuple[str, str], ...] = ()

    @property
    def document(self) -> str:
        return f"batch-{self.index:04d}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "count": self.count,
            "customerIds": list(self.customer_ids),
        }
        if self.customer_names:
            out["customerNames"] = dict(self.customer_names)
        return out


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
    names = raw.get("customerNames") or {}
    if not isinstance(names, dict) or not all(
        isinstance(k, str) and is_guid(k) and isinstance(v, str) for k, v in names.items()
    ):
        raise BadMessage("batch.customerNames", "'batch.customerNames' must map GUIDs to names")
    pairs = tuple(sorted((k.lower(), v) for k, v in names.items() if v))
    return CustomerBatch(index, count, tuple(v.lower() for v in ids), pairs)


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


# ---- journals --------------------------------------------------------------------------------

JOURNAL_PREFIX = "journal-"  # a sync or undo journal: journal-<12 hex>
BACKFILL_JOURNAL = "backfill-journal"
JOURNAL_PAGE = 100  # entries per journal document
_HEAD = re.compile(r"^(journal-[0-9a-f]{12}|backfill-journal)$")


class JournalNotFoundError(Work365Error):
    """`undo` named a run that has no journal in the run store."""


def new_journal_name() -> str:
    """The head of a new sync or undo journal: unique per attempt, so the batches of a fanned-out
    run (one run id, several workers at once) never write the same document."""
    return f"{JOURNAL_PREFIX}{uuid.uuid4().hex[:12]}"


class Journal:
    """One journal of a run: `name` (the header and the first `page_size` entries), then
    `name-0001`, ... with the next pages. Each change puts only the pages it touches, so a run of
    n writes costs O(n) bytes of journal, not O(n^2)."""

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        clock: Callable[[], datetime],
        *,
        name: str = BACKFILL_JOURNAL,
        kind: str = "backfill-journal",
        page_size: int = JOURNAL_PAGE,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.clock = clock
        self.name = name
        self.page_size = max(1, page_size)
        self.header: dict[str, Any] = {
            "schemaVersion": SCHEMA_VERSION,
            "runId": run_id,
            "kind": kind,
            "status": RUNNING,
            "startedAt": self.now(),
            "updatedAt": self.now(),
        }
        self.pages: list[list[dict[str, Any]]] = [[]]
        self._page_of: dict[int, int] = {}  # id(entry) -> its page

    @property
    def kind(self) -> str:
        return str(self.header.get("kind") or "")

    def load(self) -> bool:
        """Read every page; False when the run has no journal of this name."""
        head = self.store.get(self.run_id, self.name)
        if head is None:
            return False
        self.header = {k: v for k, v in head.items() if k not in ("entries", "page")}
        self.pages = [_entries(head)]
        for page in self.store.names(self.run_id, f"{self.name}-"):
            self.pages.append(_entries(self.store.get(self.run_id, page)))
        self._page_of = {id(e): i for i, page in enumerate(self.pages) for e in page}
        return True

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [e for page in self.pages for e in page]

    def to_json(self) -> dict[str, Any]:
        """The whole journal as one document (header and every entry)."""
        return {**self.header, "entries": self.entries}

    def now(self) -> str:
        return format_timestamp(self.clock())

    def save(self, page: int = 0) -> None:
        self.header["updatedAt"] = self.now()
        name = self.name if page == 0 else f"{self.name}-{page:04d}"
        document = (
            {**self.header, "page": 0, "entries": self.pages[0]}
            if page == 0
            else {"runId": self.run_id, "kind": self.kind, "page": page}
            | {"entries": self.pages[page]}
        )
        self.store.put(self.run_id, name, document)

    def set_status(self, status: str, **extra: Any) -> None:
        self.header.update(status=status, **extra)
        self.save(0)

    def add(self, entry: dict[str, Any]) -> dict[str, Any]:
        self.add_all([entry])
        return entry

    def add_all(self, entries: Iterable[dict[str, Any]]) -> None:
        """Append entries; each page they land on is put once."""
        touched: set[int] = set()
        for entry in entries:
            entry["at"] = self.now()
            if len(self.pages[-1]) >= self.page_size:
                self.pages.append([])
            self.pages[-1].append(entry)
            self._page_of[id(entry)] = len(self.pages) - 1
            touched.add(len(self.pages) - 1)
        for page in sorted(touched):
            self.save(page)

    def update(self, entry: dict[str, Any], **changes: Any) -> None:
        entry.update(changes)
        self.commit([entry])

    def commit(self, entries: Iterable[dict[str, Any]]) -> None:
        """Put the pages of entries changed in place (each page once)."""
        pages = set()
        for entry in entries:
            entry["at"] = self.now()
            pages.add(self._page_of[id(entry)])
        for page in sorted(pages):
            self.save(page)


def _entries(document: dict[str, Any] | None) -> list[dict[str, Any]]:
    raw = document.get("entries") if document else None
    return [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []


def load_journals(
    store: RunStore, run_id: str, clock: Callable[[], datetime] | None = None
) -> list[Journal]:
    """Every journal of a run (a backfill's, a sync's, each fan-out batch attempt's, an undo's),
    oldest first; JournalNotFoundError when it has none."""
    journals = []
    for name in store.names(run_id):
        if not _HEAD.match(name):
            continue
        journal = Journal(store, run_id, clock or (lambda: datetime.now(UTC)), name=name)
        if journal.load():
            journals.append(journal)
    if not journals:
        raise JournalNotFoundError(
            f"no journal for run {run_id}: check the run id (a dry run, or a run that wrote "
            "nothing, keeps none) and that the same run store is used (the app's storage "
            "account, or WORK365_STATE_DIR; a --sandbox run keeps it next to its --state file)"
        )
    journals.sort(key=lambda j: (str(j.header.get("startedAt") or ""), j.name))
    return journals
