"""The record's creation as an event, end to end: a Partner Center order, the provider sync's
record created through the Web API, the sandbox's Dataverse webhook POSTing a
RemoteExecutionContext with ?code=<function key> to the app behind the local host harness, and
the contract set, with no timer run. Also POST /api/records[/{id}] for Power Automate."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.e2e.host import LocalHost, http_functions, load_function_app
from tests.integration.conftest import ScenarioBuilder, contract_of, gid
from work365_fn.composition import Services
from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.webhooks import WebhookDelivery, WebhookStep
from work365_fn.settings import Settings

KEY = "records-function-key-0123456789"
SUBSCRIPTIONS = "work365_subscriptions"
TABLE = "work365_subscription"

# One fresh copy of function_app.py: `get_functions()` builds its list once per FunctionApp.
APP = load_function_app(name="function_app_records")
FUNCTIONS = http_functions(APP.app)


@dataclass
class Served:
    box: Sandbox
    host: LocalHost
    services: Services  # for the test's own Web API writes (the provider sync's)
    sleeps: list[float]
    world: dict[str, str]

    def order(self, n: int, customer: str, account: str | None) -> tuple[str, str]:
        """A Partner Center order, then the provider sync's record (Web API POST)."""
        sub = gid("sub", n)
        self.box.partner_center.add_subscription(customer, {"id": sub, "offerId": "CFQ7TTC0LFLX"})
        body: dict[str, Any] = {"work365_providersubscriptionid": sub, "work365_name": f"R{n}"}
        if account:
            body[f"{self.services.bindings().account_nav}@odata.bind"] = f"/accounts({account})"
        self.services.dataverse.create_only(SUBSCRIPTIONS, gid("rec", n), body)
        return sub, gid("rec", n)

    def post(self, path: str, body: Any, key: str | None = KEY) -> requests.Response:
        params = {"code": key} if key else {}
        return requests.post(f"{self.host.url}{path}", json=body, params=params, timeout=60)


def a_tenant() -> tuple[ScenarioBuilder, dict[str, str]]:
    world = ScenarioBuilder()
    ids: dict[str, str] = {}
    ids["account"] = world.account(1)  # one active default contract
    ids["customer"] = world.customer(1, account_id=ids["account"])
    ids["contract"] = gid("con", 10)
    ids["two_defaults"] = world.account(2, default_contracts=2)
    ids["customer2"] = world.customer(2, account_id=ids["two_defaults"])
    ids["lonely"] = world.account(3)  # no Provider Account: its records' customer is unknown
    return world, ids


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    for key in list(os.environ):
        if key.startswith("WORK365_"):
            monkeypatch.delenv(key)
    world, ids = a_tenant()
    with Sandbox.start(world.scenario()) as box:
        for key, value in box.env.items():
            monkeypatch.setenv(key, value)
        APP.services.cache_clear()
        host = LocalHost(FUNCTIONS, function_keys=[KEY]).start()
        sleeps: list[float] = []
        box.use_webhooks(WebhookDelivery(box.url, sleep=sleeps.append))
        box.webhooks.register(
            WebhookStep(
                f"{host.url}/records", KEY, TABLE, filtering_attributes=("work365_account",)
            )
        )
        services = Services.build(Settings.from_env({}, overrides=box.env))
        try:
            yield Served(box, host, services, sleeps, ids)
        finally:
            host.stop()
            APP.services.cache_clear()


def test_an_order_gets_its_contract_through_the_webhook_with_no_timer_run(served: Served) -> None:
    _, record = served.order(5, served.world["customer"], served.world["account"])

    [delivery] = served.box.webhooks.deliver_pending()

    assert delivery.statuses == [200]
    assert contract_of(served.box, record) == served.world["contract"]
    assert served.host.errors == []


def test_an_event_costs_one_partner_center_and_six_dataverse_requests(served: Served) -> None:
    served.order(5, served.world["customer"], served.world["account"])
    served.box.webhooks.deliver_pending()  # the worker's first event reads the setting, metadata
    served.order(6, served.world["customer"], served.world["account"])
    served.box.reset_counts()

    [delivery] = served.box.webhooks.deliver_pending()

    assert delivery.statuses == [200]
    counts = served.box.counts()
    assert counts["partnerCenter"] == {"GET subscription": 1}  # one subscription, no listing
    # the record, Provider Accounts of its Account and of its customer, the records of its
    # subscription id, the contracts; the write's $batch
    assert counts["dataverse"] == {
        "GET work365_subscriptions": 2,
        "GET work365_provideraccounts": 2,
        "GET work365_billingcontracts": 1,
        "POST $batch": 1,
    }


