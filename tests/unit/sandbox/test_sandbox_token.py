"""The token emulator and the sandbox's token issuer, called directly (no sockets)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlencode

import pytest

from work365_fn.sandbox.core import Headers, Request, Response
from work365_fn.sandbox.token import SandboxTokenIssuer, TokenEmulator

TENANT = "11111111-2222-4333-8444-555555555555"
CLIENT = "66666666-7777-4888-8999-aaaaaaaaaaaa"
BASE = "https://127.0.0.1:4443"
PC = "https://api.partnercenter.microsoft.com"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def issuer(clock: FakeClock) -> SandboxTokenIssuer:
    return SandboxTokenIssuer(b"k" * 32, lifetime_seconds=600, clock=clock)


@pytest.fixture
def emulator(issuer: SandboxTokenIssuer) -> TokenEmulator:
    return TokenEmulator(BASE, TENANT, CLIENT, "s3cret", issuer, [BASE, PC])


def post(emulator: TokenEmulator, form: dict[str, str], tenant: str = TENANT,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
    request = Request(
        "POST", f"/{tenant}/oauth2/v2.0/token", "", Headers(headers), urlencode(form).encode()
    )
    response = emulator.handle(request)
    return response.status, json.loads(response.body)


def form(**extra: str) -> dict[str, str]:
    base = {
        "client_id": CLIENT,
        "grant_type": "client_credentials",
        "client_secret": "s3cret",
        "scope": f"{PC}/.default",
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v != "-"}


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_openid_configuration_names_the_endpoints(emulator: TokenEmulator) -> None:
    path = f"/{TENANT}/v2.0/.well-known/openid-configuration"
    response = emulator.handle(Request("GET", path, "", Headers()))
    config = json.loads(response.body)
    assert response.status == 200
    assert config["token_endpoint"] == f"{BASE}/{TENANT}/oauth2/v2.0/token"
    assert config["authorization_endpoint"] == f"{BASE}/{TENANT}/oauth2/v2.0/authorize"
    assert config["issuer"] == f"{BASE}/{TENANT}/v2.0"
    assert emulator.kind(Request("GET", path, "", Headers())) == "GET openid-configuration"


def test_client_secret_grant_issues_a_token_for_the_resource(
    emulator: TokenEmulator, issuer: SandboxTokenIssuer
) -> None:
    status, payload = post(emulator, form())
    assert status == 200
    assert payload["token_type"] == "Bearer"
    assert payload["expires_in"] == payload["ext_expires_in"] == 600
    assert issuer.check(bearer(payload["access_token"]), PC) is None
    assert issuer.check(bearer(payload["access_token"]), BASE) is not None  # audience is PC only


def test_wrong_secret_is_invalid_client(emulator: TokenEmulator) -> None:
    status, payload = post(emulator, form(client_secret="wrong"))
    assert status == 401
    assert payload["error"] == "invalid_client"
    assert payload["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")


def test_secret_in_basic_auth_is_accepted(emulator: TokenEmulator) -> None:
    basic = base64.b64encode(f"{CLIENT}:s3cret".encode()).decode()
    status, _ = post(
        emulator,
        form(client_id="-", client_secret="-"),
        headers={"Authorization": f"Basic {basic}"},
    )
    assert status == 200


def test_unknown_client_is_refused(emulator: TokenEmulator) -> None:
    status, payload = post(emulator, form(client_id=TENANT))
    assert (status, payload["error"]) == (400, "unauthorized_client")
    assert "AADSTS700016" in payload["error_description"]


def test_unknown_tenant_is_refused(emulator: TokenEmulator) -> None:
    status, payload = post(emulator, form(), tenant=CLIENT)
    assert status == 400 and "AADSTS90002" in payload["error_description"]


def test_client_assertion_needs_three_parts(emulator: TokenEmulator) -> None:
    assertion = {
        "client_secret": "-",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    ok, _ = post(emulator, form(client_assertion="aaa.bbb.ccc", **assertion))
    bad, payload = post(emulator, form(client_assertion="aaa.bbb", **assertion))
    assert ok == 200
    assert bad == 400 and "AADSTS50027" in payload["error_description"]


def test_missing_credential_is_invalid_client(emulator: TokenEmulator) -> None:
    status, payload = post(emulator, form(client_secret="-"))
    assert (status, payload["error"]) == (401, "invalid_client")


@pytest.mark.parametrize(
    "scope",
    [PC, f"{PC}/.default {BASE}/.default", f"{PC}/user_impersonation", ""],
)
def test_scope_must_be_one_default_scope(emulator: TokenEmulator, scope: str) -> None:
    status, payload = post(emulator, form(scope=scope))
    assert (status, payload["error"]) == (400, "invalid_scope")


def test_unknown_resource_is_refused(emulator: TokenEmulator) -> None:
    status, payload = post(emulator, form(scope="https://graph.microsoft.com/.default"))
    assert (status, payload["error"]) == (400, "invalid_resource")


def test_only_client_credentials(emulator: TokenEmulator) -> None:
    status, payload = post(emulator, form(grant_type="password"))
    assert (status, payload["error"]) == (400, "unsupported_grant_type")


def test_dataverse_scope_audience_is_the_org_url(
    emulator: TokenEmulator, issuer: SandboxTokenIssuer
) -> None:
    _, payload = post(emulator, form(scope=f"{BASE}//.default"))
    assert issuer.check(bearer(payload["access_token"]), BASE + "/") is None


def test_tokens_expire_with_the_clock(issuer: SandboxTokenIssuer, clock: FakeClock) -> None:
    token, lifetime = issuer.issue(PC, CLIENT)
    clock.now += lifetime - 1
    assert issuer.check(bearer(token), PC) is None
    clock.now += 1
    assert issuer.check(bearer(token), PC) == "token expired"


def test_expire_all_invalidates_earlier_tokens_only(issuer: SandboxTokenIssuer) -> None:
    old, _ = issuer.issue(PC, CLIENT)
    issuer.expire_all()
    new, _ = issuer.issue(PC, CLIENT)
    assert issuer.check(bearer(old), PC) == "token expired"
    assert issuer.check(bearer(new), PC) is None


def test_tampered_token_is_refused(issuer: SandboxTokenIssuer) -> None:
    token, _ = issuer.issue(PC, CLIENT)
    payload, _, signature = token.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["aud"] = BASE
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert issuer.check(bearer(f"{forged}.{signature}"), BASE) == "invalid token signature"


def test_get_on_token_endpoint_is_refused(emulator: TokenEmulator) -> None:
    response: Response = emulator.handle(
        Request("GET", f"/{TENANT}/oauth2/v2.0/token", "", Headers())
    )
    assert response.status == 405
