"""Properties of the landing rules over random rule sets and tenants (hypothesis): exactly one
decision per subscription, never an assignment to an inactive contract or to another Account's
contract, and the rules applied in order."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import AFTER, a_provider_account, a_record, a_setting
from work365_fn.rules import LANDS, Reason, World, plan
from work365_fn.rules.landing import LandingRules, mismatches, parse_landing_rules, same_value
from work365_fn.rules.model import BillingContract, PcSubscription

TIMING = "work365_billingtiming"
ACCOUNTS = ["aaaaaaaa-0000-4000-8000-000000000001", "aaaaaaaa-0000-4000-8000-000000000002"]
CUSTOMERS = ["cccccccc-0000-4000-8000-000000000001", "cccccccc-0000-4000-8000-000000000002"]
OFFERS = ["DZH318Z0BPS6:0001:DZH318Z0BPS6", "CFQ7TTC0LH18:0001:CFQ7TTC0LH18", "MS-AZR-0145P"]
LANDING_REASONS = {
    Reason.LANDING_RULE,
    Reason.NO_LANDING_CONTRACT,
    Reason.MULTIPLE_LANDING_CONTRACTS,
    Reason.EXCLUDED_BY_RULE,
}
PAST_THE_ACCOUNT = LANDING_REASONS | {
    Reason.DEFAULT_CONTRACT,
    Reason.NO_DEFAULT_CONTRACT,
    Reason.MULTIPLE_DEFAULT_CONTRACTS,
}


def guid(prefix: str, n: int) -> str:
    return f"{prefix}-0000-4000-8000-{n:012d}"


WHENS = st.fixed_dictionaries(
    {},
    optional={
        "billingType": st.sampled_from(["usage", "license", "none"]),
        "product": st.sampled_from(["DZH318Z0BPS6", "cfq7ttc0lh18", "CFQ7TTC0LH18:0001"]),
        "isTrial": st.booleans(),
        "isAddOn": st.booleans(),
        "termDuration": st.sampled_from(["P1M", "P1Y"]),
        "customerIds": st.lists(st.sampled_from(CUSTOMERS), min_size=1, unique=True),
    },
)
THENS = st.one_of(
    st.builds(lambda v: {"contract": {"column": TIMING, "equals": v}}, st.sampled_from([1, 2])),
    st.just({"contract": "parent"}),
    st.just({"action": "leave"}),
)


@st.composite
def rule_sets(draw: Any) -> LandingRules:
    items = draw(st.lists(st.tuples(WHENS, THENS), max_size=4))
    return parse_landing_rules(
        {"rules": [{"name": f"r{i}", "when": w, **t} for i, (w, t) in enumerate(items)]}
    )


@st.composite
def tenants(draw: Any) -> World:
    contracts = [
        BillingContract(
            id=guid("bbbbbbbb", i),
            account_id=draw(st.sampled_from(ACCOUNTS)),
            is_default=draw(st.booleans()),
            active=draw(st.booleans()),
            name=f"contract {i}",
            columns=((TIMING, draw(st.sampled_from([1, 2, None]))),),
        )
        for i in range(draw(st.integers(0, 6)))
    ]
    count = draw(st.integers(1, 6))
    ids = [guid("dddddddd", i) for i in range(count)]
    subs = [
        PcSubscription(
            id=ids[i],
            customer_id=draw(st.sampled_from(CUSTOMERS)),
            offer_id=draw(st.sampled_from(OFFERS)),
            billing_type=draw(st.sampled_from(["usage", "license", "none"])),
            term_duration=draw(st.sampled_from(["P1M", "P1Y", ""])),
            is_trial=draw(st.booleans()),
            parent_subscription_id=draw(st.one_of(st.none(), st.sampled_from(ids))),
        )
        for i in range(count)
    ]
    # Some records already carry a contract (any contract, even another Account's): a parent.
    records = [
        a_record(
            provider_subscription_id=s.id,
            account_id=None,
            created_on=AFTER,
            contract_id=draw(st.one_of(st.none(), st.sampled_from([c.id for c in contracts])))
            if contracts
            else None,
        )
        for s in subs
    ]
    return World(
        setting=a_setting(),
        subscriptions=subs,
        records=records,
        provider_accounts=[
            a_provider_account(customer_id=c, account_id=a)
            for c, a in zip(CUSTOMERS, ACCOUNTS, strict=True)
        ],
        contracts=contracts,
        landing=draw(rule_sets()),
    )


def deciding_rule(message: str) -> int | None:
    found = re.match(r"rule (\d+) ", message)
    return int(found.group(1)) if found else None


@settings(max_examples=300, deadline=None)
@given(tenants())
def test_landing_rules_hold_their_promises(world: World) -> None:
    decisions = plan(world)
    assert [d.subscription.id for d in decisions] == [s.id for s in world.subscriptions]
    assert all(isinstance(d.reason, Reason) for d in decisions)  # exactly one reason each
    by_id = {c.id: c for c in world.contracts}
    account_of = dict(zip(CUSTOMERS, ACCOUNTS, strict=True))
    assert world.landing is not None
    for d in decisions:
        if d.reason in LANDS:
            contract = by_id[d.contract_id or ""]
            assert contract.active
            assert contract.account_id == d.account_id == account_of[d.subscription.customer_id]
        if d.reason not in PAST_THE_ACCOUNT:
            continue
        decided = deciding_rule(d.message) if d.reason in LANDING_REASONS else None
        assert (decided is not None) is (d.reason in LANDING_REASONS)
        for rule in world.landing.rules[: (decided or len(world.landing.rules) + 1) - 1]:
            # every rule before the deciding one passed: its `when` failed, or it asked for a
            # parent contract there was none of
            assert mismatches(rule.when, d.subscription) or rule.parent
        if decided is not None:
            rule = world.landing.rules[decided - 1]
            assert not mismatches(rule.when, d.subscription)
            if rule.contract is not None and d.reason is Reason.LANDING_RULE:
                assert same_value(by_id[d.contract_id or ""].value(TIMING), rule.contract.equals)


@settings(max_examples=100, deadline=None)
@given(tenants())
def test_without_rules_the_decisions_are_todays(world: World) -> None:
    """The same tenant without a rules file, or with an empty one, decides alike; the extra
    non-default contracts a read with rules brings in change nothing without rules."""
    bare = replace(world, landing=None)
    assert plan(replace(world, landing=LandingRules(()))) == plan(bare)
    assert all(d.reason not in LANDING_REASONS for d in plan(bare))
