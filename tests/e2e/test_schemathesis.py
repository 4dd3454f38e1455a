"""Contract fuzzing from the OpenAPI file: schemathesis (its CLI, `schemathesis run`) against the
app's HTTP functions served by the local host harness (tests/e2e/host.py: routes, methods and
auth levels from `app.get_functions()`, function keys enforced like the Functions host), backed
by the demo sandbox and Azurite. No 5xx, every answer's status, headers and body as the file
documents them, the function key enforced. Bounded: a fixed seed and a fixed number of examples
per operation.

Then a test of our own that schemathesis does not do: every status code the file documents for
an operation is reachable through the host, and each such answer validates against the file
(closed to undeclared fields, as in test_openapi.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests

from tests.azurite import StorageNames
from tests.e2e.async_support import App
from tests.e2e.host import LocalHost, http_functions, load_function_app
from tests.e2e.test_openapi import SPEC, SPEC_PATH, conforms
from work365_fn.adapters.schema import Schema
from work365_fn.adapters.storage import BlobRunStore
from work365_fn.operations.page_cache import BUILDING
from work365_fn.rules.timestamps import format_timestamp
from work365_fn.sandbox import Sandbox, Scenario
from work365_fn.signing import LinkSigner, report_page_resource

# The fuzzing budget (docs/reliability-and-security.md quotes these figures).
SEED = 20261130
EXAMPLES = 25  # per operation, fuzzing phase (the coverage phase adds its own boundary cases)
PHASES = "examples,coverage,fuzzing"
TIME_LIMIT_SECONDS = 60
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "ignored_auth",
)
# Left out on purpose (see docs/reliability-and-security.md, "Contract fuzzing"):
# content_type_conformance: the host's own 401 has no body and no Content-Type;
# unsupported_method: the Functions host answers 404, not 405, to a method a function does not
#   list (Azure/azure-functions-host#10098), and the harness does the same;
# positive_data_acceptance / negative_data_rejection: rules Swagger 2.0 cannot state (diagnose
#   needs customerId or subscriptionId; mode must be full with customerIds) and blanks that
#   Power Automate sends for empty optional fields ("", null), taken as "not given".

FUNCTION_KEY = "fuzz-function-key-0123456789"
SIGNING_KEY = "fuzz-signing-key-0123456789-abcdefghijklmnop"
CONTOSO = "c0000001-0000-4000-8000-000000000001"  # demo
HOLDER = "9f1d2c3b-4a5e-4f60-8172-93a4b5c6d7e8"

# One fresh copy of function_app.py for this module: `get_functions()` builds its list once per
# FunctionApp object.
APP = load_function_app(name="function_app_schemathesis")
FUNCTIONS = http_functions(APP.app)


@dataclass
class Served:
    """The app behind the local host, over the demo sandbox and Azurite."""

    host: LocalHost
    box: Sandbox
    storage: StorageNames
    monkeypatch: pytest.MonkeyPatch

    @property
    def app(self) -> App:
        return App(self.box, self.storage)

    @contextmanager
    def settings(self, **changes: str | None) -> Iterator[None]:
        """App settings changed for a while (None: removed), as a fresh worker would read them."""
        try:
            with self.monkeypatch.context() as mp:
                for key, value in changes.items():
                    if value is None:
                        mp.delenv(key, raising=False)
                    else:
                        mp.setenv(key, value)
                APP.services.cache_clear()
                yield
        finally:
            APP.services.cache_clear()  # the next call builds from the restored settings


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, storage: StorageNames) -> Iterator[Served]:
    for key in list(os.environ):
        if key.startswith(("WORK365_", "AzureWebJobsStorage")):
            monkeypatch.delenv(key)
    with Sandbox.start(Scenario.builtin("demo")) as box:
        for key, value in {
            **box.env,
            **storage.settings,
            "WORK365_RUN_SIGNING_KEY": SIGNING_KEY,
            # The app's own client-side limits (300 Partner Center requests a minute) would make
            # a burst of hundreds of runs wait, by design: off, the sandbox is not the real one.
            "WORK365_PC_MAX_REQUESTS_PER_MINUTE": "0",
            "WORK365_DATAVERSE_MAX_REQUESTS_PER_5MIN": "0",
        }.items():
            monkeypatch.setenv(key, value)
        APP.services.cache_clear()
        with LocalHost(FUNCTIONS, function_keys=[FUNCTION_KEY]) as host:
            yield Served(host, box, storage, monkeypatch)
    APP.services.cache_clear()


# ---- the harness itself ----------------------------------------------------------------------


def test_the_host_serves_every_http_function_with_its_auth_level() -> None:
    """The harness reads the app's registrations: the same routes, methods and auth as the file."""
    served = {"/" + f.route: (set(f.methods), f.auth_level) for f in FUNCTIONS}
    spec = {
        path: (
            {method.upper() for method in methods},
            "anonymous"
            if all(op.get("security", SPEC["security"]) == [] for op in methods.values())
            else "function",
        )
        for path, methods in SPEC["paths"].items()
    }
    assert served == spec
    assert "/runs/{runId}" in served and served["/sync"] == ({"POST"}, "function")


