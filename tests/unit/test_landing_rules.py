"""Landing rules (rules/landing.py): parsing with errors that name the rule and the field, each
`when` field, the order of the rules, "parent", "leave", one/several/no selected contracts, and
the loader of WORK365_LANDING_RULES_FILE."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.builders import (
    ACCOUNT,
    CUSTOMER,
    OTHER_ACCOUNT,
    SUBSCRIPTION,
    a_contract,
    a_provider_account,
    a_record,
    a_subscription,
    a_world,
    new_id,
    only,
)
from work365_fn.adapters.landing_rules import load_landing_rules
from work365_fn.errors import ConfigError
from work365_fn.rules import Reason, World, landing_trail, plan
from work365_fn.rules.fixes import landing_fix
from work365_fn.rules.landing import (
    AZURE_PLAN_PRODUCT,
    LandingRules,
    LandingRulesError,
    parse_landing_rules,
    value_type_problem,
)
from work365_fn.rules.model import PcSubscription

TIMING = "work365_billingtiming"
ARREARS = {"column": TIMING, "equals": 2}
IN_ADVANCE = {"column": TIMING, "equals": 1}


def rules(*items: dict[str, Any]) -> LandingRules:
    return parse_landing_rules({"rules": list(items)})


def rule(name: str = "r", when: dict[str, Any] | None = None, **then: Any) -> dict[str, Any]:
    return {"name": name, "when": when or {}, **(then or {"contract": ARREARS})}


def licences(default: bool = True) -> Any:
    return a_contract(default=default, columns={TIMING: 1}, name="Licences")


def arrears(default: bool = False, active: bool = True, account: str = ACCOUNT) -> Any:
    return a_contract(
        account_id=account, default=default, active=active, columns={TIMING: 2}, name="Arrears"
    )


def world_with(sub: PcSubscription, landing: LandingRules, *contracts: Any) -> World:
    return a_world(
        subscriptions=[sub],
        records=[a_record(provider_subscription_id=sub.id)],
        provider_accounts=[a_provider_account(customer_id=sub.customer_id)],
        contracts=list(contracts) or [licences(), arrears()],
        landing=landing,
    )


AZURE = replace(
    a_subscription(name="Azure plan"),
    offer_id="DZH318Z0BPS6:0001:DZH318Z0BPS6",
    billing_type="usage",
    product_type="Azure",
    billing_cycle="monthly",
)
LICENCE = replace(
    a_subscription(),
    offer_id="CFQ7TTC0LH18:0001:CFQ7TTC0LH18",
    billing_type="license",
    product_type="OnlineServicesNCE",
    term_duration="P1Y",
    billing_cycle="annual",
)


# ---- each `when` field ------------------------------------------------------------------------

# (when, a subscription it matches, one it does not)
LEGACY_OFFER = "031C9E47-4802-4248-838E-778FB1D2CC05"
WHEN_CASES = {
    "billingType": ({"billingType": "usage"}, AZURE, LICENCE),
    "product": ({"product": AZURE_PLAN_PRODUCT.lower()}, AZURE, LICENCE),
    "product:sku": (
        {"product": "cfq7ttc0lh18:0001"},
        LICENCE,
        replace(LICENCE, offer_id="CFQ7TTC0LH18:0002:X"),
    ),
    "offerId": (
        {"offerId": LEGACY_OFFER.lower()},
        replace(LICENCE, offer_id=LEGACY_OFFER),
        LICENCE,
    ),
    "productType": ({"productType": "azure"}, AZURE, LICENCE),
    "termDuration": ({"termDuration": "p1y"}, LICENCE, replace(LICENCE, term_duration="P1M")),
    "billingCycle": ({"billingCycle": "Annual"}, LICENCE, AZURE),
    "isTrial": ({"isTrial": True}, replace(LICENCE, is_trial=True), LICENCE),
    "isAddOn": ({"isAddOn": True}, replace(LICENCE, parent_subscription_id=new_id()), LICENCE),
    "customerIds": (
        {"customerIds": [CUSTOMER.upper()]},
        LICENCE,
        replace(LICENCE, customer_id=new_id()),
    ),
}


@pytest.mark.parametrize("field", list(WHEN_CASES))
def test_each_when_field_decides_whether_the_rule_applies(field: str) -> None:
    when, matching, other = WHEN_CASES[field]
    landing = rules(rule("to arrears", when))
    world = world_with(matching, landing)
    hit = only(plan(world))
    assert hit.reason is Reason.LANDING_RULE
    assert hit.contract_id == only([c.id for c in world.contracts if c.value(TIMING) == 2])
    assert "rule 1 'to arrears'" in hit.message
    missed = only(plan(world_with(other, landing)))
    assert missed.reason is Reason.DEFAULT_CONTRACT  # no rule matched: today's rule


def test_all_given_conditions_must_hold() -> None:
    landing = rules(rule("azure plan", {"billingType": "usage", "product": "DZH318Z0BPS6"}))
    legacy_azure = replace(AZURE, offer_id="MS-AZR-0145P")
    assert only(plan(world_with(AZURE, landing))).reason is Reason.LANDING_RULE
    assert only(plan(world_with(legacy_azure, landing))).reason is Reason.DEFAULT_CONTRACT


def test_the_first_matching_rule_decides() -> None:
    landing = rules(
        rule("licences in advance", {"billingType": "license"}, contract=IN_ADVANCE),
        rule("everything to arrears", {}, contract=ARREARS),
    )
    world = world_with(LICENCE, landing)
    decision = only(plan(world))
    assert decision.contract_id == only([c.id for c in world.contracts if c.value(TIMING) == 1])
    assert "rule 1" in decision.message
    azure = only(plan(world_with(AZURE, landing)))
    assert "rule 2 'everything to arrears'" in azure.message


def test_leave_excludes_and_stops_the_walk() -> None:
    landing = rules(
        rule("trials", {"isTrial": True}, action="leave"), rule("rest", {}, contract=ARREARS)
    )
    trial = replace(LICENCE, is_trial=True)
    decision = only(plan(world_with(trial, landing)))
    assert decision.reason is Reason.EXCLUDED_BY_RULE
    assert decision.contract_id is None
    assert "rule 1 'trials'" in decision.message
    # The same subscription once converted (same id, isTrial flipped) is decided by rule 2.
    assert only(plan(world_with(LICENCE, landing))).reason is Reason.LANDING_RULE


def test_no_active_contract_with_the_value_is_no_landing_contract() -> None:
    landing = rules(rule("arrears"))
    world = world_with(LICENCE, landing, licences(), arrears(active=False))
    decision = only(plan(world))
    assert decision.reason is Reason.NO_LANDING_CONTRACT  # the inactive one never counts
    assert decision.account_id == ACCOUNT


def test_several_selected_with_one_default_among_them_take_the_default() -> None:
    chosen = arrears(default=True)
    world = world_with(LICENCE, rules(rule("arrears")), chosen, arrears())
    assert only(plan(world)).contract_id == chosen.id


def test_several_selected_without_exactly_one_default_are_never_guessed() -> None:
    for contracts in ([arrears(), arrears()], [arrears(default=True), arrears(default=True)]):
        decision = only(plan(world_with(LICENCE, rules(rule("arrears")), *contracts)))
        assert decision.reason is Reason.MULTIPLE_LANDING_CONTRACTS
        assert decision.contract_id is None


def test_another_accounts_contract_is_never_selected() -> None:
    world = world_with(LICENCE, rules(rule("arrears")), licences(), arrears(account=OTHER_ACCOUNT))
    assert only(plan(world)).reason is Reason.NO_LANDING_CONTRACT


def test_column_values_compare_by_type() -> None:
    text = a_contract(default=False, columns={TIMING: "2"})
    flag = a_contract(default=False, columns={TIMING: True})
    world = world_with(LICENCE, rules(rule("arrears")), text, flag)
    assert only(plan(world)).reason is Reason.NO_LANDING_CONTRACT  # "2" and true are not 2
    named = rules(rule("by text", contract={"column": TIMING, "equals": "ARREARS"}))
    upper = a_contract(default=False, columns={TIMING: "Arrears"})
    assert only(plan(world_with(LICENCE, named, upper))).contract_id == upper.id


# ---- "parent" ---------------------------------------------------------------------------------

PARENT_ID = "66666666-6666-6666-6666-666666666666"
ADD_ON = replace(LICENCE, id=SUBSCRIPTION, parent_subscription_id=PARENT_ID.upper())
FOLLOW = rules(rule("add-ons", {"isAddOn": True}, contract="parent"), rule("rest", {}))


def parent_world(parent_contract: str | None, *contracts: Any, parent_new: bool = False) -> World:
    parent = replace(LICENCE, id=PARENT_ID)
    created = a_record(provider_subscription_id=PARENT_ID, contract_id=parent_contract)
    return a_world(
        subscriptions=[ADD_ON, parent] if parent_new else [ADD_ON],
        records=[a_record(provider_subscription_id=SUBSCRIPTION), created],
        contracts=list(contracts),
        landing=FOLLOW,
    )


def test_an_add_on_follows_its_parents_contract() -> None:
    theirs = licences(default=False)
    decision = plan(parent_world(theirs.id, licences(), theirs, arrears()))[0]
    assert (decision.reason, decision.contract_id) == (Reason.LANDING_RULE, theirs.id)
    assert PARENT_ID in decision.message


def test_a_parent_landing_in_the_same_run_is_followed() -> None:
    world = parent_world(None, licences(), arrears(), parent_new=True)
    add_on, parent = plan(world)
    assert parent.reason is Reason.LANDING_RULE  # rule 2 puts the parent on arrears
    assert (add_on.reason, add_on.contract_id) == (Reason.LANDING_RULE, parent.contract_id)


@pytest.mark.parametrize(
    "parent_contract",
    [None, "cccccccc-0000-0000-0000-0000000000ff"],
    ids=["parent-without-contract", "parent-on-a-contract-not-active-here"],
)
def test_without_a_usable_parent_contract_the_next_rule_decides(
    parent_contract: str | None,
) -> None:
    decision = only(plan(parent_world(parent_contract, licences(), arrears())))
    assert "rule 2 'rest'" in decision.message


def test_a_cycle_of_parents_ends_on_the_default() -> None:
    """Each asks the other's plan once; the second ask finds no parent contract, so the default
    decides it, and the first follows that."""
    a = replace(LICENCE, id=SUBSCRIPTION, parent_subscription_id=PARENT_ID)
    b = replace(LICENCE, id=PARENT_ID, parent_subscription_id=SUBSCRIPTION)
    landing = rules(rule("add-ons", {"isAddOn": True}, contract="parent"))
    world = a_world(
        subscriptions=[a, b],
        records=[a_record(provider_subscription_id=s.id) for s in (a, b)],
        contracts=[licences()],
        landing=landing,
    )
    default = only(world.contracts).id
    assert [(d.reason, d.contract_id) for d in plan(world)] == [(Reason.LANDING_RULE, default)] * 2


# ---- no rules: today's decisions --------------------------------------------------------------


def test_without_rules_or_with_no_rule_the_decisions_are_todays() -> None:
    subs = [AZURE, replace(LICENCE, id=new_id()), replace(LICENCE, id=new_id(), is_trial=True)]
    base = a_world(
        subscriptions=subs,
        records=[a_record(provider_subscription_id=s.id) for s in subs],
        contracts=[licences(), arrears()],
    )
    assert plan(replace(base, landing=rules())) == plan(base)
    assert plan(replace(base, landing=rules(rule("never", {"customerIds": [new_id()]})))) == plan(
        base
    )


def test_the_trail_says_why_each_rule_before_the_deciding_one_passed() -> None:
    landing = rules(
        rule("azure", {"product": AZURE_PLAN_PRODUCT}),
        rule("trials", {"isTrial": True}, action="leave"),
        rule("licences", {"billingType": "license"}, contract=IN_ADVANCE),
    )
    world = world_with(LICENCE, landing)
    trail = landing_trail(world, only(plan(world)))
    assert trail is not None
    assert [(v.rule.number, v.decided) for v in trail] == [(1, False), (2, False), (3, True)]
    assert "not of product 'DZH318Z0BPS6'" in trail[0].why
    assert "isTrial is False, not True" in trail[1].why
    assert landing_trail(replace(world, landing=None), only(plan(world))) is None


# ---- validation: every error names the rule and the field --------------------------------------


def when(**fields: Any) -> dict[str, Any]:
    return {"name": "A", "when": fields, "contract": ARREARS}


# a bad rule named "A", and the field its error must name
BAD = {
    "unknown rule field": ({"name": "A", "contract": ARREARS, "then": 1}, "'then'"),
    "unknown when field": (when(sku="x"), "'when.sku'"),
    "unknown contract field": ({"name": "A", "contract": {**ARREARS, "is": 1}}, "'contract.is'"),
    "billingType": (when(billingType="monthly"), "'when.billingType'"),
    "termDuration": (when(termDuration="P2Y"), "'when.termDuration'"),
    "billingCycle": (when(billingCycle="weekly"), "'when.billingCycle'"),
    "product": (when(product="A:B:C"), "'when.product'"),
    "isTrial": (when(isTrial="yes"), "'when.isTrial'"),
    "customerIds": (when(customerIds=["x"]), "'when.customerIds'"),
    "column": ({"name": "A", "contract": {"column": "Bad Name", "equals": 1}}, "'contract.column'"),
    "equals": ({"name": "A", "contract": {"column": TIMING, "equals": None}}, "'contract.equals'"),
    "contract": ({"name": "A", "contract": "sibling"}, "'contract'"),
    "action": ({"name": "A", "action": "skip"}, "'action'"),
    "both": ({"name": "A", "action": "leave", "contract": ARREARS}, "'contract'"),
    "neither": ({"name": "A"}, "'action'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_rule_is_refused_naming_the_rule_and_the_field(case: str) -> None:
    item, field = BAD[case]
    with pytest.raises(LandingRulesError) as caught:
        parse_landing_rules({"rules": [item]})
    assert str(caught.value).startswith("rule 1 'A': ")
    assert field in str(caught.value)


def test_a_rule_without_a_name_is_named_by_its_number() -> None:
    with pytest.raises(LandingRulesError, match=r"^rule 1: field 'name'"):
        parse_landing_rules({"rules": [{"contract": ARREARS}]})


def test_the_rule_number_counts_from_one() -> None:
    with pytest.raises(LandingRulesError, match=r"rule 2 'B': .*'when.isAddOn'"):
        rules(rule("A"), rule("B", {"isAddOn": 1}))


def test_two_rules_may_not_share_a_name() -> None:
    with pytest.raises(LandingRulesError, match=r"rule 2 'a'.*repeats the name of rule 1"):
        rules(rule("A"), rule("a"))


@pytest.mark.parametrize("doc", [[], {"rule": []}, {"rules": {}}, {"rules": [1]}])
def test_a_document_of_the_wrong_shape_is_refused(doc: Any) -> None:
    with pytest.raises(LandingRulesError):
        parse_landing_rules(doc)


def test_columns_lists_what_the_reader_must_select() -> None:
    landing = rules(rule("a"), rule("b", contract=IN_ADVANCE), rule("c", action="leave"))
    assert landing.columns == (TIMING,)
    assert [r.label for r in landing.rules_using(TIMING)] == ["rule 1 'a'", "rule 2 'b'"]


# ---- the setting: a path or inline JSON, through safe_json --------------------------------------


DOC = {"rules": [rule("Azure plan to arrears", {"product": AZURE_PLAN_PRODUCT})]}


def test_the_setting_takes_inline_json_or_a_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(DOC), encoding="utf-8")
    from_file = load_landing_rules(str(path))
    inline = load_landing_rules("  " + json.dumps(DOC))
    assert from_file == inline == parse_landing_rules(DOC)
    assert load_landing_rules(None) is None
    assert load_landing_rules(" ") is None


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("/no/such/rules.json", "cannot read /no/such/rules.json"),
        ('{"rules": [}', "WORK365_LANDING_RULES_FILE (inline JSON) is not valid JSON"),
        ('{"rules": [], "rules": []}', "appears twice"),
        ('{"rules": [{"name": "X", "when": {"isTrail": true}, "action": "leave"}]}', "rule 1 'X'"),
    ],
)
def test_a_bad_setting_is_a_configuration_error_naming_it(source: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_landing_rules(source)
    assert "WORK365_LANDING_RULES_FILE" in str(caught.value)
    assert expected in str(caught.value)


def test_a_file_with_a_bom_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(DOC).encode())
    with pytest.raises(ConfigError, match="byte order mark"):
        load_landing_rules(str(path))


# ---- a rule's value against the column's type (check-schema, and before a run) ----------------


@pytest.mark.parametrize(
    ("attribute_type", "fits", "refused"),
    [
        ("Picklist", [2, 2.0], ["Arrears", True, 2.5]),
        ("State", [0], ["Active", False]),
        ("Status", [1], ["1"]),
        ("Integer", [7], ["7", True]),
        ("BigInt", [7], [1.5]),
        ("Decimal", [1.5, 2], ["1.5", True]),
        ("Money", [10], ["10"]),
        ("Boolean", [True, False], [1, "true"]),
        ("String", ["Arrears"], [2, True]),
        ("Memo", ["x"], [1]),
        ("Uniqueidentifier", [ACCOUNT], ["Arrears", 1]),
        ("Lookup", [], [ACCOUNT, "Arrears", 2]),
        ("Customer", [], [ACCOUNT]),
        ("DateTime", [], ["2026-01-01"]),
    ],
)
def test_a_rules_value_must_fit_the_columns_type(
    attribute_type: str, fits: list[Any], refused: list[Any]
) -> None:
    for value in fits:
        assert value_type_problem(attribute_type, value) is None, value
    for value in refused:
        problem = value_type_problem(attribute_type, value)
        assert problem and attribute_type in problem, value


def test_the_fix_for_several_selected_contracts_never_asks_for_a_second_default() -> None:
    current_default = licences(default=True)
    first, second = arrears(), arrears()
    world = world_with(LICENCE, rules(rule("arrears")), current_default, first, second)
    decision = only(plan(world))
    assert decision.reason is Reason.MULTIPLE_LANDING_CONTRACTS
    fix = landing_fix(decision.reason, "Contoso", decision.message)
    assert "rule 1 'arrears'" in fix and "pick exactly one" in fix
    # The old sentence ("set Is Default = Yes on exactly one of them") gave the Account a
    # second default; the new one only moves it from the current default.
    assert "set Is Default = Yes on" not in fix
    assert "move Is Default = Yes to it (off the current default" in fix
    # Following either branch of the sentence (one Arrears contract left; Is Default moved,
    # still one) lands the subscription.
    changed_column = replace(second, columns=((TIMING, 1),))
    moved = [replace(current_default, is_default=False), replace(first, is_default=True), second]
    for contracts in ([current_default, first, changed_column], moved):
        after = world_with(LICENCE, rules(rule("arrears")), *contracts)
        assert only(plan(after)).reason is Reason.LANDING_RULE
