"""`diagnose` over the sandbox: every reason of the demo and every mapping problem, each with its
check and its one-sentence fix, read with targeted queries only."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration import demo
from tests.integration.conftest import (
    ScenarioBuilder,
    by_subscription,
    gid,
    services_for,
    sync,
    writes,
)
from work365_fn.entrypoints.cli.main import main
from work365_fn.operations.diagnose import DiagnoseRequest, failed_checks, run_diagnose
from work365_fn.rules import ON_A_CONTRACT, Reason
from work365_fn.sandbox import Sandbox, Scenario

EXPECTED = demo.expected()
DEMO_CUSTOMERS = [c.id.lower() for c in Scenario.builtin("demo").customers]


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    """The demo, shared by the read-only tests of this module."""
    with Sandbox.start(Scenario.builtin("demo")) as sandbox:
        yield sandbox


def diagnose(box: Sandbox, customer: str | None = None, subscription: str | None = None) -> Any:
    return run_diagnose(services_for(box).diagnose_deps(), DiagnoseRequest(customer, subscription))


def check(result: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in result["checks"] if c["check"] == name]
    return found


@pytest.mark.parametrize("subscription_id", sorted(EXPECTED))
def test_each_demo_subscription_gets_the_reason_its_scenario_lists(
    box: Sandbox, subscription_id: str
) -> None:
    want = EXPECTED[subscription_id]
    # Upper case in, as Partner Center may have it: GUIDs compare case-insensitively.
    result = diagnose(box, subscription=subscription_id.upper())
    [sub] = result["subscriptions"]
    assert sub["subscriptionId"] == subscription_id
    assert sub["reason"] == want.reason, want.what
    assert sub["billingContractId"] == (
        want.contract_id if want.reason in ("default-contract", "already-assigned") else None
    )
    if Reason(want.reason) in ON_A_CONTRACT:
        assert sub["fix"] == ""  # nothing to do
    else:
        assert sub["fix"], f"{want.what}: a problem needs its fix sentence"
    assert result["customerName"] == want.what.split(":")[0]


@pytest.mark.parametrize(
    ("customer", "failing", "fix", "named"),
    [
        (
            demo.ADVENTURE_WORKS,
            ("provider-account",),
            f"Create a Provider Account with customer tenant id {demo.ADVENTURE_WORKS} "
            "(Partner Center customer 'Adventure Works Cycles') and set its Account.",
            [],
        ),
        (
            demo.TAILSPIN,
            ("provider-account-account",),
            "Set the Account lookup on Provider Account 'Tailspin Toys (CSP) - account not set'.",
            ["Tailspin Toys (CSP) - account not set"],
        ),
        (
            demo.WIDE_WORLD,
            ("provider-accounts-agree",),
            "Point Provider Accounts 'Wide World Importers (CSP)', 'Wide World Importers EMEA "
            "(CSP)' at one Account (they map to 'Wide World Importers', 'Wide World Importers "
            "(EMEA)'), or delete the wrong one.",
            ["Wide World Importers (CSP)", "Wide World Importers EMEA (CSP)"],
        ),
        (
            demo.WINGTIP,
            ("subscription-account",),
            "Move subscription record 'Wingtip Toys - Azure plan' from Account 'Wingtip Toys "
            "(Retail)' to 'Wingtip Toys', or correct the Provider Account's Account.",
            ["Wingtip Toys - Azure plan"],
        ),
        (
            demo.LITWARE,
            ("contracts",),
            "Set Is Default = Yes on one active Billing Contract of 'Litware, Inc.' (one of "
            "'Litware - Annual', 'Litware - Monthly').",
            ["Litware - Annual", "Litware - Monthly"],
        ),
        (
            demo.PROSEWARE,
            ("contracts",),
            "Set Is Default = Yes on one active Billing Contract of 'Proseware, Inc.' (one of "
            "'Proseware - Projects'), or reactivate its inactive default 'Proseware - Default "
            "(closed)'.",
            ["Proseware - Default (closed)", "Proseware - Projects"],
        ),
        (
            demo.COHO,
            # the contracts check fails too: rule 4 finds two defaults, not the one it needs
            ("contracts", "multiple-defaults"),
            "Clear Is Default on one of: Coho Winery - Default, Coho Winery - Default (duplicate), "
            "so that exactly one stays the default.",
            ["Coho Winery - Default", "Coho Winery - Default (duplicate)"],
        ),
    ],
)
def test_each_mapping_problem_fails_its_own_check_with_the_fix(
    box: Sandbox, customer: str, failing: tuple[str, ...], fix: str, named: list[str]
) -> None:
    result = diagnose(box, customer=customer)
    assert result["ok"] is False
    assert [c["check"] for c in failed_checks(result)] == list(failing)
    assert {c["fix"] for c in failed_checks(result)} == {fix}
    bad = check(result, failing[-1])
    assert sorted(r["name"] for r in bad["records"]) == named
    # and the new subscriptions carry the same fix (an existing one keeps its own)
    new = [s for s in result["subscriptions"] if s["reason"] != "existing-subscription"]
    assert {s["fix"] for s in new} == {fix}


@pytest.mark.parametrize(
    "customer",
    [demo.CONTOSO, demo.FABRIKAM, demo.NORTHWIND.upper(), demo.ALPINE, demo.BLUE_YONDER],
)
def test_healthy_customers_pass_every_check(box: Sandbox, customer: str) -> None:
    result = diagnose(box, customer=customer)
    assert result["ok"] is True, failed_checks(result)
    assert all(c["fix"] == "" for c in result["checks"])
    assert result["customerId"] == customer.lower()


def test_checks_follow_the_troubleshooting_order_and_show_the_cutoff(box: Sandbox) -> None:
    result = diagnose(box, customer=demo.CONTOSO)
    assert [c["check"] for c in result["checks"]] == [
        "setting",
        "contracts",
        "provider-account",
        "provider-account-account",
        "provider-accounts-agree",
        "subscription-account",
        "multiple-defaults",
    ]
    setting = check(result, "setting")
    assert setting["detail"] == (
        "Associate Default Billing Contract = Yes; cutoff 2026-01-01T00:00:00Z (from audit)"
    )
    assert result["setting"]["sinceSource"] == "audit"
    contracts = check(result, "contracts")
    states = {(r["name"], r["isDefault"], r["active"]) for r in contracts["records"]}
    assert ("Contoso Ltd - 2024 (closed)", True, False) in states  # shown, not counted
    assert ("Contoso Ltd - Default", True, True) in states


def test_two_provider_accounts_on_one_account_pass(box: Sandbox) -> None:
    agree = check(diagnose(box, customer=demo.ALPINE), "provider-accounts-agree")
    assert agree["ok"] is True
    assert "skipped" not in agree
    assert len(agree["records"]) == 2


def test_an_existing_subscription_fails_the_cutoff_check_and_points_at_backfill(
    box: Sandbox,
) -> None:
    result = diagnose(box, subscription="5ab00004-0000-4000-8000-000000000004")
    assert [c["check"] for c in failed_checks(result)] == ["subscription-is-new"]
    assert "backfill --apply" in check(result, "subscription-is-new")["fix"]
    assert "2025-06-01T12:30:00Z" in check(result, "subscription-is-new")["detail"]


def test_a_subscription_without_record_fails_the_record_check(box: Sandbox) -> None:
    result = diagnose(box, subscription="5ab00006-0000-4000-8000-000000000006")
    bad = check(result, "subscription-record")
    assert bad["ok"] is False
    assert "WORK365_CREATE_MISSING" in bad["fix"]


def test_a_subscription_partner_center_does_not_list_fails_clearly(box: Sandbox) -> None:
    result = diagnose(box, subscription="00000000-0000-4000-8000-0000000000ff")
    assert result["ok"] is False
    assert check(result, "partner-center")["ok"] is False
    assert result["subscriptions"] == []


UNKNOWN_CUSTOMER = "c0000099-0000-4000-8000-000000000099"  # not in the demo's Partner Center


@pytest.mark.parametrize(
    "request_",
    [
        DiagnoseRequest(customer_id=UNKNOWN_CUSTOMER),
        DiagnoseRequest(UNKNOWN_CUSTOMER, "5ab00001-0000-4000-8000-000000000001"),
    ],
)
def test_a_customer_partner_center_does_not_list_is_said_first_without_mapping_advice(
    box: Sandbox, request_: DiagnoseRequest
) -> None:
    result = run_diagnose(services_for(box).diagnose_deps(), request_)
    first = result["checks"][0]
    assert (first["check"], first["ok"]) == ("partner-center", False)
    assert first["detail"] == f"Partner Center has no customer {UNKNOWN_CUSTOMER}"
    assert [c["check"] for c in failed_checks(result)] == ["partner-center"]
    assert check(result, "provider-account")["skipped"] is True
    assert not any("Provider Account" in c["fix"] for c in result["checks"])
    assert result["subscriptions"] == []


def contract_accounts(result: dict[str, Any], table: str) -> set[str]:
    """The Accounts whose Billing Contracts a check lists: the Accounts it judges."""
    return {r["accountId"] for r in result["records"] if r["table"] == table and r.get("accountId")}


@pytest.mark.parametrize("customer", DEMO_CUSTOMERS)
def test_no_check_is_ok_while_a_later_check_fails_for_the_same_account(
    box: Sandbox, customer: str
) -> None:
    deps = services_for(box).diagnose_deps()
    table = deps.tables.billing_contract
    checks = run_diagnose(deps, DiagnoseRequest(customer_id=customer))["checks"]
    for n, passed in enumerate(checks):
        if not passed["ok"] or passed.get("skipped"):
            continue
        for later in checks[n + 1 :]:
            if not later["ok"]:
                both = contract_accounts(passed, table) & contract_accounts(later, table)
                assert not both, f"{passed['check']} ok, then {later['check']} fails for {both}"


@pytest.mark.parametrize("customer", DEMO_CUSTOMERS)
def test_the_contracts_check_agrees_with_the_subscriptions_rule_4_reasons(
    box: Sandbox, customer: str
) -> None:
    result = diagnose(box, customer=customer)
    contracts = check(result, "contracts")
    reasons = {Reason(s["reason"]) for s in result["subscriptions"]}
    if reasons & {Reason.NO_DEFAULT_CONTRACT, Reason.MULTIPLE_DEFAULT_CONTRACTS}:
        assert contracts["ok"] is False
    if Reason.DEFAULT_CONTRACT in reasons:
        assert contracts["ok"] is True
        assert "skipped" not in contracts


DECISION_KEYS = ("recordId", "accountId", "action", "billingContractId", "reason")


def test_diagnose_gives_every_subscription_the_decision_of_a_dry_run_sync(box: Sandbox) -> None:
    before = writes(box)
    synced = by_subscription(sync(box, dry_run=True))
    assert synced, "the demo has subscriptions"
    seen: dict[str, dict[str, Any]] = {}
    for customer in DEMO_CUSTOMERS:
        for row in diagnose(box, customer=customer)["subscriptions"]:
            seen[row["subscriptionId"]] = row
    for subscription_id, want in synced.items():
        by_customer = seen[subscription_id]
        [alone] = diagnose(box, subscription=subscription_id)["subscriptions"]
        for key in DECISION_KEYS:
            assert by_customer[key] == want[key], (subscription_id, key)
            assert alone[key] == want[key], (subscription_id, key)
    assert set(seen) == set(synced)
    assert writes(box) == before


def test_a_customer_is_diagnosed_with_targeted_reads_and_no_write(box: Sandbox) -> None:
    box.reset_counts()
    diagnose(box, customer=demo.WINGTIP)
    counts = box.counts()
    # the customer's profile (its name) and its subscriptions: no listing of customers
    assert counts["partnerCenter"] == {"GET customer": 1, "GET subscriptions": 1}
    dataverse = counts["dataverse"]
    for entity_set in (
        "work365_provideraccounts",
        "work365_billingcontracts",
        "work365_subscriptions",
        "accounts",
    ):
        assert dataverse[f"GET {entity_set}"] == 1, entity_set
    assert writes(box) == 0


def test_a_subscription_is_found_through_its_accounts_provider_account(box: Sandbox) -> None:
    box.reset_counts()
    result = diagnose(box, subscription="5ab0000c-0000-4000-8000-00000000000c")
    assert result["customerId"] == demo.LITWARE
    # the record's Account -> its Provider Account -> that one customer: no search
    assert box.counts()["partnerCenter"]["GET subscriptions"] == 1


def test_the_setting_off_is_the_first_failed_check(start: Any) -> None:
    box = start(Scenario.builtin("setting-off"))
    result = run_diagnose(
        services_for(box).diagnose_deps(), DiagnoseRequest(customer_id=demo.CONTOSO)
    )
    first = failed_checks(result)[0]
    assert first["check"] == "setting"
    assert (
        first["fix"] == "Set Associate Default Billing Contract to Yes in the Work 365 Admin Hub."
    )


def test_duplicate_records_fail_the_record_check(world: ScenarioBuilder, start: Any) -> None:
    a1 = world.account(1)
    c1 = world.customer(1, account_id=a1)
    sub = world.new_subscription(1, c1)
    world.record(2, sub)
    box = start(world.scenario())
    result = run_diagnose(services_for(box).diagnose_deps(), DiagnoseRequest(subscription_id=sub))
    bad = check(result, "subscription-record")
    assert bad["ok"] is False
    assert {r["id"] for r in bad["records"]} == {gid("rec", 1), gid("rec", 2)}
    assert result["subscriptions"][0]["reason"] == "error"
    assert "Merge or deactivate" in result["subscriptions"][0]["fix"]


def test_a_customer_without_reseller_relationship_fails_the_partner_center_check(
    world: ScenarioBuilder, start: Any
) -> None:
    a1 = world.account(1)
    c1 = world.customer(1, account_id=a1, relationship=False)
    box = start(world.scenario())
    result = run_diagnose(services_for(box).diagnose_deps(), DiagnoseRequest(customer_id=c1))
    assert check(result, "partner-center")["ok"] is False
    assert result["errors"][0]["code"] == "20002"
    assert result["status"] == "partial"


def test_dataverse_down_is_a_failed_diagnosis_not_a_crash(start: Any) -> None:
    box = start(Scenario.builtin("demo"))
    box.faults.add({"service": "dataverse", "kind": "503", "every": 1})
    services = services_for(box, WORK365_MAX_ATTEMPTS="1")
    result = run_diagnose(services.diagnose_deps(), DiagnoseRequest(customer_id=demo.CONTOSO))
    assert (result["status"], result["ok"]) == ("failed", False)
    assert result["errors"][0]["service"] == "dataverse"


@pytest.mark.parametrize(
    "bad", [{"customer_id": "not-a-guid"}, {"subscription_id": "x' or 1 eq 1 or '"}, {}]
)
def test_bad_ids_are_refused_before_anything_is_read(bad: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        DiagnoseRequest(**bad)


# ---- the CLI -------------------------------------------------------------------------------


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


@pytest.mark.usefixtures("clean_env")
def test_cli_exit_codes_say_whether_every_check_passed() -> None:
    code, text = run("diagnose", "--sandbox", "--customer", demo.CONTOSO, "--json")
    assert (code, json.loads(text)["ok"]) == (0, True)
    code, text = run("diagnose", "--sandbox", "--customer", demo.COHO)
    assert code == 1
    assert "FAIL multiple-defaults" in text
    assert "fix: Clear Is Default on one of: Coho Winery - Default" in text


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    "argv",
    [
        ("diagnose", "--sandbox"),
        ("diagnose", "--sandbox", "--customer", "not-a-guid"),
        ("diagnose", "--sandbox", "--subscription", "1234"),
    ],
)
def test_cli_usage_errors_exit_2(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(*argv)
    assert code == 2
    assert text == ""
    assert "usage error" in capsys.readouterr().err


def test_the_partner_center_check_names_the_customer_it_knows(box: Sandbox) -> None:
    not_contosos = "5ab00008-0000-4000-8000-000000000008"  # Adventure Works's subscription
    result = diagnose(box, demo.CONTOSO, not_contosos)

    [ref] = check(result, "partner-center")["records"]

    assert (ref["id"], ref["name"]) == (demo.CONTOSO, result["customerName"])
    assert ref["name"]


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("customer", "subscription"),
    [(UNKNOWN_CUSTOMER, None), (demo.CONTOSO, "5ab00008-0000-4000-8000-000000000008")],
)
def test_the_cli_shows_a_records_name_or_nothing_never_empty_quotes(
    customer: str, subscription: str | None
) -> None:
    argv = ["diagnose", "--sandbox", "--customer", customer]
    code, text = run(*argv, *(["--subscription", subscription] if subscription else []))

    assert code == 1
    [line] = [line for line in text.splitlines() if "partnerCenter.customer" in line]
    assert "''" not in text
    assert line.strip().endswith(customer if subscription is None else "'Contoso Ltd'")


@pytest.mark.parametrize("customer", [UNKNOWN_CUSTOMER, demo.ADVENTURE_WORKS, demo.TAILSPIN])
def test_a_check_skipped_for_want_of_an_account_says_so_and_claims_nothing(
    box: Sandbox, customer: str
) -> None:
    several = check(diagnose(box, customer=customer), "multiple-defaults")

    assert several["skipped"] is True
    assert several["detail"].startswith("not checked: the customer maps to no Account")
    assert "no Account has more than one" not in several["detail"]
