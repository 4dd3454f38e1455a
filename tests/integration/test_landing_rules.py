"""The landing-rules scenario end to end: the CLI (sync, report, diagnose, check-schema), the HTTP
handlers, and a bad rules file refused at start (CLI exit 2, HTTP 500) before anything is read
or written. Expectations come from the scenario's own description and rules."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

import function_app
from work365_fn.entrypoints.cli.main import main
from work365_fn.rules import LANDS, Reason, count_reasons
from work365_fn.sandbox import Sandbox, Scenario
from work365_fn.sandbox.scenario import builtin_names

SCENARIO = Scenario.builtin("landing-rules")
TIMING = "work365_billingtiming"
ROOT = Path(__file__).resolve().parents[2]
RULES = SCENARIO.landing_rules
_ROW = re.compile(r"^([0-9A-Fa-f-]{36}) \| ([a-z-]+) \| (\S+) \| (.+)$")
NEW_REASONS = {
    Reason.LANDING_RULE,
    Reason.NO_LANDING_CONTRACT,
    Reason.MULTIPLE_LANDING_CONTRACTS,
    Reason.EXCLUDED_BY_RULE,
}


def expected() -> dict[str, tuple[str, str | None]]:
    """Subscription id -> (reason, contract id) as the scenario's description lists them."""
    ref = Path(__file__).resolve().parents[2] / "work365_fn/sandbox/scenarios/landing-rules.json"
    out = {}
    for line in json.loads(ref.read_text(encoding="utf-8"))["description"]:
        if found := _ROW.match(line.strip()):
            sub, reason, contract, _ = found.groups()
            out[sub.lower()] = (reason, None if contract == "null" else contract)
    served = {s.id.lower() for c in SCENARIO.customers for s in c.subscriptions}
    assert set(out) == served
    return out


EXPECTED = expected()


@pytest.fixture(autouse=True)
def _no_machine_settings(clean_env: None) -> None:
    """The CLI runs without the machine's WORK365_ settings."""


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def run_json(*argv: str) -> tuple[int, dict[str, Any]]:
    code, text = run(*argv, "--json")
    return code, json.loads(text)


def rules_file(tmp_path: Path, document: Any) -> str:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


# ---- the CLI ---------------------------------------------------------------------------------


def test_the_scenario_shows_every_landing_reason_through_the_cli() -> None:
    code, summary = run_json("sync", "--sandbox", "--scenario", "landing-rules")
    assert code == 0
    got = {
        r["subscriptionId"]: (r["reason"], r["billingContractId"]) for r in summary["subscriptions"]
    }
    assert got == EXPECTED
    assert summary["byReason"] == count_reasons(reason for reason, _ in EXPECTED.values())
    assert all(summary["byReason"][r] for r in NEW_REASONS)
    assert summary["counts"]["assigned"] == sum(
        Reason(reason) in LANDS for reason, _ in EXPECTED.values()
    )
    messages = {r["subscriptionId"]: r.get("message", "") for r in summary["subscriptions"]}
    for rule_number, rule in enumerate(RULES["rules"], start=1):  # type: ignore[index]
        assert any(f"rule {rule_number} '{rule['name']}'" in m for m in messages.values())


def test_without_the_rules_the_same_tenant_lands_on_the_defaults(tmp_path: Path) -> None:
    """An empty rules file (--landing-rules wins over the scenario's own) gives today's rule."""
    empty = rules_file(tmp_path, {"rules": []})
    code, summary = run_json(
        "sync", "--sandbox", "--scenario", "landing-rules", "--landing-rules", empty, "--dry-run"
    )
    assert code == 0
    reasons = {r["reason"] for r in summary["subscriptions"]}
    assert reasons.isdisjoint(r.value for r in NEW_REASONS)


def test_the_report_lists_the_accounts_a_rule_cannot_serve() -> None:
    code, report = run_json("report", "--sandbox", "--scenario", "landing-rules")
    assert code == 0
    cannot = report["accountsLandingRulesCannotServe"]
    served = {sub for sub, (reason, _) in EXPECTED.items()}
    want = {
        sub: reason
        for sub, (reason, _) in EXPECTED.items()
        if reason in {Reason.NO_LANDING_CONTRACT, Reason.MULTIPLE_LANDING_CONTRACTS}
    }
    assert {s: item["reason"] for item in cannot for s in item["subscriptions"]} == want
    assert served >= set(want)
    several = next(i for i in cannot if i["reason"] == Reason.MULTIPLE_LANDING_CONTRACTS)
    assert len(several["contracts"]) == 2
    assert (several["rule"], several["ruleName"]) == (1, RULES["rules"][0]["name"])  # type: ignore[index]
    assert report["counts"]["accountsLandingRulesCannotServe"] == len(cannot)
    listed = {r["subscriptionId"]: r["reason"] for r in report["unassignedSubscriptions"]}
    assert {s: r for s, r in listed.items() if r == Reason.EXCLUDED_BY_RULE}
    code, text = run("report", "--sandbox", "--scenario", "landing-rules", "--csv", "-")
    assert text.count("account-landing-rule-cannot-serve") == len(cannot)


