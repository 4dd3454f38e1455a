"""association.plan: every reason, every precedence pair, and the traps (case, inactive, other
accounts). Pure: no I/O, no clock."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from tests.builders import (
    ACCOUNT,
    AFTER,
    BEFORE,
    CUSTOMER,
    OTHER_ACCOUNT,
    SUBSCRIPTION,
    a_contract,
    a_provider_account,
    a_record,
    a_setting,
    a_subscription,
    a_world,
    only,
)
from work365_fn.rules import Action, Reason, plan
from work365_fn.rules.landing import LandingRules, parse_landing_rules


def test_new_mapped_subscription_gets_the_single_default() -> None:
    contract = a_contract(id="cccccccc-0000-0000-0000-0000000000aa")
    decision = only(plan(a_world(contracts=[contract])))
    assert decision.reason is Reason.DEFAULT_CONTRACT
    assert decision.action is Action.ASSIGN
    assert decision.contract_id == contract.id
    assert decision.account_id == ACCOUNT


def test_subscription_without_record_is_not_synced_when_create_mode_is_off() -> None:
    decision = only(plan(a_world(records=[])))
    assert (decision.reason, decision.action, decision.record) == (
        Reason.NOT_SYNCED,
        Action.NONE,
        None,
    )


def test_create_mode_creates_the_missing_record_bound_to_the_default() -> None:
    contract = a_contract()
    decision = only(plan(a_world(records=[], contracts=[contract], create_missing=True)))
    assert decision.reason is Reason.DEFAULT_CONTRACT
    assert decision.action is Action.CREATE
    assert decision.contract_id == contract.id


def test_create_mode_creates_without_contract_when_no_default() -> None:
    decision = only(plan(a_world(records=[], contracts=[], create_missing=True)))
    assert (decision.reason, decision.action) == (Reason.NO_DEFAULT_CONTRACT, Action.CREATE)
    assert decision.contract_id is None


def test_assigned_record_is_never_moved() -> None:
    mine = "cccccccc-0000-0000-0000-0000000000bb"
    decision = only(plan(a_world(records=[a_record(contract_id=mine)])))
    assert (decision.reason, decision.action, decision.contract_id) == (
        Reason.ALREADY_ASSIGNED,
        Action.NONE,
        mine,
    )


def test_existing_subscription_is_never_moved() -> None:
    decision = only(plan(a_world(records=[a_record(created_on=BEFORE)])))
    assert (decision.reason, decision.action) == (Reason.EXISTING_SUBSCRIPTION, Action.NONE)


def test_record_created_exactly_at_the_cutoff_is_new() -> None:
    world = a_world(setting=a_setting(since=AFTER), records=[a_record(created_on=AFTER)])
    assert only(plan(world)).reason is Reason.DEFAULT_CONTRACT


def test_record_without_createdon_is_treated_as_existing() -> None:
    decision = only(plan(a_world(records=[a_record(created_on=None)])))
    assert decision.reason is Reason.EXISTING_SUBSCRIPTION


def test_setting_off_leaves_new_subscriptions_alone() -> None:
    decision = only(plan(a_world(setting=a_setting(enabled=False))))
    assert (decision.reason, decision.action) == (Reason.SETTING_OFF, Action.NONE)


def test_no_setting_row_means_no_cutoff_and_setting_off() -> None:
    world = a_world(
        setting=a_setting(enabled=False, since=None), records=[a_record(created_on=BEFORE)]
    )
    assert only(plan(world)).reason is Reason.SETTING_OFF


def test_customer_without_provider_account_is_unmapped() -> None:
    decision = only(plan(a_world(provider_accounts=[])))
    assert decision.reason is Reason.UNMAPPED_CUSTOMER
    assert CUSTOMER in decision.message


def test_provider_account_without_account_is_unmapped() -> None:
    decision = only(plan(a_world(provider_accounts=[a_provider_account(account_id=None)])))
    assert decision.reason is Reason.UNMAPPED_CUSTOMER
    assert "has no Account" in decision.message


def test_two_provider_accounts_on_different_accounts_are_ambiguous() -> None:
    pas = [a_provider_account(), a_provider_account(account_id=OTHER_ACCOUNT)]
    decision = only(plan(a_world(provider_accounts=pas)))
    assert (decision.reason, decision.action) == (Reason.AMBIGUOUS_PROVIDER_ACCOUNT, Action.NONE)


def test_two_provider_accounts_on_the_same_account_are_fine() -> None:
    pas = [a_provider_account(), a_provider_account(account_id=ACCOUNT.upper())]
    assert only(plan(a_world(provider_accounts=pas))).reason is Reason.DEFAULT_CONTRACT


def test_provider_account_with_and_without_account_is_ambiguous() -> None:
    pas = [a_provider_account(), a_provider_account(account_id=None)]
    assert only(plan(a_world(provider_accounts=pas))).reason is Reason.AMBIGUOUS_PROVIDER_ACCOUNT


def test_record_under_another_account_is_a_mismatch() -> None:
    decision = only(plan(a_world(records=[a_record(account_id=OTHER_ACCOUNT)])))
    assert (decision.reason, decision.account_id) == (Reason.ACCOUNT_MISMATCH, ACCOUNT)
    assert OTHER_ACCOUNT in decision.message


def test_record_without_account_takes_the_provider_accounts_account() -> None:
    decision = only(plan(a_world(records=[a_record(account_id=None)])))
    assert (decision.reason, decision.account_id) == (Reason.DEFAULT_CONTRACT, ACCOUNT)


def test_account_without_default_has_no_default_contract() -> None:
    contracts = [a_contract(default=False)]
    assert only(plan(a_world(contracts=contracts))).reason is Reason.NO_DEFAULT_CONTRACT


def test_inactive_default_is_ignored() -> None:
    contracts = [a_contract(active=False)]
    assert only(plan(a_world(contracts=contracts))).reason is Reason.NO_DEFAULT_CONTRACT


def test_inactive_default_beside_an_active_one_is_not_counted() -> None:
    active = a_contract()
    decision = only(plan(a_world(contracts=[active, a_contract(active=False)])))
    assert (decision.reason, decision.contract_id) == (Reason.DEFAULT_CONTRACT, active.id)


def test_default_of_another_account_is_ignored() -> None:
    contracts = [a_contract(account_id=OTHER_ACCOUNT)]
    assert only(plan(a_world(contracts=contracts))).reason is Reason.NO_DEFAULT_CONTRACT


def test_two_defaults_are_never_guessed() -> None:
    contracts = [a_contract(name="Contoso Licences"), a_contract(name="Contoso Azure")]
    decision = only(plan(a_world(contracts=contracts)))
    assert (decision.reason, decision.action, decision.contract_id) == (
        Reason.MULTIPLE_DEFAULT_CONTRACTS,
        Action.NONE,
        None,
    )
    assert "'Contoso Azure', 'Contoso Licences'" in decision.message


def test_guids_compare_case_insensitively_everywhere() -> None:
    contract = a_contract(account_id=ACCOUNT.upper(), id="CCCCCCCC-0000-0000-0000-0000000000CC")
    world = a_world(
        subscriptions=[a_subscription(id=SUBSCRIPTION.upper(), customer_id=CUSTOMER.upper())],
        records=[a_record(provider_subscription_id=SUBSCRIPTION, account_id=ACCOUNT.upper())],
        provider_accounts=[a_provider_account(customer_id=CUSTOMER, account_id=ACCOUNT)],
        contracts=[contract],
    )
    decision = only(plan(world))
    assert decision.reason is Reason.DEFAULT_CONTRACT
    assert decision.contract_id == contract.id.lower()
    assert decision.account_id == ACCOUNT


def test_two_records_for_one_subscription_are_an_error_not_a_guess() -> None:
    decision = only(plan(a_world(records=[a_record(), a_record()])))
    assert (decision.reason, decision.action) == (Reason.ERROR, Action.NONE)
    assert "merge" in decision.message


def test_every_partner_center_subscription_gets_exactly_one_decision() -> None:
    subs = [a_subscription(id=f"55555555-5555-5555-5555-00000000000{i}") for i in range(5)]
    decisions = plan(a_world(subscriptions=subs, records=[]))
    assert [d.subscription.id for d in decisions] == [s.id for s in subs]
    assert all(d.reason is Reason.NOT_SYNCED for d in decisions)


# ---- precedence: for every pair of reasons whose conditions can hold together, the earlier
# reason of the table wins. Each condition is a change to the default (assignable) world.

Spec = dict[str, Any]


def _no_record(s: Spec) -> None:
    s["records"] = []


def _assigned(s: Spec) -> None:
    s["record"] = replace(s["record"], billing_contract_id="cccccccc-0000-0000-0000-0000000000ff")


def _existing(s: Spec) -> None:
    s["record"] = replace(s["record"], created_on=BEFORE)


def _off(s: Spec) -> None:
    s["setting"] = a_setting(enabled=False)


def _unresolved(s: Spec) -> None:  # a record decided alone, its customer unknown
    s["subscriptions"] = [a_subscription(customer_id="")]


def _unmapped(s: Spec) -> None:
    s["provider_accounts"] = []


def _ambiguous(s: Spec) -> None:
    s["provider_accounts"] = [a_provider_account(), a_provider_account(account_id=OTHER_ACCOUNT)]


def _mismatch(s: Spec) -> None:
    s["record"] = replace(s["record"], account_id=OTHER_ACCOUNT)


def _no_default(s: Spec) -> None:
    s["contracts"] = []


def _multiple(s: Spec) -> None:
    s["contracts"] = [a_contract(), a_contract()]


TIMING = "work365_billingtiming"


def _rule(then: dict[str, Any]) -> LandingRules:
    return parse_landing_rules({"rules": [{"name": "every subscription", **then}]})


_ARREARS = {"contract": {"column": TIMING, "equals": 2}}


def _landing_rule(s: Spec) -> None:
    s["landing"] = _rule(_ARREARS)
    s["extra_contracts"] = [a_contract(default=False, columns={TIMING: 2})]


def _no_landing_contract(s: Spec) -> None:
    s["landing"] = _rule(_ARREARS)


def _multiple_landing(s: Spec) -> None:
    s["landing"] = _rule(_ARREARS)
    s["extra_contracts"] = [a_contract(default=False, columns={TIMING: 2}) for _ in range(2)]


def _excluded(s: Spec) -> None:
    s["landing"] = _rule({"action": "leave"})


CONDITIONS: list[tuple[Reason, Callable[[Spec], None]]] = [
    (Reason.NOT_SYNCED, _no_record),
    (Reason.ALREADY_ASSIGNED, _assigned),
    (Reason.EXISTING_SUBSCRIPTION, _existing),
    (Reason.SETTING_OFF, _off),
    (Reason.UNRESOLVED_CUSTOMER, _unresolved),
    (Reason.UNMAPPED_CUSTOMER, _unmapped),
    (Reason.AMBIGUOUS_PROVIDER_ACCOUNT, _ambiguous),
    (Reason.ACCOUNT_MISMATCH, _mismatch),
    (Reason.LANDING_RULE, _landing_rule),
    (Reason.NO_LANDING_CONTRACT, _no_landing_contract),
    (Reason.MULTIPLE_LANDING_CONTRACTS, _multiple_landing),
    (Reason.EXCLUDED_BY_RULE, _excluded),
    (Reason.NO_DEFAULT_CONTRACT, _no_default),
    (Reason.MULTIPLE_DEFAULT_CONTRACTS, _multiple),
]

# Pairs that change the same thing cannot hold together.
EXCLUSIVE = {
    frozenset({Reason.UNMAPPED_CUSTOMER, Reason.AMBIGUOUS_PROVIDER_ACCOUNT}),
    frozenset({Reason.NO_DEFAULT_CONTRACT, Reason.MULTIPLE_DEFAULT_CONTRACTS}),
    # One rules file at a time: the four landing reasons come from different rules.
    *(
        frozenset(pair)
        for pair in itertools.combinations(
            [
                Reason.LANDING_RULE,
                Reason.NO_LANDING_CONTRACT,
                Reason.MULTIPLE_LANDING_CONTRACTS,
                Reason.EXCLUDED_BY_RULE,
            ],
            2,
        )
    ),
}


def _build(changes: list[Callable[[Spec], None]]) -> Any:
    spec: Spec = {"record": a_record()}
    for change in changes:
        change(spec)
    records = spec.pop("records", [spec["record"]])
    spec.pop("record")
    extra = spec.pop("extra_contracts", [])
    if extra:  # the landing rule's contracts, beside whatever the defaults are
        spec["contracts"] = [*spec.get("contracts", a_world().contracts), *extra]
    return a_world(records=records, **spec)


PAIRS = [
    pytest.param(first, second, id=f"{first[0].value}>{second[0].value}")
    for first, second in itertools.combinations(CONDITIONS, 2)
    if frozenset({first[0], second[0]}) not in EXCLUSIVE
]


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_earlier_reason_wins(
    first: tuple[Reason, Callable[[Spec], None]], second: tuple[Reason, Callable[[Spec], None]]
) -> None:
    # Applied in both orders so a condition cannot hide the other by overwriting it.
    for changes in ([first[1], second[1]], [second[1], first[1]]):
        assert only(plan(_build(changes))).reason is first[0]


@pytest.mark.parametrize(("reason", "change"), CONDITIONS, ids=[c[0].value for c in CONDITIONS])
def test_each_condition_alone_gives_its_reason(
    reason: Reason, change: Callable[[Spec], None]
) -> None:
    assert only(plan(_build([change]))).reason is reason


def test_the_precedence_table_is_the_order_of_the_reasons() -> None:
    """CONDITIONS spell the table out by hand; `Reason` declares it in the same order, and a new
    reason cannot skip the precedence tests (default-contract is the untouched world; error,
    two records for one subscription, is tested above)."""
    assert [*(reason for reason, _ in CONDITIONS), Reason.DEFAULT_CONTRACT, Reason.ERROR] == list(
        Reason
    )
    assert only(plan(_build([]))).reason is Reason.DEFAULT_CONTRACT
