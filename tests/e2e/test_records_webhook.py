"""The record's creation as an event, end to end: a Partner Center order, the sandbox's simulated
Work 365 provider sync creating its record through the Dataverse emulator's own create path, the
sandbox's Dataverse webhook POSTing a RemoteExecutionContext with ?code=<function key> to the app
behind the local host harness, and the contract set (or the reason why not), with no timer run.
Every reason that can occur on this path is reached through the webhook; rows created by an
upsert or in a `$batch` raise the event too. Also POST /api/records[/{id}] for Power Automate."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as default
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests

from tests.e2e.host import LocalHost, http_functions, load_function_app
from tests.integration.conftest import OLD, ScenarioBuilder, contract_of, gid
from work365_fn.adapters.odata_batch import ChangeSet
from work365_fn.composition import Services
from work365_fn.entrypoints.http_input import MAX_BODY_BYTES
from work365_fn.rules import Reason
from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.scenario import Scenario, parse_scenario
from work365_fn.sandbox.webhooks import WebhookDelivery, WebhookStep
from work365_fn.settings import Settings

KEY = "records-function-key-0123456789"
SUBSCRIPTIONS = "work365_subscriptions"
TABLE = "work365_subscription"
LANDING = Path(__file__).resolve().parents[2] / "work365_fn/sandbox/scenarios/landing-rules.json"
# Reasons no record decided alone can get (docs/events.md, "Reasons on this path"): the record
# exists (not-synced), and its customer is found through a Provider Account of its own Account,
# so a customer without one, or another Account than the record's, is unresolved-customer here.
NOT_ON_THIS_PATH = {Reason.NOT_SYNCED, Reason.UNMAPPED_CUSTOMER, Reason.ACCOUNT_MISMATCH}

# One fresh copy of function_app.py: `get_functions()` builds its list once per FunctionApp.
APP = load_function_app(name="function_app_records")
FUNCTIONS = http_functions(APP.app)


@dataclass
class Served:
    box: Sandbox
    host: LocalHost
    services: Services  # for the test's own Web API writes
    sleeps: list[float]
    world: dict[str, str]
    answers: list[dict[str, Any]] = default(default_factory=list)  # the webhook's answers

    def order(
        self,
        n: int,
        customer: str,
        account: str | None = "",
        *,
        created_on: str | None = None,
    ) -> tuple[str, str]:
        """A Partner Center order, then Work 365's provider sync makes its record (the
        emulator's create path: the webhook event fires). `account` "" lets the sync take the
        Account of the customer's Provider Accounts; None leaves the record without one."""
        sub = gid("sub", n)
        kwargs: dict[str, Any] = {"record_id": gid("rec", n), "created_on": created_on}
        if account != "":
            kwargs["account_id"] = account
        record = self.box.order(customer, {"id": sub, "offerId": "CFQ7TTC0LFLX"}, **kwargs)
        return sub, record

    def post(self, path: str, body: Any, key: str | None = KEY) -> requests.Response:
        params = {"code": key} if key else {}
        return requests.post(f"{self.host.url}{path}", json=body, params=params, timeout=60)

    def reasons_delivered(self) -> dict[str, str]:
        """Record id -> the reason the webhook's answer gave it, for every delivery so far."""
        return {
            row["recordId"]: row["reason"]
            for answer in self.answers
            for row in answer.get("subscriptions", [])
        }


def a_tenant() -> tuple[ScenarioBuilder, dict[str, str]]:
    world = ScenarioBuilder()
    ids: dict[str, str] = {}
    ids["account"] = world.account(1)  # one active default contract
    ids["customer"] = world.customer(1, account_id=ids["account"])
    ids["contract"] = gid("con", 10)
    ids["two_defaults"] = world.account(2, default_contracts=2)
    ids["customer2"] = world.customer(2, account_id=ids["two_defaults"])
    ids["lonely"] = world.account(3)  # no Provider Account: its records' customer is unknown
    ids["no_default"] = world.account(4, default_contracts=0)
    ids["customer4"] = world.customer(4, account_id=ids["no_default"])
    # customer 5: two Provider Accounts, under two different Accounts
    ids["first_of_two"] = world.account(5)
    ids["second_of_two"] = world.account(6)
    ids["customer5"] = world.customer(5, account_id=ids["first_of_two"])
    world.raw["providerAccounts"].append(
        {
            "id": gid("pa", 56),
            "customerId": ids["customer5"],
            "accountId": ids["second_of_two"],
            "name": "PA 56",
        }
    )
    return world, ids