def test_the_host_enforces_the_function_key_like_the_functions_host(served: Served) -> None:
    url = served.host.url

    def status(path: str, key: str | None = None, **params: str) -> int:
        headers = {"x-functions-key": key} if key is not None else {}
        return requests.get(f"{url}{path}", headers=headers, params=params, timeout=30).status_code

    assert status("/report") == 401
    assert status("/report", "wrong") == 401
    assert status("/report", code="wrong") == 401
    assert status("/report", "wrong", code=FUNCTION_KEY) == 401  # the header wins, as in the host
    assert requests.get(f"{url}/report", timeout=30).content == b""  # the host's 401: no body
    # the function ran (400: a bad id), and `code` is never an "unknown parameter"
    assert status("/diagnose", code=FUNCTION_KEY, customerId="x") == 400
    assert status("/diagnose", FUNCTION_KEY, customerId="x") == 400
    # anonymous: no key needed
    assert status("/runs/x") == 400
    # a method the function does not list, or no function at all: 404
    assert requests.post(f"{url}/runs/x", timeout=30).status_code == 404
    assert requests.delete(f"{url}/sync", timeout=30).status_code == 404
    assert requests.request("QUERY", f"{url}/report", timeout=30).status_code == 404
    assert status("/nothing", FUNCTION_KEY) == 404
    assert requests.get(f"{served.host.origin}/report", timeout=30).status_code == 404
    assert served.host.errors == []


# ---- schemathesis ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fuzzed:
    returncode: int
    report: dict[str, Any]
    output: str
    seconds: float


def schemathesis(
    spec: Path,
    url: str,
    workdir: Path,
    *,
    checks: tuple[str, ...] = CHECKS,
    phases: str = PHASES,
    examples: int = EXAMPLES,
    extra: tuple[str, ...] = (),
) -> Fuzzed:
    """`schemathesis run` (the CLI, in a subprocess) against `url`, with a JSON report."""
    report_path = workdir / "schemathesis.json"
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", str(spec),
        "--url", url,
        "-H", f"x-functions-key: {FUNCTION_KEY}",
        "--checks", ",".join(checks),
        "--phases", phases,
        "-n", str(examples),
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", "30",
        "--continue-on-failure",
        "--no-color",
        "--report", "json",
        "--report-json-path", str(report_path),
        *extra,
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        command,
        # Its own working folder: schemathesis keeps a cache of past failures in
        # ./.schemathesis and replays them first, which a fixed seed must not depend on.
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_SECONDS * 3,
        check=False,
    )
    seconds = time.monotonic() - started
    report = json.loads(report_path.read_text(encoding="utf-8"))
    return Fuzzed(done.returncode, report, done.stdout[-12000:] + done.stderr[-4000:], seconds)


def test_schemathesis_finds_no_5xx_and_every_answer_conforms_to_the_openapi_file(
    served: Served, tmp_path: Path
) -> None:
    # A good run first: without one, GET /health answers 503 (no-run-yet), by design.
    first = requests.post(
        f"{served.host.url}/sync", json={}, headers={"x-functions-key": FUNCTION_KEY}, timeout=60
    )
    assert first.status_code == 200, first.text
    run = schemathesis(SPEC_PATH, served.host.url, tmp_path)
    answers = sum(served.host.answers.values())
    statuses = sorted({status for (_, _, status) in served.host.answers})
    print(
        f"schemathesis seed {SEED}, {EXAMPLES} examples per operation, phases {PHASES}: "
        f"{run.report['test_cases']['generated']} test cases, {answers} requests served "
        f"(statuses {statuses}), {served.host.server_errors()} 5xx, {run.seconds:.1f} s"
    )
    assert served.host.errors == [], "\n".join(served.host.errors)
    assert run.returncode == 0, run.output
    assert run.report["complete"], run.output
    assert run.report["failures"] == [] and run.report["errors"] == [], run.output
    assert run.report["operations"]["tested"] == len(SPEC["paths"]), run.output
    assert run.report["test_cases"]["generated"] >= 100, run.output
    assert served.host.server_errors() == 0, served.host.answers
    assert run.seconds < TIME_LIMIT_SECONDS, f"the fuzzing took {run.seconds:.1f} s"


