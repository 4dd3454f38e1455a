"""Fan-out end to end: the timer splits a big full run into queue batches on Azurite, the real
queue handler runs each one over the sandbox, the last one aggregates the run's summary; it
equals an in-process full sync of the same scenario, Dataverse included."""

from __future__ import annotations

import base64
import json
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

import function_app
from tests.azurite import StorageNames
from tests.e2e.async_support import body, post
from tests.e2e.fanout_support import (
    BATCH_SIZE,
    CUSTOMERS,
    FanoutApp,
    Timer,
    app,
    deliver,
    deliver_all,
    deliver_together,
    in_process,
    messages_by_index,
    start_app,
    status_of,
    summary_records,
)
from tests.e2e.test_openapi import conforms
from work365_fn.operations import fanout
from work365_fn.operations.fanout import MARKER, MARKER_RUN_ID, POISONED_MESSAGE
from work365_fn.operations.incremental import STATE_RUN_ID, WATERMARK_DOCUMENT
from work365_fn.rules.summary import log_record

__all__ = ["app", "in_process"]  # the fixtures

BATCHES = math.ceil(len(CUSTOMERS) / BATCH_SIZE)
SAME = ("counts", "byReason", "subscriptions", "setting", "status", "mode", "dryRun")


def same(summary: dict[str, Any]) -> dict[str, Any]:
    """The SAME fields: what a fanned-out run must say exactly like an in-process one, customer
    names included (each batch's message carries them)."""
    return {k: summary[k] for k in SAME}


def fan_out(app: FanoutApp) -> tuple[str, dict[int, bytes]]:
    """One timer run; (the run id, the queued messages by batch index)."""
    function_app.sync_timer(Timer())
    drained = app.drain()
    assert len(drained) == BATCHES
    messages = messages_by_index(drained)
    run_ids = {json.loads(raw)["runId"] for raw in messages.values()}
    assert len(run_ids) == 1
    return run_ids.pop(), messages


def result_of(run_id: str) -> dict[str, Any]:
    resp = status_of(run_id)
    assert resp.status_code == 200, resp.get_body()
    return body(resp)


def test_a_big_timer_run_is_queued_in_batches_of_the_message_schema(app: FanoutApp) -> None:
    before = app.rows()

    function_app.sync_timer(Timer())

    drained = app.drain()
    assert len(drained) == BATCHES == 5
    seen: list[str] = []
    run_ids = set()
    for wire, raw in drained:
        assert base64.b64encode(raw).decode() == wire  # Base64 of the JSON text on the wire
        message = json.loads(raw)
        assert set(message) == {"schemaVersion", "runId", "kind", "payload", "enqueuedAt", "batch"}
        assert (message["schemaVersion"], message["kind"]) == (1, "sync")
        assert message["payload"] == {"dryRun": False, "mode": "full"}
        batch = message["batch"]
        assert batch["count"] == BATCHES
        assert 1 <= len(batch["customerIds"]) <= BATCH_SIZE
        run_ids.add(message["runId"])
        seen.extend(batch["customerIds"])
    assert sorted(json.loads(raw)["batch"]["index"] for _, raw in drained) == list(range(5))
    assert sorted(seen) == CUSTOMERS  # every customer once
    (run_id,) = run_ids
    state = app.store().get(run_id, "state")
    assert state is not None
    assert (state["kind"], state["status"]) == ("sync", "running")
    assert state["fanout"] == {"batches": 5, "batchSize": BATCH_SIZE, "customers": 9}
    assert app.rows() == before  # the timer itself wrote nothing to Dataverse
    polled = status_of(run_id)
    assert polled.status_code == 202
    assert body(polled)["progress"] == {"batches": 5, "done": 0}


