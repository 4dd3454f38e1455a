"""Asynchronous runs end to end: POST {"async": true} -> 202 + Location -> poll -> the real queue
message from Azurite -> the queue-triggered function -> 200 with the summary, over the sandbox."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import pytest

import function_app
from tests.e2e.async_support import (
    App,
    app,
    body,
    get_status,
    link_ok,
    post,
    signed,
    status_request,
)
from work365_fn.adapters.storage import BlobRunStore
from work365_fn.composition import Services

__all__ = ["app"]  # the fixture


def start(app: App, payload: dict[str, object] | None = None) -> tuple[str, str]:
    resp = function_app.sync_http(post({"async": True, **(payload or {})}))
    assert resp.status_code == 202, resp.get_body()
    return body(resp)["runId"], resp.headers["Location"]


def test_async_sync_runs_off_the_request_and_is_polled_to_its_summary(app: App) -> None:
    before = app.assigned()

    resp = function_app.sync_http(post({"async": True}))

    accepted = body(resp)
    run_id = accepted["runId"]
    location = resp.headers["Location"]
    assert resp.status_code == 202
    assert accepted == {"runId": run_id, "status": "queued", "statusUrl": location}
    assert location.startswith(f"http://localhost:7071/api/runs/{run_id}?sig=")
    assert link_ok(run_id, location)
    assert resp.headers["Retry-After"] == "5"
    assert resp.headers["x-ms-correlation-id"] == run_id
    assert app.assigned() == before  # nothing ran yet

    polled = function_app.run_status(get_status(location))
    assert polled.status_code == 202
    assert body(polled)["status"] == "queued"
    assert polled.headers["Retry-After"] == "5"
    assert link_ok(run_id, polled.headers["Location"])  # signed afresh (see test_status_links)
    assert polled.headers["x-ms-correlation-id"] == run_id

    wire, decoded = app.receive()
    assert base64.b64encode(decoded).decode() == wire  # Base64 of the JSON text on the wire
    message = json.loads(decoded)
    assert set(message) == {"schemaVersion", "runId", "kind", "payload", "enqueuedAt"}
    assert (message["schemaVersion"], message["runId"], message["kind"]) == (1, run_id, "sync")
    assert message["payload"] == {"dryRun": False, "customerIds": [], "mode": "full"}
    datetime.strptime(message["enqueuedAt"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    function_app.run_job(func.QueueMessage(id="m1", body=decoded))

    done = function_app.run_status(get_status(location))
    final = body(done)
    assert done.status_code == 200
    assert "Location" not in done.headers
    assert (final["runId"], final["kind"], final["status"]) == (run_id, "sync", "succeeded")
    assert final["error"] is None
    summary = final["result"]
    assert summary["runId"] == run_id
    assert summary["counts"]["assigned"] == 6
    assert app.assigned() == before + 6  # the writes really happened in the sandbox


def app_key() -> str:
    from tests.e2e.async_support import SIGNING_KEY

    return SIGNING_KEY


def test_a_scoped_dry_run_is_queued_with_its_input(app: App) -> None:
    before = app.assigned()
    _run_id, location = start(
        app, {"dryRun": True, "customerIds": ["C0000001-0000-4000-8000-000000000001"]}
    )
    _, decoded = app.receive()
    assert json.loads(decoded)["payload"] == {
        "dryRun": True,
        "customerIds": ["c0000001-0000-4000-8000-000000000001"],
        "mode": "full",
    }
    function_app.run_job(func.QueueMessage(body=decoded))
    final = body(function_app.run_status(get_status(location)))
    assert final["result"]["dryRun"] is True
    assert {r["customerId"] for r in final["result"]["subscriptions"]} == {
        "c0000001-0000-4000-8000-000000000001"
    }
    assert app.assigned() == before  # a dry run writes nothing


@pytest.mark.parametrize("sig", [None, "", "x" * 43, "tampered"])
def test_a_missing_or_wrong_signature_is_refused(app: App, sig: str | None) -> None:
    run_id, _location = start(app)
    good = signed(run_id, app_key())
    if sig == "tampered":
        sig = good[:-1] + ("A" if good[-1] != "A" else "B")

    resp = function_app.run_status(status_request(run_id, sig))

    assert resp.status_code == 403
    assert body(resp)["error"] == "forbidden"
    assert resp.headers["x-ms-correlation-id"] == run_id
    assert good not in resp.get_body().decode()


def test_a_signature_of_another_run_is_refused(app: App) -> None:
    run_id, _ = start(app)
    other = str(uuid.uuid4())
    resp = function_app.run_status(status_request(run_id, signed(other, app_key())))
    assert resp.status_code == 403


def test_an_unknown_run_is_a_404(app: App) -> None:
    run_id = str(uuid.uuid4())
    resp = function_app.run_status(status_request(run_id, signed(run_id, app_key())))
    assert resp.status_code == 404
    assert body(resp) == {"error": "not-found", "message": f"no run {run_id}", "runId": run_id}
    assert resp.headers["x-ms-correlation-id"] == run_id


def test_a_run_id_that_is_not_a_guid_is_a_400_before_anything_else(app: App) -> None:
    resp = function_app.run_status(status_request("../../etc", "whatever"))
    data = body(resp)
    assert resp.status_code == 400
    assert data["field"] == "runId"
    assert resp.headers["x-ms-correlation-id"] == data["runId"]


def test_the_poison_handler_marks_the_run_failed(app: App) -> None:
    run_id, location = start(app)
    _, decoded = app.receive()

    function_app.run_job_poison(func.QueueMessage(body=decoded))

    resp = function_app.run_status(get_status(location))
    final = body(resp)
    assert resp.status_code == 200
    assert final["status"] == "failed"
    assert final["result"] is None
    assert final["error"] == {
        "code": "poisoned",
        "message": f"the job failed 5 times; see the logs for run {run_id}",
    }


def boom_job(payload: dict[str, Any], run_id: str) -> dict[str, Any]:
    raise RuntimeError("unexpected")


def test_a_failing_job_is_retried_by_the_host_then_poisoned(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered = Services.job_kinds
    monkeypatch.setattr(Services, "job_kinds", lambda self: {**registered(self), "boom": boom_job})
    services = function_app.services()
    from work365_fn.entrypoints.functions.runs import start_async

    resp = start_async("boom", {}, services)
    location = resp.headers["Location"]
    _, decoded = app.receive()

    with pytest.raises(RuntimeError):  # raising is what makes the host retry the message
        function_app.run_job(func.QueueMessage(body=decoded))
    assert body(function_app.run_status(get_status(location)))["status"] == "running"

    function_app.run_job_poison(func.QueueMessage(body=decoded))
    assert body(function_app.run_status(get_status(location)))["status"] == "failed"


def test_an_unknown_job_kind_fails_its_run_clearly(app: App) -> None:
    from work365_fn.entrypoints.functions.runs import start_async

    resp = start_async("no-such-job", {}, function_app.services())
    _, decoded = app.receive()

    function_app.run_job(func.QueueMessage(body=decoded))  # no raise: retrying cannot help

    final = body(function_app.run_status(get_status(resp.headers["Location"])))
    assert final["status"] == "failed"
    assert final["error"]["code"] == "unknown-kind"
    assert "no-such-job" in final["error"]["message"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"schemaVersion": 2}', "schemaVersion"),
        (b'{"schemaVersion": 1, "runId": "x", "kind": "sync"}', "runId"),
    ],
)
def test_a_bad_message_is_dropped_with_a_log(
    app: App, caplog: pytest.LogCaptureFixture, raw: bytes, field: str
) -> None:
    caplog.set_level(logging.INFO)

    function_app.run_job(func.QueueMessage(body=raw))  # returns: the host deletes it

    dropped = [r.getMessage() for r in caplog.records if "dropped a job message" in r.getMessage()]
    assert len(dropped) == 1
    assert f"({field})" in dropped[0]


def test_a_message_delivered_twice_runs_once(app: App) -> None:
    _run_id, location = start(app)
    _, decoded = app.receive()
    function_app.run_job(func.QueueMessage(body=decoded))
    counts = app.box.counts()["dataverse"]

    function_app.run_job(func.QueueMessage(body=decoded))

    assert app.box.counts()["dataverse"] == counts  # not a single request more
    assert body(function_app.run_status(get_status(location)))["status"] == "succeeded"


def test_enqueue_failure_answers_502_and_leaves_no_queued_state(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    azurite = app.storage.azurite
    # the queue endpoint points at the blob service: every queue call fails, blobs work
    broken = azurite.connection_string.replace(
        f"QueueEndpoint=http://127.0.0.1:{azurite.queue_port}",
        f"QueueEndpoint=http://127.0.0.1:{azurite.blob_port}",
    )
    monkeypatch.setenv("WORK365_STORAGE", broken)
    function_app.services.cache_clear()

    resp = function_app.sync_http(post({"async": True}))

    data = body(resp)
    assert resp.status_code == 502
    assert data["error"] == "upstream"
    assert resp.headers["x-ms-correlation-id"] == data["runId"]
    assert "AccountKey" not in resp.get_body().decode()
    store = BlobRunStore(app.app_storage().container())
    assert store.names(data["runId"]) == []  # no ghost "queued" run


def test_async_without_a_signing_key_is_a_configuration_error(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WORK365_RUN_SIGNING_KEY")
    function_app.services.cache_clear()

    resp = function_app.sync_http(post({"async": True}))

    assert resp.status_code == 500
    data = body(resp)
    assert data["error"] == "configuration"
    assert "WORK365_RUN_SIGNING_KEY" in data["message"]
    assert app.queued() == []
    status = function_app.run_status(status_request(data["runId"], "x"))
    assert status.status_code == 500


def test_async_without_app_storage_is_a_configuration_error(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WORK365_STORAGE")
    function_app.services.cache_clear()

    resp = function_app.sync_http(post({"async": True}))

    assert resp.status_code == 500
    assert "WORK365_STORAGE" in body(resp)["message"]


def test_async_must_be_a_boolean(app: App) -> None:
    resp = function_app.sync_http(post({"async": "yes"}))
    assert resp.status_code == 400
    assert body(resp)["field"] == "async"


def test_the_report_runs_asynchronously_through_the_same_queue(app: App) -> None:
    resp = function_app.report_http(
        func.HttpRequest(
            method="GET",
            url="http://localhost:7071/api/report",
            params={"async": "true"},
            body=b"",
        )
    )
    assert resp.status_code == 202, resp.get_body()
    location = resp.headers["Location"]
    _, decoded = app.receive()
    assert json.loads(decoded)["kind"] == "report"

    function_app.run_job(func.QueueMessage(body=decoded))

    final = body(function_app.run_status(get_status(location)))
    assert (final["kind"], final["status"]) == ("report", final["result"]["status"])
    assert final["result"]["runId"] == final["runId"]
    assert final["result"]["counts"]["subscriptions"] > 0
