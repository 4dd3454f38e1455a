"""Tokens: refresh on 401 through the transport, and MSAL for real against a mocked authority."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
import responses
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from responses import matchers

from work365_fn.adapters.auth import MsalApp, MsalTokenProvider
from work365_fn.errors import ApiError, AuthError
from work365_fn.settings import Credential

from .clients import dv_client, policy
from .shapes import (
    API,
    AUTHORITY,
    CLIENT,
    DISCOVERY,
    DV_CONTACTS_PAGE_2,
    OPENID_CONFIGURATION,
    SCOPE,
    SECRET,
    TENANT,
    TOKEN_URL,
    token_answer,
)

# ---- refresh on 401 ----------------------------------------------------------------------------


class RotatingTokens:
    """A TokenProvider that hands out t1, then t2 after invalidate()."""

    def __init__(self) -> None:
        self._tokens = ["t1", "t2", "t3"]
        self.invalidations = 0

    def token(self) -> str:
        return self._tokens[self.invalidations]

    def invalidate(self) -> None:
        self.invalidations += 1


# An expired or revoked token: an empty 401 with a bearer challenge naming the authority.
EXPIRED = {
    "status": 401,
    "body": "",
    "headers": {
        "WWW-Authenticate": (
            f"Bearer authorization_uri=https://login.microsoftonline.com/{TENANT}/oauth2/authorize,"
            " resource_id=https://contoso.crm.dynamics.com/"
        )
    },
}


def test_a_401_gets_a_new_token_and_one_more_try(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    tokens = RotatingTokens()
    rsps.get(
        f"{API}contacts",
        match=[matchers.header_matcher({"Authorization": "Bearer t1"})],
        **EXPIRED,
    )
    rsps.get(
        f"{API}contacts",
        match=[matchers.header_matcher({"Authorization": "Bearer t2"})],
        json=DV_CONTACTS_PAGE_2,
    )

    rows = list(dv_client(policy(sleeps), tokens).iter_rows("contacts", select=["fullname"]))

    assert len(rows) == 1
    assert len(rsps.calls) == 2
    assert rsps.calls[1].request.headers["Authorization"] == "Bearer t2"
    assert tokens.invalidations == 1
    assert sleeps == []


def test_a_second_401_is_an_error_not_a_loop(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    tokens = RotatingTokens()
    rsps.get(f"{API}contacts", **EXPIRED)
    rsps.get(f"{API}contacts", **EXPIRED)

    with pytest.raises(ApiError) as caught:
        list(dv_client(policy(sleeps), tokens).iter_rows("contacts", select=["fullname"]))

    assert (caught.value.status, caught.value.code) == (401, "401")
    assert len(rsps.calls) == 2
    assert tokens.invalidations == 1
    assert sleeps == []


# ---- MSAL (msal 1.39, not faked) ---------------------------------------------------------------


def secret_form(secret: str = SECRET) -> Callable[..., Any]:
    # What msal 1.39 posts for a secret (it adds client_info=1 to the documented fields).
    return matchers.urlencoded_params_matcher(
        {
            "client_id": CLIENT,
            "grant_type": "client_credentials",
            "client_info": "1",
            "client_secret": secret,
            "scope": SCOPE,
        }
    )


def provider(credential: Credential | None = None) -> MsalTokenProvider:
    credential = credential or Credential(TENANT, CLIENT, secret=SECRET)
    return MsalTokenProvider(MsalApp(credential, AUTHORITY, requests.Session()), SCOPE, "dataverse")


def test_msal_discovers_the_tenant_then_posts_the_client_credentials(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(DISCOVERY, json=OPENID_CONFIGURATION)
    rsps.post(TOKEN_URL, match=[secret_form()], json=token_answer("eyJ0.first"))

    assert provider().token() == "eyJ0.first"
    assert [(c.request.method, c.request.url) for c in rsps.calls] == [
        ("GET", DISCOVERY),
        ("POST", TOKEN_URL),
    ]


def test_msal_is_built_lazily(rsps: responses.RequestsMock) -> None:
    token_provider = provider()

    assert len(rsps.calls) == 0
    assert SECRET not in repr(token_provider)


def test_the_token_is_cached(rsps: responses.RequestsMock) -> None:
    rsps.get(DISCOVERY, json=OPENID_CONFIGURATION)
    rsps.post(TOKEN_URL, match=[secret_form()], json=token_answer("eyJ0.first"))
    token_provider = provider()

    first = token_provider.token()
    second = token_provider.token()

    assert first == second == "eyJ0.first"
    assert len(rsps.calls) == 2  # discovery + one token request


def test_invalidate_makes_the_next_token_a_new_request(rsps: responses.RequestsMock) -> None:
    rsps.get(DISCOVERY, json=OPENID_CONFIGURATION)
    rsps.post(TOKEN_URL, match=[secret_form()], json=token_answer("eyJ0.first"))
    rsps.post(TOKEN_URL, match=[secret_form()], json=token_answer("eyJ0.second"))
    token_provider = provider()

    assert token_provider.token() == "eyJ0.first"
    token_provider.invalidate()
    assert token_provider.token() == "eyJ0.second"
    assert [c.request.method for c in rsps.calls] == ["GET", "POST", "POST"]


def test_a_refused_secret_is_an_auth_error_without_the_secret(
    rsps: responses.RequestsMock,
) -> None:
    # Entra ID's answer to a wrong secret:
    # https://learn.microsoft.com/entra/identity-platform/reference-error-codes (AADSTS7000215)
    rsps.get(DISCOVERY, json=OPENID_CONFIGURATION)
    rsps.post(
        TOKEN_URL,
        match=[secret_form()],
        status=401,
        json={
            "error": "invalid_client",
            "error_description": (
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in "
                "the request is the client secret value, not the client secret ID, for a secret "
                f"added to app '{CLIENT}'.\r\nTrace ID: 0000aaaa-11bb-cccc-dd22-eeeeee333333\r\n"
                "Correlation ID: aaaa0000-bb11-2222-33cc-444444dddddd\r\n"
                "Timestamp: 2026-01-01 00:00:00Z"
            ),
            "error_codes": [7000215],
            "timestamp": "2026-01-01 00:00:00Z",
            "trace_id": "0000aaaa-11bb-cccc-dd22-eeeeee333333",
            "correlation_id": "aaaa0000-bb11-2222-33cc-444444dddddd",
            "error_uri": "https://login.microsoftonline.com/error?code=7000215",
        },
    )

    with pytest.raises(AuthError) as caught:
        provider().token()

    error = caught.value
    assert (error.service, error.code) == ("dataverse", "invalid_client")
    assert "AADSTS7000215" in str(error)
    assert "Trace ID" not in str(error)  # first line only
    assert SECRET not in str(error)
    assert SECRET not in repr(error)


def test_an_unknown_tenant_is_an_auth_error_naming_the_settings(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(
        DISCOVERY,
        status=400,
        json={
            "error": "invalid_tenant",
            "error_description": f"AADSTS90002: Tenant '{TENANT}' not found.",
        },
    )

    with pytest.raises(AuthError) as caught:
        provider().token()

    assert "WORK365_TENANT_ID" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("given", ["file", "setting"])
def test_a_certificate_credential_posts_a_signed_assertion_not_a_secret(
    rsps: responses.RequestsMock, tmp_path: Path, given: str
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "app.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    digest = hashes.Hash(hashes.SHA1())  # noqa: S303 - the thumbprint Entra ID uses
    digest.update(b"any certificate body")
    thumbprint = digest.finalize().hex().upper()
    rsps.get(DISCOVERY, json=OPENID_CONFIGURATION)
    rsps.post(TOKEN_URL, json=token_answer("eyJ0.cert"))

    # A file (WORK365_CERT_PATH) or the PEM itself (WORK365_CERT_PEM, Flex Consumption)
    source = {"cert_path": str(pem)} if given == "file" else {"cert_pem": pem.read_text("utf-8")}
    credential = Credential(TENANT, CLIENT, cert_thumbprint=thumbprint, **source)
    assert provider(credential).token() == "eyJ0.cert"

    form = parse_qs(str(rsps.calls[1].request.body))
    assert form["client_assertion_type"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    assert form["client_assertion"][0].count(".") == 2  # a compact JWS
    assert form["client_id"] == [CLIENT]
    assert "client_secret" not in form