def test_the_aggregated_run_equals_an_in_process_full_sync(
    app: FanoutApp, in_process: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    run_id, messages = fan_out(app)

    deliver_all([messages[i] for i in range(BATCHES - 1)])
    pending = conforms(status_of(run_id), "/runs/{runId}", "get")  # the connector's schema
    assert pending["progress"] == {"batches": 5, "done": 4}
    assert summary_records(caplog) == []  # nothing aggregated before the last batch
    deliver(messages[BATCHES - 1])

    final = conforms(status_of(run_id), "/runs/{runId}", "get")
    summary, reference = final["result"], in_process["summary"]
    assert (final["kind"], final["status"], final["error"]) == ("sync", "partial", None)
    assert same(summary) == same(reference)
    assert None not in {row["customerName"] for row in summary["subscriptions"]}
    assert summary["counts"]["customers"] == 9
    assert summary["byReason"]["default-contract"] == 8
    assert summary["errors"] == reference["errors"]  # the customer without a relationship
    assert [e["customerId"] for e in summary["errors"]] == [CUSTOMERS[3]]
    assert summary["warnings"] == reference["warnings"]
    assert summary["skippedCustomers"] == []
    assert summary["runId"] == run_id
    assert (summary["startedAt"], summary["finishedAt"]) == (
        final["startedAt"],
        final["finishedAt"],
    )
    assert app.rows() == in_process["rows"]  # Dataverse ends the same
    (record,) = summary_records(caplog)  # one structured record: the capped rows to act on
    assert record == log_record({**summary, "requests": {}})
    assert record["needsAttention"]  # the unassigned rows, with their names and fixes
    mark = app.store().get(STATE_RUN_ID, WATERMARK_DOCUMENT)
    assert mark is not None
    assert mark["lastFullAt"] == mark["watermark"] == summary["startedAt"]
    assert mark["pendingCustomers"] == []  # 403 20002 is not retried by the next run


def test_a_poisoned_batch_makes_the_run_partial_and_names_its_customers(
    app: FanoutApp, in_process: dict[str, Any]
) -> None:
    run_id, messages = fan_out(app)
    lost = json.loads(messages[2])["batch"]["customerIds"]

    deliver_all([messages[i] for i in (0, 1, 3, 4)])
    with pytest.raises(AssertionError):  # not over yet
        result_of(run_id)
    function_app.run_job_poison(func.QueueMessage(id="p", body=messages[2]))

    final = result_of(run_id)
    summary = final["result"]
    assert final["status"] == summary["status"] == "partial"
    poisoned = [e for e in summary["errors"] if e["service"] == "queue"]
    assert poisoned == [
        {
            "customerId": c,
            "service": "queue",
            "status": 0,
            "code": "poisoned",
            "message": POISONED_MESSAGE,
        }
        for c in lost
    ]
    assert POISONED_MESSAGE == "batch failed after 5 attempts"
    assert summary["counts"]["customers"] == 9  # nobody vanished
    assert not {s["customerId"] for s in summary["subscriptions"]} & set(lost)
    rows = same(in_process["summary"])["subscriptions"]
    reference = [s for s in rows if s["customerId"] not in lost]
    assert same(summary)["subscriptions"] == reference
    mark = app.store().get(STATE_RUN_ID, WATERMARK_DOCUMENT)
    assert mark is not None
    assert sorted(mark["pendingCustomers"]) == sorted(lost)  # the next run takes them


def test_a_second_full_run_while_batches_are_in_flight_is_refused(
    app: FanoutApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    run_id, messages = fan_out(app)
    deliver(messages[0])
    served = app.box.counts()

    function_app.sync_timer(Timer())  # the next timer run, batches still in flight

    assert app.drain() == []
    skipped = [r.getMessage() for r in caplog.records if "sync skipped" in r.getMessage()]
    assert skipped == [f"sync skipped: sync already running (run {run_id})"]
    http = function_app.sync_http(post({}))
    assert http.status_code == 409
    assert body(http)["runId"] == run_id
    queued = function_app.sync_http(post({"async": True}))
    assert (queued.status_code, body(queued)["runId"]) == (409, run_id)  # refused up front
    assert app.drain() == []
    assert app.box.counts() == served  # none of them read anything
    scoped = function_app.sync_http(post({"customerIds": [CUSTOMERS[0]], "dryRun": True}))
    assert scoped.status_code == 200  # scoped runs need no lease

    deliver_all([messages[i] for i in range(1, BATCHES)])
    assert result_of(run_id)["status"] == "partial"
    assert function_app.sync_http(post({})).status_code == 200  # over: full runs may start


def test_a_fanout_run_past_its_timeout_no_longer_blocks(app: FanoutApp) -> None:
    run_id, _messages = fan_out(app)  # then the batches are lost (the coordinator crashed)
    store = app.store()
    marker = store.get(MARKER_RUN_ID, MARKER)
    assert marker is not None and marker["runId"] == run_id
    started = datetime.fromisoformat(marker["startedAt"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(marker["expiresAt"].replace("Z", "+00:00")) == started + (
        timedelta(minutes=240)
    )
    assert function_app.sync_http(post({})).status_code == 409
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    store.put(MARKER_RUN_ID, MARKER, {**marker, "expiresAt": past})  # 240 minutes later

    resp = function_app.sync_http(post({}))

    assert resp.status_code == 200
    old = result_of(run_id)
    assert old["status"] == "failed"
    assert old["error"]["code"] == "timed-out"
    assert "0 of 5 batches done" in old["error"]["message"]


def test_two_batches_finishing_at_once_aggregate_once_and_alike(
    app: FanoutApp, in_process: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    run_id, messages = fan_out(app)
    deliver_all([messages[i] for i in range(BATCHES - 2)])

    deliver_together(messages[BATCHES - 2], messages[BATCHES - 1])

    summary = result_of(run_id)["result"]
    assert same(summary) == same(in_process["summary"])
    assert len(summary_records(caplog)) == 1  # logged (and notified) once
    # whoever aggregates again writes the same documents
    again = fanout.aggregate_run(
        function_app.services().fanout_deps(), run_id, app.store().names(run_id, "batch-")
    )
    assert {k: again[k] for k in SAME if k != "subscriptions"} == {
        k: summary[k] for k in SAME if k != "subscriptions"
    }
    assert result_of(run_id)["result"]["subscriptions"] == summary["subscriptions"]
    assert len(summary_records(caplog)) == 1


def test_a_batch_delivered_again_after_the_aggregate_changes_nothing(
    app: FanoutApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    run_id, messages = fan_out(app)
    deliver_all([messages[i] for i in range(BATCHES)])
    final = result_of(run_id)
    served = app.box.counts()

    deliver(messages[1])

    assert app.box.counts() == served
    assert result_of(run_id) == final
    assert len(summary_records(caplog)) == 1


def test_batches_that_cannot_be_queued_are_recorded_as_failed(
    monkeypatch: pytest.MonkeyPatch, storage: StorageNames
) -> None:
    azurite = storage.azurite
    broken = azurite.connection_string.replace(  # the queue endpoint answers as the blob service
        f"QueueEndpoint=http://127.0.0.1:{azurite.queue_port}",
        f"QueueEndpoint=http://127.0.0.1:{azurite.blob_port}",
    )
    fixture = start_app(monkeypatch, storage, WORK365_STORAGE=broken)
    app = next(fixture)
    try:
        before = app.rows()
        function_app.sync_timer(Timer())
        marker = app.store().get(MARKER_RUN_ID, MARKER)
        assert marker is not None
        final = result_of(marker["runId"])
        assert final["status"] == final["result"]["status"] == "failed"
        errors = final["result"]["errors"]
        assert [e["customerId"] for e in errors] == CUSTOMERS
        assert {(e["service"], e["code"]) for e in errors} == {("queue", "not-queued")}
        assert "AccountKey" not in json.dumps(final)
        assert app.rows() == before
        # over, so the next full run is not blocked by it
        assert function_app.sync_http(post({})).status_code == 200
    finally:
        fixture.close()


@pytest.mark.parametrize("threshold", ["9", "0"])
def test_at_or_below_the_threshold_or_switched_off_the_timer_runs_in_process(
    monkeypatch: pytest.MonkeyPatch,
    storage: StorageNames,
    caplog: pytest.LogCaptureFixture,
    threshold: str,
) -> None:
    caplog.set_level(logging.INFO)
    fixture = start_app(monkeypatch, storage, WORK365_FANOUT_THRESHOLD=threshold)
    app = next(fixture)
    try:
        function_app.sync_timer(Timer())
        assert app.drain() == []
        (record,) = summary_records(caplog)
        assert record["counts"]["customers"] == 9
        assert record["counts"]["assigned"] == 8
    finally:
        fixture.close()


def test_the_next_timer_run_after_a_fanout_is_incremental_and_in_process(
    app: FanoutApp, caplog: pytest.LogCaptureFixture
) -> None:
    _run_id, messages = fan_out(app)
    deliver_all([messages[i] for i in range(BATCHES)])
    caplog.set_level(logging.INFO)
    caplog.clear()

    function_app.sync_timer(Timer())

    assert app.drain() == []  # not fanned out again: the watermark says a full run is done
    (record,) = summary_records(caplog)
    assert record["mode"] == "incremental"


def test_a_customer_listing_that_fails_is_a_failed_run_like_in_process(
    monkeypatch: pytest.MonkeyPatch, storage: StorageNames, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fixture = start_app(monkeypatch, storage, WORK365_MAX_ATTEMPTS="1")
    app = next(fixture)
    try:
        app.box.faults.add(
            {"service": "partnerCenter", "path": "/v1/customers(\\?|$)", "kind": "500", "times": 9}
        )

        function_app.sync_timer(Timer())

        (record,) = summary_records(caplog)
        assert record["status"] == "failed"
        assert [(e["service"], e["status"]) for e in record["errors"]] == [("partnerCenter", 500)]
        assert app.drain() == []
        assert app.store().get(MARKER_RUN_ID, MARKER) is None  # nothing blocks the next run
        assert app.store().names(record["runId"]) == []
    finally:
        fixture.close()


def test_in_create_mode_the_fanned_out_run_creates_the_same_records(
    monkeypatch: pytest.MonkeyPatch, storage: StorageNames, tmp_path: Any
) -> None:
    from tests.e2e.fanout_support import scenario
    from tests.integration.conftest import services_for
    from work365_fn.operations.sync import SyncRequest
    from work365_fn.sandbox import Sandbox

    with Sandbox.start(scenario()) as box:
        services = services_for(box, WORK365_CREATE_MISSING="true", WORK365_STATE_DIR=str(tmp_path))
        reference = services.sync(SyncRequest(mode="full")).to_json()
        rows = {
            r["work365_subscriptionid"]: (
                r.get("work365_providersubscriptionid"),
                r.get("_work365_billingcontract_value"),
            )
            for r in box.dataverse.rows("work365_subscriptions")
        }
    fixture = start_app(monkeypatch, storage, WORK365_CREATE_MISSING="true")
    app = next(fixture)
    try:
        run_id, messages = fan_out(app)
        deliver_all([messages[i] for i in range(BATCHES)])

        summary = result_of(run_id)["result"]
        assert summary["counts"]["created"] == reference["counts"]["created"] == 1
        assert same(summary) == same(reference)
        assert {
            r["work365_subscriptionid"]: (
                r.get("work365_providersubscriptionid"),
                r.get("_work365_billingcontract_value"),
            )
            for r in app.box.dataverse.rows("work365_subscriptions")
        } == rows
    finally:
        fixture.close()
