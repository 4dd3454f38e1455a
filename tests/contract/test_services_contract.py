"""Services.build wiring: one MSAL app per credential, one token per service scope."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import responses
from responses import matchers

from work365_fn.composition import Services
from work365_fn.settings import PARTNER_CENTER_SCOPE, Settings

from .shapes import (
    API,
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

CUSTOMER = "c5757d70-06f3-4f23-8367-5a9e55019f94"
ROW = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def scope_form(scope: str) -> Callable[..., Any]:
    return matchers.urlencoded_params_matcher(
        {
            "client_id": CLIENT,
            "grant_type": "client_credentials",
            "client_info": "1",
            "client_secret": SECRET,
            "scope": scope,
        }
    )


def test_each_service_calls_with_a_token_for_its_own_scope(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    settings = Settings.from_env(
        {
            "WORK365_TENANT_ID": TENANT,
            "WORK365_CLIENT_ID": CLIENT,
            "WORK365_CLIENT_SECRET": SECRET,
            "WORK365_DATAVERSE_URL": ORG,
            "WORK365_AUTHORITY_HOST": "https://login.example.test",
        }
    )
    rsps.get(DISCOVERY, json=OPENID_CONFIGURATION)  # once: both services share the app
    rsps.post(TOKEN_URL, match=[scope_form(PARTNER_CENTER_SCOPE)], json=token_answer("eyJ0.pc"))
    rsps.post(TOKEN_URL, match=[scope_form(f"{ORG}/.default")], json=token_answer("eyJ0.dv"))
    rsps.get(
        f"{PC}/v1/customers/{CUSTOMER}/subscriptions",
        match=[matchers.header_matcher({"Authorization": "Bearer eyJ0.pc"})],
        json=pc_subscriptions(CUSTOMER, PC_SUBSCRIPTION),
    )
    rsps.get(
        f"{API}work365_subscriptions({ROW})",
        match=[matchers.header_matcher({"Authorization": "Bearer eyJ0.dv"})],
        json={"work365_subscriptionid": ROW},
    )

    services = Services.build(settings, sleep=sleeps.append)
    assert len(rsps.calls) == 0  # building does no network I/O

    assert len(services.partner_center("run-1").subscriptions(CUSTOMER)) == 1
    services.dataverse.get_row("work365_subscriptions", ROW, select=["work365_subscriptionid"])

    assert [c.request.method for c in rsps.calls] == ["GET", "POST", "GET", "POST", "GET"]
    assert sleeps == []
