"""POST /api/runs/{runId}/undo as Power Automate calls it: the registered handler with real
`func.HttpRequest`s over a sandbox. A dry run unless `apply`; a small run answers 200 with the
undo's result, a large one 202 with the signed status URL (Azurite) and runs off the request;
an unknown run is a 404, an undo of an undo a 409, bad input a 400 naming the field."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

import function_app
from tests.azurite import StorageNames
from tests.e2e.async_support import SIGNING_KEY, get_status
from tests.e2e.test_openapi import conforms
from tests.integration.conftest import ScenarioBuilder, contract_of, gid
from work365_fn.sandbox import Sandbox

SUBS = "work365_subscriptions"
DEFAULT = gid("con", 10)
RECORDS = [gid("rec", n) for n in (1, 2, 3)]


def scenario() -> Any:
    world = ScenarioBuilder()
    account = world.account(1)
    customer = world.customer(1, account_id=account)
    for n in (1, 2, 3):
        world.new_subscription(n, customer, account_id=account)
    return world.scenario()


def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("WORK365_", "AzureWebJobsStorage")):
            monkeypatch.delenv(key)


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Sandbox]:
    clean(monkeypatch)
    with Sandbox.start(scenario()) as sandbox:
        for key, value in sandbox.env.items():
            monkeypatch.setenv(key, value)
        function_app.services.cache_clear()
        yield sandbox
    function_app.services.cache_clear()


@pytest.fixture
def queued_box(monkeypatch: pytest.MonkeyPatch, storage: StorageNames) -> Iterator[Sandbox]:
    """The sandbox with the app's storage (Azurite): the queue and the run documents."""
    clean(monkeypatch)
    with Sandbox.start(scenario()) as sandbox:
        settings = {**sandbox.env, **storage.settings, "WORK365_RUN_SIGNING_KEY": SIGNING_KEY}
        for key, value in settings.items():
            monkeypatch.setenv(key, value)
        function_app.services.cache_clear()
        yield sandbox
    function_app.services.cache_clear()


def post(route: str, body: bytes | dict[str, Any], run_id: str | None = None) -> func.HttpRequest:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return func.HttpRequest(
        method="POST",
        url=f"http://localhost:7071/api/{route}",
        headers={"Content-Type": "application/json"},
        route_params={"runId": run_id} if run_id is not None else {},
        body=data,
    )


def undo(run_id: str, body: bytes | dict[str, Any]) -> func.HttpResponse:
    return function_app.undo_run(post(f"runs/{run_id}/undo", body, run_id))


def answer(resp: func.HttpResponse) -> dict[str, Any]:
    """The body, checked against the OpenAPI file (status, fields, headers) for the undo route."""
    assert resp.mimetype == "application/json"
    if resp.status_code != 200 or "items" in json.loads(resp.get_body()):
        return conforms(resp, "/runs/{runId}/undo", "post")
    data = json.loads(resp.get_body())
    assert isinstance(data, dict)
    return data


def synced() -> str:
    resp = function_app.sync_http(post("sync", {}))
    assert resp.status_code == 200
    return str(answer(resp)["runId"])


def test_a_dry_run_then_an_applied_undo_answer_200(box: Sandbox) -> None:
    run_id = synced()
    assert all(contract_of(box, r) == DEFAULT for r in RECORDS)

    dry = undo(run_id.upper(), {})
    assert dry.status_code == 200
    assert {i["result"] for i in answer(dry)["items"]} == {"planned"}
    assert all(contract_of(box, r) == DEFAULT for r in RECORDS)

    done = undo(run_id, {"apply": True})
    result = answer(done)
    assert (done.status_code, result["counts"]["cleared"]) == (200, 3)
    assert done.headers["x-ms-correlation-id"] == result["runId"]
    assert all(contract_of(box, r) is None for r in RECORDS)

    again = undo(result["runId"], {"apply": True})
    assert (again.status_code, answer(again)["error"]) == (409, "conflict")


def test_an_unknown_run_is_a_404(box: Sandbox) -> None:
    resp = undo("00000000-0000-4000-8000-000000000000", {"apply": True})
    assert (resp.status_code, answer(resp)["error"]) == (404, "not-found")


@pytest.mark.parametrize(
    ("run_id", "body", "field"),
    [
        ("not-a-guid", {}, "runId"),
        ("00000000-0000-4000-8000-000000000000", {"apply": "yes"}, "apply"),
        ("00000000-0000-4000-8000-000000000000", {"dryRun": True}, "dryRun"),
        ("00000000-0000-4000-8000-000000000000", {"customerIds": ["x"]}, "customerIds[0]"),
        ("00000000-0000-4000-8000-000000000000", b"[1]", "body"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    box: Sandbox, run_id: str, body: bytes | dict[str, Any], field: str
) -> None:
    box.reset_counts()
    resp = undo(run_id, body)
    assert (resp.status_code, answer(resp)["field"]) == (400, field)
    assert box.counts().get("dataverse", {}) == {}  # nothing read, nothing written


def test_a_large_run_is_undone_off_the_request(
    queued_box: Sandbox, storage: StorageNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.e2e.async_support import App

    app = App(queued_box, storage)
    run_id = synced()
    monkeypatch.setattr("work365_fn.entrypoints.functions.runs.UNDO_SYNC_LIMIT", 2)

    resp = undo(run_id, {"apply": True})

    assert resp.status_code == 202
    assert all(contract_of(queued_box, r) == DEFAULT for r in RECORDS)  # nothing cleared yet
    _, message = app.receive()
    job = json.loads(message)
    assert (job["kind"], job["payload"]) == (
        "undo",
        {"undoOf": run_id, "apply": True, "customerIds": []},
    )
    function_app.run_job(func.QueueMessage(body=message))
    status = conforms(
        function_app.run_status(get_status(resp.headers["Location"])), "/runs/{runId}", "get"
    )
    assert (status["kind"], status["status"]) == ("undo", "succeeded")
    assert status["result"]["counts"]["cleared"] == 3
    assert all(contract_of(queued_box, r) is None for r in RECORDS)
