"""Work that runs off the request: the queue trigger's job runner.

A job message (operations/run_documents.py has its schema and the run documents) names a kind
of job; the kinds are callables registered by the composition root (`JobDeps.kinds`): a job is
`(payload, run_id) -> result JSON`. A kind this build does not register fails its run with a
clear error instead of breaking the app. A message that does not parse is logged and dropped
(never retried forever).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from work365_fn.adapters.storage import LeaseTakenError, RunStore
from work365_fn.errors import ConfigError, Work365Error
from work365_fn.logs import RunLog
from work365_fn.operations.inputs import BadRequest
from work365_fn.operations.run_documents import (
    DONE,
    FAILED,
    MAX_DEQUEUE_COUNT,
    BadMessage,
    JobMessage,
    RunStates,
    batch_document,
    result_status,
)
from work365_fn.operations.run_documents import error_document as _error

log = logging.getLogger(__name__)

Job = Callable[[dict[str, Any], str], dict[str, Any]]  # (payload, run_id) -> result JSON


class JobUnavailable(Work365Error):
    """The message names a kind of job this build cannot run."""


@dataclass(frozen=True)
class JobDeps:
    run_store: RunStore
    kinds: Mapping[str, Job]  # the registry: kind -> job
    # (run id, batch count, clock): aggregate the fanned-out run when all its batches are done
    after_batch: Callable[[str, int, Callable[[], datetime] | None], object]


def resolve(kinds: Mapping[str, Job], kind: str) -> Job:
    job = kinds.get(kind)
    if job is None:
        raise JobUnavailable(f"unknown job kind '{kind}' (known: {', '.join(sorted(kinds))})")
    return job


def _rlog(run_id: str) -> RunLog:
    return RunLog(log, {"run_id": run_id})


def run_job(
    deps: JobDeps,
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
    rlog = _rlog(message.run_id)
    if message.batch is not None:
        return _run_batch(deps, message, attempt, rlog, clock)
    states = RunStates(deps.run_store, clock)
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
    outcome = _attempt(deps, message, rlog, attempt)
    if outcome is None:
        return
    result, error = outcome
    status = result_status(result) if result is not None else FAILED
    states.finish(state, status, result, error)
    rlog.info("job %s %s", message.kind, status)


def _attempt(
    deps: JobDeps, message: JobMessage, rlog: RunLog, attempt: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None] | None:
    """(result, None) or (None, error) when the run is over; raises for a retry."""
    try:
        job = resolve(deps.kinds, message.kind)
        payload = message.payload
        if message.batch is not None:
            payload = {**payload, "customerIds": list(message.batch.customer_ids)}
            if message.batch.customer_names:  # the names the fan-out listing read
                payload["customerNames"] = dict(message.batch.customer_names)
        return job(payload, message.run_id), None
    except JobUnavailable as exc:
        rlog.error("%s", exc)
        return None, _error("unknown-kind", str(exc))
    except (BadMessage, BadRequest) as exc:
        # a payload the job refuses (BadRequest names the payload's field): retrying cannot help
        where = exc.field if isinstance(exc, BadMessage) else f"payload.{exc.field}"
        rlog.error("the job's input is invalid (%s): %s", where, exc)
        return None, _error("invalid-request", str(exc), field=where)
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
    deps: JobDeps,
    message: JobMessage,
    attempt: int,
    rlog: RunLog,
    clock: Callable[[], datetime] | None,
) -> None:
    """One batch of a fanned-out run: its outcome goes to `batch-NNNN` (written once, when it
    is over), then the run is aggregated if this was the last batch."""
    assert message.batch is not None
    batch = message.batch
    store = deps.run_store
    states = RunStates(store, clock)
    existing = store.get(message.run_id, batch.document)
    if existing is not None and existing.get("status") in DONE:
        rlog.info("%s delivered again after it finished: ignored", batch.document)
        _after_batch(deps, message, clock)  # finishes an aggregation a crash cut short
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
    outcome = _attempt(deps, message, rlog, attempt)
    if outcome is None:
        return
    result, error = outcome
    status = result_status(result) if result is not None else FAILED
    store.put(
        message.run_id,
        batch.document,
        batch_document(
            message.run_id,
            message.kind,
            batch,
            status,
            started_at=started,
            finished_at=states.now(),
            result=result,
            error=error,
        ),
    )
    rlog.info("%s %s", batch.document, status)
    _after_batch(deps, message, clock)


def _after_batch(deps: JobDeps, message: JobMessage, clock: Callable[[], datetime] | None) -> None:
    """A `sync` batch landed: aggregate the run when it was the last one (fanout.py)."""
    if message.kind != "sync" or message.batch is None:
        return
    deps.after_batch(message.run_id, message.batch.count, clock)


def fail_poisoned(
    deps: JobDeps, body: bytes, *, clock: Callable[[], datetime] | None = None
) -> None:
    """A message the host gave up on (moved to `<queue>-poison`): mark its run failed."""
    try:
        message = JobMessage.parse(body)
    except BadMessage as exc:
        log.error(
            "dropped a poison message that does not follow the schema (%s): %s", exc.field, exc
        )
        return
    rlog = _rlog(message.run_id)
    text = f"the job failed {MAX_DEQUEUE_COUNT} times; see the logs for run {message.run_id}"
    error = _error("poisoned", text)
    store = deps.run_store
    states = RunStates(store, clock)
    if message.batch is not None:
        name = message.batch.document
        document = store.get(message.run_id, name)
        if document is None or document.get("status") not in DONE:
            started = document.get("startedAt") if document else None
            store.put(
                message.run_id,
                name,
                batch_document(
                    message.run_id,
                    message.kind,
                    message.batch,
                    FAILED,
                    started_at=started,
                    finished_at=states.now(),
                    error=error,
                ),
            )
        rlog.error("%s: %s", name, text)
        try:  # a poisoned batch still counts: the run's summary names its customers
            _after_batch(deps, message, clock)
        except Work365Error as exc:
            rlog.error("could not aggregate the run after %s: %s", name, exc)
        return
    state = states.get(message.run_id) or states.queued(message)
    if state.get("status") in DONE:
        rlog.info("poison message for a finished run (%s): ignored", state["status"])
        return
    states.finish(state, FAILED, None, error)
    rlog.error("%s", text)
