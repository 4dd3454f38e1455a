"""The conformance sandbox's seed data (ids the tests name) and a raw-request helper."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests

from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.scenario import Scenario, parse_scenario

from .fixtures.partner_center import NCE_SUBSCRIPTION


def gid(prefix: str, n: int) -> str:
    return f"{prefix}0000000-0000-4000-8000-{n:012d}"


ACC = [gid("a", n) for n in range(3)]  # ACC[1], ACC[2]
PA = [gid("b", n) for n in range(4)]
CON = [gid("c", n) for n in range(4)]
CUS = [gid("d", n) for n in range(6)]  # CUS[1] .. CUS[5]; CUS[5] has no reseller relationship
REC = [gid("e", n) for n in range(6)]  # Dataverse subscription records REC[1] .. REC[5]
PSUB = [gid("f", n) for n in range(9)]  # Partner Center subscription ids
NO_RELATIONSHIP = CUS[5]
# The activity-log day the tests query: recent (the log answers 90 days back), whole UTC days.
AUDIT_DAY: date = (datetime.now(UTC) - timedelta(days=2)).date()


def at(day: date, hour: int, minute: int) -> str:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def _records() -> list[dict[str, Any]]:
    names = ["E3", "E5", "O'Brien plan", "Azure plan", "Visio"]
    accounts = [ACC[1], ACC[1], ACC[2], ACC[2], None]
    return [
        {
            "id": REC[n],
            "providerSubscriptionId": PSUB[n],
            "accountId": accounts[n - 1],
            "createdOn": "2026-02-01T00:00:00Z",
            "name": names[n - 1],
        }
        for n in range(1, 6)
    ]


def _customers() -> list[dict[str, Any]]:
    customers: list[dict[str, Any]] = []
    for n in range(1, 6):
        subscriptions = []
        if n == 1:
            subscriptions = [
                {**NCE_SUBSCRIPTION, "id": PSUB[6]},
                {**NCE_SUBSCRIPTION, "id": PSUB[7], "offerName": "Microsoft 365 E3"},
            ]
        customers.append(
            {
                "id": CUS[n],
                "companyName": f"Customer {n}",
                "relationship": CUS[n] != NO_RELATIONSHIP,
                "subscriptions": subscriptions,
            }
        )
    return customers


def _activity() -> list[dict[str, Any]]:
    """Records early, mid and late on AUDIT_DAY, and one on each neighbouring day."""
    before, after = AUDIT_DAY - timedelta(days=1), AUDIT_DAY + timedelta(days=1)
    when = [at(before, 23, 30), at(AUDIT_DAY, 0, 30), at(AUDIT_DAY, 12, 0), at(AUDIT_DAY, 23, 30)]
    if after < datetime.now(UTC).date():
        when.append(at(after, 0, 30))
    return [
        {
            "customerId": CUS[1 + i % 4],
            "customerName": f"Customer {1 + i % 4}",
            "resourceType": "subscription",
            "operationType": "update_subscription",
            "operationDate": moment,
        }
        for i, moment in enumerate(when)
    ]


def conformance_scenario() -> Scenario:
    return parse_scenario(
        {
            "settings": {
                "associateDefaultBillingContract": True,
                "enabledOn": "2026-01-01T00:00:00Z",
                "auditEnabled": True,
            },
            "accounts": [
                {"id": ACC[1], "name": "Contoso"},
                {"id": ACC[2], "name": "Fabrikam"},
            ],
            "providerAccounts": [
                {"id": PA[1], "customerId": CUS[1], "accountId": ACC[1], "name": "PA 1"},
                {"id": PA[2], "customerId": CUS[2], "accountId": ACC[2], "name": "PA 2"},
                {"id": PA[3], "customerId": CUS[3], "accountId": None, "name": "PA 3"},
            ],
            "billingContracts": [
                {"id": CON[1], "accountId": ACC[1], "name": "Default", "isDefault": True},
                {"id": CON[2], "accountId": ACC[1], "name": "Other", "isDefault": False},
                {"id": CON[3], "accountId": ACC[2], "name": "Fabrikam", "isDefault": True},
            ],
            "subscriptions": _records(),
            "partnerCenter": {"customers": _customers(), "auditRecords": _activity()},
            "alternateKey": True,
        },
        origin="conformance",
    )


def token_for(sandbox: Sandbox, http: requests.Session, resource: str) -> str:
    response = http.post(
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


@dataclass
class Service:
    """Raw requests to one emulator with a valid token, as the documented examples send them."""

    http: requests.Session
    base: str  # every relative path is resolved against it
    token: str
    headers: Mapping[str, str]

    def url(self, path: str) -> str:
        return path if path.startswith("https://") else self.base + path

    def __call__(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: str | bytes | None = None,
        token: str | None = None,
    ) -> requests.Response:
        all_headers = {**self.headers, "Authorization": f"Bearer {token or self.token}"}
        all_headers.update(headers or {})
        return self.http.request(
            method, self.url(path), headers=all_headers, json=json, data=data, timeout=30
        )

    def get(self, path: str, **headers: str) -> requests.Response:
        return self("GET", path, headers=headers)
