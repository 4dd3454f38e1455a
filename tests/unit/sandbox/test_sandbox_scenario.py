"""Scenario files: the built-in scenarios and validation errors that name the bad field."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import replace
from datetime import datetime
from importlib import resources
from typing import Any

import pytest

from work365_fn.adapters.partner_center import parse_subscription
from work365_fn.rules import ON_A_CONTRACT, Reason, World, plan
from work365_fn.rules.landing import parse_landing_rules
from work365_fn.rules.model import (
    AssociationSetting,
    BillingContract,
    ProviderAccount,
    SubscriptionRecord,
)
from work365_fn.sandbox.scenario import Scenario, ScenarioError, parse_scenario

G = "00000000-0000-4000-8000-0000000000{:02x}".format


def a_scenario(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "settings": {"associateDefaultBillingContract": True, "enabledOn": "2026-01-01T00:00:00Z"},
        "accounts": [{"id": G(1), "name": "Contoso"}],
        "providerAccounts": [{"id": G(2), "customerId": G(3), "accountId": G(1), "name": "PA"}],
        "billingContracts": [{"id": G(4), "accountId": G(1), "name": "D", "isDefault": True}],
        "subscriptions": [
            {"id": G(5), "providerSubscriptionId": G(6), "accountId": G(1),
             "createdOn": "2026-02-01T00:00:00Z", "name": "M365"},
        ],
        "partnerCenter": {
            "customers": [
                {"id": G(3), "companyName": "Contoso", "subscriptions": [{"id": G(6)}]},
            ]
        },
    }  # fmt: skip
    raw.update(overrides)
    return raw


def error_of(raw: object) -> str:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(raw, origin="test.json")
    return str(caught.value)


# --- what the rules make of a scenario (create mode off), to check what its description says ---


def world_of(scenario: Scenario) -> World:
    """The scenario as the sync reads it: the cutoff is the day the setting was enabled."""
    setting = AssociationSetting(
        enabled=scenario.setting.associate_default_billing_contract,
        since=scenario.setting.enabled_on,
        since_source="audit",
    )
    return World(
        setting=setting,
        subscriptions=[  # parsed as the client parses what Partner Center serves
            sub
            for c in scenario.customers
            for s in c.subscriptions
            if (sub := parse_subscription(s.raw, c.id)) is not None
        ],
        records=[
            SubscriptionRecord(
                id=r.id,
                provider_subscription_id=r.provider_subscription_id,
                account_id=r.account_id,
                billing_contract_id=r.billing_contract_id,
                created_on=r.created_on,
            )
            for r in scenario.subscriptions
        ],
        provider_accounts=[
            ProviderAccount(id=p.id, customer_id=p.customer_id, account_id=p.account_id)
            for p in scenario.provider_accounts
        ],
        contracts=[
            BillingContract(
                c.id,
                c.account_id,
                is_default=c.is_default,
                active=c.active,
                columns=tuple(c.columns.items()),
            )
            for c in scenario.billing_contracts
        ],
        landing=parse_landing_rules(scenario.landing_rules) if scenario.landing_rules else None,
    )


def expected_reasons(scenario: Scenario) -> dict[str, tuple[str, str | None]]:
    """PC subscription id (as served) -> (reason, billing contract after the run)."""
    served = {s.id.lower(): s.id for c in scenario.customers for s in c.subscriptions}
    return {
        served[d.subscription.id.lower()]: (
            d.reason.value,
            d.contract_id if d.reason in ON_A_CONTRACT else None,
        )
        for d in plan(world_of(scenario))
    }


def raw_description(name: str) -> list[str]:
    ref = resources.files("work365_fn.sandbox").joinpath("scenarios", f"{name}.json")
    lines: list[str] = json.loads(ref.read_text(encoding="utf-8"))["description"]
    return lines


def described_table(name: str) -> dict[str, tuple[str, str | None]]:
    """The expectation table written in the scenario's "description" lines."""
    table = {}
    for line in raw_description(name):
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 4 and cells[0] != "PC subscription id":
            table[cells[0]] = (cells[1], None if cells[2] == "null" else cells[2])
    return table


def described_counts(name: str) -> Counter[str]:
    """The "reason N, reason N, ..." summary line of the description."""
    [line] = [
        text for text in raw_description(name) if re.fullmatch(r"\s*([a-z-]+ \d+,? ?)+\.?\s*", text)
    ]
    return Counter({r: int(n) for r, n in re.findall(r"([a-z-]+) (\d+)", line)})


def described_sizes(name: str) -> tuple[int, int]:
    """(customers, subscriptions) as the description's "N customers, M subscriptions" says."""
    text = " ".join(raw_description(name))
    match = re.search(r"(\d+) (?:Partner Center )?customers, (\d+) subscriptions", text)
    assert match, f"the {name} description says how many customers and subscriptions it has"
    return int(match.group(1)), int(match.group(2))


