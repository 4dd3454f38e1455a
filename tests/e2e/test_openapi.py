"""openapi/work365-fn.swagger.json (what a Power Automate custom connector imports) against the
real app: it is valid OpenAPI 2.0, it lists exactly the app's routes and methods with their auth,
and real answers of the handlers (over the sandbox, Azurite for async runs) validate against its
response schemas, closed to undeclared fields."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import jsonschema
import pytest
from azure.functions.decorators.http import HttpTrigger
from openapi_spec_validator import OpenAPIV2SpecValidator, validate

import function_app
from tests.e2e.async_support import App, app, get_status, signed, status_request
from tests.integration import demo
from work365_fn.sandbox import Sandbox, Scenario

__all__ = ["app"]  # the fixture

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "openapi" / "work365-fn.swagger.json"
SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
CONTOSO = "c0000001-0000-4000-8000-000000000001"
HOLDER = "9f1d2c3b-4a5e-4f60-8172-93a4b5c6d7e8"


# ---- the document itself -------------------------------------------------------------------


def test_the_spec_is_valid_openapi_2() -> None:
    validate(SPEC, cls=OpenAPIV2SpecValidator)
    assert SPEC["swagger"] == "2.0"


def test_the_validator_would_catch_a_broken_spec() -> None:
    broken = copy.deepcopy(SPEC)
    del broken["paths"]["/report"]["get"]["responses"]
    with pytest.raises(Exception, match="responses"):
        validate(broken, cls=OpenAPIV2SpecValidator)


def test_the_function_key_is_the_security_and_the_status_url_needs_none() -> None:
    assert SPEC["securityDefinitions"] == {
        "function_key": {
            "type": "apiKey",
            "in": "header",
            "name": "x-functions-key",
            "description": "The Function App's function (or host) key.",
        }
    }
    assert SPEC["security"] == [{"function_key": []}]
    runs = SPEC["paths"]["/runs/{runId}"]["get"]
    assert runs["security"] == []
    assert {p["name"]: p["in"] for p in runs["parameters"]} == {"runId": "path", "sig": "query"}


def test_every_operation_is_ready_for_power_automate() -> None:
    for path, methods in SPEC["paths"].items():
        for method, op in methods.items():
            where = f"{method.upper()} {path}"
            assert op.get("operationId"), where
            assert op.get("summary"), where
            for parameter in op.get("parameters", []):
                assert parameter.get("x-ms-summary"), f"{where} {parameter['name']}"
            for status, response in op["responses"].items():
                if status != "401":  # answered by the Functions host, without a body
                    assert "schema" in response, f"{where} {status}"
                    assert "x-ms-correlation-id" in response.get("headers", {}), where
            # The health probe answers every failure as 503 with its reasons (a probe cannot
            # tell a 500 from a broken endpoint); every other operation has 500 and 502.
            failures = ("503",) if path == "/health" else ("500", "502")
            for status in ("400", *failures):
                assert status in op["responses"], f"{where} {status}"


# ---- the spec and the app list the same routes ---------------------------------------------


@functools.cache
def app_routes() -> dict[str, tuple[set[str], str]]:
    """'/route' -> (methods, auth level) of every HTTP function registered in the app. A fresh
    copy of function_app.py: `get_functions()` builds its list once per FunctionApp object."""
    spec = importlib.util.spec_from_file_location("function_app_routes", ROOT / "function_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out: dict[str, tuple[set[str], str]] = {}
    for function in module.app.get_functions():
        trigger = function.get_trigger()
        if isinstance(trigger, HttpTrigger):
            methods = {str(getattr(m, "value", m)).lower() for m in trigger.methods or []}
            level = str(getattr(trigger.auth_level, "value", trigger.auth_level)).lower()
            out["/" + trigger.route] = (methods, level)
    return out


def test_every_route_of_the_app_is_in_the_spec_and_vice_versa() -> None:
    spec = {path: set(methods) for path, methods in SPEC["paths"].items()}
    app = {path: methods for path, (methods, _) in app_routes().items()}
    assert spec == app
    assert SPEC["basePath"] == "/api"  # the host's default route prefix (host.json)


def test_the_spec_says_which_routes_take_the_function_key() -> None:
    for path, (methods, level) in app_routes().items():
        for method in methods:
            op = SPEC["paths"][path][method]
            anonymous = op.get("security", SPEC["security"]) == []
            assert anonymous == (level == "anonymous"), f"{method} {path}: {level}"


# ---- real answers validate against the spec ------------------------------------------------


def closed(schema: Any) -> Any:
    """Swagger 2.0 schema -> JSON Schema for jsonschema: `x-nullable` admits null, and objects
    with properties admit no undeclared field (so the spec must name every field we answer)."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items() if k != "x-nullable"}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if schema.get("x-nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


