"""Names and fixes in the sync's outputs, over the sandbox (issue 13, section 1): the summary JSON
(CLI, HTTP answer), the Teams card, the log lines, the human table; and what reading the names
costs: the Account names come with the Dataverse reads (the lookups' formatted values), one
fallback query only for an Account no read named; a scoped run's customer names come from the
map a full run kept, else one Partner Center call each; a name not read is a warning."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

import function_app
from tests.integration import demo
from tests.integration.conftest import ScenarioBuilder, gid, sync
from work365_fn.adapters.notify import teams_card
from work365_fn.entrypoints.cli.main import main
from work365_fn.rules import LISTED
from work365_fn.sandbox import Sandbox, Scenario

Json = dict[str, Any]


def demo_customers() -> dict[str, str]:
    """Partner Center customer id -> company name, as the demo serves them."""
    return {c.id.lower(): c.company_name for c in Scenario.builtin("demo").customers}


@pytest.fixture(scope="module")
def demo_box() -> Iterator[Sandbox]:
    with Sandbox.start(Scenario.builtin("demo")) as box:
        yield box


@pytest.fixture(scope="module")
def dry_run(demo_box: Sandbox) -> Json:
    data: Json = sync(demo_box, dry_run=True).to_json()
    return data


def test_every_row_of_a_full_run_carries_the_names_of_what_it_is_about(dry_run: Json) -> None:
    customers = demo_customers()
    for row in dry_run["subscriptions"]:
        assert row["customerName"] == customers[row["customerId"]], row
        assert row["subscriptionName"] and row["offerId"], row
        assert (row["accountName"] is None) is (row["accountId"] is None), row
    contoso = [r for r in dry_run["subscriptions"] if r["customerId"] == demo.CONTOSO]
    assert {r["accountName"] for r in contoso} == {"Contoso Ltd"}
    assigned = [r for r in contoso if r["reason"] == "default-contract"]
    assert {r["billingContractName"] for r in assigned} == {"Contoso Ltd - Default"}


def test_every_row_an_admin_acts_on_has_a_fix_naming_the_records(dry_run: Json) -> None:
    rows = {r["customerId"]: r for r in dry_run["subscriptions"] if r["reason"] in LISTED}
    assert all(r["fix"] for r in rows.values())
    assert "'Litware, Inc.'" in rows[demo.LITWARE]["fix"]
    assert "Coho Winery - Default (duplicate)" in rows[demo.COHO]["fix"]
    assert "'Wingtip Toys (Retail)'" in rows[demo.WINGTIP]["fix"]
    assert "'Adventure Works Cycles'" in rows[demo.ADVENTURE_WORKS]["fix"]
    unchanged = [r for r in dry_run["subscriptions"] if r["reason"] == "existing-subscription"]
    assert unchanged and all("backfill" in r["fix"] for r in unchanged)


def test_names_the_reads_carry_cost_no_account_query(demo_box: Sandbox) -> None:
    demo_box.reset_counts()
    data = sync(demo_box, dry_run=True).to_json()
    # every Account is named by the lookups' formatted values: no fallback query
    assert "GET accounts" not in demo_box.counts()["dataverse"]
    named = {r["accountId"]: r["accountName"] for r in data["subscriptions"] if r["accountId"]}
    assert named and all(named.values())
    assert "Coho Winery" in named.values()


def with_an_unnamed_account(world: ScenarioBuilder) -> tuple[str, str]:
    """Customer 1's Account is named 'Contoso Ltd'; customer 2's Account has no name, so no
    read's lookup carries a formatted value for it. (their new subscriptions: 1, 2)"""
    customer = world.customer(1, account_id=world.account(1, name="Contoso Ltd"))
    named = world.new_subscription(1, customer)
    world.raw["accounts"].append({"id": gid("acc", 2), "name": ""})
    world.contract(20, gid("acc", 2), default=True)
    unnamed = world.new_subscription(2, world.customer(2, account_id=gid("acc", 2)))
    return named, unnamed