# --- built-in scenarios ----------------------------------------------------------------------


def test_demo_loads_from_the_package() -> None:
    demo = Scenario.builtin("demo")
    assert len(demo.customers) == described_sizes("demo")[0]
    assert demo.setting.associate_default_billing_contract is True
    assert demo.setting.enabled_on == datetime.fromisoformat("2026-01-01T00:00:00+00:00")
    assert all(c.relationship for c in demo.customers)  # no 403: the demo run succeeds
    offers = {s.raw.get("offerName") for c in demo.customers for s in c.subscriptions}
    assert {"Microsoft 365 E3", "Microsoft 365 Business Premium", "Azure plan"} <= offers
    assert any(s.raw.get("billingType") == "usage" for c in demo.customers for s in c.subscriptions)


# The reasons only a rules file gives (the demo has none; the landing-rules scenario has).
LANDING_ONLY = {
    Reason.LANDING_RULE,
    Reason.NO_LANDING_CONTRACT,
    Reason.MULTIPLE_LANDING_CONTRACTS,
    Reason.EXCLUDED_BY_RULE,
}


def test_demo_yields_every_reason_but_setting_off_error_and_the_landing_ones() -> None:
    reasons = Counter(reason for reason, _ in expected_reasons(Scenario.builtin("demo")).values())
    # unresolved-customer comes only from deciding one record on its own (POST /api/records,
    # the webhook): a sync starts from Partner Center's customer, so it always knows it.
    records_only = {Reason.UNRESOLVED_CUSTOMER}
    assert set(reasons) == {r.value for r in Reason} - {Reason.SETTING_OFF, Reason.ERROR} - (
        LANDING_ONLY | records_only
    )
    assert reasons[Reason.DEFAULT_CONTRACT] >= 3


def test_the_landing_rules_scenario_yields_each_landing_reason_as_described() -> None:
    scenario = Scenario.builtin("landing-rules")
    expected = expected_reasons(scenario)
    assert described_table("landing-rules") == expected
    assert {reason for reason, _ in expected.values()} >= {r.value for r in LANDING_ONLY}
    assert scenario.landing_rules is not None
    without_rules = expected_reasons(replace(scenario, landing_rules=None))
    assert all(reason not in LANDING_ONLY for reason, _ in without_rules.values())


def test_demo_shows_no_default_contract_both_without_defaults_and_with_an_inactive_one() -> None:
    demo = Scenario.builtin("demo")
    world = world_of(demo)
    accounts = {d.account_id for d in plan(world) if d.reason is Reason.NO_DEFAULT_CONTRACT}
    inactive = {c.account_id for c in demo.billing_contracts if c.is_default and not c.active}
    assert accounts - inactive, "an Account without any default contract"
    assert accounts & inactive, "an Account whose only default is inactive"


def test_demo_description_table_matches_the_rules() -> None:
    assert described_table("demo") == expected_reasons(Scenario.builtin("demo"))


def test_demo_description_counts_match_its_table() -> None:
    table = Counter(reason for reason, _ in described_table("demo").values())
    assert described_counts("demo") == table


def test_demo_default_contract_cases_include_null_account_and_upper_case_customer() -> None:
    demo = Scenario.builtin("demo")
    expected = expected_reasons(demo)
    records = {r.provider_subscription_id: r for r in demo.subscriptions}
    assigned = [sid for sid, (reason, _) in expected.items() if reason == "default-contract"]
    assert any(records[sid.lower()].account_id is None for sid in assigned)
    upper = [c for c in demo.customers if c.id != c.id.lower()]
    assert upper, "one customer id is upper-case in Partner Center"
    assert any(expected[s.id][0] == "default-contract" for c in upper for s in c.subscriptions)


def test_demo_new_records_are_created_after_the_setting_was_enabled() -> None:
    demo = Scenario.builtin("demo")
    expected = expected_reasons(demo)
    by_sub = {r.provider_subscription_id: r for r in demo.subscriptions}
    for sid, (reason, _) in expected.items():
        record = by_sub.get(sid.lower())
        if record is not None and reason not in ("existing-subscription", "already-assigned"):
            assert record.created_on is not None
            assert record.created_on > datetime.fromisoformat("2026-01-01T00:00:00+00:00")


def test_setting_off_scenario_shows_setting_off() -> None:
    scenario = Scenario.builtin("setting-off")
    assert scenario.setting.associate_default_billing_contract is False
    expected = expected_reasons(scenario)
    assert Reason.SETTING_OFF in {reason for reason, _ in expected.values()}
    assert described_table("setting-off") == expected


