"""The operations endpoints as Power Automate calls them: GET /api/diagnose, GET /api/report,
POST /api/backfill, through the registered handlers with real `func.HttpRequest`s, over the demo
sandbox; input errors name the field; long work answers 202 and is polled (Azurite)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

import function_app
from tests.e2e.async_support import App, app, get_status
from tests.integration import demo
from work365_fn.sandbox import Sandbox, Scenario

__all__ = ["app"]  # the fixture

CONTOSO = "c0000001-0000-4000-8000-000000000001"
COHO = "c000000a-0000-4000-8000-00000000000a"


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Sandbox]:
    for key in list(os.environ):
        if key.startswith(("WORK365_", "AzureWebJobsStorage")):
            monkeypatch.delenv(key)
    with Sandbox.start(Scenario.builtin("demo")) as sandbox:
        for key, value in sandbox.env.items():
            monkeypatch.setenv(key, value)
        function_app.services.cache_clear()
        yield sandbox
    function_app.services.cache_clear()


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith(("WORK365_", "AzureWebJobsStorage")):
            monkeypatch.delenv(key)
    function_app.services.cache_clear()
    yield
    function_app.services.cache_clear()


def get(route: str, params: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET", url=f"http://localhost:7071/api/{route}", params=params or {}, body=b""
    )


def post(route: str, body: bytes | dict[str, Any]) -> func.HttpRequest:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return func.HttpRequest(
        method="POST",
        url=f"http://localhost:7071/api/{route}",
        headers={"Content-Type": "application/json"},
        body=data,
    )


def answer(resp: func.HttpResponse) -> dict[str, Any]:
    assert resp.mimetype == "application/json"
    data = json.loads(resp.get_body())
    assert isinstance(data, dict)
    return data


def writes(box: Sandbox) -> int:
    return sum(n for kind, n in box.counts()["dataverse"].items() if not kind.startswith("GET "))


# ---- diagnose ------------------------------------------------------------------------------


def test_diagnose_a_customer(box: Sandbox) -> None:
    resp = function_app.diagnose_http(get("diagnose", {"customerId": COHO.upper(), "code": "k"}))
    body = answer(resp)
    assert resp.status_code == 200
    assert resp.headers["x-ms-correlation-id"] == body["runId"]
    assert body["ok"] is False
    failed = [c for c in body["checks"] if not c["ok"]]
    # the contracts check fails too: rule 4 finds two defaults, not the one it needs
    assert [c["check"] for c in failed] == ["contracts", "multiple-defaults"]
    for c in failed:
        assert c["fix"].startswith("Clear Is Default on one of: Coho Winery - Default"), c


def test_diagnose_a_subscription(box: Sandbox) -> None:
    body = answer(
        function_app.diagnose_http(
            get("diagnose", {"subscriptionId": "5ab00001-0000-4000-8000-000000000001"})
        )
    )
    assert body["ok"] is True
    assert body["subscriptions"][0]["reason"] == "default-contract"
    assert writes(box) == 0


@pytest.mark.usefixtures("no_settings")
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "customerId"),
        ({"customerId": "not-a-guid"}, "customerId"),
        ({"subscriptionId": "x' or 1 eq 1 or 'y"}, "subscriptionId"),
        ({"customerId": CONTOSO, "customer": CONTOSO}, "customer"),
    ],
)
def test_diagnose_bad_input_is_a_400_naming_the_field(params: dict[str, str], field: str) -> None:
    resp = function_app.diagnose_http(get("diagnose", params))
    body = answer(resp)
    assert resp.status_code == 400
    assert (body["error"], body["field"]) == ("invalid-request", field)
    assert resp.headers["x-ms-correlation-id"] == body["runId"]


@pytest.mark.usefixtures("no_settings")
def test_diagnose_without_settings_is_a_500_naming_the_key() -> None:
    resp = function_app.diagnose_http(get("diagnose", {"customerId": CONTOSO}))
    assert resp.status_code == 500
    message = answer(resp)["message"]
    assert "settings are not set: WORK365_TENANT_ID" in message
    assert "WORK365_DATAVERSE_URL" in message  # every missing one at once


# ---- report --------------------------------------------------------------------------------


def test_report_answers_the_whole_report(box: Sandbox) -> None:
    resp = function_app.report_http(get("report"))
    body = answer(resp)
    assert resp.status_code == 200
    assert resp.headers["x-ms-correlation-id"] == body["runId"]
    demo.assert_is_the_demo_report(body)
    assert writes(box) == 0


def test_report_with_dataverse_down_is_a_502_with_the_result(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORK365_MAX_ATTEMPTS", "1")
    box.faults.add({"service": "dataverse", "kind": "503", "every": 1})
    resp = function_app.report_http(get("report"))
    body = answer(resp)
    assert resp.status_code == 502
    assert body["error"] == "upstream"
    assert body["result"]["status"] == "failed"
    assert box.env["WORK365_CLIENT_SECRET"] not in resp.get_body().decode()


@pytest.mark.usefixtures("no_settings")
@pytest.mark.parametrize(
    ("params", "field"), [({"async": "yes"}, "async"), ({"format": "csv"}, "format")]
)
def test_report_bad_input_is_a_400(params: dict[str, str], field: str) -> None:
    resp = function_app.report_http(get("report", params))
    assert (resp.status_code, answer(resp)["field"]) == (400, field)


# ---- backfill ------------------------------------------------------------------------------


def test_backfill_is_a_dry_run_by_default(box: Sandbox) -> None:
    resp = function_app.backfill_http(post("backfill", {}))
    body = answer(resp)
    assert resp.status_code == 200
    assert (body["apply"], body["counts"]["eligible"]) == (False, 1)
    assert writes(box) == 0


def test_backfill_apply_then_undo_over_http(box: Sandbox) -> None:
    done = answer(function_app.backfill_http(post("backfill", {"apply": True})))
    assert done["counts"]["assigned"] == 1
    assert writes(box) == 1
    undo = answer(
        function_app.backfill_http(post("backfill", {"apply": True, "undo": done["runId"]}))
    )
    assert (undo["kind"], undo["counts"]["cleared"]) == ("undo", 1)


def test_backfill_undo_of_an_unknown_run_is_a_404(box: Sandbox) -> None:
    resp = function_app.backfill_http(
        post("backfill", {"undo": "00000000-0000-4000-8000-000000000000"})
    )
    assert (resp.status_code, answer(resp)["error"]) == (404, "not-found")


@pytest.mark.usefixtures("no_settings")
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[]", "body"),
        ({"apply": "yes"}, "apply"),
        ({"async": 1}, "async"),
        ({"undo": "last"}, "undo"),
        ({"customerIds": CONTOSO}, "customerIds"),
        ({"customerIds": [CONTOSO, "nope"]}, "customerIds[1]"),
        ({"apply": False, "dryRun": True}, "dryRun"),
    ],
)
def test_backfill_bad_input_is_a_400_naming_the_field(
    body: bytes | dict[str, Any], field: str
) -> None:
    resp = function_app.backfill_http(post("backfill", body))
    payload = answer(resp)
    assert resp.status_code == 400
    assert payload["field"] == field


@pytest.mark.usefixtures("no_settings")
def test_backfill_oversized_body_is_a_413() -> None:
    resp = function_app.backfill_http(
        post("backfill", b'{"customerIds": [' + b'"x",' * 20000 + b'"x"]}')
    )
    assert (resp.status_code, answer(resp)["field"]) == (413, "body")


# ---- asynchronous runs (Azurite) -----------------------------------------------------------


def test_async_report_is_queued_run_and_polled(app: App) -> None:
    resp = function_app.report_http(get("report", {"async": "true"}))
    assert resp.status_code == 202
    location = resp.headers["Location"]
    _, message = app.receive()
    assert json.loads(message)["kind"] == "report"
    function_app.run_job(func.QueueMessage(body=message))
    done = function_app.run_status(get_status(location))
    body = answer(done)
    assert (done.status_code, body["kind"], body["status"]) == (200, "report", "succeeded")
    demo.assert_is_the_demo_report(body["result"])


def test_async_backfill_applies_off_the_request(app: App) -> None:
    before = app.assigned()
    resp = function_app.backfill_http(post("backfill", {"apply": True, "async": True}))
    assert resp.status_code == 202
    assert app.assigned() == before  # nothing written yet
    _, message = app.receive()
    assert json.loads(message)["payload"] == {"apply": True, "customerIds": [], "undo": None}
    function_app.run_job(func.QueueMessage(body=message))
    body = answer(function_app.run_status(get_status(resp.headers["Location"])))
    assert body["result"]["counts"]["assigned"] == 1
    assert app.assigned() == before + 1
