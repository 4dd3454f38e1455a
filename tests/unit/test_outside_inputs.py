"""Every outside input through one gate (issue 12): one catalogue of pathological inputs (deep
nesting, huge numbers, bad UTF-8, a BOM, NaN and Infinity, duplicate names, lone surrogates,
control characters, non-ASCII digits, dates that overflow) against every entry point that takes
outside data. Each answers its documented error and nothing else:

- HTTP bodies (`POST /api/sync`, `POST /api/backfill`): 400 naming `body`, before anything runs;
- the diagnose query (`GET /api/diagnose`): 400 naming the parameter;
- queue messages (the job and the poison handler): logged and dropped, nothing run or recorded;
- settings (every integer and number setting, `WORK365_ASSOCIATE_SINCE`): InvalidSettingError
  naming the key, a 500 `configuration` from every HTTP handler, exit 2 from the CLI;
- `WORK365_SCHEMA_FILE`: SchemaError naming the setting and the file, exit 2 from the CLI;
- scenario files: ScenarioError naming the file, or the field for a date.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import azure.functions as func
import pytest

import function_app
from work365_fn.adapters.schema import Schema
from work365_fn.adapters.storage import FileRunStore
from work365_fn.entrypoints.cli.main import main
from work365_fn.errors import InvalidSettingError, SchemaError
from work365_fn.operations.jobs import JobDeps, fail_poisoned, run_job
from work365_fn.sandbox.scenario import Scenario, ScenarioError, parse_scenario
from work365_fn.settings import Settings, _Reader

GUID = "d0000000-0000-0000-0000-000000000001"
RUN = "5d0c7a59-7f11-4b0e-9d59-6d0f3e7c2a10"
BASE_ENV = {
    "WORK365_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "WORK365_CLIENT_ID": "00001111-aaaa-2222-bbbb-3333cccc4444",
    "WORK365_CLIENT_SECRET": "Abc8Q~s3cr3t-value-never-shown",
    "WORK365_DATAVERSE_URL": "https://contoso.crm.dynamics.com",
}

# ---- the catalogue ----------------------------------------------------------------------------

Transform = Callable[[bytes], bytes]


def _member(value: bytes) -> Transform:
    """The valid document with one more member first: `{"zzz": <value>, ...}` (raw text)."""
    return lambda doc: b'{"zzz": ' + value + b", " + doc.lstrip()[1:]


def _twice(doc: bytes) -> bytes:
    """The document with its first member given twice (a parser picks one, another the other)."""
    key, value = next(iter(json.loads(doc).items()))
    return b"{" + json.dumps({key: value})[1:-1].encode() + b", " + doc.lstrip()[1:]


# Documents: each transforms a valid JSON object (the entry point's own) into a bad one.
JSON_CATALOGUE: dict[str, Transform] = {
    "deep-nesting": _member(b"[" * 30000 + b"]" * 30000),  # under the 64 KiB body limit
    "deep-nesting-unclosed": lambda doc: b"[" * 60000,
    "nesting-just-too-deep": _member(b"[" * 64 + b"]" * 64),
    "huge-integer": _member(b"1" * 5000),
    "huge-negative-integer": _member(b"-" + b"9" * 5000),
    "float-overflow": _member(b"1e999"),
    "nan": _member(b"NaN"),
    "infinity": _member(b"Infinity"),
    "minus-infinity": _member(b"-Infinity"),
    "bad-utf8": _member(b'"\xff\xfe"'),
    "overlong-utf8": _member(b'"\xc0\xaf"'),
    "utf8-encoded-surrogate": _member(b'"\xed\xa0\x80"'),
    "utf16": lambda doc: b"\xff\xfe" + doc.decode().encode("utf-16-le"),
    "bom": lambda doc: b"\xef\xbb\xbf" + doc,
    "lone-surrogate": _member(b'"\\ud800"'),
    "duplicate-name": _twice,
    "control-character": _member(b'"a\x01b"'),
    "nul-in-string": _member(b'"a\x00b"'),
    "trailing-nul": lambda doc: doc + b"\x00",
    "non-ascii-digits": _member("\u0661\u0660".encode()),
    "not-json": lambda doc: b"{not json",
}

# Values where text is expected: settings and query parameters.
DIGIT_TRAPS = {
    "underscore": "1_000",
    "arabic-indic-digits": "\u0661\u0660",
    "fullwidth-digits": "\uff15",
    "plus-sign": "+5",
    "leading-space": " 5",
    "trailing-space": "5 ",
    "exponent": "1e3",
    "hex": "0x10",
    "huge": "9" * 5000,
    "nan": "NaN",
    "infinity": "Infinity",
    "nul": "5\x00",
    "bom": "\ufeff5",
    "negative": "-1",
}
INTEGER_ONLY_TRAPS = {"decimal": "5.0"}

OVERFLOWING_DATES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]
BAD_DATES = {
    "overflow-low": OVERFLOWING_DATES[0],
    "overflow-high": OVERFLOWING_DATES[1],
    "bom": "\ufeff2026-01-01T00:00:00Z",
    "nul": "2026-01-01T00:00:00Z\x00",
    "arabic-indic-digits": "\u0662\u0660\u0662\u0666-01-01T00:00:00Z",
    "huge": "9" * 5000,
    "year-275760": "+275760-09-13T00:00:00Z",
}

QUERY_TRAPS = {
    **DIGIT_TRAPS,
    "guid-arabic-indic-digits": GUID.replace("0", "\u0660"),
    "guid-fullwidth": GUID.replace("d", "\uff44"),
    "guid-nul": GUID + "\x00",
    "guid-bom": "\ufeff" + GUID,
    "guid-newline": GUID + "\n",
    "lone-surrogate": "\ud800",
    "undecodable-byte": "\udcff",  # a bad UTF-8 byte as the host's surrogateescape gives it
    "overflowing-date": OVERFLOWING_DATES[0],
    "json-nesting": "[" * 60000,
}


def ids(catalogue: dict[str, Any]) -> list[str]:
    return list(catalogue)


# ---- HTTP ---------------------------------------------------------------------------------------


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No WORK365_* setting: a request that got past validation would answer 500."""
    for key in list(os.environ):
        if key.startswith("WORK365_"):
            monkeypatch.delenv(key)
    function_app.services.cache_clear()
    yield
    function_app.services.cache_clear()


