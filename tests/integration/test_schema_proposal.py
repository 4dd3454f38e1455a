"""check-schema --propose end to end: the built-in `renamed` scenario serves an org whose Work 365
names differ from the default map; the proposal finds them, and a sync with the proposed
WORK365_SCHEMA_FILE decides exactly as the same data does under the default names."""

from __future__ import annotations

import io
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, cast

import pytest

from work365_fn.adapters.schema import Schema
from work365_fn.entrypoints.cli.main import main
from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.dataverse import DataverseEmulator
from work365_fn.sandbox.scenario import Scenario

_ROW = re.compile(r"^([0-9A-Fa-f-]{36}) \| ([a-z-]+) \| (\S+) \| (.+)$")
# Keys of a run summary that differ between any two runs.
RUN_SPECIFIC = {"runId", "startedAt", "finishedAt"}


@pytest.fixture(autouse=True)
def _no_machine_settings(clean_env: None) -> None:
    """Every test here runs the CLI without the machine's WORK365_ settings."""


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def run_json(*argv: str) -> tuple[int, dict[str, Any]]:
    code, text = run(*argv, "--json")
    return code, json.loads(text)


def renamed_raw() -> dict[str, Any]:
    ref = resources.files("work365_fn.sandbox").joinpath("scenarios", "renamed.json")
    return cast(dict[str, Any], json.loads(ref.read_text(encoding="utf-8")))


def expected_reasons() -> dict[str, tuple[str, str | None]]:
    """Subscription id -> (reason, contract) as the scenario's description lists them."""
    out = {}
    for line in renamed_raw()["description"]:
        match = _ROW.match(line)
        if match:
            sub, reason, contract, _ = match.groups()
            out[sub.lower()] = (reason, None if contract == "null" else contract.lower())
    return out


def decisions(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in RUN_SPECIFIC}


def test_the_default_map_fails_check_schema_on_the_renamed_org() -> None:
    code, report = run_json("check-schema", "--sandbox", "--scenario", "renamed")

    assert code == 1
    bad = {c["check"] for c in report["checks"] if not c["ok"]}
    assert "work365_billingcontract.work365_account -> account" in bad
    assert "work365_billingcontract.work365_isdefault" in bad
    assert "setting table" in bad


def test_propose_finds_the_renamed_names_and_a_sync_with_them_decides_as_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, proposed = run("check-schema", "--propose", "--sandbox", "--scenario", "renamed")

    assert code == 0, capsys.readouterr().err
    notes = capsys.readouterr().err
    assert "found    billingContract.account: work365_customer (the map says work365_account)" in (
        notes
    )
    assert "schema proposal: every name found" in notes
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(proposed, encoding="utf-8")  # stdout is exactly the schema file
    assert Schema.load(str(schema_file)) == Scenario.builtin("renamed").schema

    monkeypatch.setenv("WORK365_SCHEMA_FILE", str(schema_file))
    assert run("check-schema", "--sandbox", "--scenario", "renamed")[0] == 0
    code, renamed = run_json("sync", "--dry-run", "--sandbox", "--scenario", "renamed")
    assert code == 0, renamed["errors"]

    monkeypatch.delenv("WORK365_SCHEMA_FILE")
    default_names = tmp_path / "default-names.json"
    raw = renamed_raw()
    del raw["schema"]
    default_names.write_text(json.dumps(raw), encoding="utf-8")
    code, default = run_json("sync", "--dry-run", "--sandbox", "--scenario", str(default_names))
    assert code == 0, default["errors"]

    assert decisions(renamed) == decisions(default)
    got = {
        r["subscriptionId"].lower(): (r["reason"], r["billingContractId"])
        for r in renamed["subscriptions"]
    }
    assert got == expected_reasons()
    assert renamed["setting"]["sinceSource"] == "audit"  # the renamed setting table's audit


def test_propose_json_lists_every_finding(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run_json("check-schema", "--propose", "--sandbox", "--scenario", "renamed")

    assert code == 0
    assert document["ok"] is True
    status = {f["key"]: f["status"] for f in document["findings"]}
    assert status["billingContract.account"] == "found"
    assert status["subscription.account"] == "kept"
    assert Schema.from_json(document["schema"]) == Scenario.builtin("renamed").schema
    assert document["alternateKey"] is None


def test_propose_on_the_default_org_keeps_every_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run_json("check-schema", "--propose", "--sandbox")

    assert code == 0
    assert {f["status"] for f in document["findings"]} == {"kept"}
    assert Schema.from_json(document["schema"]) == Schema()


def test_a_state_file_keeps_the_names_it_was_seeded_with(tmp_path: Path) -> None:
    state = str(tmp_path / "renamed.sqlite")
    with Sandbox.start(Scenario.builtin("renamed"), state_path=state):
        pass
    with Sandbox.start(Scenario.builtin("demo"), state_path=state) as box:  # the state wins
        schema = cast(DataverseEmulator, box.dataverse).schema

    assert schema == Scenario.builtin("renamed").schema


def test_a_choice_or_a_missing_name_exits_1_and_is_listed_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from work365_fn.adapters.schema_discovery import Finding, Proposal, Status
    from work365_fn.composition import Services

    findings = (
        Finding(
            "billingContract.account",
            "work365_customer",
            "work365_account",
            Status.CHOSEN,
            "2 candidates, each a lookup to account",
            ("work365_customer", "work365_reseller"),
        ),
        Finding(
            "billingContract.isDefault",
            "work365_isdefault",
            "work365_isdefault",
            Status.MISSING,
            "no Boolean column named like it: the map's name kept",
        ),
    )
    proposal = Proposal(Schema(), findings, None)
    monkeypatch.setattr(Services, "propose_schema", lambda self: proposal)

    code, text = run("check-schema", "--propose", "--sandbox")

    assert code == 1
    assert Schema.from_json(json.loads(text)) == Schema()
    err = capsys.readouterr().err
    assert (
        "CHOSEN   billingContract.account: work365_customer (the map says work365_account)" in err
    )
    assert "[candidates: work365_customer, work365_reseller]" in err
    assert "MISSING  billingContract.isDefault: work365_isdefault: no Boolean column" in err
    assert "schema proposal: check the names marked CHOSEN or MISSING" in err