def test_diagnose_shows_which_rule_decided_and_why_the_others_did_not() -> None:
    contoso = SCENARIO.customers[0]
    code, result = run_json(
        "diagnose", "--sandbox", "--scenario", "landing-rules", "--customer", contoso.id
    )
    assert code in (0, 1)
    rows = {r["subscriptionId"]: r for r in result["subscriptions"]}
    licence = rows[contoso.subscriptions[4].id]  # a monthly licence: rule 4
    trail = licence["landingRules"]
    assert [(v["rule"], v["decided"]) for v in trail] == [
        (1, False),
        (2, False),
        (3, False),
        (4, True),
    ]
    assert "not of product" in trail[0]["why"]
    assert trail[3]["contractId"] == licence["billingContractId"]
    assert rows[contoso.subscriptions[0].id]["landingRules"] == []  # already assigned
    code, text = run(
        "diagnose", "--sandbox", "--scenario", "landing-rules", "--customer", contoso.id
    )
    assert "rule 4 DECIDED 'Licences to In Advance'" in text


def test_check_schema_verifies_the_rules_columns(tmp_path: Path) -> None:
    code, result = run_json("check-schema", "--sandbox", "--scenario", "landing-rules")
    assert code == 0
    names = {c["check"]: c for c in result["checks"]}
    assert names["work365_billingcontract.work365_billingtiming (landing rules)"]["ok"]


