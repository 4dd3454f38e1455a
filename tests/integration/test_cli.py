"""The CLI as a user runs it: `sync --sandbox`, `--state`, `--json`, `check-schema`, exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration import demo
from tests.integration.conftest import ScenarioBuilder
from work365_fn.entrypoints.cli.main import main
from work365_fn.rules import Group, Reason, count_groups, count_reasons

EXPECTED = demo.expected()
# What one sync of the demo gives, as the scenario's description says.
DEMO_COUNTS = count_groups(e.reason for e in EXPECTED.values())
DEMO_ASSIGNED = DEMO_COUNTS[Group.ASSIGNED.value]


@pytest.fixture(autouse=True)
def _no_machine_settings(clean_env: None) -> None:
    """Every test here runs the CLI without the machine's WORK365_ settings."""


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def run_json(*argv: str) -> tuple[int, dict[str, Any]]:
    code, text = run(*argv, "--json")
    return code, json.loads(text)  # exactly one JSON document, nothing else on stdout


def test_demo_gives_each_subscription_the_reason_its_description_lists() -> None:
    code, summary = run_json("sync", "--sandbox")
    assert code == 0
    assert summary["status"] == "succeeded"
    got = {r["subscriptionId"].lower(): r for r in summary["subscriptions"]}
    assert set(got) == set(EXPECTED)
    for sub, want in EXPECTED.items():
        assert (got[sub]["reason"], got[sub]["billingContractId"]) == (
            want.reason,
            want.contract_id,
        ), want.what
    assert summary["byReason"] == count_reasons(e.reason for e in EXPECTED.values())
    assert set(summary["byReason"]) == {reason.value for reason in Reason}
    assert {k: summary["counts"][k] for k in DEMO_COUNTS} == DEMO_COUNTS
    assert DEMO_ASSIGNED > 0


def test_setting_off_demo_shows_setting_off() -> None:
    code, summary = run_json("sync", "--sandbox", "--scenario", "setting-off")
    assert code == 0
    assert summary["setting"]["associateDefaultBillingContract"] is False
    assert summary["byReason"]["setting-off"] > 0
    assert summary["counts"]["assigned"] == 0


def test_state_file_keeps_the_writes_for_the_next_run(tmp_path: Path) -> None:
    state = str(tmp_path / "demo.sqlite")
    _, first = run_json("sync", "--sandbox", "--state", state)
    assigned = {
        r["subscriptionId"]: r["billingContractId"]
        for r in first["subscriptions"]
        if r["reason"] == "default-contract"
    }
    assert len(assigned) == DEMO_ASSIGNED
    _, second = run_json("sync", "--sandbox", "--state", state)
    rows = {r["subscriptionId"]: r for r in second["subscriptions"]}
    for sub, contract in assigned.items():
        assert (rows[sub]["reason"], rows[sub]["action"]) == ("already-assigned", "none")
        assert rows[sub]["billingContractId"] == contract
    assert second["counts"]["assigned"] == 0
    assert all(r["action"] == "none" for r in second["subscriptions"])


def test_dry_run_then_real_run_on_one_state(tmp_path: Path) -> None:
    state = str(tmp_path / "s.sqlite")
    _, dry = run_json("sync", "--sandbox", "--state", state, "--dry-run")
    _, real = run_json("sync", "--sandbox", "--state", state)
    assert dry["dryRun"] is True
    assert dry["counts"]["assigned"] == real["counts"]["assigned"] == DEMO_ASSIGNED


def test_readable_output_has_the_table_and_the_fix_hints() -> None:
    code, text = run("sync", "--sandbox", "--dry-run")
    assert code == 0
    assert "dry run: nothing written" in text and "status succeeded" in text
    for want in EXPECTED.values():
        assert want.reason in text
    assert "active defaults:" in text
    assert "fix: Set Is Default = Yes on one active Billing Contract of 'Litware, Inc.'" in text


def test_customer_scope_is_validated_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, text = run("sync", "--sandbox", "--customer", "not-a-guid")
    assert code == 2
    assert text == ""


def test_missing_settings_exit_2_naming_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run("sync")
    assert (code, out) == (2, "")
    assert "settings are not set: WORK365_TENANT_ID (expected a GUID" in capsys.readouterr().err


def test_usage_error_exits_2() -> None:
    assert run("frobnicate")[0] == 2


def test_bad_scenario_file_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"accounts": [{"id": "nope", "name": "x"}]}))
    code, _ = run("sync", "--sandbox", "--scenario", str(bad))
    assert code == 2
    assert "accounts[0].id" in capsys.readouterr().err


def test_partial_run_exits_1(tmp_path: Path, world: ScenarioBuilder) -> None:
    world.account(1)
    world.customer(1, account_id=None, relationship=False)
    scenario = tmp_path / "partial.json"
    scenario.write_text(json.dumps(world.raw))
    code, summary = run_json("sync", "--sandbox", "--scenario", str(scenario))
    assert code == 1
    assert summary["status"] == "partial"
    assert summary["errors"][0]["code"] == "20002"


def test_check_schema_passes_on_the_sandbox() -> None:
    code, text = run("check-schema", "--sandbox")
    assert code == 0, text
    assert "schema ok" in text
    assert "navigation property work365_BillingContract" in text
    assert "alternate key on provider subscription id: absent" in text


def test_check_schema_reports_each_wrong_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(
        json.dumps(
            {
                "billingContract": {"isDefault": "work365_isdefaultcontract"},
                "subscription": {"billingContract": "work365_contract"},
            }
        )
    )
    monkeypatch.setenv("WORK365_SCHEMA_FILE", str(schema))
    code, checks = run_json("check-schema", "--sandbox")
    assert code == 1
    bad = {c["check"] for c in checks["checks"] if not c["ok"]}
    assert bad == {
        "work365_billingcontract.work365_isdefaultcontract",
        "work365_subscription.work365_contract -> work365_billingcontract",
    }