def test_an_account_no_read_named_costs_one_query_of_its_id_and_name_columns(
    world: ScenarioBuilder, start: Any
) -> None:
    named, unnamed = with_an_unnamed_account(world)
    box = start(world.scenario())
    # A fault that fires only on the expected query shape proves it: `In` on the unnamed
    # Account's id alone (not the Account the reads named), $select of the id and the primary
    # name column only. The retry then reads it.
    box.faults.add(
        {"service": "dataverse", "kind": "503", "times": 1,
         "path": r"/accounts\?\$select=accountid,name&\$filter=Microsoft\.Dynamics\.CRM\.In\("
                 rf"PropertyName='accountid',PropertyValues=\[\"{gid('acc', 2)}\"\]\)$"}
    )  # fmt: skip
    data = sync(box, dry_run=True).to_json()
    assert box.faults.fired() == [1]
    assert box.counts()["dataverse"]["GET accounts"] == 2  # the query and its retry
    rows = {r["subscriptionId"]: r for r in data["subscriptions"]}
    assert (rows[named]["accountId"], rows[named]["accountName"]) == (gid("acc", 1), "Contoso Ltd")
    assert (rows[unnamed]["accountId"], rows[unnamed]["accountName"]) == (gid("acc", 2), None)
    assert data["warnings"] == []


def test_a_scoped_run_names_its_customer_with_one_partner_center_call(
    demo_box: Sandbox,
) -> None:
    demo_box.reset_counts()
    data = sync(demo_box, dry_run=True, customers=(demo.CONTOSO,)).to_json()
    # no full run kept the customer names in the app storage (the demo's runs are dry runs)
    assert {r["customerName"] for r in data["subscriptions"]} == {"Contoso Ltd"}
    assert {r["accountName"] for r in data["subscriptions"]} == {"Contoso Ltd"}
    assert demo_box.counts()["partnerCenter"] == {"GET subscriptions": 1, "GET customer": 1}
    assert "GET accounts" not in demo_box.counts()["dataverse"]
    assert data["warnings"] == []


def test_a_customer_name_that_cannot_be_read_leaves_the_id_and_a_warning(
    world: ScenarioBuilder, start: Any
) -> None:
    customer = world.customer(1, account_id=world.account(1, name="Contoso Ltd"))
    sub = world.new_subscription(1, customer)
    box = start(world.scenario())
    box.faults.add(
        {"service": "partnerCenter", "path": f"/customers/{customer}$", "kind": "503", "every": 1}
    )
    data = sync(box, customers=(customer,), WORK365_MAX_ATTEMPTS="2").to_json()
    assert data["status"] == "succeeded"
    [row] = data["subscriptions"]
    assert (row["subscriptionId"], row["reason"], row["customerId"], row["customerName"]) == (
        sub,
        "default-contract",
        customer,
        None,
    )
    assert row["accountName"] == "Contoso Ltd"
    [warning] = data["warnings"]
    assert warning.startswith("the names of 1 customer(s) could not be read from Partner Center")
    assert box.counts()["partnerCenter"]["GET customer"] == 2  # the call and its retry
    assert box.counts()["dataverse"]["POST $batch"] == 1  # the write was made all the same


def test_account_names_that_cannot_be_read_leave_ids_and_a_warning_not_a_failed_run(
    world: ScenarioBuilder, start: Any
) -> None:
    named, unnamed = with_an_unnamed_account(world)
    box = start(world.scenario())
    box.faults.add({"service": "dataverse", "path": "/accounts$", "kind": "503", "every": 1})
    summary = sync(box, WORK365_MAX_ATTEMPTS="2")
    data = summary.to_json()
    assert data["status"] == "succeeded"
    rows = {r["subscriptionId"]: r for r in data["subscriptions"]}
    assert {s: r["reason"] for s, r in rows.items()} == {
        named: "default-contract",
        unnamed: "default-contract",
    }
    assert rows[unnamed]["accountId"] == gid("acc", 2) and rows[unnamed]["accountName"] is None
    assert rows[named]["accountName"] == "Contoso Ltd"  # the reads' names are kept
    [warning] = data["warnings"]
    assert warning.startswith("the Account names could not be read")
    assert box.counts()["dataverse"]["GET accounts"] == 2  # the fallback query, tried twice
    assert box.counts()["dataverse"]["POST $batch"] == 1  # the writes were made all the same


