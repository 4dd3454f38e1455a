"""Names and fixes in the run summary, and the words a run is told in (issue 13, section 1).

Each summary row carries the names of what it is about (customer, subscription, offer, Account,
billing contract: null where the run did not read them) and every row an admin acts on carries a
one-sentence fix naming those records. A dry run speaks in the conditional, a live run never
says `dry run False`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.builders import (
    ACCOUNT,
    CUSTOMER,
    OTHER_ACCOUNT,
    a_contract,
    a_provider_account,
    a_record,
    a_setting,
    a_world,
    only,
)
from tests.unit.test_reasons import world_for
from work365_fn.rules import LISTED, ON_A_CONTRACT, Action, Group, Reason, World, plan
from work365_fn.rules.fixes import Namer, already_assigned_fix, assigned_fix
from work365_fn.rules.model import PcSubscription
from work365_fn.rules.summary import (
    RunSummary,
    accounts_to_name,
    action_words,
    count_label,
    counts_sentence,
    decision_json,
    run_kind,
    run_sentence,
)

NOW = datetime(2026, 3, 2, tzinfo=UTC)
NAMES = {ACCOUNT: "Contoso Ltd", OTHER_ACCOUNT: "Contoso Retail"}
NOTHING_TO_DO = {assigned_fix(), already_assigned_fix()}


def namer_of(world: World, **customer_names: str) -> Namer:
    return Namer(
        provider_accounts=world.provider_accounts,
        contracts=world.contracts,
        account_names=NAMES,
        since=world.setting.since,
        customer_names=customer_names or {CUSTOMER: "Contoso (Partner Center)"},
    )


def row_of(world: World) -> dict[str, object]:
    return decision_json(only(plan(world)), namer_of(world))


def test_an_assigned_row_names_its_customer_subscription_account_and_contract() -> None:
    contract = a_contract(name="Contoso - Default")
    sub = PcSubscription(
        id="55555555-5555-5555-5555-555555555555",
        customer_id=CUSTOMER,
        offer_id="CFQ7TTC0LFLX:0001",
        offer_name="Microsoft 365 E3",
        friendly_name="E3 for sales",
    )
    row = row_of(a_world(subscriptions=[sub], contracts=[contract]))
    assert row["customerName"] == "Contoso (Partner Center)"
    assert row["subscriptionName"] == "E3 for sales"  # the friendly name first
    assert row["offerId"] == "CFQ7TTC0LFLX:0001"
    assert row["accountName"] == "Contoso Ltd"
    assert (row["billingContractId"], row["billingContractName"]) == (
        contract.id,
        "Contoso - Default",
    )
    assert row["fix"] is None  # on its contract: nothing to do


def test_the_offer_name_stands_in_for_a_missing_friendly_name() -> None:
    sub = PcSubscription(id="55555555-5555-5555-5555-555555555555", customer_id=CUSTOMER,
                         offer_name="Power BI Pro")  # fmt: skip
    assert row_of(a_world(subscriptions=[sub]))["subscriptionName"] == "Power BI Pro"


def test_names_the_run_did_not_read_are_null_never_made_up() -> None:
    world = a_world()
    bare = Namer(provider_accounts=(), contracts=(), account_names={}, since=None)
    row = decision_json(only(plan(world)), bare)
    assert row["accountId"] == ACCOUNT and row["billingContractId"]
    assert (row["customerName"], row["accountName"], row["billingContractName"]) == (None,) * 3


def test_a_summary_without_names_still_gives_every_listed_row_a_fix() -> None:
    run = RunSummary(
        run_id="r", started_at=NOW, setting=a_setting(), decisions=plan(a_world(contracts=[]))
    )
    [row] = run.to_json()["subscriptions"]
    assert row["reason"] == Reason.NO_DEFAULT_CONTRACT
    assert row["fix"] and row["accountName"] is None


@pytest.mark.parametrize("reason", sorted(LISTED | {Reason.NOT_SYNCED}))
def test_every_row_an_admin_acts_on_carries_a_fix_that_is_not_nothing_to_do(
    reason: Reason,
) -> None:
    world = world_for(reason)
    row = decision_json(only(plan(world)), namer_of(world))
    assert isinstance(row["fix"], str) and row["fix"].strip()
    assert row["fix"] not in NOTHING_TO_DO


@pytest.mark.parametrize("reason", sorted(r for r in Reason if r in ON_A_CONTRACT))
def test_a_row_on_a_contract_has_no_fix(reason: Reason) -> None:
    world = world_for(reason)
    assert decision_json(only(plan(world)), namer_of(world))["fix"] is None


def test_the_fixes_name_the_account_and_the_contracts_by_name() -> None:
    no_default = row_of(a_world(contracts=[]))
    assert "'Contoso Ltd'" in str(no_default["fix"])
    two = [a_contract(name="Contoso - Default"), a_contract(name="Contoso - Default (copy)")]
    several = row_of(a_world(contracts=two))
    assert "Contoso - Default" in str(several["fix"])
    assert "Contoso - Default (copy)" in str(several["fix"])
    mismatch = row_of(a_world(records=[a_record(account_id=OTHER_ACCOUNT)]))
    assert "'Contoso Retail'" in str(mismatch["fix"]) and "'Contoso Ltd'" in str(mismatch["fix"])
    unmapped = row_of(a_world(provider_accounts=[]))
    assert "'Contoso (Partner Center)'" in str(unmapped["fix"])


def test_the_accounts_to_name_are_those_the_rows_and_fixes_name() -> None:
    pas = [a_provider_account(), a_provider_account(account_id=OTHER_ACCOUNT)]
    ambiguous = plan(a_world(provider_accounts=pas))
    assert accounts_to_name(ambiguous, pas) == sorted([ACCOUNT, OTHER_ACCOUNT])
    mismatch = plan(a_world(records=[a_record(account_id=OTHER_ACCOUNT)]))
    assert accounts_to_name(mismatch, [a_provider_account()]) == sorted([ACCOUNT, OTHER_ACCOUNT])
    nothing = a_world(provider_accounts=[], records=[a_record(account_id=None)])
    assert accounts_to_name(plan(nothing), []) == []


# ---- the words of a run ----------------------------------------------------------------------

COUNTS = {"customers": 3, "subscriptions": 18, "assigned": 6, "unassigned": 7, "unchanged": 5,
          "failed": 0, "created": 0}  # fmt: skip


def test_a_dry_run_speaks_in_the_conditional() -> None:
    assert run_kind(True) == "dry run: nothing written"
    sentence = counts_sentence(COUNTS, dry_run=True)
    assert "6 would be assigned" in sentence and "7 would be left unassigned" in sentence
    assert action_words(Action.ASSIGN, dry_run=True) == "would assign"
    assert action_words(Action.CREATE, dry_run=True) == "would create"


def test_a_live_run_says_what_it_did() -> None:
    assert run_kind(False) == "live run"
    sentence = counts_sentence(COUNTS, dry_run=False)
    assert "6 assigned" in sentence and "would" not in sentence
    assert action_words(Action.ASSIGN, dry_run=False) == "assigned"


@pytest.mark.parametrize("dry", [True, False])
def test_the_run_sentence_carries_every_group_count_and_never_a_bare_boolean(dry: bool) -> None:
    sentence = run_sentence({"dryRun": dry, "status": "succeeded", "counts": COUNTS})
    for group in Group:
        assert f"{COUNTS[group.value]} {count_label(group.value, dry)}" in sentence
    assert "True" not in sentence and "False" not in sentence
    assert sentence.startswith(run_kind(dry))
