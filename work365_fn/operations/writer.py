"""The sync's writes: planned decisions carried out in Dataverse `$batch` requests.

Each write stays conditional (`If-Match` for an assignment, `If-None-Match: *` for a create) and
is its own operation in the batch, so one 412 neither stops nor rolls back the others. Per
operation:

- 2xx: done (records created through the alternate key answer with the key, not the id: their
  ids are read back by key, one query per batch);
- 412: the record changed (or exists) since the read: re-read it, decide again, and if it still
  needs a write, send it once more in a later batch; a second 412 makes it an `error`;
- 429: sent again in a later batch after the Retry-After (not counted as an attempt);
- anything else: an `error` decision with the service's message and an `errors` entry.

With notes on (WORK365_WRITE_NOTES: the bindings carry the note's navigation property), each
write and the note that records it (operations/notes.py) go in one change set: both happen or
neither. A failed note rolls its write back (the decision becomes an `error` saying so, the next
run tries again); a 412 on the write leaves no note.

A whole-batch 429 is retried after its Retry-After; when its code says the execution-time limit
was hit (0x80072321) the batch size halves for the rest of the run (never below 1). Before each
batch the run's deadline is checked: past it, the remaining writes become `error` decisions and
the next run completes them.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from work365_fn.adapters.dataverse_metadata import NotesUnavailableError, SubscriptionBindings
from work365_fn.adapters.dataverse_repository import Repository
from work365_fn.adapters.odata_batch import BatchOperation, BatchPart, BatchResult, ChangeSet
from work365_fn.errors import ApiError, InvalidResponseError, NotFoundError, ThrottledError
from work365_fn.operations.notes import NoteContext, note_for_write
from work365_fn.rules import Action, Decision, Reason, World, decide_for_record
from work365_fn.rules.model import SubscriptionRecord
from work365_fn.rules.names import account_names_read, contract_names_read, unnamed
from work365_fn.rules.reasons import LANDS
from work365_fn.rules.summary import RunSummary

log = logging.getLogger(__name__)

MAX_WRITE_ATTEMPTS = 2  # a write that meets a 412 is re-read, re-decided and tried once more
EXECUTION_TIME_LIMIT = "0x80072321"  # Dataverse: combined execution time over the limit
DEADLINE_MESSAGE = "run deadline reached before this write; the next run completes it"
KEPT_CHANGING = "the record kept changing while we wrote; the next run retries it"
NOT_READ_BACK = "the record was created, but reading back its id failed; the next run reports it"
ID_NOT_READ_BACK = "created; reading back its id failed, so the id is missing here"
ROLLED_BACK = "the write and its note were rolled back together; the next run tries again"


@dataclass
class _Write:
    index: int  # position in the run's decision list
    decision: Decision
    conflicts: int = 0
    throttled: int = 0  # per-operation 429s
    address: str | None = None  # create: where the record is created


@dataclass(frozen=True)
class WriteLimits:
    """How far one run's writes may go: operations per `$batch` (1-1000; halved on the
    execution-time limit), the run's deadline in `monotonic` seconds (None: no deadline), and
    how many 429s in a row a batch, or one operation, may meet; `sleep` waits out a 429."""

    batch_size: int
    deadline: float | None
    monotonic: Callable[[], float]
    sleep: Callable[[float], None]
    max_throttled: int = 5


class BatchWriter:
    """Carries out the write decisions of one run. Not thread-safe; one per run."""

    def __init__(
        self,
        repo: Repository,
        world: World,
        bindings: SubscriptionBindings,
        summary: RunSummary,
        rlog: logging.LoggerAdapter[logging.Logger],
        limits: WriteLimits,
    ) -> None:
        self._repo = repo
        self._world = world
        self._bindings = bindings
        self._summary = summary
        self._log = rlog
        # A write and its note are two operations of the batch's 1000 (notes on).
        per_write = 2 if bindings.note_nav is not None else 1
        self.batch_size = max(1, min(limits.batch_size, 1000 // per_write))
        self._deadline = limits.deadline
        self._monotonic = limits.monotonic
        self._sleep = limits.sleep
        self._max_throttled = max(1, limits.max_throttled)
        self.batches = 0  # $batch requests answered (for logs and the benchmark)
        self.notes = 0  # notes written with their write (WORK365_WRITE_NOTES)
        self._notes = bindings.note_nav is not None
        # The names the reads carried (formatted values of the lookups: rules/names.py).
        self._account_names = account_names_read(
            world.provider_accounts, world.contracts, world.records
        )
        self._contract_names = contract_names_read(world.contracts, world.records)

    def contract_name(self, contract_id: str | None) -> str | None:
        """The name the reads gave this contract (None when unknown): for the run's journal."""
        return self._contract_names.get(contract_id.lower()) if contract_id else None

    def write(self, decisions: Sequence[Decision]) -> list[Decision]:
        """The decisions after writing: writes that failed become `error`, created records
        carry their id, re-decided ones carry their new reason. Order is kept."""
        final = list(decisions)
        queue: deque[_Write] = deque(
            _Write(i, d) for i, d in enumerate(decisions) if d.action is not Action.NONE
        )
        if self._notes and queue:
            self._read_account_names([w.decision for w in queue])
        throttled = 0  # whole-batch 429s in a row
        while queue:
            if self._deadline is not None and self._monotonic() >= self._deadline:
                self._log.warning(
                    "run deadline reached: %d writes left for the next run", len(queue)
                )
                self._summary.warnings.append(
                    f"run deadline reached: {len(queue)} writes were not made; the next run "
                    "completes them"
                )
                for item in queue:
                    final[item.index] = _failed(item.decision, DEADLINE_MESSAGE)
                break
            chunk = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
            sent, operations = self._operations(chunk, final)
            if not sent:
                continue
            try:
                results = self._repo.batch(operations)
            except ThrottledError as exc:
                throttled += 1
                if throttled > self._max_throttled:
                    self._log.error("dataverse kept throttling the writes: %s", exc)
                    for item in [*sent, *queue]:
                        self._fail(final, item, exc)
                    break
                queue.extendleft(reversed(sent))
                if exc.code == EXECUTION_TIME_LIMIT:
                    self._shrink()
                wait = exc.retry_after if exc.retry_after is not None else min(2.0**throttled, 30)
                self._log.warning(
                    "dataverse throttled a batch of %d writes (%s); retrying in %.1f s",
                    len(sent),
                    exc.code,
                    wait,
                )
                self._sleep(wait)
                continue
            except ApiError as exc:
                self._log.error("a batch of %d writes failed: %s", len(sent), exc)
                for item in sent:
                    self._fail(final, item, exc)
                continue
            throttled = 0
            self.batches += 1
            wait = self._results(sent, results, final, queue)
            if wait:
                self._sleep(wait)
        return final

    def _operations(
        self, chunk: list[_Write], final: list[Decision]
    ) -> tuple[list[_Write], list[BatchPart]]:
        sent: list[_Write] = []
        operations: list[BatchPart] = []
        for item in chunk:
            d = item.decision
            try:
                if d.action is Action.ASSIGN:
                    assert d.record is not None and d.contract_id is not None
                    address = d.record.id
                    op = self._repo.assign_operation(d.record, d.contract_id, self._bindings)
                else:
                    contract = d.contract_id if d.reason in LANDS else None
                    address = item.address = self._repo.create_address(
                        d.subscription, self._bindings
                    )
                    op = self._repo.create_operation(
                        d.subscription, d.account_id, contract, self._bindings
                    )
            except ApiError as exc:  # e.g. a record read without an ETag
                self._fail(final, item, exc)
                continue
            sent.append(item)
            operations.append(ChangeSet((op, self._note(d, address))) if self._notes else op)
        return sent, operations

    def _note(self, decision: Decision, address: str) -> BatchOperation:
        """The note of one write (notes on), addressed to the record's id or key."""
        contract = decision.contract_id.lower() if decision.contract_id else None
        account = decision.account_id.lower() if decision.account_id else None
        setting = self._world.setting
        note = note_for_write(
            decision,
            NoteContext(self._summary.run_id, setting.since, setting.since_source),
            contract_name=self._contract_names.get(contract) if contract else None,
            account_name=self._account_names.get(account) if account else None,
        )
        return self._repo.note_operation(address, note.subject, note.text, self._bindings)

    def _read_account_names(self, decisions: Sequence[Decision]) -> None:
        """The names of the Accounts the notes name that the reads did not (rare), read once
        per run (`In` queries); when the read fails the notes name those Accounts by id."""
        ids = unnamed([d.account_id for d in decisions if d.account_id], self._account_names)
        if not ids:
            return
        try:
            self._account_names.update(self._repo.account_names(ids))
        except ApiError as exc:
            self._log.warning("account names for the notes could not be read: %s", exc)

    def _results(
        self,
        sent: list[_Write],
        results: list[BatchResult],
        final: list[Decision],
        queue: deque[_Write],
    ) -> float:
        """Apply one batch's answers; returns how long to wait before the next batch."""
        later: list[_Write] = []
        unread: list[_Write] = []  # created by key, the answer without the id: read back
        wait = 0.0
        done = conflicts = 0
        for position, item in enumerate(sent):
            if position >= len(results):  # the batch stopped before this one: send it again
                later.append(item)
                continue
            result = results[position]
            if result.ok:
                done += 1
                self.notes += 1 if self._notes else 0
                decided = self._done(item, result)
                if decided is None:
                    unread.append(item)
                else:
                    final[item.index] = decided
            elif result.status == 412:
                conflicts += 1
                retry = self._conflict(item, final)
                if retry:
                    later.append(item)
            elif result.status == 429 and item.throttled < self._max_throttled:
                item.throttled += 1
                later.append(item)
                code, _ = result.error()
                if code == EXECUTION_TIME_LIMIT:
                    self._shrink()
                wait = max(wait, result.retry_after if result.retry_after is not None else 1.0)
            else:
                code, message = result.error()
                if self._notes:
                    failed = "its note" if result.content_id == str(2 * position + 2) else "it"
                    message = f"{message} ({failed} failed: {ROLLED_BACK})"
                error = ApiError("dataverse", result.status, code, message)
                self._fail(final, item, error)
        self._read_back(unread, final)
        self._log.info(
            "batch %d: %d writes sent, %d done, %d changed since read, %d to send again",
            self.batches,
            len(sent),
            done,
            conflicts,
            len(later),
        )
        queue.extend(later)
        return wait

    def _done(self, item: _Write, result: BatchResult) -> Decision | None:
        """The decision after a successful write; None for a record created through the
        alternate key whose answer does not carry its id (see `_read_back`)."""
        d = item.decision
        if d.action is Action.ASSIGN:
            assert d.record is not None
            self._log.debug(
                "subscription %s: record %s assigned to contract %s",
                d.subscription.id,
                d.record.id,
                d.contract_id,
            )
            # The new ETag when the part's answer carries one (the journal's etagAfter); Microsoft
            # documents a bare 204 for an update, so most often it does not (docs/undo.md).
            return replace(d, record=replace(d.record, etag=result.etag)) if result.etag else d
        assert item.address is not None
        record_id = self._repo.created_record_id(item.address, result.body, self._bindings)
        return None if record_id is None else self._created(d, record_id)

    def _created(self, decision: Decision, record_id: str) -> Decision:
        self._summary.created += 1
        self._log.debug("subscription %s: record %s created", decision.subscription.id, record_id)
        return replace(decision, record=_stub(decision, record_id))

    def _read_back(self, items: list[_Write], final: list[Decision]) -> None:
        """Ids of records a batch created through the alternate key: a key-addressed create
        answers 204 with the key (not the id) in OData-EntityId, and a `$batch` part does not
        ask for the row, so they are read back by key, one query for the whole batch."""
        if not items:
            return
        try:
            ids = self._repo.created_record_ids([i.decision.subscription.id for i in items])
        except ApiError as exc:
            # The creates landed and were answered: this run made them and reports them (its
            # counts included), without the id; the failed read goes to `errors`.
            for item in items:
                self._summary.errors.append(exc.to_json(item.decision.subscription.customer_id))
                self._summary.created += 1
                final[item.index] = replace(item.decision, message=f"{ID_NOT_READ_BACK}: {exc}")
            return
        for item in items:
            sub = item.decision.subscription
            record_id = ids.get(sub.id.lower())
            if record_id is not None:
                final[item.index] = self._created(item.decision, record_id)
                continue
            error = InvalidResponseError(
                "dataverse", 200, "created-not-found", f"no record {item.address} when read back"
            )
            self._summary.errors.append(error.to_json(sub.customer_id))
            final[item.index] = _failed(item.decision, f"{NOT_READ_BACK}: {error}")

    def _conflict(self, item: _Write, final: list[Decision]) -> bool:
        """A 412: re-read and decide again. True when the write should be sent again."""
        item.conflicts += 1
        d = item.decision
        self._log.info("subscription %s: changed since read (412); re-reading", d.subscription.id)
        try:
            again = self._redecide(d)
        except ApiError as exc:
            self._fail(final, item, exc)
            return False
        if again.action is Action.NONE:
            final[item.index] = again
            return False
        if item.conflicts >= MAX_WRITE_ATTEMPTS:
            final[item.index] = _failed(again, KEPT_CHANGING)
            return False
        item.decision = again
        final[item.index] = again
        return True

    def _redecide(self, decision: Decision) -> Decision:
        sub = decision.subscription
        address = (
            decision.record.id
            if decision.record is not None
            else self._repo.create_address(sub, self._bindings)
        )
        try:
            record: SubscriptionRecord | None = self._repo.record(address)
        except NotFoundError:
            record = None
        return decide_for_record(self._world, sub, record)

    def _shrink(self) -> None:
        smaller = max(1, self.batch_size // 2)
        if smaller < self.batch_size:
            self._log.warning(
                "dataverse execution-time limit hit (%s): batch size %d -> %d for the rest of "
                "the run",
                EXECUTION_TIME_LIMIT,
                self.batch_size,
                smaller,
            )
            self.batch_size = smaller

    def _fail(self, final: list[Decision], item: _Write, exc: ApiError) -> None:
        sub = item.decision.subscription
        self._summary.errors.append(exc.to_json(sub.customer_id))
        self._log.error("subscription %s: write failed: %s", sub.id, exc)
        final[item.index] = _failed(item.decision, str(exc))


def _stub(decision: Decision, record_id: str) -> SubscriptionRecord:
    return SubscriptionRecord(
        id=record_id,
        provider_subscription_id=decision.subscription.id,
        account_id=decision.account_id,
        billing_contract_id=decision.contract_id,
        created_on=None,
    )


def _failed(decision: Decision, message: str) -> Decision:
    return Decision(
        decision.subscription,
        decision.record,
        Reason.ERROR,
        Action.NONE,
        account_id=decision.account_id,
        message=message,
    )


def refuse_without_notes(
    bindings: Callable[[], SubscriptionBindings], summary: RunSummary
) -> NotesUnavailableError | None:
    """With notes on, a run first checks that notes can be written (`bindings` reads the notes
    checks, cached per worker): a note that fails would roll back the write in its change set,
    so a run that cannot write them fails (`summary.fatal`) before reading or writing anything.
    Returns the refusal, for the caller's log line."""
    try:
        bindings()
    except NotesUnavailableError as exc:
        summary.fatal = True
        summary.errors.append(
            {
                "customerId": None,
                "service": "dataverse",
                "status": 0,
                "code": "notes-unavailable",
                "message": str(exc),
            }
        )
        return exc
    return None
