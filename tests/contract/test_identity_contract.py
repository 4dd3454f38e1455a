"""The managed identity's tokens through MSAL, against a mocked App Service identity endpoint, and
the federated credential's client assertion: the exact calls, the caching, the error mapping.
https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
import responses
from responses import matchers

from work365_fn.adapters.auth import (
    ManagedIdentityTokenProvider,
    MsalApp,
    MsalTokenProvider,
    assertion_provider,
)
from work365_fn.errors import AuthError, ConfigError
from work365_fn.settings import ASSERTION_AUDIENCE, Credential

from .shapes import AUTHORITY, CLIENT, DISCOVERY, OPENID_CONFIGURATION, TENANT, TOKEN_URL
from .shapes import token_answer as entra_answer

ENDPOINT = "http://localhost:8081/msi/token"  # what App Service sets (http, on loopback)
HEADER = "identity-header-never-shown"
IDENTITY = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
ORG = "https://contoso.crm.dynamics.com"
PC_SCOPE = "https://api.partnercenter.microsoft.com/.default"


@pytest.fixture(autouse=True)
def app_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process environment App Service gives an app with an identity (MSAL reads it)."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("IDENTITY_HEADER", HEADER)
    monkeypatch.delenv("IDENTITY_SERVER_THUMBPRINT", raising=False)
    yield


def identity_call(resource: str) -> list[Any]:
    return [
        matchers.query_param_matcher(
            {"api-version": "2019-08-01", "resource": resource, "client_id": IDENTITY}
        ),
        matchers.header_matcher({"X-IDENTITY-HEADER": HEADER}),
    ]


def identity_answer(token: str, resource: str = ORG) -> dict[str, object]:
    return {
        "access_token": token,
        "expires_on": str(int(time.time()) + 3600),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": IDENTITY,
    }


def dataverse() -> ManagedIdentityTokenProvider:
    return ManagedIdentityTokenProvider(IDENTITY, ORG, "dataverse", requests.Session())


def test_the_org_token_is_asked_by_resource_with_the_identity_header(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(ENDPOINT, json=identity_answer("eyJ0.org"), match=identity_call(ORG))
    provider = dataverse()
    assert provider.token() == "eyJ0.org"
    assert provider.token() == "eyJ0.org"  # cached: one call
    assert len(rsps.calls) == 1


def test_invalidate_asks_the_endpoint_again(rsps: responses.RequestsMock) -> None:
    rsps.get(ENDPOINT, json=identity_answer("eyJ0.one"), match=identity_call(ORG))
    provider = dataverse()
    assert provider.token() == "eyJ0.one"
    rsps.replace(responses.GET, ENDPOINT, json=identity_answer("eyJ0.two"))
    provider.invalidate()
    assert provider.token() == "eyJ0.two"


def test_a_refusal_is_an_auth_error_naming_the_fix(rsps: responses.RequestsMock) -> None:
    rsps.get(
        ENDPOINT,
        status=400,
        json={"statusCode": 400, "message": "No User Assigned or Delegated Managed Identity"},
    )
    with pytest.raises(AuthError) as refused:
        dataverse().token()
    assert not refused.value.transient
    assert refused.value.code == "400"
    assert "WORK365_MANAGED_IDENTITY_CLIENT_ID" in str(refused.value)
    assert HEADER not in str(refused.value)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_busy_endpoint_is_transient(rsps: responses.RequestsMock, status: int) -> None:
    rsps.get(ENDPOINT, status=status, json={"statusCode": status, "message": "busy"})
    with pytest.raises(AuthError) as failed:
        dataverse().token()
    assert failed.value.transient


def test_an_unreachable_endpoint_is_transient(rsps: responses.RequestsMock) -> None:
    rsps.get(ENDPOINT, body=requests.ConnectionError("refused"))
    with pytest.raises(AuthError) as failed:
        dataverse().token()
    assert (failed.value.code, failed.value.transient) == ("connection", True)
    assert "IDENTITY_ENDPOINT" in str(failed.value)


def test_no_endpoint_in_the_environment_is_refused_before_any_call(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IDENTITY_ENDPOINT")
    with pytest.raises(AuthError) as refused:
        dataverse().token()  # not MSAL's VM fallback (169.254.169.254): responses would refuse
    assert refused.value.code == "no-identity-endpoint"


def test_a_federated_credential_posts_the_identitys_token_as_its_assertion(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(
        ENDPOINT,
        json=identity_answer("eyJh.assertion.sig", ASSERTION_AUDIENCE),
        match=identity_call(ASSERTION_AUDIENCE),
    )
    rsps.get(DISCOVERY, json=OPENID_CONFIGURATION)
    rsps.post(TOKEN_URL, json=entra_answer("eyJ0.partner-center"))
    session = requests.Session()
    assertion = assertion_provider(IDENTITY, session, (5.0, 5.0))
    app = MsalApp(
        Credential(TENANT, CLIENT, federated=True), AUTHORITY, session, assertion=assertion.token
    )

    assert MsalTokenProvider(app, PC_SCOPE, "partnerCenter").token() == "eyJ0.partner-center"

    form = parse_qs(str(rsps.calls[-1].request.body))
    assert form["client_assertion"] == ["eyJh.assertion.sig"]
    assert form["client_assertion_type"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    assert form["client_id"] == [CLIENT]
    assert "client_secret" not in form


def test_a_federated_credential_without_the_identity_is_a_config_error() -> None:
    app = MsalApp(Credential(TENANT, CLIENT, federated=True), AUTHORITY, requests.Session())
    with pytest.raises(ConfigError, match="WORK365_MANAGED_IDENTITY_CLIENT_ID"):
        app.app()
