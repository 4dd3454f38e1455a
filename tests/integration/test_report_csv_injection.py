"""`report --csv` over the sandbox with customer-controlled names that a spreadsheet would run as
formulas (issue 12, defect 3): every such cell is neutralised with a leading single quote, and
every field is quoted (RFC 4180), so the file parses back cell for cell."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ScenarioBuilder, services_for
from work365_fn.entrypoints.cli.main import main
from work365_fn.operations.report import CSV_COLUMNS, FORMULA_TRIGGERS, run_report, to_csv

# One Partner Center companyName per trigger character (OWASP's list, and ASVS 5's NUL).
HOSTILE_NAMES = ('=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tx", "\rx", "\x00x")


@pytest.fixture
def hostile(world: ScenarioBuilder) -> ScenarioBuilder:
    """A clean customer, and one customer without a Provider Account per hostile name (the
    report lists each of them with its name in the CSV's `name` column)."""
    a1 = world.account(1)
    c1 = world.customer(1, account_id=a1)
    world.new_subscription(1, c1)
    for n, name in enumerate(HOSTILE_NAMES, start=2):
        world.customer_without_provider_account(n)
        world.raw["partnerCenter"]["customers"][-1]["companyName"] = name
    return world


def parsed(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def quoted_all(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return out.getvalue()


def test_the_triggers_are_the_hostile_names_first_characters() -> None:
    """The test covers the whole list, and the list what OWASP and ASVS 5 name."""
    assert {name[0] for name in HOSTILE_NAMES} == set(FORMULA_TRIGGERS)


def test_every_formula_cell_starts_with_a_quote_and_every_field_is_quoted(
    hostile: ScenarioBuilder, start: Any
) -> None:
    report = run_report(services_for(start(hostile.scenario())).reader_deps())
    text = to_csv(report)
    rows = parsed(text)
    assert tuple(rows[0]) == CSV_COLUMNS
    names = {
        row[CSV_COLUMNS.index("name")]
        for row in rows[1:]
        if row[0] == "customer-without-provider-account"
    }
    assert names == {f"'{name}" for name in HOSTILE_NAMES}
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_TRIGGERS), row
    # RFC 4180 with every field quoted: writing the parsed rows back, quoting all, gives the file.
    assert quoted_all(rows) == text


@pytest.mark.usefixtures("clean_env")
def test_the_cli_file_is_neutralised_too(hostile: ScenarioBuilder, tmp_path: Path) -> None:
    scenario = tmp_path / "hostile.json"
    target = tmp_path / "problems.csv"
    scenario.write_text(json.dumps(hostile.raw), encoding="utf-8")
    code = main(
        ["report", "--sandbox", "--scenario", str(scenario), "--csv", str(target)],
        out=io.StringIO(),
    )
    assert code == 0
    with target.open(encoding="utf-8", newline="") as f:  # a CR in a cell stays a CR
        text = f.read()
    rows = parsed(text)
    assert quoted_all(rows) == text
    assert {row[CSV_COLUMNS.index("name")] for row in rows[1:]} >= {
        f"'{name}" for name in HOSTILE_NAMES
    }