def test_the_same_run_fails_on_a_5xx_and_on_an_answer_the_file_does_not_describe(
    served: Served, tmp_path: Path
) -> None:
    """The control: a handler that raises (the host answers 500) and a file whose schemas
    disagree with the real answers make the same command fail, naming both."""
    spec = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    for name in ("Diagnosis", "Error"):
        spec["definitions"][name]["properties"]["runId"] = {"type": "integer"}
    broken = tmp_path / "broken.swagger.json"
    broken.write_text(json.dumps(spec), encoding="utf-8")

    def raising(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("boom")

    diagnose = next(f for f in FUNCTIONS if f.route == "diagnose")
    report = replace(next(f for f in FUNCTIONS if f.route == "report"), handler=raising)
    with LocalHost([diagnose, report], function_keys=[FUNCTION_KEY]) as host:
        run = schemathesis(
            broken,
            host.url,
            tmp_path,
            phases="fuzzing",
            examples=5,
            extra=("--include-path-regex", "^/(diagnose|report)$"),
        )
    assert run.returncode != 0, run.output
    failed = {(f["title"], op) for f in run.report["failures"] for op in f["operations"]}
    assert ("Server error", "GET /report") in failed, run.output
    assert ("Response violates schema", "GET /diagnose") in failed, run.output
    assert len(host.errors) > 0 and "RuntimeError: boom" in host.errors[0]


# ---- every documented status code is reachable -----------------------------------------------


def documented() -> dict[tuple[str, str], set[int]]:
    """(method, path) -> the status codes the OpenAPI file documents."""
    return {
        (method, path): {int(status) for status in op["responses"]}
        for path, methods in SPEC["paths"].items()
        for method, op in methods.items()
    }


class Caller:
    """Requests through the host; each answer is checked against the file and its status noted."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.reached: dict[tuple[str, str], set[int]] = {key: set() for key in documented()}

    def __call__(
        self,
        method: str,
        path: str,
        expect: int,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
        key: bool = True,
        url: str | None = None,
    ) -> requests.Response:
        # /runs/<id> -> /runs/{runId}, /runs/<id>/undo -> /runs/{runId}/undo, /records/<id>
        route = re.sub(r"^/runs/[^/]*", "/runs/{runId}", path)
        route = re.sub(r"^/records/[^/]+$", "/records/{recordId}", route)
        headers = {"x-functions-key": FUNCTION_KEY} if key else {}
        if json_body is not None:
            data = json.dumps(json_body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        response = requests.request(
            method,
            url or f"{self.served.host.url}{path}",
            params=params,
            data=data,
            headers=headers,
            timeout=60,
        )
        where = f"{method} {path} {params or ''}"
        assert response.status_code == expect, (
            f"{where}: {response.status_code} {response.text[:500]}"
        )
        if expect == 401:  # the host's answer: no body, the function never ran
            assert response.content == b"", where
        elif response.headers["Content-Type"].startswith("text/html"):  # the report page
            declared = SPEC["paths"][route][method.lower()]["responses"][str(expect)]
            for header in declared.get("headers", {}):
                assert header in response.headers, f"{where}: no {header} header"
            assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        else:
            assert response.headers["Content-Type"].startswith("application/json"), where
            conforms(
                func.HttpResponse(
                    response.content,
                    status_code=response.status_code,
                    headers=dict(response.headers),
                ),
                route,
                method.lower(),
            )
        self.reached[(method.lower(), route)].add(expect)
        return response


def test_every_documented_status_code_is_reachable_through_the_host(served: Served) -> None:
    call = Caller(served)
    big = b'{"customerIds": ["' + b"a" * (64 * 1024) + b'"]}'
    down = {"WORK365_MAX_ATTEMPTS": "1"}
    misconfigured = {"WORK365_DATAVERSE_URL": None}

    # POST /sync
    call("POST", "/sync", 200, json_body={"dryRun": True})
    call("POST", "/sync", 202, json_body={"dryRun": True, "async": True})
    call("POST", "/sync", 400, json_body={"dryRun": "no"})
    call("POST", "/sync", 401, json_body={}, key=False)
    with served.app.app_storage().lease(HOLDER, renew_every=0):
        conflict = call("POST", "/sync", 409, json_body={})
    assert conflict.json()["runId"] == HOLDER
    call("POST", "/sync", 413, data=big)
    with served.settings(**misconfigured):
        call("POST", "/sync", 500, json_body={"dryRun": True})

    # GET /diagnose
    call("GET", "/diagnose", 200, params={"customerId": CONTOSO})
    call("GET", "/diagnose", 400, params={"customerId": "bad"})
    call("GET", "/diagnose", 401, params={"customerId": CONTOSO}, key=False)
    with served.settings(**misconfigured):
        call("GET", "/diagnose", 500, params={"customerId": CONTOSO})

    # GET /report
    call("GET", "/report", 200)
    call("GET", "/report", 202, params={"async": "true"})
    call("GET", "/report", 400, params={"async": "maybe"})
    call("GET", "/report", 200, params={"format": "html"})
    page_run = str(uuid.uuid4())
    page_sig = LinkSigner(
        SIGNING_KEY, lifetime=timedelta(hours=1), clock=lambda: datetime.now(UTC)
    ).sign(report_page_resource(page_run))
    page = f"/runs/{page_run}/report"
    call("GET", page, 200, params={"sig": page_sig}, key=False)
    call("GET", "/runs/not-a-guid/report", 400, params={"sig": page_sig}, key=False)
    call("GET", page, 403, params={"sig": "wrong"}, key=False)
    # another worker is reading the tenant for this link: a short wait (injected), then 503
    claimed = str(uuid.uuid4())
    BlobRunStore(served.app.app_storage().container()).put_new(
        claimed, BUILDING, {"since": format_timestamp(datetime.now(UTC))}
    )
    APP.services().page_cache().sleep = lambda _: None
    claimed_sig = LinkSigner(
        SIGNING_KEY, lifetime=timedelta(hours=1), clock=lambda: datetime.now(UTC)
    ).sign(report_page_resource(claimed))
    preparing = call("GET", f"/runs/{claimed}/report", 503, params={"sig": claimed_sig}, key=False)
    assert int(preparing.headers["Retry-After"]) > 0
    with served.settings(WORK365_RUN_SIGNING_KEY=None):
        call("GET", page, 500, params={"sig": page_sig}, key=False)
    call("GET", "/report", 401, key=False)
    with served.settings(**misconfigured):
        call("GET", "/report", 500)

    # POST /backfill
    call("POST", "/backfill", 200, json_body={})
    accepted = call("POST", "/backfill", 202, json_body={"apply": True, "async": True})
    call("POST", "/backfill", 400, json_body={"apply": 1})
    call("POST", "/backfill", 401, json_body={}, key=False)
    call("POST", "/backfill", 404, json_body={"undo": str(uuid.uuid4())})
    call("POST", "/backfill", 413, data=big)
    with served.settings(**misconfigured):
        call("POST", "/backfill", 500, json_body={})

    # POST /records and POST /records/{recordId} (docs/events.md): an unknown record is a 404
    # item inside a 200; the webhook's body (a RemoteExecutionContext) is answered 503 with
    # Retry-After while Dataverse throttles, so that its asynchronous step is tried again.
    unknown = str(uuid.uuid4())
    one = f"/records/{unknown}"
    event = {
        "MessageName": "Create",
        "PrimaryEntityName": Schema().subscription.table,
        "PrimaryEntityId": unknown,
    }
    answered = call("POST", "/records", 200, json_body={"recordIds": [unknown], "dryRun": True})
    assert [e["code"] for e in answered.json()["errors"]] == ["record-not-found"]
    call("POST", one, 200, json_body={"dryRun": True})
    call("POST", "/records", 200, json_body=event)
    call("POST", "/records", 400, json_body={"recordIds": []})
    call("POST", one.replace(unknown, "not-a-guid"), 400, json_body={})
    call("POST", "/records", 401, json_body={"recordIds": [unknown]}, key=False)
    call("POST", one, 401, json_body={}, key=False)
    call("POST", "/records", 413, data=big)
    call("POST", one, 413, data=big)
    with served.settings(**misconfigured):
        call("POST", "/records", 500, json_body={"recordIds": [unknown]})
        call("POST", one, 500, json_body={})
    served.box.faults.add({"service": "dataverse", "kind": "429", "retryAfter": 120, "every": 1})
    with served.settings(**down):
        throttled = call("POST", "/records", 503, json_body=event)
    served.box.faults.clear()
    assert throttled.headers["Retry-After"] == "120"

    # Dataverse down (after retries): 502 from every endpoint that reads it
    served.box.faults.add({"service": "dataverse", "kind": "503", "every": 1})
    with served.settings(**down):
        call("POST", "/sync", 502, json_body={"dryRun": True})
        call("GET", "/diagnose", 502, params={"customerId": CONTOSO})
        call("GET", "/report", 502)
        # a link not opened yet: an opened one is answered from the page cache for 5 minutes
        fresh_run = str(uuid.uuid4())
        fresh_sig = LinkSigner(
            SIGNING_KEY, lifetime=timedelta(hours=1), clock=lambda: datetime.now(UTC)
        ).sign(report_page_resource(fresh_run))
        call("GET", f"/runs/{fresh_run}/report", 502, params={"sig": fresh_sig}, key=False)
        call("POST", "/backfill", 502, json_body={})
        call("POST", "/records", 502, json_body={"recordIds": [unknown]})
        call("POST", one, 502, json_body={})
    served.box.faults.clear()

    # GET /runs/{runId}: the status URL (no function key) of the backfill queued above
    location = accepted.headers["Location"]
    run_id = accepted.json()["runId"]
    assert location.startswith(served.host.url + "/runs/"), location  # absolute, through the host
    call("GET", "/runs/", 202, url=location, key=False)
    for _ in range(3):  # the async sync and report above were queued first
        _, message = served.app.receive()
        APP.run_job(func.QueueMessage(body=message))  # the queue function, as the host calls it
        if json.loads(message)["runId"] == run_id:
            break
    done = call("GET", "/runs/", 200, url=location, key=False)
    assert done.json()["result"]["counts"]["assigned"] == 1
    call("GET", "/runs/not-a-guid", 400, key=False)
    call("GET", f"/runs/{run_id}", 403, params={"sig": "wrong"}, key=False)
    call("GET", f"/runs/{run_id}", 403, key=False)
    with served.settings(WORK365_RUN_SIGNING_KEY=None):
        call("GET", "/runs/", 500, url=location, key=False)
    dead = served.storage.azurite.connection_string.replace(
        f"127.0.0.1:{served.storage.azurite.blob_port}", "127.0.0.1:9"
    )
    with served.settings(WORK365_STORAGE=dead, **down):
        call("GET", "/runs/", 502, url=location, key=False)
    BlobRunStore(served.app.app_storage().container()).delete(run_id, "state")
    call("GET", "/runs/", 404, url=location, key=False)  # a valid sig, no such run (any more)

    # POST /runs/{runId}/undo: the backfill run above wrote one record
    undo = f"/runs/{run_id}/undo"
    call("POST", undo, 200, json_body={})
    call("POST", undo, 202, json_body={"async": True})
    call("POST", undo, 400, json_body={"apply": 1})
    call("POST", undo, 401, json_body={}, key=False)
    call("POST", f"/runs/{uuid.uuid4()}/undo", 404, json_body={})
    call("POST", undo, 413, data=big)
    with served.settings(**misconfigured):
        call("POST", undo, 500, json_body={})
    served.box.faults.add({"service": "dataverse", "kind": "503", "every": 1})
    with served.settings(**down):
        call("POST", undo, 502, json_body={})
    served.box.faults.clear()
    undone = call("POST", undo, 200, json_body={"apply": True})
    call("POST", f"/runs/{undone.json()['runId']}/undo", 409, json_body={})

    # GET /health: 503 until a run is recorded (and with settings it cannot read), then 200
    call("GET", "/health", 503)
    call("GET", "/health", 400, params={"deep": "maybe"})
    call("GET", "/health", 401, key=False)
    with served.settings(**misconfigured):
        call("GET", "/health", 503)
    call("POST", "/sync", 200, json_body={})
    call("GET", "/health", 200, params={"deep": "true"})

    assert served.host.errors == [], "\n".join(served.host.errors)
    missing = {
        f"{method.upper()} {path}": sorted(codes - call.reached[(method, path)])
        for (method, path), codes in documented().items()
        if codes - call.reached[(method, path)]
    }
    assert missing == {}, f"documented but not reached: {missing}"