def test_the_scenario_help_lists_the_built_in_scenarios_from_the_sandbox(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _ = run("sync", "--help")
    assert code == 0
    helptext = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert builtin_names() and "landing-rules" in builtin_names()
    assert f"a built-in name ({', '.join(builtin_names())})" in helptext


def test_the_demo_script_runs_the_landing_rules_scenario(tmp_path: Path) -> None:
    """README: `bash scripts/demo --scenario landing-rules` shows every landing reason."""
    bash = shutil.which("bash")
    assert bash is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK365_")}
    done = subprocess.run(
        [bash, str(ROOT / "scripts" / "demo"), "--scenario", "landing-rules", "--json", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["subscriptions"]
    assert {r["subscriptionId"]: (r["reason"], r["billingContractId"]) for r in rows} == EXPECTED
    assert {reason for reason, _ in EXPECTED.values()} >= NEW_REASONS


# ---- refused at start -------------------------------------------------------------------------


def test_an_unknown_field_exits_2_naming_the_rule_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = rules_file(
        tmp_path, {"rules": [{"name": "Azure", "when": {"prodct": "X"}, "action": "leave"}]}
    )
    code, out = run("sync", "--sandbox", "--scenario", "landing-rules", "--landing-rules", bad)
    assert (code, out) == (2, "")
    err = capsys.readouterr().err
    assert "rule 1 'Azure'" in err and "'when.prodct'" in err
    assert "Traceback" not in err


def test_an_unknown_column_exits_2_before_any_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = {"rules": [{"name": "Arrears", "contract": {"column": "work365_timing", "equals": 2}}]}
    bad = rules_file(tmp_path, doc)
    state = str(tmp_path / "state.sqlite")
    code, _ = run(
        "sync", "--sandbox", "--scenario", "landing-rules", "--state", state, "--landing-rules", bad
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "rule 1 'Arrears'" in err and "'contract.column'" in err and "work365_timing" in err
    # Nothing was written: the state (read back without rules) has its one assigned record.
    code, summary = run_json("sync", "--sandbox", "--state", state, "--dry-run")
    reasons = [r["reason"] for r in summary["subscriptions"]]
    assert reasons.count(Reason.ALREADY_ASSIGNED) == 1
    assert reasons.count(Reason.DEFAULT_CONTRACT) == len(EXPECTED) - 1
    code, result = run_json("check-schema", "--sandbox", "--state", state, "--landing-rules", bad)
    assert code == 1
    [check] = [c for c in result["checks"] if "landing rules" in c["check"]]
    assert not check["ok"] and "rule 1 'Arrears'" in check["detail"]


def test_a_value_of_the_wrong_type_for_the_column_exits_2_before_any_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The scenario's work365_billingtiming is a number column: "Arrears" (its label) would
    # match no contract anywhere, so it is refused instead of giving no-landing-contract.
    doc = {"rules": [{"name": "Arrears", "contract": {"column": TIMING, "equals": "Arrears"}}]}
    bad = rules_file(tmp_path, doc)
    state = str(tmp_path / "state.sqlite")
    code, out = run(
        "sync", "--sandbox", "--scenario", "landing-rules", "--state", state, "--landing-rules", bad
    )
    assert (code, out) == (2, "")
    err = capsys.readouterr().err
    assert "rule 1 'Arrears'" in err and "'contract.equals'" in err and "(Integer)" in err
    assert "Traceback" not in err
    code, summary = run_json("sync", "--sandbox", "--state", state, "--dry-run")
    reasons = [r["reason"] for r in summary["subscriptions"]]
    assert reasons.count(Reason.ALREADY_ASSIGNED) == 1  # nothing was written
    code, result = run_json("check-schema", "--sandbox", "--state", state, "--landing-rules", bad)
    assert code == 1
    [check] = [c for c in result["checks"] if "landing rules" in c["check"]]
    assert not check["ok"] and "'contract.equals'" in check["detail"]


# ---- the HTTP API ------------------------------------------------------------------------------


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The landing-rules sandbox, its rules inline in the app setting of a fresh worker."""
    with Sandbox.start(SCENARIO) as sandbox:
        for key, value in sandbox.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("WORK365_LANDING_RULES_FILE", json.dumps(RULES))
        function_app.services.cache_clear()
        yield sandbox
    function_app.services.cache_clear()


def request(method: str, route: str, body: Any = None) -> func.HttpRequest:
    return func.HttpRequest(
        method=method,
        url=f"http://localhost:7071/api/{route}",
        headers={"Content-Type": "application/json"},
        body=json.dumps(body).encode() if body is not None else b"",
    )


def test_http_sync_and_report_with_the_rules(box: Sandbox) -> None:
    resp = function_app.sync_http(request("POST", "sync", {}))
    assert resp.status_code == 200
    summary = json.loads(resp.get_body())
    got = {
        r["subscriptionId"]: (r["reason"], r["billingContractId"]) for r in summary["subscriptions"]
    }
    assert got == EXPECTED
    resp = function_app.report_http(request("GET", "report"))
    assert resp.status_code == 200
    report = json.loads(resp.get_body())
    # After the sync, what is left: the Accounts the rule cannot serve, the excluded trial.
    assert {i["reason"] for i in report["accountsLandingRulesCannotServe"]} == {
        Reason.NO_LANDING_CONTRACT,
        Reason.MULTIPLE_LANDING_CONTRACTS,
    }


def test_http_answers_500_naming_the_rule_on_a_bad_rules_file(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = {"rules": [{"name": "Trials", "when": {"isTrial": "yes"}, "action": "leave"}]}
    monkeypatch.setenv("WORK365_LANDING_RULES_FILE", json.dumps(bad))
    function_app.services.cache_clear()
    before = box.counts()
    resp = function_app.sync_http(request("POST", "sync", {}))
    body = json.loads(resp.get_body())
    assert resp.status_code == 500
    assert body["error"] == "configuration"
    assert "rule 1 'Trials'" in body["message"] and "'when.isTrial'" in body["message"]
    assert box.counts() == before  # refused before any request


def test_http_answers_500_on_a_value_of_the_wrong_type_for_the_column(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = {"rules": [{"name": "Arrears", "contract": {"column": TIMING, "equals": "Arrears"}}]}
    monkeypatch.setenv("WORK365_LANDING_RULES_FILE", json.dumps(bad))
    function_app.services.cache_clear()
    resp = function_app.sync_http(request("POST", "sync", {}))
    body = json.loads(resp.get_body())
    assert (resp.status_code, body["error"]) == (500, "configuration")
    assert "rule 1 'Arrears'" in body["message"] and "'contract.equals'" in body["message"]
    served = box.counts()
    assert [k for k in served.get("dataverse", {}) if not k.startswith("GET ")] == []  # no write
    assert not served.get("partnerCenter")  # refused before the tenant is read