def recording_poster(answers: list[dict[str, Any]]) -> Callable[[str, dict[str, str], bytes], int]:
    """The delivery's POST over loopback, keeping each answer's JSON (the reasons)."""
    session = requests.Session()
    session.trust_env = False

    def post(url: str, headers: dict[str, str], body: bytes) -> int:
        try:
            answer = session.post(url, data=body, headers=headers, timeout=60)
        except requests.RequestException:
            return 0
        if answer.content:
            answers.append(answer.json())
        return answer.status_code

    return post


@contextmanager
def serve(
    monkeypatch: pytest.MonkeyPatch,
    scenario: Scenario,
    ids: dict[str, str],
    env: dict[str, str] | None = None,
) -> Iterator[Served]:
    """The sandbox with `scenario`, the app behind the local host with the sandbox's settings
    (and `env`), and a webhook step on the Subscriptions table POSTing to it."""
    for key in list(os.environ):
        if key.startswith("WORK365_"):
            monkeypatch.delenv(key)
    with Sandbox.start(scenario) as box:
        for key, value in {**box.env, **(env or {})}.items():
            monkeypatch.setenv(key, value)
        APP.services.cache_clear()
        host = LocalHost(FUNCTIONS, function_keys=[KEY]).start()
        sleeps: list[float] = []
        answers: list[dict[str, Any]] = []
        box.use_webhooks(
            WebhookDelivery(box.url, sleep=sleeps.append, post=recording_poster(answers))
        )
        box.webhooks.register(
            WebhookStep(
                f"{host.url}/records", KEY, TABLE, filtering_attributes=("work365_account",)
            )
        )
        services = Services.build(Settings.from_env({}, overrides=box.env))
        try:
            yield Served(box, host, services, sleeps, ids, answers)
        finally:
            host.stop()
            APP.services.cache_clear()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    world, ids = a_tenant()
    with serve(monkeypatch, world.scenario(), ids) as running:
        yield running


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


def _duplicate(served: Served) -> str:
    """Two records carry one subscription id: the second is made by hand, no event for it."""
    served.box.webhooks.clear()
    sub = gid("sub", 6)
    served.box.partner_center.add_subscription(served.world["customer"], {"id": sub})
    served.services.dataverse.create_only(
        SUBSCRIPTIONS, gid("rec", 7), {"work365_providersubscriptionid": sub}
    )
    served.box.webhooks.register(WebhookStep(f"{served.host.url}/records", KEY, TABLE))
    return served.box.provider_sync(served.world["customer"], sub, record_id=gid("rec", 6))


def _twice(served: Served) -> str:
    """A second step registered for the same event (a duplicate delivery): the first assigns,
    the second finds the contract set."""
    served.box.webhooks.register(WebhookStep(f"{served.host.url}/records", KEY, TABLE))
    return served.order(6, served.world["customer"])[1]


# How each reason is reached through the webhook: the record the provider sync makes, and the
# world it lands in. `setting_on` False: the Admin Hub setting is No.
CASES: dict[Reason, tuple[Callable[[Served], str], bool]] = {
    Reason.DEFAULT_CONTRACT: (lambda s: s.order(6, s.world["customer"])[1], True),
    Reason.ALREADY_ASSIGNED: (_twice, True),
    Reason.SETTING_OFF: (lambda s: s.order(6, s.world["customer"])[1], False),
    Reason.EXISTING_SUBSCRIPTION: (
        lambda s: s.order(6, s.world["customer"], created_on=OLD)[1],
        True,
    ),
    Reason.NO_DEFAULT_CONTRACT: (lambda s: s.order(6, s.world["customer4"])[1], True),
    Reason.MULTIPLE_DEFAULT_CONTRACTS: (lambda s: s.order(6, s.world["customer2"])[1], True),
    Reason.AMBIGUOUS_PROVIDER_ACCOUNT: (
        lambda s: s.order(6, s.world["customer5"], s.world["first_of_two"])[1],
        True,
    ),
    Reason.UNRESOLVED_CUSTOMER: (
        lambda s: s.order(6, s.world["customer"], s.world["lonely"])[1],
        True,
    ),
    Reason.ERROR: (_duplicate, True),
}
LANDING_REASONS = {
    Reason.LANDING_RULE,
    Reason.NO_LANDING_CONTRACT,
    Reason.MULTIPLE_LANDING_CONTRACTS,
    Reason.EXCLUDED_BY_RULE,
}


def test_every_reason_is_reached_through_the_webhook_or_documented_as_impossible() -> None:
    reached = set(CASES) | LANDING_REASONS
    assert reached | NOT_ON_THIS_PATH == set(Reason)
    assert not reached & NOT_ON_THIS_PATH
    events = (Path(__file__).resolve().parents[2] / "docs/events.md").read_text(encoding="utf-8")
    for reason in NOT_ON_THIS_PATH:
        assert f"`{reason.value}`" in events  # docs/events.md says why


