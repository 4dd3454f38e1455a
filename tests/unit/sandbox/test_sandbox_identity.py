"""The managed-identity endpoint emulator and the token endpoint's federated credential, called
directly (no sockets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from work365_fn.sandbox.core import Headers, Request
from work365_fn.sandbox.identity import (
    ASSERTION_AUDIENCE,
    STORAGE_AUDIENCE,
    IdentityEmulator,
    ManagedIdentity,
    jwt_claims,
    sign_jwt,
)
from work365_fn.sandbox.runner import SANDBOX_IDENTITY, SERVE_CLIENT_SECRET, _identity_header
from work365_fn.sandbox.token import FederatedCredential, SandboxTokenIssuer, TokenEmulator

TENANT = "11111111-2222-4333-8444-555555555555"
APP = "66666666-7777-4888-8999-aaaaaaaaaaaa"
ORG = "https://127.0.0.1:4443"
PC = "https://api.partnercenter.microsoft.com"
MI = ManagedIdentity("9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a", "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0")
HEADER = "the-identity-header"
KEY = b"j" * 32
NOW = 1_800_000_000.0
ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"


@pytest.fixture
def issuer() -> SandboxTokenIssuer:
    return SandboxTokenIssuer(b"k" * 32, lifetime_seconds=600, clock=lambda: NOW)


@pytest.fixture
def identity(issuer: SandboxTokenIssuer) -> IdentityEmulator:
    return IdentityEmulator(TENANT, [MI], HEADER, issuer, [ORG], jwt_key=KEY, clock=lambda: NOW)


def ask(
    identity: IdentityEmulator,
    resource: str,
    *,
    header: str | None = HEADER,
    client_id: str = MI.client_id,
    api_version: str = "2019-08-01",
) -> tuple[int, dict[str, Any]]:
    query = urlencode({"api-version": api_version, "resource": resource, "client_id": client_id})
    headers = {"X-IDENTITY-HEADER": header} if header is not None else {}
    response = identity.handle(Request("GET", "/msi/token", query, Headers(headers)))
    return response.status, json.loads(response.body)


def test_a_token_for_the_org_is_one_dataverse_accepts(
    identity: IdentityEmulator, issuer: SandboxTokenIssuer
) -> None:
    status, answer = ask(identity, ORG)
    assert status == 200
    assert answer["expires_on"] == str(int(NOW) + 600)  # epoch seconds, a string, as documented
    assert (answer["token_type"], answer["resource"], answer["client_id"]) == (
        "Bearer",
        ORG,
        MI.client_id,
    )
    assert issuer.check(f"Bearer {answer['access_token']}", ORG) is None
    assert issuer.check(f"Bearer {answer['access_token']}", PC) is not None


def test_the_assertion_is_a_jwt_naming_the_identitys_principal(identity: IdentityEmulator) -> None:
    _, answer = ask(identity, ASSERTION_AUDIENCE)
    claims = jwt_claims(answer["access_token"])
    assert claims is not None
    assert (claims["iss"], claims["sub"], claims["oid"]) == (
        ISSUER,
        MI.principal_id,
        MI.principal_id,
    )
    assert claims["aud"] == ASSERTION_AUDIENCE
    assert claims["exp"] == int(NOW) + 600


def test_the_storage_token_has_what_azurite_checks(identity: IdentityEmulator) -> None:
    _, answer = ask(identity, STORAGE_AUDIENCE)
    claims = jwt_claims(answer["access_token"])
    assert claims is not None
    assert claims["iss"] == f"https://sts.windows.net/{TENANT}/"
    assert claims["aud"] == STORAGE_AUDIENCE
    assert claims["nbf"] == claims["iat"] == int(NOW) < claims["exp"]


@pytest.mark.parametrize("header", [None, "", "wrong"])
def test_without_the_identity_header_nothing_is_issued(
    identity: IdentityEmulator, header: str | None
) -> None:
    status, answer = ask(identity, ORG, header=header)
    assert (status, answer["statusCode"]) == (401, 401)
    assert "access_token" not in answer
    assert HEADER not in answer["message"]


def test_an_identity_the_app_does_not_have_is_refused(identity: IdentityEmulator) -> None:
    status, answer = ask(identity, ORG, client_id=APP)
    assert status == 400
    assert "No User Assigned" in answer["message"]


@pytest.mark.parametrize(
    ("resource", "api_version"), [("https://unknown.example", "2019-08-01"), (ORG, "2017-09-01")]
)
def test_unknown_resources_and_versions_are_refused(
    identity: IdentityEmulator, resource: str, api_version: str
) -> None:
    status, answer = ask(identity, resource, api_version=api_version)
    assert status == 400 and "access_token" not in answer


def test_the_endpoint_owns_the_app_service_paths() -> None:
    assert IdentityEmulator.owns("/msi/token")
    assert IdentityEmulator.owns("/MSI/token/")
    assert not IdentityEmulator.owns("/msi/tokens")


# ---- the token endpoint's federated identity credential ---------------------------------------


@pytest.fixture
def entra(issuer: SandboxTokenIssuer) -> TokenEmulator:
    emulator = TokenEmulator(ORG, TENANT, APP, "s3cret", issuer, [ORG, PC])
    emulator.trust(
        FederatedCredential(ISSUER, MI.principal_id, ASSERTION_AUDIENCE, KEY, lambda: NOW)
    )
    return emulator


def exchange(entra: TokenEmulator, assertion: str) -> tuple[int, dict[str, Any]]:
    form = {
        "client_id": APP,
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
        "scope": f"{PC}/.default",
    }
    request = Request(
        "POST", f"/{TENANT}/oauth2/v2.0/token", "", Headers(), urlencode(form).encode()
    )
    response = entra.handle(request)
    return response.status, json.loads(response.body)


def test_the_identitys_assertion_gets_a_partner_center_token(
    identity: IdentityEmulator, entra: TokenEmulator, issuer: SandboxTokenIssuer
) -> None:
    _, answer = ask(identity, ASSERTION_AUDIENCE)
    status, token = exchange(entra, answer["access_token"])
    assert status == 200
    assert issuer.check(f"Bearer {token['access_token']}", PC) is None


def claims(**changes: Any) -> dict[str, Any]:
    base = {"iss": ISSUER, "sub": MI.principal_id, "aud": ASSERTION_AUDIENCE,
            "nbf": NOW - 60, "exp": NOW + 600}  # fmt: skip
    base.update(changes)
    return base


@pytest.mark.parametrize(
    ("assertion", "code"),
    [
        (sign_jwt(claims(iss="https://sts.windows.net/other/"), KEY), 700211),
        (sign_jwt(claims(), b"another key" * 4), 50013),
        (sign_jwt(claims(exp=NOW - 1), KEY), 700024),
        (sign_jwt(claims(sub=MI.principal_id.upper()), KEY), 700213),  # matched case-sensitively
        (sign_jwt(claims(sub=MI.client_id), KEY), 700213),  # the client id is not the subject
        (sign_jwt(claims(aud="https://management.azure.com"), KEY), 700212),
    ],
)
def test_an_assertion_that_matches_no_federated_credential_is_refused(
    entra: TokenEmulator, assertion: str, code: int
) -> None:
    status, answer = exchange(entra, assertion)
    assert (status, answer["error"]) == (401, "invalid_client")
    assert answer["error_codes"] == [code]
    assert "access_token" not in answer


def test_an_app_without_a_federated_credential_refuses_the_identitys_assertion(
    identity: IdentityEmulator, issuer: SandboxTokenIssuer
) -> None:
    untrusting = TokenEmulator(ORG, TENANT, APP, "s3cret", issuer, [ORG, PC])
    _, answer = ask(identity, ASSERTION_AUDIENCE)
    status, refused = exchange(untrusting, answer["access_token"])
    assert status == 401 and refused["error_codes"] == [700211]


def test_the_sample_local_settings_name_the_serve_sandboxs_identity() -> None:
    """`sandbox serve` keeps its identity header across restarts: local.settings.sample.json's
    IDENTITY_* values reach it (a `func start` worker reads them from its environment)."""
    sample_file = Path(__file__).resolve().parents[3] / "local.settings.sample.json"
    sample = json.loads(sample_file.read_text(encoding="utf-8"))["Values"]
    assert sample["IDENTITY_HEADER"] == _identity_header(SERVE_CLIENT_SECRET)
    assert sample["WORK365_MANAGED_IDENTITY_CLIENT_ID"] == SANDBOX_IDENTITY.client_id
    assert sample["IDENTITY_ENDPOINT"] == f"{sample['WORK365_DATAVERSE_URL']}/msi/token"