def request(
    method: str, route: str, body: bytes = b"", params: dict[str, str] | None = None
) -> func.HttpRequest:
    return func.HttpRequest(
        method=method,
        url=f"http://localhost:7071/api/{route}",
        headers={"Content-Type": "application/json"},
        params=params or {},
        body=body,
    )


def answer(response: func.HttpResponse) -> tuple[int, dict[str, Any]]:
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


# (handler, route, a valid body)
BODY_ROUTES = [
    (function_app.sync_http, "sync", b'{"dryRun": true}'),
    (function_app.backfill_http, "backfill", b'{"apply": false}'),
]
BODY_IDS = [route for _, route, _ in BODY_ROUTES]


@pytest.mark.usefixtures("no_settings")
@pytest.mark.parametrize(("handler", "route", "valid"), BODY_ROUTES, ids=BODY_IDS)
def test_the_valid_body_passes_the_gate(handler: Any, route: str, valid: bytes) -> None:
    status, payload = answer(handler(request("POST", route, valid)))
    assert (status, payload["error"]) == (500, "configuration")  # past validation


@pytest.mark.usefixtures("no_settings")
@pytest.mark.parametrize("case", ids(JSON_CATALOGUE))
@pytest.mark.parametrize(("handler", "route", "valid"), BODY_ROUTES, ids=BODY_IDS)
def test_a_pathological_body_is_a_400_naming_the_body(
    handler: Any, route: str, valid: bytes, case: str
) -> None:
    status, payload = answer(handler(request("POST", route, JSON_CATALOGUE[case](valid))))
    assert (status, payload["error"], payload["field"]) == (400, "invalid-request", "body")
    assert "the body" in payload["message"]


