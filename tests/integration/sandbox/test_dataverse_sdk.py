"""Microsoft's Dataverse Python SDK (powerplatform-dataverse-client) against the emulator over
loopback HTTPS: it creates, gets, filters and updates rows with its own requests, which is the
best check that the emulator speaks the real Web API."""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import requests

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("work365_fn.sandbox.runner") is None,
        reason="the sandbox runner is not built yet",
    ),
]

ACC = "a0000000-0000-4000-8000-000000000001"
CON = "c0000000-0000-4000-8000-000000000001"
SUB = "e0000000-0000-4000-8000-000000000001"


class SandboxCredential:
    """An azure-core TokenCredential that gets client-credentials tokens from the sandbox."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.calls += 1
        env = self.env
        response = requests.post(
            f"{env['WORK365_AUTHORITY_HOST']}/{env['WORK365_TENANT_ID']}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": env["WORK365_CLIENT_ID"],
                "client_secret": env["WORK365_CLIENT_SECRET"],
                "scope": " ".join(scopes),
            },
            verify=env["WORK365_CA_BUNDLE"],
            timeout=10,
        )
        response.raise_for_status()
        body = response.json()
        return AccessToken(body["access_token"], int(time.time()) + int(body["expires_in"]))

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        token = self.get_token(*scopes)
        return AccessTokenInfo(token.token, token.expires_on)


@pytest.fixture
def sandbox() -> Iterator[Any]:
    from work365_fn.sandbox import Sandbox
    from work365_fn.sandbox.scenario import parse_scenario

    scenario = parse_scenario(
        {
            "settings": {
                "associateDefaultBillingContract": True,
                "enabledOn": "2026-01-01T00:00:00Z",
            },
            "accounts": [{"id": ACC, "name": "Contoso"}],
            "billingContracts": [
                {"id": CON, "accountId": ACC, "name": "Default", "isDefault": True}
            ],
            "subscriptions": [
                {
                    "id": SUB,
                    "providerSubscriptionId": "f0000000-0000-4000-8000-000000000001",
                    "accountId": ACC,
                    "createdOn": "2026-02-01T00:00:00Z",
                    "name": "E3",
                }
            ],
        }
    )
    with Sandbox.start(scenario) as box:
        yield box


@pytest.fixture
def client(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from PowerPlatform.Dataverse.client import DataverseClient
    from PowerPlatform.Dataverse.core.config import DataverseConfig

    # The SDK calls requests directly: it sees the sandbox CA only through this variable.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sandbox.env["WORK365_CA_BUNDLE"])
    config = DataverseConfig(http_retries=1, http_backoff=0)
    with DataverseClient(
        sandbox.env["WORK365_DATAVERSE_URL"], SandboxCredential(sandbox.env), config
    ) as dataverse:
        yield dataverse


def test_the_sdk_creates_gets_filters_and_updates_rows(sandbox: Any, client: Any) -> None:
    from PowerPlatform.Dataverse.models.filters import col

    new_id = client.records.create(
        "work365_subscription",
        {
            "work365_name": "New from the SDK",
            "work365_providersubscriptionid": "f0000000-0000-4000-8000-000000000002",
            "work365_Account@odata.bind": f"/accounts({ACC})",
        },
    )
    created = client.records.retrieve(
        "work365_subscription", new_id, select=["work365_name", "_work365_account_value"]
    )
    assert created is not None
    assert created["work365_name"] == "New from the SDK"
    assert created["_work365_account_value"] == ACC
    assert created.etag is not None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pages = list(
            client.records.get(
                "work365_subscription",
                select=["work365_name"],
                filter=f"_work365_account_value eq {ACC}",
                orderby=["work365_name asc"],
                page_size=1,
            )
        )
    assert [[r["work365_name"] for r in page] for page in pages] == [["E3"], ["New from the SDK"]]

    found = client.records.list(
        "work365_subscription",
        filter=col("work365_name") == "E3",
        select=["work365_name", "_work365_billingcontract_value"],
    )
    assert [r["work365_name"] for r in found] == ["E3"]

    client.records.update(
        "work365_subscription",
        SUB,
        {"work365_BillingContract@odata.bind": f"/work365_billingcontracts({CON})"},
    )
    (updated,) = [
        r
        for r in sandbox.dataverse.rows("work365_subscriptions")
        if r["work365_subscriptionid"] == SUB
    ]
    assert updated["_work365_billingcontract_value"] == CON
    counts = sandbox.counts()["dataverse"]
    assert counts["GET EntityDefinitions"] >= 1  # the SDK resolves entity sets from metadata
    assert counts["PATCH work365_subscriptions"] == 1


def test_the_sdk_update_never_creates(client: Any) -> None:
    from PowerPlatform.Dataverse.core.errors import HttpError

    with pytest.raises(HttpError) as caught:
        client.records.update(
            "work365_subscription", "e0000000-0000-4000-8000-000000000099", {"work365_name": "x"}
        )
    assert caught.value.status_code == 404