DEFINITIONS = closed(SPEC["definitions"])


def conforms(resp: func.HttpResponse, path: str, method: str) -> dict[str, Any]:
    """Check the answer against the spec (status, body, headers); return the body."""
    declared = SPEC["paths"][path][method]["responses"]
    status = str(resp.status_code)
    assert status in declared, f"{method.upper()} {path} answered {status}, not in the spec"
    response = declared[status]
    body = json.loads(resp.get_body())
    schema = {"definitions": DEFINITIONS, **closed(response["schema"])}
    jsonschema.validate(
        body, schema, cls=jsonschema.Draft4Validator, format_checker=jsonschema.FormatChecker()
    )
    for header in response.get("headers", {}):
        assert header in resp.headers, f"{method.upper()} {path} {status}: no {header} header"
    assert isinstance(body, dict)
    return body


def test_an_undeclared_field_fails_the_check() -> None:
    resp = func.HttpResponse(
        json.dumps({"error": "x", "message": "y", "extra": 1}),
        status_code=400,
        headers={"x-ms-correlation-id": "r"},
        mimetype="application/json",
    )
    with pytest.raises(jsonschema.ValidationError, match="extra"):
        conforms(resp, "/report", "get")


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    clean(monkeypatch)
    with Sandbox.start(Scenario.builtin("demo")) as sandbox:
        for key, value in sandbox.env.items():
            monkeypatch.setenv(key, value)
        function_app.services.cache_clear()
        yield sandbox
    function_app.services.cache_clear()


def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("WORK365_", "AzureWebJobsStorage")):
            monkeypatch.delenv(key)
    function_app.services.cache_clear()


def get(route: str, params: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET", url=f"http://localhost:7071/api/{route}", params=params or {}, body=b""
    )


def post(route: str, body: bytes | dict[str, Any]) -> func.HttpRequest:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return func.HttpRequest(method="POST", url=f"http://localhost:7071/api/{route}", body=data)


def test_sync_answers_match_the_spec(box: Sandbox) -> None:
    summary = conforms(function_app.sync_http(post("sync", {"dryRun": True})), "/sync", "post")
    assert summary["dryRun"] is True
    full = conforms(function_app.sync_http(post("sync", {})), "/sync", "post")
    assert full["counts"]["assigned"] == demo.reasons()["default-contract"] > 0
    conforms(function_app.sync_http(post("sync", {"dryRun": "no"})), "/sync", "post")
    conforms(function_app.sync_http(post("sync", b"[" + b"1," * 40000 + b"1]")), "/sync", "post")


def test_diagnose_answers_match_the_spec(box: Sandbox) -> None:
    for params in (
        {"customerId": CONTOSO},
        {"customerId": "c000000a-0000-4000-8000-00000000000a"},  # a failed check
        {"customerId": "c0000004-0000-4000-8000-000000000004"},  # skipped checks
        {"subscriptionId": "5ab00004-0000-4000-8000-000000000004"},  # the record's checks
        {"subscriptionId": "00000000-0000-4000-8000-0000000000ff"},  # not in Partner Center
        {"customerId": "bad"},
    ):
        conforms(function_app.diagnose_http(get("diagnose", params)), "/diagnose", "get")