def test_the_teams_card_lists_names_and_fixes(dry_run: Json) -> None:
    card = teams_card(dry_run)["attachments"][0]["content"]
    assert card["body"][0]["text"].startswith("Work 365: 7 subscription(s) would be left")
    assert card["body"][1]["text"].startswith("dry run: nothing written: run ")
    listed = {f["value"] for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert any(
        v.startswith("Litware, Inc.: Power BI Pro. Fix: Set Is Default = Yes") for v in listed
    )
    assert not any(demo.LITWARE in v for v in listed)  # names, not ids


# ---- the HTTP answer, the logs, the CLI --------------------------------------------------------


@pytest.fixture
def app_box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    for key in list(os.environ):
        if key.startswith("WORK365_"):
            monkeypatch.delenv(key)
    with Sandbox.start(Scenario.builtin("demo")) as box:
        for key, value in box.env.items():
            monkeypatch.setenv(key, value)
        function_app.services.cache_clear()
        yield box
    function_app.services.cache_clear()


def test_the_http_answer_carries_the_names_and_fixes(app_box: Sandbox) -> None:
    request = func.HttpRequest(
        method="POST",
        url="http://localhost:7071/api/sync",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"dryRun": True}).encode(),
    )
    resp = function_app.sync_http(request)
    assert resp.status_code == 200
    rows = {r["customerId"]: r for r in json.loads(resp.get_body())["subscriptions"]}
    litware = rows[demo.LITWARE]
    assert (litware["customerName"], litware["subscriptionName"]) == (
        "Litware, Inc.",
        "Power BI Pro",
    )
    assert litware["accountName"] == "Litware, Inc." and litware["fix"]


@pytest.mark.parametrize(("dry", "kind", "assigned"), [(True, "dry run: nothing written",
                         "6 would be assigned"), (False, "live run", "6 assigned")])  # fmt: skip
def test_the_log_lines_speak_in_the_runs_mood(
    app_box: Sandbox, caplog: pytest.LogCaptureFixture, dry: bool, kind: str, assigned: str
) -> None:
    caplog.set_level(logging.INFO)
    request = func.HttpRequest(
        method="POST",
        url="http://localhost:7071/api/sync",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"dryRun": dry}).encode(),
    )
    assert function_app.sync_http(request).status_code == 200
    messages = [r.getMessage() for r in caplog.records]
    [started] = [m for m in messages if "sync started" in m]
    assert f"sync started ({kind}, customers: all" in started
    [summary] = [m for m in messages if "] summary {" in m]
    assert summary.endswith(f"; {kind}, status succeeded: 13 customers, 18 subscriptions: "
                            f"{assigned}, 7 {'would be ' if dry else ''}left unassigned, "
                            "5 unchanged, 0 failed")  # fmt: skip
    assert not any("dry run: True" in m or "dry run: False" in m for m in messages)


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["-q", *argv], out=out)
    return code, out.getvalue()


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("width", [80, 200])
def test_the_cli_table_shows_names_and_fixes_within_the_terminal_width(
    monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    code, text = cli("sync", "--sandbox", "--dry-run")
    assert code == 0
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert lines[0].startswith("dry run: nothing written")
    for name in demo_customers().values():
        if name != "Margie's Travel":  # no subscriptions: no group
            assert name in lines, name
    assert not any(sub in text for sub in demo.expected())  # no subscription id without --ids
    assert "would assign" in text
    flat = " ".join(text.split())
    assert "fix: Set Is Default = Yes on one active Billing Contract of 'Litware, Inc.'." in flat


@pytest.mark.usefixtures("clean_env")
def test_the_cli_table_shows_the_ids_with_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, text = cli("sync", "--sandbox", "--dry-run", "--ids")
    assert code == 0
    assert all(sub in text for sub in demo.expected())
    assert f"Contoso Ltd  ({demo.CONTOSO})" in text.splitlines()
