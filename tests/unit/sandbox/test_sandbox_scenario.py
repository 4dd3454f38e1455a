"""Scenario files: the built-in scenarios and validation errors that name the bad field."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from importlib import resources
from typing import Any

import pytest

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


# --- a reference of the reason rules (DESIGN.md section 1), to check the demo's promises ------


def expected_reasons(scenario: Scenario) -> dict[str, tuple[str, str | None]]:
    """PC subscription id (as served) -> (reason, billing contract after the run), create mode off.
    Deliberately naive and independent of the service's association module."""
    cutoff = scenario.setting.enabled_on
    assert cutoff is not None
    records = {r.provider_subscription_id: r for r in scenario.subscriptions}
    out: dict[str, tuple[str, str | None]] = {}
    for customer in scenario.customers:
        pas = [p for p in scenario.provider_accounts if p.customer_id == customer.id.lower()]
        for sub in customer.subscriptions:
            out[sub.id] = _reason(scenario, records.get(sub.id.lower()), pas, cutoff)
    return out


def _reason(scenario: Scenario, record: Any, pas: list[Any], cutoff: datetime) -> tuple[str, Any]:
    if record is None:
        return "not-synced", None
    if record.billing_contract_id:
        return "already-assigned", record.billing_contract_id
    if record.created_on < cutoff:
        return "existing-subscription", None
    if not scenario.setting.associate_default_billing_contract:
        return "setting-off", None
    accounts = {p.account_id for p in pas}
    if not pas or None in accounts:
        return "unmapped-customer", None
    if len(accounts) > 1:
        return "ambiguous-provider-account", None
    (account,) = accounts
    if record.account_id is not None and record.account_id != account:
        return "account-mismatch", None
    defaults = [
        c.id
        for c in scenario.billing_contracts
        if c.account_id == account and c.is_default and c.active
    ]
    if not defaults:
        return "no-default-contract", None
    if len(defaults) > 1:
        return "multiple-default-contracts", None
    return "default-contract", defaults[0]


def described_table(name: str) -> dict[str, tuple[str, str | None]]:
    """The expectation table written in the scenario's "description" lines."""
    ref = resources.files("work365_fn.sandbox").joinpath("scenarios", f"{name}.json")
    raw = json.loads(ref.read_text(encoding="utf-8"))
    table = {}
    for line in raw["description"]:
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 4 and cells[0] != "PC subscription id":
            table[cells[0]] = (cells[1], None if cells[2] == "null" else cells[2])
    return table


# --- built-in scenarios ----------------------------------------------------------------------


def test_demo_loads_from_the_package() -> None:
    demo = Scenario.builtin("demo")
    assert len(demo.customers) >= 12
    assert demo.setting.associate_default_billing_contract is True
    assert demo.setting.enabled_on == datetime.fromisoformat("2026-01-01T00:00:00+00:00")
    assert all(c.relationship for c in demo.customers)  # no 403: the demo run succeeds
    offers = {s.raw.get("offerName") for c in demo.customers for s in c.subscriptions}
    assert {"Microsoft 365 E3", "Microsoft 365 Business Premium", "Azure plan"} <= offers
    assert any(s.raw.get("billingType") == "usage" for c in demo.customers for s in c.subscriptions)


def test_demo_yields_every_reason_but_setting_off_and_error() -> None:
    reasons = [reason for reason, _ in expected_reasons(Scenario.builtin("demo")).values()]
    assert set(reasons) == {
        "not-synced", "already-assigned", "existing-subscription", "unmapped-customer",
        "ambiguous-provider-account", "account-mismatch", "no-default-contract",
        "multiple-default-contracts", "default-contract",
    }  # fmt: skip
    assert reasons.count("default-contract") >= 3
    assert reasons.count("no-default-contract") == 2  # one without defaults, one inactive default


def test_demo_description_table_matches_the_rules() -> None:
    assert described_table("demo") == expected_reasons(Scenario.builtin("demo"))


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
    reasons = {reason for reason, _ in expected.values()}
    assert {"setting-off", "already-assigned", "existing-subscription"} <= reasons
    assert described_table("setting-off") == expected


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