def test_report_and_backfill_answers_match_the_spec(box: Sandbox) -> None:
    report = conforms(function_app.report_http(get("report")), "/report", "get")
    demo.assert_is_the_demo_report(report)
    conforms(function_app.report_http(get("report", {"async": "maybe"})), "/report", "get")
    conforms(function_app.backfill_http(post("backfill", {})), "/backfill", "post")
    done = conforms(
        function_app.backfill_http(post("backfill", {"apply": True})), "/backfill", "post"
    )
    undo = conforms(
        function_app.backfill_http(post("backfill", {"undo": done["runId"], "apply": True})),
        "/backfill",
        "post",
    )
    assert undo["counts"]["cleared"] == 1
    conforms(
        function_app.backfill_http(
            post("backfill", {"undo": "00000000-0000-4000-8000-000000000000"})
        ),
        "/backfill",
        "post",
    )
    conforms(function_app.backfill_http(post("backfill", {"apply": 1})), "/backfill", "post")


def test_failure_answers_match_the_spec(box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORK365_MAX_ATTEMPTS", "1")
    box.faults.add({"service": "dataverse", "kind": "503", "every": 1})
    for route, call in (
        ("/sync", lambda: function_app.sync_http(post("sync", {"dryRun": True}))),
        ("/report", lambda: function_app.report_http(get("report"))),
        ("/backfill", lambda: function_app.backfill_http(post("backfill", {}))),
        ("/diagnose", lambda: function_app.diagnose_http(get("diagnose", {"customerId": CONTOSO}))),
    ):
        resp = call()
        assert resp.status_code == 502, route
        conforms(resp, route, "get" if route in ("/report", "/diagnose") else "post")


def test_configuration_errors_match_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    clean(monkeypatch)
    conforms(function_app.sync_http(post("sync", {})), "/sync", "post")
    conforms(function_app.report_http(get("report")), "/report", "get")
    conforms(function_app.backfill_http(post("backfill", {})), "/backfill", "post")
    conforms(
        function_app.diagnose_http(get("diagnose", {"customerId": CONTOSO})), "/diagnose", "get"
    )


def test_async_answers_and_the_status_url_match_the_spec(app: App) -> None:
    accepted = function_app.backfill_http(post("backfill", {"apply": True, "async": True}))
    conforms(accepted, "/backfill", "post")
    location = accepted.headers["Location"]
    pending = function_app.run_status(get_status(location))
    conforms(pending, "/runs/{runId}", "get")
    assert pending.status_code == 202
    _, message = app.receive()
    function_app.run_job(func.QueueMessage(body=message))
    done = conforms(function_app.run_status(get_status(location)), "/runs/{runId}", "get")
    assert done["result"]["counts"]["assigned"] == 1

    for call, route, method in (
        (lambda: function_app.report_http(get("report", {"async": "true"})), "/report", "get"),
        (lambda: function_app.sync_http(post("sync", {"async": True})), "/sync", "post"),
    ):
        resp = call()
        assert resp.status_code == 202
        conforms(resp, route, method)

    run_id = done["runId"]
    key = "test-signing-key-0123456789-abcdefghijklmnop"
    for request, status in (
        (status_request(run_id, "wrong"), 403),
        (status_request(HOLDER, signed(HOLDER, key)), 404),
        (
            func.HttpRequest(
                method="GET",
                url="http://localhost:7071/api/runs/x",
                route_params={"runId": "x"},
                body=b"",
            ),
            400,
        ),
    ):
        resp = function_app.run_status(request)
        assert resp.status_code == status
        conforms(resp, "/runs/{runId}", "get")


def test_the_sync_conflict_matches_the_spec(app: App) -> None:
    with app.app_storage().lease(HOLDER, renew_every=0):
        resp = function_app.sync_http(post("sync", {}))
        assert resp.status_code == 409
        conforms(resp, "/sync", "post")
