"""The scenario format's landing-rule parts (contract `columns`, the Partner Center fields,
`landingRules`), each bad field named; and the Partner Center client reading those fields."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from work365_fn.adapters.partner_center import parse_subscription
from work365_fn.sandbox.scenario import (
    ScenarioError,
    contract_column_kinds,
    parse_scenario,
)

ACCOUNT = "a0000000-0000-4000-8000-000000000001"
CUSTOMER = "c0000000-0000-4000-8000-000000000001"
SUB = "e0000000-0000-4000-8000-000000000001"
BASE: dict[str, Any] = {
    "accounts": [{"id": ACCOUNT, "name": "A"}],
    "billingContracts": [
        {"id": "b0000000-0000-4000-8000-000000000001", "accountId": ACCOUNT, "isDefault": True,
         "columns": {"work365_billingtiming": 2, "work365_code": "ARR", "work365_flag": True}},
    ],
    "partnerCenter": {"customers": [{"id": CUSTOMER, "subscriptions": [
        {"id": SUB, "offerId": "DZH318Z0BPS6:0001:DZH318Z0BPS6", "isTrial": False,
         "parentSubscriptionId": None, "billingCycle": "monthly", "termDuration": None,
         "productType": {"id": "Azure", "displayName": "Azure"}},
    ]}]},
    "landingRules": {"rules": [{"name": "all", "action": "leave"}]},
}  # fmt: skip


def with_change(path: list[Any], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return raw


def test_a_scenario_with_landing_parts_loads() -> None:
    scenario = parse_scenario(BASE)
    assert scenario.landing_rules == BASE["landingRules"]
    assert contract_column_kinds(scenario) == {
        "work365_billingtiming": "Integer",
        "work365_code": "String",
        "work365_flag": "Boolean",
    }


SUB_PATH = ["partnerCenter", "customers", 0, "subscriptions", 0]
BAD = {
    "column name": (["billingContracts", 0, "columns"], {"Bad": 1}, "columns.Bad"),
    "column value": (["billingContracts", 0, "columns"], {"work365_x": 1.5}, "columns.work365_x"),
    "isTrial": ([*SUB_PATH, "isTrial"], "yes", "isTrial"),
    "parentSubscriptionId": ([*SUB_PATH, "parentSubscriptionId"], "x", "parentSubscriptionId"),
    "termDuration": ([*SUB_PATH, "termDuration"], 12, "termDuration"),
    "productType": ([*SUB_PATH, "productType"], {"id": 3}, "productType.id"),
    "landingRules": (["landingRules"], {"rules": [{"name": "x"}]}, "landingRules"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_landing_field_is_named(case: str) -> None:
    path, value, named = BAD[case]
    with pytest.raises(ScenarioError, match=named.replace(".", r"\.")):
        parse_scenario(with_change(path, value))


def test_a_column_of_two_types_is_refused() -> None:
    raw = copy.deepcopy(BASE)
    other = {**raw["billingContracts"][0], "id": "b0000000-0000-4000-8000-000000000002"}
    raw["billingContracts"].append({**other, "columns": {"work365_billingtiming": "2"}})
    with pytest.raises(ScenarioError, match="work365_billingtiming"):
        contract_column_kinds(parse_scenario(raw))


def test_the_client_reads_the_fields_rules_match() -> None:
    item = {
        "id": SUB.upper(),
        "offerId": "CFQ7TTC0LH18:0001:CFQ7TTC0LH18",
        "productType": {"id": "OnlineServicesNCE", "displayName": "OnlineServicesNCE"},
        "termDuration": "P1Y",
        "billingCycle": "annual",
        "isTrial": True,
        "parentSubscriptionId": CUSTOMER.upper(),
    }
    sub = parse_subscription(item, CUSTOMER)
    assert sub is not None
    assert (sub.product_type, sub.term_duration, sub.billing_cycle) == (
        "OnlineServicesNCE",
        "P1Y",
        "annual",
    )
    assert sub.is_trial is True
    assert sub.parent_subscription_id == CUSTOMER
    bare = parse_subscription({"id": SUB, "isTrial": "true", "parentSubscriptionId": "n/a"}, "c")
    assert bare is not None
    assert (bare.is_trial, bare.parent_subscription_id, bare.product_type) == (False, None, "")