@pytest.mark.parametrize("reason", list(CASES), ids=str)
def test_a_webhook_delivery_gives_the_reason_of_the_rules(
    monkeypatch: pytest.MonkeyPatch, reason: Reason
) -> None:
    make, setting_on = CASES[reason]
    world, ids = a_tenant()
    world.raw["settings"]["associateDefaultBillingContract"] = setting_on
    with serve(monkeypatch, world.scenario(), ids) as served:
        record = make(served)

        deliveries = served.box.webhooks.deliver_pending()

        assert deliveries and all(d.statuses == [200] for d in deliveries)
        last = served.answers[-1]
        [row] = last["subscriptions"]
        assert row["reason"] == reason.value
        # the record, or for duplicates (no one record) the message naming them
        assert record in (row["recordId"] or row["message"])
        assert (row["action"] == "assign") is (reason is Reason.DEFAULT_CONTRACT)
        lands = reason in (Reason.DEFAULT_CONTRACT, Reason.ALREADY_ASSIGNED)
        assert (contract_of(served.box, record) == ids["contract"]) is lands
        if reason is not Reason.DEFAULT_CONTRACT and reason is not Reason.ALREADY_ASSIGNED:
            assert row["fix"]
        assert served.host.errors == []


def landing_expected() -> tuple[dict[str, Any], dict[str, str]]:
    """The landing-rules scenario and, from its own description, subscription id -> reason."""
    raw = json.loads(LANDING.read_text(encoding="utf-8"))
    row = re.compile(r"^([0-9a-f-]{36}) \| ([a-z-]+) \| ")
    expected = {
        found.group(1): found.group(2)
        for line in raw["description"]
        if (found := row.match(line.strip()))
    }
    return raw, expected


def test_landing_rules_decide_records_delivered_through_the_webhook(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    raw, expected = landing_expected()
    records = {r["providerSubscriptionId"]: r for r in raw["subscriptions"]}
    # Every record the rules decide is made by the provider sync instead of seeded; the parent
    # of the add-on (already on its contract) stays seeded.
    made = [s for s, reason in expected.items() if reason != "already-assigned"]
    raw["subscriptions"] = [r for s, r in records.items() if s not in made]
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(raw["landingRules"]), encoding="utf-8")
    customer_of = {
        sub["id"]: c["id"] for c in raw["partnerCenter"]["customers"] for sub in c["subscriptions"]
    }
    scenario = parse_scenario(raw, origin="test")
    with serve(monkeypatch, scenario, {}, {"WORK365_LANDING_RULES_FILE": str(rules)}) as served:
        for sub in made:
            served.box.provider_sync(customer_of[sub], sub, record_id=records[sub]["id"])

        deliveries = served.box.webhooks.deliver_pending()

        assert [d.statuses for d in deliveries] == [[200]] * len(made)
        got = served.reasons_delivered()
        assert {s: got[records[s]["id"]] for s in made} == {s: expected[s] for s in made}
        assert {Reason(r) for r in got.values()} >= LANDING_REASONS


def test_rows_created_by_an_upsert_or_in_a_batch_raise_the_event(served: Served) -> None:
    dv = served.services.dataverse
    for n in (5, 6, 7):
        served.box.partner_center.add_subscription(served.world["customer"], {"id": gid("sub", n)})
    nav = served.services.bindings().account_nav
    bind = {f"{nav}@odata.bind": f"/accounts({served.world['account']})"}
    # an upsert that creates (PATCH with If-None-Match: *)
    dv.create_only(
        SUBSCRIPTIONS, gid("rec", 5), {"work365_providersubscriptionid": gid("sub", 5), **bind}
    )
    # two creates in one $batch change set
    dv.batch(
        [
            ChangeSet(
                tuple(
                    dv.create_operation(
                        SUBSCRIPTIONS,
                        {
                            "work365_subscriptionid": gid("rec", n),
                            "work365_providersubscriptionid": gid("sub", n),
                            **bind,
                        },
                    )
                    for n in (6, 7)
                )
            )
        ]
    )

    deliveries = served.box.webhooks.deliver_pending()

    assert sorted(d.event.row_id for d in deliveries) == [gid("rec", n) for n in (5, 6, 7)]
    assert all(d.statuses == [200] for d in deliveries)
    for n in (5, 6, 7):
        assert contract_of(served.box, gid("rec", n)) == served.world["contract"]