@pytest.mark.usefixtures("no_settings")
@pytest.mark.parametrize("case", ids(QUERY_TRAPS))
@pytest.mark.parametrize("param", ["customerId", "subscriptionId"])
def test_a_pathological_diagnose_query_is_a_400_naming_the_parameter(param: str, case: str) -> None:
    response = function_app.diagnose_http(
        request("GET", "diagnose", params={param: QUERY_TRAPS[case]})
    )
    status, payload = answer(response)
    assert (status, payload["error"], payload["field"]) == (400, "invalid-request", param)


@pytest.mark.usefixtures("no_settings")
def test_the_valid_diagnose_query_passes_the_gate() -> None:
    status, payload = answer(
        function_app.diagnose_http(request("GET", "diagnose", params={"customerId": GUID}))
    )
    assert (status, payload["error"]) == (500, "configuration")


# ---- queue messages ---------------------------------------------------------------------------


def message(**changes: Any) -> bytes:
    data = {
        "schemaVersion": 1,
        "runId": RUN,
        "kind": "sync",
        "payload": {"dryRun": True},
        "enqueuedAt": "2026-11-26T22:00:00Z",
        **changes,
    }
    return json.dumps(data).encode()


class Queue:
    """The job runner's dependencies over a FileRunStore, with a job that records its runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ran: list[str] = []
        self.deps = JobDeps(FileRunStore(root), {"sync": self.job}, self.after_batch)

    def job(self, payload: dict[str, Any], run_id: str) -> dict[str, Any]:
        self.ran.append(run_id)
        return {"status": "succeeded"}

    def after_batch(self, run_id: str, count: int, clock: Any) -> None:
        self.ran.append(f"aggregate {run_id}")

    def documents(self) -> list[Path]:
        return sorted(self.root.rglob("*.json"))


HANDLERS = {"job": run_job, "poison": fail_poisoned}


@pytest.mark.parametrize("handler", ids(HANDLERS))
def test_the_valid_message_is_taken(tmp_path: Path, handler: str) -> None:
    queue = Queue(tmp_path)
    HANDLERS[handler](queue.deps, message())
    assert queue.documents()  # the run is recorded (finished, or failed by the poison handler)


def _dropped(caplog: pytest.LogCaptureFixture, field: str) -> None:
    records = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(records) == 1, caplog.text
    assert records[0].levelno == logging.ERROR
    assert f"({field})" in records[0].getMessage()


@pytest.mark.parametrize("case", ids(JSON_CATALOGUE))
@pytest.mark.parametrize("handler", ids(HANDLERS))
def test_a_pathological_message_is_logged_and_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, handler: str, case: str
) -> None:
    queue = Queue(tmp_path)
    with caplog.at_level(logging.INFO):
        HANDLERS[handler](queue.deps, JSON_CATALOGUE[case](message()))  # returns: never raises
    _dropped(caplog, "body")
    assert queue.ran == []
    assert queue.documents() == []


@pytest.mark.parametrize("case", ids(BAD_DATES))
@pytest.mark.parametrize("handler", ids(HANDLERS))
def test_a_message_enqueued_at_a_bad_date_is_logged_and_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, handler: str, case: str
) -> None:
    queue = Queue(tmp_path)
    with caplog.at_level(logging.INFO):
        HANDLERS[handler](queue.deps, message(enqueuedAt=BAD_DATES[case]))
    _dropped(caplog, "enqueuedAt")
    assert queue.ran == []
    assert queue.documents() == []


# ---- settings ---------------------------------------------------------------------------------


def numeric_settings() -> dict[str, tuple[bool, float]]:
    """Every numeric setting `Settings.from_env` reads: key -> (integer?, default)."""
    found: dict[str, tuple[bool, float]] = {}
    real = _Reader.number

    def spy(
        self: _Reader, key: str, default: float, low: float, high: float, *, integer: bool = False
    ) -> float:
        found[key] = (integer, default)
        return real(self, key, default, low, high, integer=integer)

    with mock.patch.object(_Reader, "number", spy):
        Settings.from_env(BASE_ENV)
    return found


NUMERIC = numeric_settings()
NUMERIC_CASES = [
    (key, name, value)
    for key, (integer, _) in NUMERIC.items()
    for name, value in {**DIGIT_TRAPS, **(INTEGER_ONLY_TRAPS if integer else {})}.items()
]


def test_the_numeric_settings_are_found() -> None:
    assert {"WORK365_BATCH_SIZE", "WORK365_HTTP_READ_TIMEOUT"} <= set(NUMERIC)
    assert any(integer for integer, _ in NUMERIC.values())


@pytest.mark.parametrize("key", list(NUMERIC))
def test_each_numeric_setting_takes_its_default_written_in_ascii_digits(key: str) -> None:
    integer, default = NUMERIC[key]
    written = str(int(default)) if integer else f"{default:g}"
    Settings.from_env({**BASE_ENV, key: written})


@pytest.mark.parametrize(
    ("key", "case", "value"), NUMERIC_CASES, ids=[f"{k}-{c}" for k, c, _ in NUMERIC_CASES]
)
def test_a_numeric_setting_takes_ascii_digits_only(key: str, case: str, value: str) -> None:
    with pytest.raises(InvalidSettingError) as caught:
        Settings.from_env({**BASE_ENV, key: value})
    assert caught.value.key == key
    assert len(value) < 4 or value not in str(caught.value)  # never echoed


@pytest.mark.parametrize("case", ids(BAD_DATES))
def test_a_bad_associate_since_is_a_config_error_naming_it(case: str) -> None:
    with pytest.raises(InvalidSettingError) as caught:
        Settings.from_env({**BASE_ENV, "WORK365_ASSOCIATE_SINCE": BAD_DATES[case]})
    assert caught.value.key == "WORK365_ASSOCIATE_SINCE"


@pytest.fixture
def overflowing_since(no_settings: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in BASE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WORK365_ASSOCIATE_SINCE", OVERFLOWING_DATES[0])


@pytest.mark.usefixtures("overflowing_since")
@pytest.mark.parametrize(
    "call",
    [
        lambda: function_app.sync_http(request("POST", "sync", b"{}")),
        lambda: function_app.backfill_http(request("POST", "backfill", b"{}")),
        lambda: function_app.diagnose_http(request("GET", "diagnose", params={"customerId": GUID})),
        lambda: function_app.report_http(request("GET", "report")),
    ],
    ids=["sync", "backfill", "diagnose", "report"],
)
def test_every_http_handler_answers_an_overflowing_setting_with_a_500_naming_it(
    call: Callable[[], func.HttpResponse],
) -> None:
    status, payload = answer(call())
    assert (status, payload["error"]) == (500, "configuration")
    assert "WORK365_ASSOCIATE_SINCE is malformed" in payload["message"]


def cli(*argv: str) -> tuple[int, str]:
    with mock.patch("sys.stderr", new=io.StringIO()) as err:
        code = main(list(argv), out=io.StringIO())
    return code, err.getvalue()


@pytest.mark.usefixtures("overflowing_since")
def test_the_cli_exits_2_on_an_overflowing_setting() -> None:
    code, err = cli("sync", "--dry-run")
    assert code == 2
    assert "WORK365_ASSOCIATE_SINCE is malformed" in err
    assert "Traceback" not in err


# ---- the schema file --------------------------------------------------------------------------

VALID_SCHEMA = b'{"subscription": {"table": "new_x"}}'


@pytest.mark.parametrize("case", ids(JSON_CATALOGUE))
def test_a_pathological_schema_file_is_a_schema_error_naming_it(tmp_path: Path, case: str) -> None:
    path = tmp_path / "schema.json"
    path.write_bytes(JSON_CATALOGUE[case](VALID_SCHEMA))
    with pytest.raises(SchemaError) as caught:
        Schema.load(str(path))
    assert "WORK365_SCHEMA_FILE" in str(caught.value)
    assert str(path) in str(caught.value)


def test_the_valid_schema_file_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_bytes(VALID_SCHEMA)
    assert Schema.load(str(path)).subscription.table == "new_x"


@pytest.mark.usefixtures("no_settings")
@pytest.mark.parametrize("case", ["deep-nesting", "huge-integer", "bad-utf8"])
def test_the_cli_exits_2_on_a_pathological_schema_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    path = tmp_path / "schema.json"
    path.write_bytes(JSON_CATALOGUE[case](VALID_SCHEMA))
    for key, value in {**BASE_ENV, "WORK365_SCHEMA_FILE": str(path)}.items():
        monkeypatch.setenv(key, value)
    code, err = cli("check-schema")
    assert code == 2
    assert "WORK365_SCHEMA_FILE" in err
    assert "Traceback" not in err


# ---- scenario files ---------------------------------------------------------------------------

ACCOUNT = "a0000000-0000-0000-0000-000000000001"


def scenario(**dates: str) -> dict[str, Any]:
    """A small valid scenario; `dates` replaces a date by its field name."""
    return {
        "settings": {
            "associateDefaultBillingContract": True,
            "enabledOn": dates.get("enabledOn", "2026-01-01T00:00:00Z"),
        },
        "accounts": [{"id": ACCOUNT, "name": "A"}],
        "subscriptions": [
            {
                "id": "f0000000-0000-0000-0000-000000000001",
                "accountId": ACCOUNT,
                "createdOn": dates.get("createdOn", "2026-03-01T09:00:00Z"),
            }
        ],
        "partnerCenter": {
            "customers": [
                {
                    "id": GUID,
                    "subscriptions": [
                        {
                            "id": "e0000000-0000-0000-0000-000000000001",
                            "creationDate": dates.get("creationDate", "2026-03-01T08:00:00Z"),
                        }
                    ],
                }
            ],
            "auditRecords": [
                {
                    "customerId": GUID,
                    "operationType": "create_order",
                    "operationDate": dates.get("operationDate", "2026-03-01T08:00:00Z"),
                }
            ],
        },
    }


DATE_FIELDS = {
    "enabledOn": "settings.enabledOn",
    "createdOn": "subscriptions[0].createdOn",
    "creationDate": "partnerCenter.customers[0].subscriptions[0].creationDate",
    "operationDate": "partnerCenter.auditRecords[0].operationDate",
}


def test_the_valid_scenario_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario()), encoding="utf-8")
    assert Scenario.load(path).accounts[0].id == ACCOUNT


@pytest.mark.parametrize("case", ids(JSON_CATALOGUE))
def test_a_pathological_scenario_file_is_a_scenario_error_naming_it(
    tmp_path: Path, case: str
) -> None:
    path = tmp_path / "scenario.json"
    path.write_bytes(JSON_CATALOGUE[case](json.dumps(scenario()).encode()))
    with pytest.raises(ScenarioError) as caught:
        Scenario.load(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("case", ids(BAD_DATES))
@pytest.mark.parametrize("field", list(DATE_FIELDS))
def test_a_bad_scenario_date_is_a_scenario_error_naming_the_field(field: str, case: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(scenario(**{field: BAD_DATES[case]}), origin="s.json")
    assert f"'{DATE_FIELDS[field]}'" in str(caught.value)


# ---- the gate itself --------------------------------------------------------------------------


def test_the_limits_are_inclusive_and_the_error_names_the_input() -> None:
    from work365_fn.safe_json import MAX_DEPTH, MAX_INTEGER_DIGITS, JsonInputError, loads

    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH, "x") is not None
    assert loads("9" * MAX_INTEGER_DIGITS, "x") == int("9" * MAX_INTEGER_DIGITS)
    assert loads('"\\ud83d\\ude00"', "x") == "\U0001f600"  # a pair is one character
    with pytest.raises(JsonInputError, match=r"^the thing is not valid JSON: it is nested"):
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "the thing")


def test_a_run_document_keeps_a_partner_center_name_with_a_lone_surrogate(tmp_path: Path) -> None:
    """Our own documents may hold upstream text verbatim: refusing it would lose the run."""
    store = FileRunStore(tmp_path)
    store.put(RUN, "result", {"companyName": "Contoso \ud800"})
    assert store.get(RUN, "result") == {"companyName": "Contoso \ud800"}


def test_a_run_document_that_does_not_parse_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FileRunStore(tmp_path)
    store.put(RUN, "state", {"status": "running"})
    [path] = tmp_path.rglob("state.json")
    path.write_bytes(b"[" * 60000)
    assert store.get(RUN, "state") is None
    assert "is not valid JSON" in caplog.text
