"""`report` over the sandbox: read-only, one bulk pass, counts first, then every problem of the
demo with its fix; the CSV has one row per problem."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import demo
from tests.integration.conftest import ScenarioBuilder, services_for, writes
from work365_fn.entrypoints.cli.main import main
from work365_fn.operations.report import CSV_COLUMNS, CSV_KINDS, LISTS, run_report, to_csv
from work365_fn.operations.sync import SyncRequest
from work365_fn.rules import GROUP_OF, LISTED, Group, Reason
from work365_fn.sandbox import Sandbox, Scenario

DEMO = Scenario.builtin("demo")
EXPECTED = demo.expected()
# What the demo's description says the next sync leaves for an admin (rules.LISTED).
LISTED_IN_DEMO = {s: e.reason for s, e in EXPECTED.items() if Reason(e.reason) in LISTED}
# The demo's configuration problems, one set of ids per list (each commented where it is made).
CONFIGURATION_PROBLEMS: dict[str, set[str]] = {
    "accountsWithoutDefault": {
        "acc0000a-0000-4000-8000-00000000000a",  # Litware: no default at all
        "acc0000c-0000-4000-8000-00000000000c",  # Proseware: its default is inactive
    },
    "accountsWithSeveralDefaults": {"acc0000d-0000-4000-8000-00000000000d"},
    "inactiveDefaultContracts": {
        "bc000003-0000-4000-8000-000000000003",
        "bc00000f-0000-4000-8000-00000000000f",
    },
    "unmappedProviderAccounts": {"ba000004-0000-4000-8000-000000000004"},
    "customersWithoutProviderAccount": {demo.ADVENTURE_WORKS},
    "customersWithSeveralAccounts": {demo.WIDE_WORLD},
    "accountsLandingRulesCannotServe": set(),  # the demo has no landing rules
}
ID_OF = {
    "accountsWithoutDefault": "accountId",
    "accountsWithSeveralDefaults": "accountId",
    "inactiveDefaultContracts": "contractId",
    "unmappedProviderAccounts": "providerAccountId",
    "customersWithoutProviderAccount": "customerId",
    "customersWithSeveralAccounts": "customerId",
    "accountsLandingRulesCannotServe": "accountId",
}
PROBLEMS = len(LISTED_IN_DEMO) + sum(len(ids) for ids in CONFIGURATION_PROBLEMS.values())


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with Sandbox.start(Scenario.builtin("demo")) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def report(box: Sandbox) -> dict[str, Any]:
    box.reset_counts()
    result = run_report(services_for(box).reader_deps())
    result["_counts"] = box.counts()
    return result


def ids(items: list[dict[str, Any]], key: str) -> set[str]:
    return {item[key] for item in items}


def test_every_subscription_left_unassigned_is_listed_with_its_reason(
    report: dict[str, Any],
) -> None:
    got = {item["subscriptionId"]: item["reason"] for item in report["unassignedSubscriptions"]}
    assert got == LISTED_IN_DEMO
    for item in report["unassignedSubscriptions"]:
        assert item["fix"], item


def test_by_reason_matches_the_scenario(report: dict[str, Any]) -> None:
    want = {reason: 0 for reason in report["byReason"]}
    for e in EXPECTED.values():
        want[e.reason] += 1
    assert report["byReason"] == want
    assert report["counts"]["subscriptions"] == len(EXPECTED)
    assert report["counts"]["customers"] == len(DEMO.customers)
    assert report["counts"]["backfillCandidates"] == want[Reason.EXISTING_SUBSCRIPTION]


def test_the_group_counts_are_the_syncs(report: dict[str, Any]) -> None:
    for group in Group:
        want = sum(GROUP_OF[Reason(e.reason)] is group for e in EXPECTED.values())
        assert report["counts"][group] == want, group
    assert report["counts"]["unassigned"] + report["counts"]["failed"] == len(LISTED_IN_DEMO)


def test_in_create_mode_the_report_decides_as_the_sync_would(box: Sandbox) -> None:
    services = services_for(box, WORK365_CREATE_MISSING="true")
    sync = services.sync(SyncRequest(dry_run=True)).to_json()
    report = run_report(services.reader_deps())

    assert report["byReason"] == sync["byReason"]
    assert sync["byReason"][Reason.NOT_SYNCED] == 0  # create mode decides them
    for group in Group:
        assert report["counts"][group] == sync["counts"][group], group


def test_each_configuration_problem_of_the_demo_is_listed(report: dict[str, Any]) -> None:
    for name, want in CONFIGURATION_PROBLEMS.items():
        assert ids(report[name], ID_OF[name]) == want, name


def test_list_items_name_the_records_and_carry_the_fix(report: dict[str, Any]) -> None:
    [coho] = report["accountsWithSeveralDefaults"]
    assert coho["accountName"] == "Coho Winery"
    assert coho["fix"] == (
        "Clear Is Default on one of: Coho Winery - Default, Coho Winery - Default (duplicate), "
        "so that exactly one stays the default."
    )
    proseware = next(
        a for a in report["accountsWithoutDefault"] if a["accountName"] == "Proseware, Inc."
    )
    assert [c["name"] for c in proseware["inactiveDefaults"]] == ["Proseware - Default (closed)"]
    assert [p["name"] for p in proseware["providerAccounts"]] == ["Proseware (CSP)"]
    assert "reactivate its inactive default 'Proseware - Default (closed)'" in proseware["fix"]
    [tailspin] = report["unmappedProviderAccounts"]
    assert tailspin["fix"] == (
        "Set the Account lookup on Provider Account 'Tailspin Toys (CSP) - account not set'."
    )
    [adventure] = report["customersWithoutProviderAccount"]
    assert adventure["customerName"] == "Adventure Works Cycles"
    assert adventure["subscriptions"] == 2
    [wide] = report["customersWithSeveralAccounts"]
    assert {p["accountName"] for p in wide["providerAccounts"]} == {
        "Wide World Importers",
        "Wide World Importers (EMEA)",
    }
    mismatch = next(
        s for s in report["unassignedSubscriptions"] if s["reason"] == "account-mismatch"
    )
    assert mismatch["fix"] == (
        "Move subscription record 'Wingtip Toys - Azure plan' from Account 'Wingtip Toys "
        "(Retail)' to 'Wingtip Toys', or correct the Provider Account's Account."
    )


def test_counts_come_first_and_add_up(report: dict[str, Any]) -> None:
    keys = list(report)
    assert keys.index("counts") < min(keys.index(name) for name in LISTS)
    counts = report["counts"]
    for name in LISTS:
        assert counts[name] == len(report[name])
    assert counts["problems"] == sum(len(report[name]) for name in LISTS)


def test_the_report_is_one_bulk_read_and_writes_nothing(report: dict[str, Any]) -> None:
    counts = report["_counts"]
    dataverse = counts["dataverse"]
    for entity_set in (
        "work365_adminhubsettings",
        "work365_provideraccounts",
        "work365_billingcontracts",
        "work365_subscriptions",
    ):
        assert dataverse[f"GET {entity_set}"] == 1, entity_set
    # the Accounts' names come with those reads (the lookups' formatted values)
    assert "GET accounts" not in dataverse
    assert not [k for k in dataverse if not k.startswith("GET ")]
    # one customer listing and one subscription list per customer: nothing per subscription
    assert counts["partnerCenter"] == {"GET customers": 1, "GET subscriptions": 13}


def test_csv_has_one_row_per_problem(report: dict[str, Any]) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == report["counts"]["problems"] == PROBLEMS
    kinds: dict[str, int] = {}
    for row in rows:
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
        assert row["fix"]
    problems = {"unassignedSubscriptions": LISTED_IN_DEMO, **CONFIGURATION_PROBLEMS}
    want = {kind.kind: len(problems[kind.list_name]) for kind in CSV_KINDS}
    assert kinds == {kind: n for kind, n in want.items() if n}
    coho = next(r for r in rows if r["kind"] == "account-with-several-defaults")
    assert (coho["accountId"], coho["name"], coho["reason"]) == (
        "acc0000d-0000-4000-8000-00000000000d",
        "Coho Winery",
        "multiple-default-contracts",
    )


def test_a_customer_without_relationship_makes_a_partial_report(
    world: ScenarioBuilder, start: Any
) -> None:
    a1 = world.account(1)
    c1 = world.customer(1, account_id=a1)
    world.new_subscription(1, c1)
    c2 = world.customer(2, account_id=a1, relationship=False)
    box = start(world.scenario())
    report = run_report(services_for(box).reader_deps())
    assert report["status"] == "partial"
    assert [(e["customerId"], e["code"]) for e in report["errors"]] == [(c2, "20002")]
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert [r["kind"] for r in rows] == ["error"]
    assert report["counts"]["problems"] == 0


def test_a_clean_tenant_has_no_problem(world: ScenarioBuilder, start: Any) -> None:
    a1 = world.account(1)
    c1 = world.customer(1, account_id=a1)
    world.new_subscription(1, c1)
    box = start(world.scenario())
    report = run_report(services_for(box).reader_deps())
    assert report["counts"]["problems"] == 0
    assert report["byReason"]["default-contract"] == 1
    assert writes(box) == 0


def test_dataverse_down_is_a_failed_report(start: Any) -> None:
    box = start(Scenario.builtin("demo"))
    box.faults.add({"service": "dataverse", "kind": "503", "every": 1})
    report = run_report(services_for(box, WORK365_MAX_ATTEMPTS="1").reader_deps())
    assert report["status"] == "failed"
    assert report["errors"][0]["service"] == "dataverse"
    assert report["unassignedSubscriptions"] == []


# ---- the CLI -------------------------------------------------------------------------------


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


@pytest.mark.usefixtures("clean_env")
def test_cli_report_json_csv_and_text(tmp_path: Path) -> None:
    code, text = run("report", "--sandbox", "--json")
    assert code == 0
    assert json.loads(text)["counts"]["problems"] == PROBLEMS

    target = tmp_path / "problems.csv"
    code, text = run("report", "--sandbox", "--csv", str(target))
    assert code == 0
    assert f"{PROBLEMS} problems written to" in text
    assert len(list(csv.DictReader(target.open(encoding="utf-8")))) == PROBLEMS

    code, text = run("report", "--sandbox")
    assert code == 0
    assert text.index("counts:") < text.index(
        f"Subscriptions left unassigned ({len(LISTED_IN_DEMO)})"
    )
    assert "Default contracts that are inactive (2)" in text
    assert "bc00000f-0000-4000-8000-00000000000f  Proseware - Default (closed)" in text


@pytest.mark.usefixtures("clean_env")
def test_cli_json_and_csv_exclude_each_other(tmp_path: Path) -> None:
    code, _ = run("report", "--sandbox", "--json", "--csv", str(tmp_path / "x.csv"))
    assert code == 2


def test_the_deadline_is_kept_on_the_clock_the_report_is_given(box: Sandbox) -> None:
    """The clock that sets the deadline is the one the read checks it with: a clock that does
    not move never runs out (the machine's own clock would have, at once)."""
    report = run_report(services_for(box).reader_deps(), budget_seconds=1, monotonic=lambda: 0.0)
    assert report["skippedCustomers"] == []
    assert report["status"] == "succeeded"
