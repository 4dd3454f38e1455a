"""The Functions app as the host sees it: registrations, import hygiene, HTTP input handling."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import pytest

import function_app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no WORK365_* settings and no cached services."""
    for key in list(__import__("os").environ):
        if key.startswith("WORK365_"):
            monkeypatch.delenv(key)
    function_app.services.cache_clear()
    yield
    function_app.services.cache_clear()


def post(body: bytes | str, route: str = "sync") -> func.HttpRequest:
    data = body.encode() if isinstance(body, str) else body
    return func.HttpRequest(
        method="POST",
        url=f"http://localhost:7071/api/{route}",
        headers={"Content-Type": "application/json"},
        body=data,
    )


def call(req: func.HttpRequest) -> tuple[int, dict[str, object]]:
    resp = function_app.sync_http(req)
    assert resp.mimetype == "application/json"
    return resp.status_code, json.loads(resp.get_body())


def test_app_registers_the_timer_and_the_http_function() -> None:
    functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    # Every route is checked against the OpenAPI file in tests/e2e/test_openapi.py.
    assert {"sync_timer", "sync_http", "diagnose_http", "report_http", "backfill_http"} <= set(
        functions
    )
    timer = functions["sync_timer"].get_bindings()[0].get_dict_repr()
    assert timer["type"] == "timerTrigger"
    assert timer["schedule"] == "%WORK365_SYNC_SCHEDULE%"
    assert timer["useMonitor"] is True
    assert timer["runOnStartup"] is False
    http = functions["sync_http"].get_bindings()[0].get_dict_repr()
    assert http["type"] == "httpTrigger"
    assert http["route"] == "sync"
    assert [str(m.value) for m in http["methods"]] == ["POST"]
    assert http["authLevel"] == func.AuthLevel.FUNCTION


def test_importing_the_app_reads_no_setting_and_opens_no_connection() -> None:
    probe = textwrap.dedent(
        """
        import os, socket, sys, json
        reads = []
        class Watch(dict):
            def __getitem__(self, k):
                reads.append(k); return super().__getitem__(k)
            def get(self, k, d=None):
                reads.append(k); return super().get(k, d)
        os.environ = Watch(os.environ)
        def refuse(*a, **k):
            raise AssertionError("connection opened at import")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        import function_app
        assert len(function_app.app.get_functions()) >= 5
        print(json.dumps([k for k in reads if k.startswith("WORK365_")]))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "WORK365_TENANT_ID": "x", "WORK365_CLIENT_SECRET": "s3cr3t"}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{not json", "body"),
        ("[1, 2]", "body"),
        ('{"dryRun": "yes"}', "dryRun"),
        ('{"customerIds": "abc"}', "customerIds"),
        ('{"customerIds": ["not-a-guid"]}', "customerIds[0]"),
        ('{"customerIds": ["11111111-1111-1111-1111-111111111111", 7]}', "customerIds[1]"),
        ('{"customerIds": ["x\' or 1 eq 1 or \'"]}', "customerIds[0]"),
        ('{"dryRun": true, "extra": 1}', "extra"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_before_anything_runs(body: str, field: str) -> None:
    # No settings exist: had the handler gone past validation it would answer 500.
    status, payload = call(post(body))
    assert status == 400
    assert payload["error"] == "invalid-request"
    assert payload["field"] == field
    assert field.partition("[")[0] in str(payload["message"]) or field == "body"
    assert "runId" in payload


def test_an_oversized_body_is_a_413() -> None:
    status, payload = call(post(b'{"customerIds": [' + b'"x",' * 20000 + b'"x"]}'))
    assert (status, payload["field"]) == (413, "body")


def test_missing_settings_are_a_500_naming_the_key() -> None:
    status, payload = call(post('{"dryRun": true}'))
    assert status == 500
    assert payload["error"] == "configuration"
    assert "settings are not set: WORK365_TENANT_ID" in str(payload["message"])


def test_a_malformed_setting_is_a_500_without_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORK365_TENANT_ID", "00000000-0000-0000-0000-000000000001")
    monkeypatch.setenv("WORK365_CLIENT_ID", "00000000-0000-0000-0000-000000000002")
    monkeypatch.setenv("WORK365_CLIENT_SECRET", "very-secret-value")
    monkeypatch.setenv("WORK365_DATAVERSE_URL", "http://very-secret-value.example")
    resp = function_app.sync_http(post("{}"))
    text = resp.get_body().decode()
    assert resp.status_code == 500
    assert "WORK365_DATAVERSE_URL is malformed" in text
    assert "very-secret-value" not in text


def test_timer_with_missing_settings_logs_and_fails_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from work365_fn.errors import MissingSettingError

    with pytest.raises(MissingSettingError):
        function_app.sync_timer(_Timer())
    assert any("settings are not set: WORK365_TENANT_ID" in r.getMessage() for r in caplog.records)


class _Timer:
    past_due = False
