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
from work365_fn.rules import LANDS, Action, Decision, Reason, World, plan
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


ACCOUNT_OF = dict(zip(CUSTOMERS, ACCOUNTS, strict=True))


def active_of(world: World, sub: PcSubscription) -> list[BillingContract]:
    account = ACCOUNT_OF[sub.customer_id]
    return [c for c in world.contracts if c.account_id == account and c.active]


def reaches_a_cycle(world: World, sub: PcSubscription) -> bool:
    """Whether following parents from `sub` comes back to a subscription already passed (the
    rules then stop the walk; the reference below does not model that)."""
    by_id = {s.id: s for s in world.subscriptions}
    seen: set[str] = set()
    current: PcSubscription | None = sub
    while current is not None and current.parent_subscription_id:
        if current.id in seen:
            return True
        seen.add(current.id)
        current = by_id.get(current.parent_subscription_id)
    return False


def usable_parent(world: World, sub: PcSubscription, decided: dict[str, Decision]) -> str | None:
    """Reference: the parent's contract (its record's, else the one this plan lands it on), when
    it is one of the subscription's Account's active contracts."""
    parent = sub.parent_subscription_id
    if not parent:
        return None
    [record] = [r for r in world.records if r.provider_subscription_id == parent]
    planned = decided[parent]
    contract = record.billing_contract_id or (
        planned.contract_id if planned.reason in LANDS else None
    )
    return contract if contract in {c.id for c in active_of(world, sub)} else None


def first_match(
    world: World, sub: PcSubscription, decided: dict[str, Decision]
) -> tuple[Reason, str | None, int] | None:
    """Reference evaluation, written apart from rules/landing.py: the first rule whose `when`
    holds and that decides, as (reason, contract, rule number); None: no rule decides."""
    assert world.landing is not None
    active = active_of(world, sub)
    for rule in world.landing.rules:
        if mismatches(rule.when, sub):
            continue
        if rule.leave:
            return Reason.EXCLUDED_BY_RULE, None, rule.number
        if rule.parent:
            parent = usable_parent(world, sub, decided)
            if parent is None:
                continue  # passed over: the next rule
            return Reason.LANDING_RULE, parent, rule.number
        assert rule.contract is not None
        picked = [c for c in active if same_value(c.value(TIMING), rule.contract.equals)]
        defaults = [c for c in picked if c.is_default]
        if len(picked) == 1 or (picked and len(defaults) == 1):
            return (
                Reason.LANDING_RULE,
                (picked if len(picked) == 1 else defaults)[0].id,
                rule.number,
            )
        if not picked:
            return Reason.NO_LANDING_CONTRACT, None, rule.number
        return Reason.MULTIPLE_LANDING_CONTRACTS, None, rule.number
    return None


@settings(max_examples=300, deadline=None)
@given(tenants())
def test_landing_rules_hold_their_promises(world: World) -> None:
    decisions = plan(world)
    # Exactly one decision per subscription id, in the tenant's order.
    assert [d.subscription.id for d in decisions] == [s.id for s in world.subscriptions]
    assert len({d.subscription.id for d in decisions}) == len(world.subscriptions)
    decided = {d.subscription.id: d for d in decisions}
    for d in decisions:
        # The reason agrees with the action and the contract.
        if d.reason in LANDS:
            assert d.action is Action.ASSIGN  # every subscription here has its record
            assert d.contract_id in {c.id for c in active_of(world, d.subscription)}
        elif d.reason in LANDING_REASONS:  # left unassigned by a rule
            assert (d.action, d.contract_id) == (Action.NONE, None)
        if d.reason is Reason.DEFAULT_CONTRACT:
            [default] = [c for c in active_of(world, d.subscription) if c.is_default]
            assert d.contract_id == default.id
        if d.reason not in PAST_THE_ACCOUNT:
            continue
        # The rules applied in order: the reference's first match decides, else the default.
        rule_number = deciding_rule(d.message) if d.reason in LANDING_REASONS else None
        if reaches_a_cycle(world, d.subscription):
            continue
        expected = first_match(world, d.subscription, decided)
        if expected is None:
            assert d.reason not in LANDING_REASONS
        else:
            assert (d.reason, d.contract_id, rule_number) == expected
            assert world.landing is not None
            for rule in world.landing.rules[: expected[2] - 1]:
                if rule.parent and not mismatches(rule.when, d.subscription):
                    # passed over: the parent really had no usable contract
                    assert usable_parent(world, d.subscription, decided) is None


@settings(max_examples=100, deadline=None)
@given(tenants())
def test_without_rules_the_decisions_are_todays(world: World) -> None:
    """The same tenant without a rules file, or with an empty one, decides alike; the extra
    non-default contracts a read with rules brings in change nothing without rules."""
    bare = replace(world, landing=None)
    assert plan(replace(world, landing=LandingRules(()))) == plan(bare)
    assert all(d.reason not in LANDING_REASONS for d in plan(bare))
