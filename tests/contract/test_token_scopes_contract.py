"""Dataverse and Partner Center on one credential share one MSAL app; a 401 from one service
refreshes that service's token only, the other's stays cached (msal 1.39, not faked)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import requests
import responses
from responses import matchers

from work365_fn.adapters.auth import MsalApp, MsalTokenProvider
from work365_fn.composition import Services
from work365_fn.settings import PARTNER_CENTER_SCOPE, Credential, Settings

from .shapes import (
    API,
    AUTHORITY,
    CLIENT,
    DISCOVERY,
    OPENID_CONFIGURATION,
    ORG,
    PC,
    PC_SUBSCRIPTION,
    SECRET,
    TENANT,
    TOKEN_URL,
    pc_subscriptions,
    token_answer,
)

DATAVERSE_SCOPE = f"{ORG}/.default"
CUSTOMER = "c5757d70-06f3-4f23-8367-5a9e55019f94"
ROW = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
# An expired or revoked token: an empty 401 with a bearer challenge.
EXPIRED = {
    "status": 401,
    "body": "",
    "headers": {
        "WWW-Authenticate": (
            f"Bearer authorization_uri=https://login.microsoftonline.com/{TENANT}/oauth2/authorize,"
            f" resource_id={ORG}/"
        )
    },
}


def for_scope(scope: str) -> Callable[..., Any]:
    return matchers.urlencoded_params_matcher(
        {
            "client_id": CLIENT,
            "grant_type": "client_credentials",
            "client_info": "1",
            "client_secret": SECRET,
            "scope": scope,
        }
    )


def bearer(token: str) -> Callable[..., Any]:
    return matchers.header_matcher({"Authorization": f"Bearer {token}"})


def token_requests(rsps: responses.RequestsMock) -> list[str]:
    """The scope of each token request made, in order."""
    return [
        parse_qs(str(c.request.body))["scope"][0]
        for c in rsps.calls
        if c.request.method == "POST" and c.request.url == TOKEN_URL
    ]


def test_invalidating_one_scope_keeps_the_other_scopes_token_of_the_shared_app(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(DISCOVERY, json=OPENID_CONFIGURATION)
    rsps.post(TOKEN_URL, match=[for_scope(DATAVERSE_SCOPE)], json=token_answer("eyJ0.dv1"))
    rsps.post(TOKEN_URL, match=[for_scope(DATAVERSE_SCOPE)], json=token_answer("eyJ0.dv2"))
    # Registered once, answered as often as asked: a second request must show in the count.
    rsps.post(TOKEN_URL, match=[for_scope(PARTNER_CENTER_SCOPE)], json=token_answer("eyJ0.pc"))
    app = MsalApp(Credential(TENANT, CLIENT, secret=SECRET), AUTHORITY, requests.Session())
    dataverse = MsalTokenProvider(app, DATAVERSE_SCOPE, "dataverse")
    partner_center = MsalTokenProvider(app, PARTNER_CENTER_SCOPE, "partnerCenter")
    assert (dataverse.token(), partner_center.token()) == ("eyJ0.dv1", "eyJ0.pc")

    dataverse.invalidate()

    assert (dataverse.token(), partner_center.token()) == ("eyJ0.dv2", "eyJ0.pc")
    assert token_requests(rsps) == [DATAVERSE_SCOPE, PARTNER_CENTER_SCOPE, DATAVERSE_SCOPE]


def test_a_401_from_dataverse_refreshes_only_the_dataverse_token(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    settings = Settings.from_env(
        {
            "WORK365_TENANT_ID": TENANT,
            "WORK365_CLIENT_ID": CLIENT,
            "WORK365_CLIENT_SECRET": SECRET,
            "WORK365_DATAVERSE_URL": ORG,
            "WORK365_AUTHORITY_HOST": AUTHORITY,
        }
    )
    rsps.get(DISCOVERY, json=OPENID_CONFIGURATION)  # once: both services share the app
    rsps.post(TOKEN_URL, match=[for_scope(PARTNER_CENTER_SCOPE)], json=token_answer("eyJ0.pc"))
    rsps.post(TOKEN_URL, match=[for_scope(DATAVERSE_SCOPE)], json=token_answer("eyJ0.dv1"))
    rsps.post(TOKEN_URL, match=[for_scope(DATAVERSE_SCOPE)], json=token_answer("eyJ0.dv2"))
    subscriptions = f"{PC}/v1/customers/{CUSTOMER}/subscriptions"
    answer = pc_subscriptions(CUSTOMER, PC_SUBSCRIPTION)
    rsps.get(subscriptions, match=[bearer("eyJ0.pc")], json=answer)
    row = f"{API}work365_subscriptions({ROW})"
    rsps.get(row, match=[bearer("eyJ0.dv1")], **EXPIRED)
    rsps.get(row, match=[bearer("eyJ0.dv2")], json={"work365_subscriptionid": ROW})
    services = Services.build(settings, sleep=sleeps.append)
    partner_center = services.partner_center("run-1")

    assert len(partner_center.subscriptions(CUSTOMER)) == 1
    services.dataverse.get_row("work365_subscriptions", ROW, select=["work365_subscriptionid"])
    assert len(partner_center.subscriptions(CUSTOMER)) == 1  # the Partner Center token, cached

    assert token_requests(rsps) == [PARTNER_CENTER_SCOPE, DATAVERSE_SCOPE, DATAVERSE_SCOPE]
    assert sleeps == []
