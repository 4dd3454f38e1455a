"""Integration helpers: a scenario builder and a sync run against the sandbox over loopback."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from work365_fn.composition import Services
from work365_fn.operations.sync import SyncRequest
from work365_fn.rules.summary import RunSummary
from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.scenario import Scenario, parse_scenario
from work365_fn.settings import Settings

ENABLED_ON = "2026-01-01T00:00:00Z"
NEW = "2026-03-01T09:00:00Z"
OLD = "2025-06-01T09:00:00Z"


def gid(kind: str, n: int) -> str:
    """Readable fixed GUIDs: gid('acc', 1) -> 'a0000000-0000-0000-0000-000000000001'."""
    prefix = {"acc": "a", "pa": "b", "con": "c", "cus": "d", "sub": "e", "rec": "f"}[kind]
    return f"{prefix}0000000-0000-0000-0000-{n:012d}"


@dataclass
class ScenarioBuilder:
    """A scenario under construction: one customer -> provider account -> account by default."""

    raw: dict[str, Any] = field(
        default_factory=lambda: {
            "settings": {"associateDefaultBillingContract": True, "enabledOn": ENABLED_ON},
            "accounts": [],
            "providerAccounts": [],
            "billingContracts": [],
            "subscriptions": [],
            "partnerCenter": {"customers": []},
        }
    )

    def account(self, n: int, *, default_contracts: int = 1, name: str = "") -> str:
        account_id = gid("acc", n)
        self.raw["accounts"].append({"id": account_id, "name": name or f"Account {n}"})
        for i in range(default_contracts):
            self.contract(n * 10 + i, account_id, default=True)
        return account_id

    def contract(self, n: int, account_id: str, *, default: bool, active: bool = True) -> str:
        self.raw["billingContracts"].append(
            {
                "id": gid("con", n),
                "accountId": account_id,
                "name": f"Contract {n}",
                "isDefault": default,
                "active": active,
            }
        )
        return gid("con", n)

    def customer(self, n: int, *, account_id: str | None, relationship: bool = True) -> str:
        customer_id = gid("cus", n)
        if account_id is not None or n >= 0:
            self.raw["providerAccounts"].append(
                {
                    "id": gid("pa", n),
                    "customerId": customer_id,
                    "accountId": account_id,
                    "name": f"PA {n}",
                }
            )
        self.raw["partnerCenter"]["customers"].append(
            {
                "id": customer_id,
                "companyName": f"Customer {n}",
                "subscriptions": [],
                "relationship": relationship,
            }
        )
        return customer_id

    def customer_without_provider_account(self, n: int) -> str:
        customer_id = gid("cus", n)
        self.raw["partnerCenter"]["customers"].append(
            {"id": customer_id, "companyName": f"Customer {n}", "subscriptions": []}
        )
        return customer_id

    def pc_subscription(self, n: int, customer_id: str, *, offer: str = "Microsoft 365 E3") -> str:
        for customer in self.raw["partnerCenter"]["customers"]:
            if customer["id"] == customer_id:
                customer["subscriptions"].append(
                    {
                        "id": gid("sub", n),
                        "offerId": "CFQ7TTC0LFLX",
                        "offerName": offer,
                        "friendlyName": offer,
                        "quantity": 5,
                        "status": "active",
                        "billingType": "license",
                        "creationDate": NEW,
                    }
                )
                return gid("sub", n)
        raise KeyError(customer_id)

    def record(
        self,
        n: int,
        subscription_id: str,
        *,
        account_id: str | None = None,
        contract_id: str | None = None,
        created_on: str = NEW,
        billing_references: dict[str, str] | None = None,
    ) -> str:
        row: dict[str, Any] = {
            "id": gid("rec", n),
            "providerSubscriptionId": subscription_id,
            "accountId": account_id,
            "billingContractId": contract_id,
            "createdOn": created_on,
            "name": f"Record {n}",
        }
        if billing_references:
            row["billingReferences"] = billing_references
        self.raw["subscriptions"].append(row)
        return gid("rec", n)

    def new_subscription(self, n: int, customer_id: str, **record: Any) -> str:
        """A Partner Center subscription with its (new, unassigned) Dataverse record."""
        sub = self.pc_subscription(n, customer_id)
        self.record(n, sub, **record)
        return sub

    def scenario(self, **top: Any) -> Scenario:
        raw = copy.deepcopy(self.raw)
        raw.update(top)
        return parse_scenario(raw, origin="test")


@pytest.fixture
def world() -> ScenarioBuilder:
    return ScenarioBuilder()


def services_for(box: Sandbox, sleeps: list[float] | None = None, **settings: str) -> Services:
    recorder = sleeps if sleeps is not None else []
    return Services.build(
        Settings.from_env({}, overrides={**box.env, **settings}), sleep=recorder.append
    )


def sync(
    box: Sandbox,
    *,
    dry_run: bool = False,
    customers: tuple[str, ...] = (),
    sleeps: list[float] | None = None,
    **settings: str,
) -> RunSummary:
    return services_for(box, sleeps, **settings).sync(
        SyncRequest(dry_run=dry_run, customer_ids=customers)
    )


def by_subscription(summary: RunSummary) -> dict[str, dict[str, Any]]:
    return {row["subscriptionId"]: row for row in summary.to_json()["subscriptions"]}


def writes(box: Sandbox) -> int:
    """Write requests Dataverse served (PATCH/POST/DELETE, $batch included)."""
    return sum(
        n
        for kind, n in box.counts().get("dataverse", {}).items()
        if kind.split(" ")[0] in {"PATCH", "POST", "DELETE"}
    )


def contract_of(box: Sandbox, record_id: str) -> str | None:
    for row in box.dataverse.rows("work365_subscriptions"):
        if row["work365_subscriptionid"] == record_id:
            value = row.get("_work365_billingcontract_value")
            return str(value) if value else None
    raise KeyError(record_id)


@pytest.fixture
def start() -> Iterator[Any]:
    """start(scenario, **options) -> a running Sandbox, stopped after the test."""
    boxes: list[Sandbox] = []

    def _start(scenario: Scenario, **options: Any) -> Sandbox:
        box = Sandbox.start(scenario, **options)
        boxes.append(box)
        return box

    yield _start
    for box in boxes:
        box.stop()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No WORK365_ setting of the machine leaks into a CLI run (the sandbox supplies its own)."""
    for key in list(os.environ):
        if key.startswith("WORK365_"):
            monkeypatch.delenv(key)
