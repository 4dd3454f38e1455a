"""Every reason has a place: a group it counts in, a fix sentence, a count and (when an admin acts
on it) a row in the report, a line in the notification, and a value in the OpenAPI enums.

Parametrized over the enum itself: a new reason fails here until it has all of them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.builders import (
    BEFORE,
    CUSTOMER,
    OTHER_ACCOUNT,
    a_contract,
    a_provider_account,
    a_record,
    a_setting,
    a_subscription,
    a_world,
    only,
)
from work365_fn.adapters.notify import teams_card
from work365_fn.operations.reader import Snapshot
from work365_fn.operations.report import build_report
from work365_fn.rules import (
    GROUP_OF,
    LISTED,
    Action,
    Decision,
    Group,
    Reason,
    World,
    count_groups,
    count_reasons,
    plan,
)
from work365_fn.rules.fixes import Namer
from work365_fn.rules.landing import LandingRules, parse_landing_rules
from work365_fn.rules.model import Customer
from work365_fn.rules.summary import RunSummary

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi" / "work365-fn.swagger.json"
REASON_VALUES = {reason.value for reason in Reason}
NOW = datetime(2026, 3, 2, tzinfo=UTC)

TIMING = "work365_billingtiming"
ARREARS = {"column": TIMING, "equals": 2}


def _rule(then: dict[str, Any]) -> LandingRules:
    """One landing rule that matches every subscription."""
    return parse_landing_rules({"rules": [{"name": "every subscription", **then}]})


# The smallest world that gives each reason (a_world's default: one new, mapped subscription
# whose Account has one active default). A new reason needs one here.
WORLD_FOR: dict[Reason, Callable[[], World]] = {
    Reason.NOT_SYNCED: lambda: a_world(records=[]),
    Reason.ALREADY_ASSIGNED: lambda: a_world(records=[a_record(contract_id=a_contract().id)]),
    Reason.EXISTING_SUBSCRIPTION: lambda: a_world(records=[a_record(created_on=BEFORE)]),
    Reason.SETTING_OFF: lambda: a_world(setting=a_setting(enabled=False)),
    # a record decided alone whose customer Dataverse does not name (operations/records.py)
    Reason.UNRESOLVED_CUSTOMER: lambda: a_world(subscriptions=[a_subscription(customer_id="")]),
    Reason.UNMAPPED_CUSTOMER: lambda: a_world(provider_accounts=[]),
    Reason.AMBIGUOUS_PROVIDER_ACCOUNT: lambda: a_world(
        provider_accounts=[a_provider_account(), a_provider_account(account_id=OTHER_ACCOUNT)]
    ),
    Reason.ACCOUNT_MISMATCH: lambda: a_world(records=[a_record(account_id=OTHER_ACCOUNT)]),
    Reason.NO_DEFAULT_CONTRACT: lambda: a_world(contracts=[]),
    Reason.MULTIPLE_DEFAULT_CONTRACTS: lambda: a_world(contracts=[a_contract(), a_contract()]),
    Reason.DEFAULT_CONTRACT: a_world,
    Reason.LANDING_RULE: lambda: a_world(
        contracts=[a_contract(columns={TIMING: 2})], landing=_rule({"contract": ARREARS})
    ),
    Reason.NO_LANDING_CONTRACT: lambda: a_world(landing=_rule({"contract": ARREARS})),
    Reason.MULTIPLE_LANDING_CONTRACTS: lambda: a_world(
        contracts=[a_contract(default=False, columns={TIMING: 2}) for _ in range(2)],
        landing=_rule({"contract": ARREARS}),
    ),
    Reason.EXCLUDED_BY_RULE: lambda: a_world(landing=_rule({"action": "leave"})),
    Reason.ERROR: lambda: a_world(records=[a_record(), a_record()]),  # duplicate records
}


def world_for(reason: Reason) -> World:
    assert reason in WORLD_FOR, f"add the smallest world that gives '{reason}' to WORLD_FOR"
    world = WORLD_FOR[reason]()
    assert only(plan(world)).reason is reason
    return world


def snapshot_of(world: World) -> Snapshot:
    """What a read of that world would give the report."""
    return Snapshot(
        run_id="11111111-1111-4111-8111-111111111111",
        setting=world.setting,
        warnings=[],
        provider_accounts=list(world.provider_accounts),
        contracts=list(world.contracts),
        records=list(world.records),
        customers=[Customer(CUSTOMER, "Contoso Ltd")],
        subscriptions=list(world.subscriptions),
        account_names={},
        landing=world.landing,
    )


def reason_enums(node: Any) -> Iterator[list[str]]:
    """Every `enum` of the spec that lists reasons (those holding "default-contract")."""
    if isinstance(node, dict):
        enum = node.get("enum")
        if isinstance(enum, list) and Reason.DEFAULT_CONTRACT.value in enum:
            yield enum
        for value in node.values():
            yield from reason_enums(value)
    elif isinstance(node, list):
        for value in node:
            yield from reason_enums(value)


SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
REASON_ENUMS = list(reason_enums(SPEC))


# ---- a group ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_counts_in_exactly_one_group(reason: Reason) -> None:
    assert GROUP_OF[reason] in Group
    counts = count_groups([reason])
    assert counts["subscriptions"] == 1
    assert [g for g in Group if counts[g]] == [GROUP_OF[reason]]


def test_the_four_groups_partition_the_reasons() -> None:
    assert set(GROUP_OF) == set(Reason)
    members = {g: {r for r in Reason if GROUP_OF[r] is g} for g in Group}
    assert all(members.values()), members  # no empty group
    assert set().union(*members.values()) == set(Reason)
    counts = count_groups(list(Reason))
    assert sum(counts[g] for g in Group) == counts["subscriptions"] == len(Reason)


# ---- a fix sentence --------------------------------------------------------------------------


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_has_a_fix_sentence(reason: Reason) -> None:
    world = a_world()
    namer = Namer(
        provider_accounts=world.provider_accounts,
        contracts=world.contracts,
        account_names={},
        since=world.setting.since,
    )
    decision = Decision(a_subscription(), a_record(), reason, Action.NONE)
    assert namer.fix(decision).strip()


# ---- a place in the report -------------------------------------------------------------------


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_has_a_place_in_the_report(reason: Reason) -> None:
    report = build_report(snapshot_of(world_for(reason)), started_at=NOW, finished_at=NOW)
    assert report["byReason"] == count_reasons([reason])
    rows = report["unassignedSubscriptions"]
    if reason in LISTED:
        [row] = rows
        assert row["reason"] == reason
        assert row["fix"]
    else:
        assert rows == []
    assert report["counts"][GROUP_OF[reason]] == 1


# ---- a place in the notification -------------------------------------------------------------


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_shows_in_the_teams_card(reason: Reason) -> None:
    run = RunSummary(
        run_id="11111111-1111-4111-8111-111111111111",
        started_at=NOW,
        decisions=plan(world_for(reason)),
        setting=a_setting(),
        customers=1,
    )
    card = teams_card(run.to_json())["attachments"][0]["content"]
    titles = [
        fact["title"]
        for block in card["body"]
        if block["type"] == "FactSet"
        for fact in block["facts"]
    ]
    assert reason in titles
    assert (titles.count(reason) == 2) is (reason in LISTED)  # its count, and its row if listed


# ---- a value in the OpenAPI document ---------------------------------------------------------


def test_the_spec_has_reason_enums() -> None:
    assert REASON_ENUMS, "no enum holding 'default-contract' in the OpenAPI document"


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_is_in_every_reason_enum_of_the_spec(reason: Reason) -> None:
    for enum in REASON_ENUMS:
        assert reason.value in enum
    by_reason = SPEC["definitions"]["ByReason"]
    assert reason.value in by_reason["properties"]
    assert reason.value in by_reason["required"]


def test_the_spec_lists_no_other_reason() -> None:
    for enum in REASON_ENUMS:
        assert set(enum) == REASON_VALUES
        assert len(enum) == len(REASON_VALUES)
    by_reason = SPEC["definitions"]["ByReason"]
    assert set(by_reason["properties"]) == set(by_reason["required"]) == REASON_VALUES