def test_the_webhook_body_is_the_documented_remote_execution_context(served: Served) -> None:
    seen: list[tuple[str, dict[str, str], dict[str, Any]]] = []
    served.box.use_webhooks(
        WebhookDelivery(
            served.box.url, post=lambda url, h, b: seen.append((url, h, json.loads(b))) or 200
        )
    )
    served.box.webhooks.register(WebhookStep("https://example.invalid/api/records", "k", TABLE))
    _, record = served.order(5, served.world["customer"], served.world["account"])
    served.box.webhooks.deliver_pending()

    [(url, headers, body)] = seen
    assert url == "https://example.invalid/api/records?code=k"
    assert headers["x-ms-dynamics-entity-name"] == TABLE
    assert headers["x-ms-dynamics-request-name"] == "Create"
    assert headers["x-ms-dynamics-organization"] == served.box.url.split("//")[1]
    assert (body["MessageName"], body["PrimaryEntityName"]) == ("Create", TABLE)
    assert body["PrimaryEntityId"] == record
    assert (body["Mode"], body["Stage"]) == (1, 40)  # asynchronous, post-operation
    [target] = [p["value"] for p in body["InputParameters"] if p["key"] == "Target"]
    assert target["Id"] == record and target["LogicalName"] == TABLE
    attributes = {a["key"]: a["value"] for a in target["Attributes"]}
    assert attributes["work365_account"]["Id"] == served.world["account"]
    assert body["OutputParameters"] == [{"key": "id", "value": record}]


def test_a_duplicate_delivery_is_harmless(served: Served) -> None:
    _, record = served.order(5, served.world["customer"], served.world["account"])
    served.box.webhooks.deliver_pending()
    event = {
        "MessageName": "Create",
        "PrimaryEntityName": TABLE,
        "PrimaryEntityId": record,
        "InputParameters": [],
    }
    served.box.reset_counts()

    again = served.post("/records", event)

    assert again.status_code == 200
    [row] = again.json()["subscriptions"]
    assert (row["reason"], row["action"]) == ("already-assigned", "none")
    writes = [k for k in served.box.counts()["dataverse"] if not k.startswith("GET")]
    assert writes == []


def test_a_call_for_another_table_or_message_is_a_200_that_does_nothing(served: Served) -> None:
    for message, table in (("Create", "account"), ("Delete", TABLE)):
        event = {
            "MessageName": message,
            "PrimaryEntityName": table,
            "PrimaryEntityId": gid("rec", 1),
        }
        answer = served.post("/records", event)
        assert answer.status_code == 200
        assert answer.json()["subscriptions"] == []
        assert "ignored" in answer.json()["warnings"][0]


def test_the_webhook_needs_the_function_key(served: Served) -> None:
    event = {"MessageName": "Create", "PrimaryEntityName": TABLE, "PrimaryEntityId": gid("rec", 1)}
    assert served.post("/records", event, key="wrong").status_code == 401


def test_a_throttled_dataverse_answers_503_and_the_retried_step_sets_the_contract(
    served: Served,
) -> None:
    _, record = served.order(5, served.world["customer"], served.world["account"])
    served.box.faults.add(
        {"service": "dataverse", "kind": "429", "retryAfter": 120, "times": 1, "method": "GET"}
    )

    [delivery] = served.box.webhooks.deliver_pending()

    assert delivery.statuses == [503, 200]  # tried again, like an asynchronous step
    assert served.sleeps == [1.0]  # the injected back-off, no real sleep
    assert contract_of(served.box, record) == served.world["contract"]


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("two_defaults", "multiple-default-contracts"),
        ("lonely", "unresolved-customer"),
        ("no_account", "unresolved-customer"),
        ("duplicate", "error"),
    ],
)
def test_a_record_left_unassigned_says_why(served: Served, setup: str, reason: str) -> None:
    w = served.world
    if setup == "two_defaults":
        _, record = served.order(6, w["customer2"], w["two_defaults"])
    elif setup == "lonely":
        _, record = served.order(6, w["customer"], w["lonely"])
    elif setup == "no_account":
        _, record = served.order(6, w["customer"], None)
    else:
        sub, _ = served.order(6, w["customer"], w["account"])
        served.services.dataverse.create_only(
            SUBSCRIPTIONS, gid("rec", 7), {"work365_providersubscriptionid": sub}
        )
        record = gid("rec", 6)
    served.box.webhooks.clear()

    answer = served.post(f"/records/{record}", {})

    assert answer.status_code == 200
    [row] = answer.json()["subscriptions"]
    assert row["reason"] == reason
    assert row["fix"]
    assert contract_of(served.box, record) is None


def test_power_automate_assigns_some_records_and_reports_the_unknown_ones(served: Served) -> None:
    served.box.webhooks.clear()
    _, record = served.order(5, served.world["customer"], served.world["account"])
    missing = gid("rec", 99)

    answer = served.post("/records", {"recordIds": [record, missing]})

    summary = answer.json()
    assert answer.status_code == 200
    assert summary["mode"] == "records"
    assert [r["reason"] for r in summary["subscriptions"]] == ["default-contract"]
    [error] = summary["errors"]
    assert (error["status"], error["code"]) == (404, "record-not-found")
    assert missing in error["message"]
    assert contract_of(served.box, record) == served.world["contract"]


def test_a_bad_records_body_is_a_400_naming_the_field(served: Served) -> None:
    too_many = {"recordIds": [gid("rec", n) for n in range(101)]}
    for body, field in (
        ({"recordIds": ["nope"]}, "recordIds[0]"),
        ({"recordIds": []}, "recordIds"),
        (too_many, "recordIds"),
        ({"recordIds": [gid("rec", 1)], "extra": 1}, "extra"),
        ({"MessageName": 3, "PrimaryEntityName": TABLE}, "MessageName"),
    ):
        answer = served.post("/records", body)
        assert (answer.status_code, answer.json()["field"]) == (400, field), body
    assert served.post("/records/not-a-guid", {}).json()["field"] == "recordId"
