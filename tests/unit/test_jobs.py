"""The job message schema and the job registry (no storage needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from work365_fn.operations.jobs import JobUnavailable, resolve
from work365_fn.operations.run_documents import BadMessage, JobMessage
from work365_fn.operations.run_documents import CustomerBatch as Batch

RUN = "5D0C7A59-7F11-4B0E-9D59-6D0F3E7C2A10"
CUSTOMER = "c0000001-0000-4000-8000-000000000001"


def message(**changes: Any) -> bytes:
    data: dict[str, Any] = {
        "schemaVersion": 1,
        "runId": RUN,
        "kind": "sync",
        "payload": {"dryRun": True},
        "enqueuedAt": "2026-11-26T22:00:00Z",
    }
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v != "<absent>"}).encode()


def test_a_message_round_trips_through_its_json() -> None:
    sent = JobMessage(
        RUN.lower(),
        "sync",
        {"dryRun": False},
        datetime(2026, 11, 26, 22, tzinfo=UTC),
        Batch(3, 12, (CUSTOMER,)),
    )
    text = json.dumps(sent.to_json())

    assert json.loads(text) == {
        "schemaVersion": 1,
        "runId": RUN.lower(),
        "kind": "sync",
        "payload": {"dryRun": False},
        "enqueuedAt": "2026-11-26T22:00:00Z",
        "batch": {"index": 3, "count": 12, "customerIds": [CUSTOMER]},
    }
    assert JobMessage.parse(text.encode()) == sent
    assert sent.batch is not None and sent.batch.document == "batch-0003"


def test_the_run_id_is_lower_cased_and_unknown_fields_are_ignored() -> None:
    parsed = JobMessage.parse(message(future="field"))
    assert parsed.run_id == RUN.lower()
    assert parsed.batch is None
    assert "batch" not in parsed.to_json()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"\xff\xfe", "body"),
        (b"not json", "body"),
        (b'"text"', "body"),
        (message(schemaVersion=2), "schemaVersion"),
        (message(schemaVersion=True), "schemaVersion"),
        (message(schemaVersion="<absent>"), "schemaVersion"),
        (message(runId="not-a-guid"), "runId"),
        (message(runId="<absent>"), "runId"),
        (message(kind=""), "kind"),
        (message(kind=7), "kind"),
        (message(payload=[1]), "payload"),
        (message(enqueuedAt="yesterday"), "enqueuedAt"),
        (message(enqueuedAt="<absent>"), "enqueuedAt"),
        (message(batch=[]), "batch"),
        (message(batch={"index": 0, "count": 0, "customerIds": []}), "batch.count"),
        (message(batch={"index": 2, "count": 2, "customerIds": []}), "batch.index"),
        (message(batch={"index": True, "count": 2, "customerIds": []}), "batch.index"),
        (message(batch={"index": 0, "count": 1, "customerIds": "x"}), "batch.customerIds"),
        (message(batch={"index": 0, "count": 1, "customerIds": ["x"]}), "batch.customerIds[0]"),
    ],
)
def test_a_bad_message_names_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(BadMessage) as caught:
        JobMessage.parse(raw)
    assert caught.value.field == field


def _job(payload: dict[str, Any], run_id: str) -> dict[str, Any]:
    return {"runId": run_id}


KINDS = {"sync": _job, "report": _job, "backfill": _job}


def test_a_registered_kind_resolves_to_its_callable() -> None:
    assert resolve(KINDS, "sync") is _job


def test_an_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(JobUnavailable, match=r"unknown job kind 'nope' \(known: backfill, "):
        resolve(KINDS, "nope")


def test_a_queued_sync_the_job_refuses_fails_its_run_at_once(tmp_path: Any) -> None:
    """A payload the sync refuses is not retried: the run fails, naming the payload's field."""
    from work365_fn.adapters.storage import FileRunStore
    from work365_fn.operations.jobs import JobDeps, run_job
    from work365_fn.operations.sync import SyncRequest

    def sync(payload: dict[str, Any], run_id: str) -> dict[str, Any]:
        SyncRequest.from_payload(payload)
        raise AssertionError("a refused payload never runs")

    store = FileRunStore(tmp_path)
    deps = JobDeps(store, {"sync": sync}, lambda run_id, count, clock: None)
    run_job(deps, message(payload={"dryRun": "yes"}))  # returns: the host deletes the message

    state = store.get(RUN.lower(), "state")
    assert state is not None
    assert state["status"] == "failed"
    assert state["error"]["code"] == "invalid-request"
    assert state["error"]["field"] == "payload.dryRun"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"customerIds": ["not-a-guid"]}, "payload.customerIds[0]"),
        ({"apply": "yes"}, "payload.apply"),
        ({"undo": 7}, "payload.undo"),
        ({"force": True}, "payload.force"),
    ],
)
def test_a_queued_backfill_checks_its_payload_as_the_endpoint_does(
    tmp_path: Any, payload: dict[str, Any], field: str
) -> None:
    """The queued backfill reads its payload with the endpoint's own rules: a bad one fails the
    run at once, naming the field, and nothing is read or written."""
    from types import SimpleNamespace

    from work365_fn.adapters.storage import FileRunStore
    from work365_fn.operations.backfill import backfill_job
    from work365_fn.operations.jobs import JobDeps, run_job

    nothing = SimpleNamespace(run_deadline_seconds=None)  # any use beyond that would raise
    store = FileRunStore(tmp_path)
    kinds = {"backfill": lambda p, r: backfill_job(nothing, p, r)}  # type: ignore[arg-type]
    run_job(
        JobDeps(store, kinds, lambda run_id, count, clock: None),
        message(kind="backfill", payload=payload),
    )

    state = store.get(RUN.lower(), "state")
    assert state is not None
    assert (state["status"], state["error"]["code"]) == ("failed", "invalid-request")
    assert state["error"]["field"] == field
