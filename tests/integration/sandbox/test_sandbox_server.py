"""The sandbox over loopback HTTPS: tokens (with MSAL), Partner Center, routing, faults, counts,
limits and state files. The Dataverse emulator is replaced by a small fake here (its own tests
cover it); `Sandbox.start(..., dataverse_factory=...)` is how."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import msal
import pytest
import requests

from work365_fn.adapters.schema import Schema
from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.core import Request, Response, TokenIssuer
from work365_fn.sandbox.faults import Limits
from work365_fn.sandbox.partner_center import PC_AUDIENCE
from work365_fn.sandbox.scenario import Scenario, ScenarioError, parse_scenario
from work365_fn.settings import Settings

pytestmark = pytest.mark.integration

CUSTOMERS = [f"c0000000-0000-4000-8000-00000000000{n}" for n in range(1, 6)]
NO_RELATIONSHIP = CUSTOMERS[4]
DEFAULT_SCHEMA = Schema()


class FakeDataverse:
    """Stands in for dataverse.DataverseEmulator: checks the bearer token, serves one row."""

    service = "dataverse"
    instances: list[FakeDataverse] = []

    def __init__(
        self,
        db_path: str,
        base_url: str,
        tokens: TokenIssuer,
        schema: Schema = DEFAULT_SCHEMA,
        alternate_key: bool = False,
    ) -> None:
        self.db_path = db_path
        self.base_url = base_url
        self.tokens = tokens
        self.alternate_key = alternate_key
        self.seeded: Scenario | None = None
        self.raced: list[tuple[str, dict[str, object]]] = []
        FakeDataverse.instances.append(self)

    def seed(self, scenario: Scenario) -> None:
        self.seeded = scenario

    def kind(self, request: Request) -> str:
        entity = request.path.removeprefix("/api/data/v9.2/").split("(")[0]
        return f"{request.method} {entity}"

    def handle(self, request: Request) -> Response:
        why = self.tokens.check(request.headers.get("Authorization"), self.base_url)
        if why is not None:
            return Response.json(401, {"error": {"code": "0x80072560", "message": why}})
        return Response.json(200, {"value": [{"accountid": "a", "name": "Contoso " * 8}]})

    def race(self, request: Request, changes: dict[str, object]) -> None:
        self.raced.append((request.path, changes))

    def rows(self, entity_set: str) -> list[dict[str, Any]]:
        return []


def a_scenario(faults: list[dict[str, Any]] | None = None, alternate_key: bool = False) -> Scenario:
    return parse_scenario(
        {
            "settings": {"associateDefaultBillingContract": True},
            "partnerCenter": {
                "customers": [
                    {
                        "id": cid.upper() if n == 0 else cid,
                        "companyName": f"Customer {n}",
                        "relationship": cid != NO_RELATIONSHIP,
                        "subscriptions": [
                            {
                                "id": f"5ab00000-0000-4000-8000-0000000000{n}{k}",
                                "offerName": "Microsoft 365 E3",
                                "quantity": 5,
                                "status": "active",
                            }
                            for k in range(n % 3)
                        ],
                    }
                    for n, cid in enumerate(CUSTOMERS)
                ]
            },
            "faults": faults or [],
            "alternateKey": alternate_key,
        }
    )


def session_for(sandbox: Sandbox) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify
    session.verify = sandbox.ca_bundle
    return session


def token_for(sandbox: Sandbox, resource: str) -> str:
    session = session_for(sandbox)
    response = session.post(
        f"{sandbox.url}/{sandbox.tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": sandbox.client_id,
            "client_secret": sandbox.env["WORK365_CLIENT_SECRET"],
            "grant_type": "client_credentials",
            "scope": f"{resource}/.default",
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(a_scenario(), dataverse_factory=FakeDataverse) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> None:
    if "sandbox" in request.fixturenames:
        running: Sandbox = request.getfixturevalue("sandbox")
        running.faults.clear()
        running.reset_counts()


@pytest.fixture
def http(sandbox: Sandbox) -> Iterator[requests.Session]:
    with session_for(sandbox) as session:
        yield session


@pytest.fixture
def pc(sandbox: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(sandbox, PC_AUDIENCE)}"}


@pytest.fixture
def dv(sandbox: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(sandbox, sandbox.url)}"}


# --- tokens ----------------------------------------------------------------------------------


def msal_app(sandbox: Sandbox, credential: object, http: requests.Session) -> Any:
    return msal.ConfidentialClientApplication(
        sandbox.client_id,
        client_credential=credential,
        authority=f"{sandbox.url}/{sandbox.tenant_id}",
        instance_discovery=False,
        http_client=http,
    )


def test_msal_acquires_a_token_the_emulators_accept(
    sandbox: Sandbox, http: requests.Session
) -> None:
    app = msal_app(sandbox, sandbox.env["WORK365_CLIENT_SECRET"], http)
    result = app.acquire_token_for_client([f"{PC_AUDIENCE}/.default"])
    assert "access_token" in result, result
    customers = http.get(
        f"{sandbox.url}/v1/customers",
        headers={"Authorization": f"Bearer {result['access_token']}"},
    )
    assert customers.status_code == 200
    again = app.acquire_token_for_client([f"{PC_AUDIENCE}/.default"])
    assert again["token_source"] == "cache"
    assert sandbox.counts()["token"] == {"GET openid-configuration": 1, "POST token": 1}


def test_msal_reports_a_wrong_secret(sandbox: Sandbox, http: requests.Session) -> None:
    result = msal_app(sandbox, "not-the-secret", http).acquire_token_for_client(
        [f"{sandbox.url}/.default"]
    )
    assert result["error"] == "invalid_client"
    assert "AADSTS7000215" in result["error_description"]


def test_msal_client_assertion_is_accepted(sandbox: Sandbox, http: requests.Session) -> None:
    app = msal_app(
        sandbox, {"client_assertion": lambda: "eyJhbGciOi.eyJhdWQiOi.c2lnbmF0dXJl"}, http
    )
    result = app.acquire_token_for_client([f"{sandbox.url}/.default"])
    assert "access_token" in result, result


def test_env_is_a_valid_settings_source(sandbox: Sandbox) -> None:
    settings = Settings.from_env({}, overrides=sandbox.env)
    assert settings.dataverse_url == sandbox.url
    assert settings.partner_center_url == sandbox.url
    assert settings.authority_host == sandbox.url
    assert settings.ca_bundle is not None and os.path.isfile(settings.ca_bundle)


# --- Partner Center --------------------------------------------------------------------------


def test_customers_are_paged_with_continuation_tokens(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str]
) -> None:
    pages = [http.get(f"{sandbox.url}/v1/customers?size=2", headers=pc).json()]
    while "next" in pages[-1]["links"]:
        nxt = pages[-1]["links"]["next"]
        assert nxt["uri"] == "/customers?size=2&seekOperation=Next"
        assert nxt["headers"][0]["key"] == "MS-ContinuationToken"
        assert pages[-1]["continuationToken"] == nxt["headers"][0]["value"]
        headers = {**pc, "MS-ContinuationToken": nxt["headers"][0]["value"]}
        pages.append(
            http.get(
                f"{sandbox.url}/v1/customers?size=2&seekOperation=Next", headers=headers
            ).json()
        )
    assert [p["totalCount"] for p in pages] == [2, 2, 1]
    ids = [c["id"] for p in pages for c in p["items"]]
    assert ids == [CUSTOMERS[0].upper(), *CUSTOMERS[1:]]
    first = pages[0]["items"][0]
    assert first["companyProfile"]["tenantId"] == CUSTOMERS[0].upper()
    assert first["companyProfile"]["companyName"] == "Customer 0"
    assert first["relationshipToPartner"] == "reseller"
    assert "continuationToken" not in pages[-1]
    assert all(p["attributes"] == {"objectType": "Collection"} for p in pages)
    assert sandbox.counts()["partnerCenter"] == {"GET customers": 3}


@pytest.mark.parametrize("token", [None, "forged,0123"])
def test_next_page_needs_a_valid_continuation_token(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str], token: str | None
) -> None:
    headers = {**pc, **({"MS-ContinuationToken": token} if token else {})}
    response = http.get(f"{sandbox.url}/v1/customers?size=2&seekOperation=Next", headers=headers)
    assert response.status_code == 400
    assert set(response.json()) == {"code", "description", "data", "source"}


@pytest.mark.parametrize("size", ["0", "-1", "ten"])  # no maximum is documented: none invented
def test_page_size_is_validated(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str], size: str
) -> None:
    response = http.get(f"{sandbox.url}/v1/customers?size={size}", headers=pc)
    assert response.status_code == 400
    assert "size" in response.json()["description"]


def test_default_page_holds_every_customer(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str]
) -> None:
    page = http.get(f"{sandbox.url}/v1/customers", headers=pc).json()
    assert page["totalCount"] == 5 and "next" not in page["links"]


def test_subscriptions_of_a_customer_any_case(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str]
) -> None:
    response = http.get(
        f"{sandbox.url}/v1/customers/{CUSTOMERS[2].upper()}/subscriptions", headers=pc
    )
    payload = response.json()
    assert response.status_code == 200
    assert payload["totalCount"] == 2
    assert payload["items"][0] == {
        "id": "5ab00000-0000-4000-8000-000000000020",
        "offerName": "Microsoft 365 E3",
        "quantity": 5,
        "status": "active",
        "attributes": {"objectType": "Subscription"},
    }
    assert payload["attributes"] == {"objectType": "Collection"}
    assert sandbox.counts()["partnerCenter"] == {"GET subscriptions": 1}


def test_customer_without_relationship_is_403_20002(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str]
) -> None:
    response = http.get(f"{sandbox.url}/v1/customers/{NO_RELATIONSHIP}/subscriptions", headers=pc)
    assert response.status_code == 403
    error = response.json()
    assert error["code"] == 20002
    assert "relationship" in error["description"]
    assert (error["data"], error["source"]) == ([], "PartnerFD")


def test_unknown_customer_is_404(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str]
) -> None:
    missing = "c0000000-0000-4000-8000-0000000000ff"
    assert (
        http.get(f"{sandbox.url}/v1/customers/{missing}/subscriptions", headers=pc).status_code
        == 404
    )
    assert http.get(f"{sandbox.url}/v1/customers/{missing}", headers=pc).status_code == 404


def test_get_one_customer(sandbox: Sandbox, http: requests.Session, pc: dict[str, str]) -> None:
    response = http.get(f"{sandbox.url}/v1/customers/{CUSTOMERS[1]}", headers=pc)
    assert response.status_code == 200
    assert response.json()["companyProfile"]["companyName"] == "Customer 1"


def test_request_and_correlation_ids_are_echoed(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str]
) -> None:
    ids = {"MS-RequestId": "6f1d8d9e-0000-4000-8000-000000000001", "MS-CorrelationId": "run-42"}
    response = http.get(f"{sandbox.url}/v1/customers", headers={**pc, **ids})
    assert response.headers["MS-RequestId"] == ids["MS-RequestId"]
    assert response.headers["MS-CorrelationId"] == "run-42"


@pytest.mark.parametrize("case", ["missing", "wrong-audience", "expired"])
def test_partner_center_refuses_bad_tokens_with_401(
    sandbox: Sandbox, http: requests.Session, dv: dict[str, str], case: str
) -> None:
    if case == "missing":
        headers: dict[str, str] = {}
    elif case == "wrong-audience":
        headers = dv  # a Dataverse token
    else:
        headers = {"Authorization": f"Bearer {token_for(sandbox, PC_AUDIENCE)}"}
        sandbox.expire_tokens()
    response = http.get(f"{sandbox.url}/v1/customers", headers=headers)
    assert response.status_code == 401
    assert set(response.json()) == {"code", "description", "data", "source"}


def test_dataverse_refuses_an_expired_token_then_accepts_a_new_one(
    sandbox: Sandbox, http: requests.Session
) -> None:
    old = {"Authorization": f"Bearer {token_for(sandbox, sandbox.url)}"}
    sandbox.expire_tokens()
    assert http.get(f"{sandbox.url}/api/data/v9.2/accounts", headers=old).status_code == 401
    new = {"Authorization": f"Bearer {token_for(sandbox, sandbox.url)}"}
    assert http.get(f"{sandbox.url}/api/data/v9.2/accounts", headers=new).status_code == 200


def test_token_lifetime_follows_the_injected_clock() -> None:
    now = [1_800_000_000.0]
    with Sandbox.start(
        a_scenario(), dataverse_factory=FakeDataverse, token_lifetime_seconds=60,
        clock=lambda: now[0],
    ) as running, session_for(running) as http:  # fmt: skip
        headers = {"Authorization": f"Bearer {token_for(running, PC_AUDIENCE)}"}
        assert http.get(f"{running.url}/v1/customers", headers=headers).status_code == 200
        now[0] += 60
        assert http.get(f"{running.url}/v1/customers", headers=headers).status_code == 401


# --- server ----------------------------------------------------------------------------------


def test_unknown_path_is_a_json_404(sandbox: Sandbox, http: requests.Session) -> None:
    response = http.get(f"{sandbox.url}/nothing/here")
    assert response.status_code == 404
    assert "nothing/here" in response.json()["error"]["message"]


def test_keep_alive_reuses_one_connection(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str], dv: dict[str, str]
) -> None:
    for _ in range(3):
        assert http.get(f"{sandbox.url}/v1/customers", headers=pc).status_code == 200
        assert http.get(f"{sandbox.url}/api/data/v9.2/accounts", headers=dv).status_code == 200
    adapter = http.get_adapter(sandbox.url)
    assert isinstance(adapter, requests.adapters.HTTPAdapter)
    pools = [adapter.poolmanager.pools[key] for key in adapter.poolmanager.pools.keys()]  # noqa: SIM118
    assert sum(pool.num_connections for pool in pools) == 1


def test_dataverse_paths_reach_the_dataverse_emulator(
    sandbox: Sandbox, http: requests.Session, dv: dict[str, str]
) -> None:
    response = http.get(f"{sandbox.url}/api/data/v9.2/accounts?$select=name", headers=dv)
    assert response.status_code == 200 and response.json()["value"][0]["accountid"] == "a"
    assert sandbox.counts()["dataverse"] == {"GET accounts": 1}


def test_counts_by_service_and_kind(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str], dv: dict[str, str]
) -> None:
    sandbox.reset_counts()  # the fixtures above acquired two tokens
    http.get(f"{sandbox.url}/v1/customers", headers=pc)
    http.get(f"{sandbox.url}/v1/customers/{CUSTOMERS[1]}/subscriptions", headers=pc)
    http.get(f"{sandbox.url}/v1/customers/{CUSTOMERS[2]}/subscriptions", headers=pc)
    http.patch(f"{sandbox.url}/api/data/v9.2/work365_subscriptions(1)", headers=dv, json={})
    sandbox.faults.add({"service": "dataverse", "kind": "503"})
    http.get(f"{sandbox.url}/api/data/v9.2/accounts", headers=dv)
    assert sandbox.counts() == {
        "token": {},
        "partnerCenter": {"GET customers": 1, "GET subscriptions": 2},
        "dataverse": {"PATCH work365_subscriptions": 1, "GET accounts": 1},
    }
    sandbox.reset_counts()
    assert sandbox.counts() == {"token": {}, "partnerCenter": {}, "dataverse": {}}


# --- faults ----------------------------------------------------------------------------------


def test_fault_429_on_dataverse(
    sandbox: Sandbox, http: requests.Session, dv: dict[str, str]
) -> None:
    sandbox.faults.add({"service": "dataverse", "kind": "429", "retryAfter": 7})
    first = http.get(f"{sandbox.url}/api/data/v9.2/accounts", headers=dv)
    second = http.get(f"{sandbox.url}/api/data/v9.2/accounts", headers=dv)
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "7"
    assert first.json() == {
        "error": {
            "code": "0x80072322",
            "message": "Number of requests exceeded the limit of 6000 over time window of 300 "
            "seconds.",
        }
    }
    assert second.status_code == 200


def test_fault_429_on_partner_center_is_pc_shaped(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str]
) -> None:
    sandbox.faults.add({"service": "partnerCenter", "path": "subscriptions", "kind": "429"})
    response = http.get(f"{sandbox.url}/v1/customers/{CUSTOMERS[1]}/subscriptions", headers=pc)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {  # the documented throttling shape
        "statusCode": 429,
        "message": "Rate limit is exceeded. Try again in 1 seconds.",
    }
    assert "MS-RequestId" in response.headers


@pytest.mark.parametrize("status", [500, 503])
def test_fault_5xx(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str], status: int
) -> None:
    sandbox.faults.add({"kind": str(status), "times": 2})
    codes = [http.get(f"{sandbox.url}/v1/customers", headers=pc).status_code for _ in range(3)]
    assert codes == [status, status, 200]


def test_token_endpoint_5xx_is_raised_and_replayed_by_msal(
    sandbox: Sandbox, http: requests.Session
) -> None:
    sandbox.faults.add({"service": "token", "path": "oauth2/v2.0/token", "kind": "500"})
    app = msal_app(sandbox, sandbox.env["WORK365_CLIENT_SECRET"], http)
    for _ in range(2):  # MSAL raises on 5xx, and replays that answer for 5 s (or Retry-After)
        with pytest.raises(msal.exceptions.MsalServiceError, match="HTTP Error: 500"):
            app.acquire_token_for_client([f"{sandbox.url}/.default"])
    assert sandbox.counts()["token"]["POST token"] == 1


def test_fault_slow_delays_the_answer(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str]
) -> None:
    sandbox.faults.add({"kind": "slow", "delayMs": 60})
    started = time.monotonic()
    response = http.get(f"{sandbox.url}/v1/customers", headers=pc)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.06
    assert sandbox.faults.fired() == [1]


def test_fault_drop_closes_the_connection(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str]
) -> None:
    sandbox.faults.add({"kind": "drop", "method": "GET", "path": "^/v1/customers$"})
    with pytest.raises(requests.ConnectionError):
        http.get(f"{sandbox.url}/v1/customers", headers=pc)
    assert http.get(f"{sandbox.url}/v1/customers", headers=pc).status_code == 200
    assert sandbox.counts()["partnerCenter"] == {"GET customers": 2}


def test_fault_malformed_json(sandbox: Sandbox, http: requests.Session, dv: dict[str, str]) -> None:
    sandbox.faults.add({"kind": "malformed-json", "service": "dataverse"})
    response = http.get(f"{sandbox.url}/api/data/v9.2/accounts", headers=dv)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


@pytest.mark.parametrize("service", ["dataverse", "partnerCenter"])
def test_fault_401_looks_like_an_expired_token(
    sandbox: Sandbox, http: requests.Session, pc: dict[str, str], dv: dict[str, str], service: str
) -> None:
    sandbox.faults.add({"kind": "401", "service": service})
    url, headers = (
        (f"{sandbox.url}/api/data/v9.2/accounts", dv)
        if service == "dataverse"
        else (f"{sandbox.url}/v1/customers", pc)
    )
    first = http.get(url, headers=headers)
    assert first.status_code == 401
    if service == "dataverse":
        assert first.headers["WWW-Authenticate"].startswith("Bearer ")
        assert first.json()["error"]["code"] == "0x80072560"
    else:
        assert first.json()["code"] == 400
    assert http.get(url, headers=headers).status_code == 200


def test_fault_race_changes_the_row_before_the_request(
    sandbox: Sandbox, http: requests.Session, dv: dict[str, str]
) -> None:
    fake = FakeDataverse.instances[0]
    fake.raced.clear()
    sandbox.faults.add({"kind": "race", "method": "PATCH", "set": {"work365_name": "edited"}})
    path = "/api/data/v9.2/work365_subscriptions(5b000001-0000-4000-8000-000000000001)"
    http.patch(f"{sandbox.url}{path}", headers={**dv, "If-Match": 'W/"1"'}, json={})
    assert fake.raced == [(path, {"work365_name": "edited"})]


def test_scenario_faults_are_active_at_start() -> None:
    scenario = a_scenario(faults=[{"service": "partnerCenter", "kind": "503", "every": 2}])
    with (
        Sandbox.start(scenario, dataverse_factory=FakeDataverse) as running,
        session_for(running) as http,
    ):
        headers = {"Authorization": f"Bearer {token_for(running, PC_AUDIENCE)}"}
        codes = [
            http.get(f"{running.url}/v1/customers", headers=headers).status_code for _ in range(4)
        ]
        assert codes == [200, 503, 200, 503]


def test_a_bad_scenario_fault_stops_the_start() -> None:
    scenario = a_scenario()
    bad = Scenario(setting=scenario.setting, faults=({"kind": "boom"},))
    with pytest.raises(ScenarioError, match=r"'faults\[0\]\.kind'"):
        Sandbox.start(bad, dataverse_factory=FakeDataverse)


# --- options ---------------------------------------------------------------------------------


def test_enforced_limits_throttle_dataverse() -> None:
    with Sandbox.start(
        a_scenario(), dataverse_factory=FakeDataverse, enforce_limits=True,
        limits=Limits(dataverse_requests=2),
    ) as running, session_for(running) as http:  # fmt: skip
        headers = {"Authorization": f"Bearer {token_for(running, running.url)}"}
        codes = [
            http.get(f"{running.url}/api/data/v9.2/accounts", headers=headers).status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        last = http.get(f"{running.url}/api/data/v9.2/accounts", headers=headers)
        assert last.json()["error"]["code"] == "0x80072322"
        assert int(last.headers["Retry-After"]) > 0


def test_latency_delays_every_request() -> None:
    with Sandbox.start(a_scenario(), dataverse_factory=FakeDataverse, latency_ms=30) as running:
        started = time.monotonic()
        token_for(running, PC_AUDIENCE)
        assert time.monotonic() - started >= 0.03


# --- state -----------------------------------------------------------------------------------


def test_state_file_is_seeded_once_and_reused(tmp_path: Any) -> None:
    state = str(tmp_path / "state" / "sandbox.sqlite")
    first = a_scenario(faults=[{"service": "partnerCenter", "kind": "503"}], alternate_key=True)
    with Sandbox.start(first, state_path=state, dataverse_factory=FakeDataverse) as running:
        assert running.dataverse.seeded is first  # type: ignore[attr-defined]
    assert os.path.isfile(state)

    other = parse_scenario({"partnerCenter": {"customers": []}})
    with Sandbox.start(other, state_path=state, dataverse_factory=FakeDataverse) as running:
        fake = running.dataverse
        assert isinstance(fake, FakeDataverse)
        assert fake.seeded is None and fake.alternate_key is True and fake.db_path == state
        with session_for(running) as http:
            headers = {"Authorization": f"Bearer {token_for(running, PC_AUDIENCE)}"}
            assert http.get(f"{running.url}/v1/customers", headers=headers).status_code == 503
            page = http.get(f"{running.url}/v1/customers", headers=headers).json()
        assert page["totalCount"] == 5  # the first scenario's customers, not the second's
    assert os.path.isfile(state)


def test_temporary_state_is_removed_on_stop() -> None:
    running = Sandbox.start(a_scenario(), dataverse_factory=FakeDataverse)
    ca = running.ca_bundle
    db_path = FakeDataverse.instances[-1].db_path
    assert os.path.isfile(ca)
    running.stop()
    assert not os.path.exists(ca) and not os.path.exists(db_path)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", running.port), timeout=5)


def test_not_a_state_file_is_refused(tmp_path: Any) -> None:
    state = tmp_path / "junk.sqlite"
    state.write_text("not sqlite")
    with pytest.raises(ScenarioError, match="not a sandbox state file"):
        Sandbox.start(a_scenario(), state_path=str(state), dataverse_factory=FakeDataverse)