def test_renamed_scenario_serves_other_names_and_its_description_matches_the_rules() -> None:
    scenario = Scenario.builtin("renamed")
    assert scenario.schema is not None
    assert scenario.schema.billing_contract.account == "work365_customer"
    assert scenario.schema.billing_contract.is_default != "work365_isdefault"
    assert described_table("renamed") == expected_reasons(scenario)


def test_a_scenario_schema_is_a_partial_schema_file_and_a_bad_one_is_named() -> None:
    raw = a_scenario(schema={"billingContract": {"account": "work365_customer"}})
    schema = parse_scenario(raw).schema
    assert schema is not None and schema.billing_contract.account == "work365_customer"
    assert parse_scenario(a_scenario()).schema is None
    assert "'schema' unknown key 'billingContract.acount'" in error_of(
        a_scenario(schema={"billingContract": {"acount": "x"}})
    )


@pytest.mark.parametrize("name", ["demo", "setting-off", "renamed"])
def test_a_builtin_has_the_customers_and_subscriptions_its_description_says(name: str) -> None:
    scenario = Scenario.builtin(name)
    served = [s for c in scenario.customers for s in c.subscriptions]
    assert described_sizes(name) == (len(scenario.customers), len(served))
    assert set(described_table(name)) == {s.id for s in served}


def test_unknown_builtin_is_named() -> None:
    with pytest.raises(ScenarioError, match="no built-in scenario named 'nope'"):
        Scenario.builtin("nope")


# --- validation ------------------------------------------------------------------------------


def test_minimal_scenario_parses() -> None:
    scenario = parse_scenario(a_scenario())
    assert scenario.customers[0].subscriptions[0].id == G(6)
    assert scenario.faults == ()


def test_partner_center_customer_id_keeps_its_case() -> None:
    raw = a_scenario()
    raw["partnerCenter"]["customers"][0]["id"] = G(3).upper()
    scenario = parse_scenario(raw)
    assert scenario.customers[0].id == G(3).upper()
    assert scenario.provider_accounts[0].customer_id == G(3)


def test_bad_guid_names_the_field() -> None:
    raw = a_scenario(accounts=[{"id": G(1), "name": "A"}, {"id": "not-a-guid", "name": "B"}])
    assert "'accounts[1].id' must be a GUID" in error_of(raw)


def test_unknown_field_is_named() -> None:
    raw = a_scenario()
    raw["billingContracts"][0]["isdefault"] = True
    assert "'billingContracts[0].isdefault' is not a known field" in error_of(raw)


def test_account_reference_must_exist() -> None:
    raw = a_scenario()
    raw["providerAccounts"][0]["accountId"] = G(99)
    assert "'providerAccounts[0].accountId' names no account" in error_of(raw)


def test_contract_reference_must_exist() -> None:
    raw = a_scenario()
    raw["subscriptions"][0]["billingContractId"] = G(98)
    assert "'subscriptions[0].billingContractId' names no contract" in error_of(raw)


def test_timestamp_must_be_iso() -> None:
    raw = a_scenario()
    raw["subscriptions"][0]["createdOn"] = "yesterday"
    assert "'subscriptions[0].createdOn' must be an ISO-8601 timestamp" in error_of(raw)


def test_pc_quantity_must_be_an_integer() -> None:
    raw = a_scenario()
    raw["partnerCenter"]["customers"][0]["subscriptions"][0]["quantity"] = "5"
    assert "'partnerCenter.customers[0].subscriptions[0].quantity' must be an integer" in error_of(
        raw
    )


def test_duplicate_customer_is_named() -> None:
    raw = a_scenario()
    twin = copy.deepcopy(raw["partnerCenter"]["customers"][0])
    twin["id"] = G(3).upper()
    raw["partnerCenter"]["customers"].append(twin)
    assert "'partnerCenter.customers[1].id' repeats partnerCenter.customers[0].id" in error_of(raw)


def test_setting_must_be_boolean() -> None:
    raw = a_scenario(settings={"associateDefaultBillingContract": "yes"})
    assert "'settings.associateDefaultBillingContract' must be true or false" in error_of(raw)


def test_fault_rules_are_validated_with_the_scenario() -> None:
    raw = a_scenario(faults=[{"kind": "429"}, {"kind": "418"}])
    message = error_of(raw)
    assert "scenario test.json" in message
    assert "'faults[1].kind' must be one of" in message


def test_fault_rule_field_errors_name_the_rule() -> None:
    raw = a_scenario(faults=[{"kind": "429", "times": 2, "every": 3}])
    assert "'faults[0].every' cannot be combined with times" in error_of(raw)


def test_faults_accept_the_empty_object_form() -> None:
    assert parse_scenario(a_scenario(faults={})).faults == ()
