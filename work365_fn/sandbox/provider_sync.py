"""Work 365's provider sync, simulated: a Partner Center subscription becomes its Dataverse
subscription record, created through the Dataverse emulator's own Web API create path (`POST
/api/data/v9.2/<set>`), so every effect of a real create follows: `createdon`, the audit row,
and the webhook event of a registered step (webhooks.py).

    box.partner_center.add_subscription(customer, {"id": sub, ...})   # the order
    record_id = box.provider_sync(customer, sub)                        # Work 365's sync
    box.order(customer, {"id": sub, ...})                               # both at once

The record carries the provider subscription id, a name (the subscription's friendlyName, else
its offerName, as Work 365 names it) and, by default, the Account that the customer's Provider
Accounts map to (none when they map to none or to several: Work 365 cannot tell either). The
sync is another user of the org: its two requests (the Partner Center read, the Dataverse
create) go to the emulators directly, so they are not counted, throttled or faulted with the
app's requests.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import quote

from work365_fn.adapters.schema import Schema

from .core import Emulator, Headers, Request, TokenIssuer
from .dataverse import API

# account_id's default: the Account the customer's Provider Accounts map to.
FROM_PROVIDER_ACCOUNTS: Final = "from-provider-accounts"
SYNC_CLIENT_ID = "5f0c7a1e-2b3d-4c5e-8f90-a1b2c3d4e5f6"  # Work 365's app, another user


class ProviderSync:
    """The provider sync of one sandbox: reads Partner Center, creates Dataverse records."""

    def __init__(
        self,
        dataverse: Emulator,
        partner_center: Emulator,
        tokens: TokenIssuer,
        *,
        dataverse_url: str,
        partner_center_audience: str,
        schema: Schema,
    ) -> None:
        self._dataverse = dataverse
        self._pc = partner_center
        self._tokens = tokens
        self._dataverse_url = dataverse_url.rstrip("/")
        self._pc_audience = partner_center_audience
        self._schema = schema

    def sync(
        self,
        customer_id: str,
        subscription_id: str,
        *,
        record_id: str | None = None,
        account_id: str | None = FROM_PROVIDER_ACCOUNTS,
        created_on: str | None = None,
    ) -> str:
        """Create the record of one Partner Center subscription; returns the record's id.
        `created_on` (ISO-8601) goes in `overriddencreatedon`, as a data migration sets it, so
        the record can look older than the setting's cutoff.
        KeyError when Partner Center has no such subscription; RuntimeError when Dataverse
        refuses the create (its answer in the message)."""
        item = self._subscription(customer_id, subscription_id)
        t = self._schema.subscription
        body: dict[str, Any] = {
            t.provider_subscription_id: subscription_id.lower(),
            t.name: str(item.get("friendlyName") or item.get("offerName") or subscription_id),
        }
        if record_id is not None:
            body[t.id] = record_id.lower()
        if created_on is not None:
            body["overriddencreatedon"] = created_on
        account = (
            self._account_of(customer_id) if account_id == FROM_PROVIDER_ACCOUNTS else account_id
        )
        if account:
            body[f"{self._account_nav()}@odata.bind"] = (
                f"/{self._schema.account.entity_set}({account.lower()})"
            )
        answer = self._dataverse.handle(
            self._request(
                "POST", f"{API}/{t.entity_set}", self._dataverse_url, json.dumps(body).encode()
            )
        )
        if answer.status != 204:
            raise RuntimeError(
                f"provider sync: creating the record of {subscription_id} answered "
                f"{answer.status}: {answer.body[:300]!r}"
            )
        entity_id = answer.headers.get("OData-EntityId", "")
        return record_id.lower() if record_id else entity_id.rsplit("(", 1)[-1].rstrip(")")

    def _subscription(self, customer_id: str, subscription_id: str) -> dict[str, Any]:
        path = (
            f"/v1/customers/{quote(customer_id, safe='')}/subscriptions/"
            f"{quote(subscription_id, safe='')}"
        )
        answer = self._pc.handle(self._request("GET", path, self._pc_audience))
        if answer.status != 200:
            raise KeyError(
                f"Partner Center has no subscription {subscription_id} for customer "
                f"{customer_id} ({answer.status})"
            )
        item: dict[str, Any] = json.loads(answer.body)
        return item

    def _account_of(self, customer_id: str) -> str | None:
        """The one Account the customer's Provider Accounts map to, else None."""
        pa = self._schema.provider_account
        rows = self._dataverse_rows(pa.entity_set)
        accounts = {
            str(row.get(f"_{pa.account}_value")).lower()
            for row in rows
            if str(row.get(pa.customer_id) or "").lower() == customer_id.lower()
            and row.get(f"_{pa.account}_value")
        }
        return accounts.pop() if len(accounts) == 1 else None

    def _dataverse_rows(self, entity_set: str) -> list[dict[str, Any]]:
        rows = getattr(self._dataverse, "rows", None)
        if not callable(rows):
            raise TypeError("the provider sync needs the Dataverse emulator's rows()")
        result: list[dict[str, Any]] = rows(entity_set)
        return result

    def _account_nav(self) -> str:
        """The navigation property of the record's Account lookup, from the emulator's tables
        (case-sensitive, as the org's metadata says)."""
        t = self._schema.subscription
        tables = getattr(self._dataverse, "tables", {})
        nav = tables[t.table].column(t.account).nav if t.table in tables else None
        return str(nav or t.account)

    def _request(self, method: str, path: str, audience: str, body: bytes = b"") -> Request:
        token, _ = self._tokens.issue(audience, SYNC_CLIENT_ID)
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
        }
        if body:
            headers["Content-Type"] = "application/json"
        return Request(method, path, "", Headers(headers), body)