def test_a_record_without_an_account_is_unresolved_through_the_webhook(served: Served) -> None:
    _, record = served.order(6, served.world["customer"], None)

    [delivery] = served.box.webhooks.deliver_pending()

    assert delivery.statuses == [200]
    [row] = served.answers[-1]["subscriptions"]
    assert (row["recordId"], row["reason"]) == (record, "unresolved-customer")
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
        (
            {
                "MessageName": "Create",
                "PrimaryEntityName": TABLE,
                "PrimaryEntityId": gid("rec", 1),
                "recordIds": [gid("rec", 2)],
            },
            "recordIds",
        ),
    ):
        answer = served.post("/records", body)
        assert (answer.status_code, answer.json()["field"]) == (400, field), body
    assert served.post("/records/not-a-guid", {}).json()["field"] == "recordId"


def test_power_automate_gets_a_200_partial_for_a_throttled_record(served: Served) -> None:
    """Only the webhook answers 503 (Dataverse tries the step again); a flow's action would
    fail on it, and the timer run picks the record up anyway (docs/events.md)."""
    served.box.webhooks.clear()
    _, record = served.order(5, served.world["customer"])
    served.post(f"/records/{gid('rec', 99)}", {})  # the worker reads the setting (cached)
    served.box.faults.add(
        {"service": "dataverse", "kind": "429", "retryAfter": 120, "times": 1, "method": "GET"}
    )

    answer = served.post(f"/records/{record}", {})

    assert answer.status_code == 200
    summary = answer.json()
    assert summary["status"] == "partial"
    [error] = summary["errors"]
    assert (error["service"], error["status"]) == ("dataverse", 429)
    assert contract_of(served.box, record) is None


FORGED = "[run 00000000-0000-4000-8000-000000000000] sync succeeded"


@pytest.mark.parametrize("field", ["MessageName", "PrimaryEntityName"])
@pytest.mark.parametrize("value", [f"Create\n{FORGED}", "x" * 65, "1account", "Create\r"])
def test_a_name_that_is_no_logical_name_is_a_400_and_forges_no_log_line(
    served: Served, caplog: pytest.LogCaptureFixture, field: str, value: str
) -> None:
    event = {"MessageName": "Create", "PrimaryEntityName": TABLE, "PrimaryEntityId": gid("rec", 1)}

    answer = served.post("/records", {**event, field: value})

    assert (answer.status_code, answer.json()["field"]) == (400, field)
    assert FORGED not in answer.text
    assert not any(FORGED in r.getMessage() for r in caplog.records)


def test_webhook_headers_reach_the_log_cut_short_and_without_control_characters(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    event = {
        "MessageName": "Create",
        "PrimaryEntityName": "account",
        "PrimaryEntityId": gid("rec", 1),
    }
    request = func.HttpRequest(
        method="POST",
        url=f"{served.host.url}/records",
        headers={
            "Content-Type": "application/json",
            "x-ms-dynamics-organization": f"contoso\n{FORGED}" + "o" * 500,
            "x-request-id": f"r\r\n{FORGED}\x1b[2J" + "i" * 500,
        },
        body=json.dumps(event).encode(),
    )

    answer = APP.records_http(request)

    assert answer.status_code == 200  # another table: ignored, and said so in the log
    [line] = [r.getMessage() for r in caplog.records if "webhook call ignored" in r.getMessage()]
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert f"contoso{FORGED}" in line  # the text stays, on the one line it belongs to
    assert "o" * 201 not in line and "i" * 101 not in line


def test_a_long_body_that_is_no_webhook_is_a_413_before_it_is_parsed(served: Served) -> None:
    not_json = b'{"recordIds": [' + b'"x", ' * (MAX_BODY_BYTES // 5)  # over 64 KiB, unparsable

    answer = requests.post(
        f"{served.host.url}/records", data=not_json, params={"code": KEY}, timeout=60
    )

    assert (answer.status_code, answer.json()["field"]) == (413, "body")


def test_a_long_webhook_body_is_still_decided(served: Served) -> None:
    """Dataverse writes the Target row (InputParameters) before MessageName: a row with long
    text makes a body over 64 KiB whose first kilobytes name no webhook key."""
    served.box.webhooks.clear()
    _, record = served.order(5, served.world["customer"], served.world["account"])
    target = {"Attributes": [{"key": "description", "value": "d" * MAX_BODY_BYTES}]}
    event = {
        "InputParameters": [{"key": "Target", "value": target}],
        "MessageName": "Create",
        "PrimaryEntityId": record,
        "PrimaryEntityName": TABLE,
    }
    assert json.dumps(event).find("MessageName") > MAX_BODY_BYTES

    answer = served.post("/records", event)

    assert answer.status_code == 200, answer.text[:300]
    assert contract_of(served.box, record) == served.world["contract"]
