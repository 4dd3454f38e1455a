"""The decorated Functions handlers end to end: app settings -> sandbox over loopback -> JSON."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

import function_app
from work365_fn.sandbox import Sandbox, Scenario

CUSTOMER = "c0000001-0000-4000-8000-000000000001"  # demo: Contoso


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The demo sandbox, with its settings as the app settings of a fresh worker."""
    for key in list(os.environ):
        if key.startswith("WORK365_"):
            monkeypatch.delenv(key)
    with Sandbox.start(Scenario.builtin("demo")) as sandbox:
        for key, value in sandbox.env.items():
            monkeypatch.setenv(key, value)
        function_app.services.cache_clear()
        yield sandbox
    function_app.services.cache_clear()


def post(body: dict[str, Any]) -> func.HttpRequest:
    return func.HttpRequest(
        method="POST",
        url="http://localhost:7071/api/sync",
        headers={"Content-Type": "application/json"},
        body=json.dumps(body).encode(),
    )


def writes(box: Sandbox) -> int:
    return sum(n for kind, n in box.counts()["dataverse"].items() if not kind.startswith("GET "))


def test_http_sync_returns_the_summary_and_writes(box: Sandbox) -> None:
    resp = function_app.sync_http(post({}))
    summary = json.loads(resp.get_body())
    assert resp.status_code == 200
    assert resp.headers["x-ms-correlation-id"] == summary["runId"]
    assert summary["schemaVersion"] == 1
    assert summary["counts"]["assigned"] == 6
    assert writes(box) == 1  # the 6 assignments in one $batch


def test_http_dry_run_writes_nothing(box: Sandbox) -> None:
    resp = function_app.sync_http(post({"dryRun": True}))
    summary = json.loads(resp.get_body())
    assert (resp.status_code, summary["dryRun"]) == (200, True)
    assert summary["byReason"]["default-contract"] == 6
    assert writes(box) == 0


def test_http_scoped_run_takes_only_the_given_customers(box: Sandbox) -> None:
    resp = function_app.sync_http(post({"customerIds": [CUSTOMER.upper()]}))
    summary = json.loads(resp.get_body())
    assert {r["customerId"] for r in summary["subscriptions"]} == {CUSTOMER}
    assert summary["counts"]["customers"] == 1


def test_http_upstream_down_is_a_502_with_the_summary(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORK365_MAX_ATTEMPTS", "1")
    box.faults.add({"service": "dataverse", "kind": "503", "every": 1})
    resp = function_app.sync_http(post({"dryRun": True}))
    body = json.loads(resp.get_body())
    assert resp.status_code == 502
    assert body["error"] == "upstream"
    assert "dataverse" in body["message"]
    assert body["summary"]["status"] == "failed"
    assert box.env["WORK365_CLIENT_SECRET"] not in resp.get_body().decode()


def test_http_refused_credentials_are_a_502_without_the_secret(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORK365_CLIENT_SECRET", "wrong-secret-value")
    resp = function_app.sync_http(post({"dryRun": True}))
    text = resp.get_body().decode()
    assert resp.status_code == 502
    assert "invalid_client" in text
    assert "wrong-secret-value" not in text


def test_timer_runs_the_sync_and_logs_one_summary_record(
    box: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    function_app.sync_timer(_Timer())
    records = [r for r in caplog.records if "summary {" in r.getMessage()]
    assert len(records) == 1
    logged = records[0].summary  # type: ignore[attr-defined]
    assert logged["counts"]["assigned"] == 6
    assert "subscriptions" not in logged
    assert writes(box) == 1  # the 6 assignments in one $batch


class _Timer:
    past_due = True
