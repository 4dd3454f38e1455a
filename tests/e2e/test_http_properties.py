"""Every HTTP endpoint of the Functions app under property-based testing (hypothesis): arbitrary
bodies, query strings, headers, route values and sizes never produce a 500, a 502 or a write;
bad input is always a JSON 4xx naming the problem, answered before anything reaches a service.
Routes come from `app.get_functions()` (of a fresh copy of function_app.py), so new endpoints
are covered when they are registered.

The app runs with real settings pointing at the sandbox (healthy), so a 502 would be a lie and a
500 may only be the one misconfiguration left on purpose: no storage account for async runs.

Then OData injection through every input: HTTP bodies and query strings, the route value, the
CLI's --customer, scenario files, and ids coming back from Partner Center itself.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import function_app
from work365_fn.adapters.transport import build_session
from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.scenario import ScenarioError, parse_scenario

CUSTOMER = "d0000000-0000-0000-0000-000000000001"
ACCOUNT = "a0000000-0000-0000-0000-000000000001"

INJECTIONS = [
    "' or 1 eq 1 or '",
    "x') or (1 eq 1",
    ")",
    "%27 or 1 eq 1",
    "\u2019 or 1 eq 1 or \u2019",  # typographic quotes
    "\u02bc)",
    "00000000-0000-0000-0000-000000000001' or '1' eq '1",
    "00000000-0000-0000-0000-000000000001)/../accounts",
    "urn:0123456789abcdef0123456789abcdef",
    "{00000000-0000-0000-0000-000000000001}",
    "00000000000000000000000000000001----",
    "$filter=1 eq 1",
    "\x00",
    "a" * 5000,
]

# Body fields and query parameters the endpoints know (sync, diagnose, report, backfill,
# runs): generated inputs mix them with arbitrary ones so validation is exercised past the
# "unknown field" check.
KNOWN_FIELDS = ["dryRun", "customerIds", "mode", "async", "apply", "undo"]
KNOWN_PARAMS = ["customerId", "subscriptionId", "async", "sig", "code"]


@dataclass(frozen=True)
class Route:
    name: str
    route: str
    methods: tuple[str, ...]
    handler: Callable[[func.HttpRequest], func.HttpResponse]

    @property
    def route_params(self) -> list[str]:
        return [part[1:-1] for part in self.route.split("/") if part.startswith("{")]


def fresh_app() -> Any:
    """A fresh copy of function_app.py: `get_functions()` builds its list once per FunctionApp
    object, so the shared module's app is left to the other tests."""
    spec = importlib.util.spec_from_file_location(
        "function_app_http_properties", Path(function_app.__file__)
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


APP = fresh_app()


def http_routes() -> list[Route]:
    routes = []
    for f in APP.app.get_functions():
        trigger = f.get_bindings()[0].get_dict_repr()
        if trigger["type"] != "httpTrigger":
            continue
        methods = tuple(str(getattr(m, "value", m)) for m in trigger["methods"])
        routes.append(
            Route(f.get_function_name(), trigger["route"], methods, f.get_user_function())
        )
    return routes


ROUTES = http_routes()


def scenario() -> Any:
    return parse_scenario(
        {
            "settings": {"associateDefaultBillingContract": True,
                         "enabledOn": "2026-01-01T00:00:00Z"},
            "accounts": [{"id": ACCOUNT, "name": "O'Brien & Co \u2019s"}],
            "providerAccounts": [
                {"id": "b0000000-0000-0000-0000-000000000001", "customerId": CUSTOMER,
                 "accountId": ACCOUNT, "name": "O'Brien (CSP)"}
            ],
            "billingContracts": [
                {"id": "c0000000-0000-0000-0000-000000000001", "accountId": ACCOUNT,
                 "name": "It's the default", "isDefault": True, "active": True}
            ],
            "subscriptions": [
                {"id": "f0000000-0000-0000-0000-000000000001",
                 "providerSubscriptionId": "e0000000-0000-0000-0000-000000000001",
                 "accountId": None, "billingContractId": None,
                 "createdOn": "2026-03-01T09:00:00Z", "name": "Sub ') or 1 eq 1"}
            ],
            "partnerCenter": {"customers": [
                {"id": CUSTOMER, "companyName": "O'Brien", "subscriptions": [
                    {"id": "e0000000-0000-0000-0000-000000000001", "offerId": "X",
                     "offerName": "Plan 'A'", "friendlyName": "It's ' or 1 eq 1",
                     "quantity": 1, "status": "active", "billingType": "license",
                     "creationDate": "2026-03-01T08:00:00Z"}]}
            ]},
        },
        origin="test",
    )  # fmt: skip


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A healthy sandbox behind the app's own settings (a fresh worker)."""
    with pytest.MonkeyPatch.context() as mp, Sandbox.start(scenario()) as sandbox:
        for key in list(os.environ):
            if key.startswith("WORK365_"):
                mp.delenv(key)
        mp.delenv("AzureWebJobsStorage", raising=False)
        for key, value in sandbox.env.items():
            mp.setenv(key, value)
        mp.setenv("WORK365_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        mp.setenv("WORK365_RUN_SIGNING_KEY", "k" * 48)
        mp.setenv("WORK365_MAX_ATTEMPTS", "1")
        APP.services.cache_clear()
        yield sandbox
    APP.services.cache_clear()


def requests_made(box: Sandbox) -> int:
    return sum(n for service in box.counts().values() for n in service.values())


def dataverse_writes(box: Sandbox) -> int:
    return sum(
        n
        for kind, n in box.counts().get("dataverse", {}).items()
        if kind.split(" ")[0] in {"PATCH", "POST", "PUT", "DELETE"}
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(INJECTIONS),
    st.lists(st.sampled_from([*INJECTIONS, CUSTOMER]), max_size=3),
    st.just(CUSTOMER),
    st.sampled_from(["full", "incremental", "auto", "true", "false"]),
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(KNOWN_FIELDS), field_values, max_size=4).map(
        lambda v: json.dumps(v).encode()
    ),
    st.dictionaries(
        st.sampled_from(KNOWN_FIELDS) | st.text(max_size=8), field_values, max_size=3
    ).map(lambda v: json.dumps(v).encode()),
    st.integers(64 * 1024 - 2, 64 * 1024 + 64).map(lambda n: b'{"x": "' + b"a" * n + b'"}'),
)
params = st.dictionaries(
    st.sampled_from(KNOWN_PARAMS) | st.text(max_size=10),
    st.sampled_from(INJECTIONS) | st.text(max_size=40) | st.just(CUSTOMER) | st.just(""),
    max_size=3,
)
headers = st.dictionaries(
    st.sampled_from(["Content-Type", "x-ms-correlation-id", "Authorization", "Accept"])
    | st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    max_size=3,
)
route_values = st.sampled_from(INJECTIONS) | st.text(max_size=40) | st.uuids().map(str)


def call(route: Route, method: str, body: bytes, query: dict[str, str], head: dict[str, str],
         values: dict[str, str]) -> func.HttpResponse:  # fmt: skip
    path = route.route
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    request = func.HttpRequest(
        method=method,
        url=f"http://localhost:7071/api/{path}",
        headers=head,
        params=query,
        route_params=values,
        body=body,
    )
    return route.handler(request)


def check(
    box: Sandbox, route: Route, response: func.HttpResponse, writes_before: int
) -> dict[str, Any]:
    """The properties every answer has."""
    assert response.mimetype == "application/json", route.name
    text = response.get_body().decode("utf-8")
    assert "Traceback" not in text
    payload = json.loads(text)
    assert isinstance(payload, dict)
    status = response.status_code
    assert status != 502, f"{route.name}: 502 from a healthy sandbox: {text[:300]}"
    if status >= 500:  # only the misconfiguration left on purpose: no storage for async runs
        assert (status, payload["error"]) == (500, "configuration"), text[:300]
        assert "WORK365_STORAGE" in payload["message"]
    if status >= 400:
        assert payload["error"] and payload["message"], text[:300]
        if status in (400, 413):  # names the field (even a body key that is "")
            assert isinstance(payload.get("field"), str), text[:300]
        assert dataverse_writes(box) == writes_before, f"{route.name}: a write for bad input"
    return payload


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_input_is_answered_with_json_and_never_a_500_502_or_a_write_for_bad_input(
    box: Sandbox, route: Route, data: st.DataObject
) -> None:
    method = data.draw(st.sampled_from(route.methods))
    body = data.draw(bodies) if method in ("POST", "PUT", "PATCH") else data.draw(st.just(b""))
    values = {name: data.draw(route_values) for name in route.route_params}
    before = dataverse_writes(box)
    response = call(route, method, body, data.draw(params), data.draw(headers), values)
    check(box, route, response, before)


def test_every_registered_http_route_is_covered() -> None:
    names = {r.name for r in ROUTES}
    assert "sync_http" in names
    assert all(r.handler is not None for r in ROUTES)


# ---- OData injection through every input ------------------------------------------------------


def injection_inputs(route: Route) -> Iterator[tuple[str, bytes, dict[str, str], dict[str, str]]]:
    """(field, body, query, route values): one input slot carries an injection, the rest valid."""
    valid_values = {name: "00000000-0000-0000-0000-000000000001" for name in route.route_params}
    for injection in INJECTIONS:
        for name in route.route_params:
            yield name, b"", {}, {**valid_values, name: injection}
        if "POST" in route.methods:
            for field in ("customerIds", "undo"):
                value: Any = [injection] if field == "customerIds" else injection
                yield field, json.dumps({field: value}).encode(), {}, valid_values
        else:
            for param in ("customerId", "subscriptionId"):
                yield param, b"", {param: injection}, valid_values


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
def test_odata_injection_through_any_http_input_is_refused_before_any_request(
    box: Sandbox, route: Route
) -> None:
    for field, body, query, values in injection_inputs(route):
        method = "POST" if "POST" in route.methods else route.methods[0]
        before = requests_made(box)
        response = call(route, method, body, query, {}, values)
        payload = json.loads(response.get_body())
        if response.status_code == 400 and payload.get("field", "").startswith(field):
            assert requests_made(box) == before, (route.name, field)  # nothing left the app
        else:  # the route does not take this input: refused as unknown, never used
            assert response.status_code in (400, 403, 404), (route.name, field, payload)
            assert requests_made(box) == before or response.status_code != 400


def test_odata_injection_through_the_cli_customer_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from work365_fn.entrypoints.cli import main as cli

    for key in list(os.environ):
        if key.startswith("WORK365_"):
            monkeypatch.delenv(key)
    root = logging.getLogger()
    saved = list(root.handlers), root.level  # the CLI sets up its own logging
    for injection in INJECTIONS[:8]:
        out = io.StringIO()
        try:
            code = cli.main(["sync", "--sandbox", "--dry-run", "--customer", injection], out=out)
        finally:
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
        err = capsys.readouterr().err
        assert code == 2, injection
        assert "--customer" in err and "is not a GUID" in err
        assert out.getvalue() == ""


GUID_FIELDS = [
    ("accounts", 0, "id"),
    ("providerAccounts", 0, "id"),
    ("providerAccounts", 0, "customerId"),
    ("providerAccounts", 0, "accountId"),
    ("billingContracts", 0, "id"),
    ("billingContracts", 0, "accountId"),
    ("subscriptions", 0, "id"),
    ("subscriptions", 0, "providerSubscriptionId"),
    ("subscriptions", 0, "billingContractId"),
]


@pytest.mark.parametrize(("section", "index", "key"), GUID_FIELDS)
@pytest.mark.parametrize("injection", INJECTIONS[:9])
def test_odata_injection_through_a_scenario_value_is_refused_with_the_field_named(
    section: str, index: int, key: str, injection: str
) -> None:
    raw = json.loads(json.dumps(_scenario_raw()))
    raw[section][index][key] = injection
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(raw, origin="evil.json")
    assert f"'{section}[{index}].{key}'" in str(caught.value)


def test_odata_injection_through_partner_center_ids_never_reaches_a_request(
    box: Sandbox, tmp_path: Path
) -> None:
    """Partner Center itself (or a proxy) answers ids that are not GUIDs: they are dropped with a
    warning, never put into a URL or a filter."""
    from work365_fn.composition import Services
    from work365_fn.operations.sync import SyncRequest
    from work365_fn.settings import Settings

    evil = "x') or (1 eq 1 or 'evil"
    session = PoisonedPartnerCenter(evil)
    built = Services.build(
        Settings.from_env({}, overrides={**box.env, "WORK365_STATE_DIR": str(tmp_path)}),
        session=session,
        sleep=lambda _s: None,
    )
    summary = built.sync(SyncRequest(dry_run=True)).to_json()
    assert session.poisoned >= 2, "the poisoned answers were never served"
    for url in session.urls:
        assert "evil" not in url.lower(), url  # in no encoding, in no URL or filter
    ids = {r["customerId"] for r in summary["subscriptions"]} | {
        r["subscriptionId"] for r in summary["subscriptions"]
    }
    assert evil not in ids and CUSTOMER in ids


class PoisonedPartnerCenter(requests.Session):
    """Adds a customer and a subscription with injected ids to Partner Center's answers; records
    every URL requested."""

    def __init__(self, evil: str) -> None:
        super().__init__()
        for prefix, adapter in build_session().adapters.items():
            self.mount(prefix, adapter)
        self.evil = evil
        self.urls: list[str] = []
        self.poisoned = 0

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        self.urls.append(str(url))
        response = super().request(method, url, *args, **kwargs)
        path = str(url).split("?")[0]
        if path.endswith("/v1/customers") or path.endswith("/subscriptions"):
            body = response.json()
            body["items"].append({"id": self.evil, "companyProfile": {"companyName": "Evil"}})
            response._content = json.dumps(body).encode()
            self.poisoned += 1
        return response


def _scenario_raw() -> dict[str, Any]:
    return {
        "accounts": [{"id": ACCOUNT, "name": "A"}],
        "providerAccounts": [
            {"id": "b0000000-0000-0000-0000-000000000001", "customerId": CUSTOMER,
             "accountId": ACCOUNT}
        ],
        "billingContracts": [
            {"id": "c0000000-0000-0000-0000-000000000001", "accountId": ACCOUNT, "isDefault": True}
        ],
        "subscriptions": [
            {"id": "f0000000-0000-0000-0000-000000000001",
             "providerSubscriptionId": "e0000000-0000-0000-0000-000000000001",
             "billingContractId": "c0000000-0000-0000-0000-000000000001"}
        ],
        "partnerCenter": {"customers": [{"id": CUSTOMER, "subscriptions": []}]},
    }  # fmt: skip
