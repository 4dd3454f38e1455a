"""The sync's human table (entrypoints/cli/table.py): names instead of GUIDs (ids with --ids),
one heading per customer, the fix under every row that has one, cells wrapped to the terminal
width and never past it, a dry run told in the conditional."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.builders import (
    ACCOUNT,
    a_contract,
    a_provider_account,
    a_record,
    a_setting,
    a_subscription,
    a_world,
)
from work365_fn.entrypoints.cli.table import COLUMNS, cells, fit, render, terminal_width
from work365_fn.rules import World, plan
from work365_fn.rules.fixes import Namer
from work365_fn.rules.summary import RunSummary

NOW = datetime(2026, 3, 2, tzinfo=UTC)
FIRST, SECOND = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
SUBS = [
    a_subscription("55555555-0000-0000-0000-000000000001", FIRST, "Microsoft 365 E3"),
    a_subscription("55555555-0000-0000-0000-000000000002", SECOND, "Power BI Pro"),
    a_subscription("55555555-0000-0000-0000-000000000003", FIRST, "Azure plan"),
]
DEFAULT = a_contract(name="Contoso Ltd - Default contract for every licence")
LONG_ACCOUNT = "Contoso Limited, Worldwide Holdings and Subsidiaries (Europe, Middle East)"


def summary(*, dry_run: bool, world: World | None = None) -> dict[str, Any]:
    world = world or a_world(
        subscriptions=SUBS,
        records=[a_record(s.id) for s in SUBS[:2]],  # the third is not synced yet
        provider_accounts=[a_provider_account(FIRST), a_provider_account(SECOND)],
        contracts=[DEFAULT],
    )
    run = RunSummary(
        run_id="11111111-1111-4111-8111-111111111111",
        started_at=NOW,
        dry_run=dry_run,
        setting=a_setting(),
        customers=2,
        decisions=plan(world),
    )
    run.namer = Namer(
        provider_accounts=world.provider_accounts,
        contracts=world.contracts,
        account_names={ACCOUNT: LONG_ACCOUNT},
        since=world.setting.since,
        customer_names={FIRST: "Contoso Ltd", SECOND: "Fabrikam, Inc."},
    )
    return run.to_json()


def text_of(data: dict[str, Any], width: int, ids: bool = False) -> str:
    out = io.StringIO()
    render(data, out, width=width, ids=ids)
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("ids", [False, True])
def test_no_line_is_wider_than_the_terminal(width: int, ids: bool) -> None:
    text = text_of(summary(dry_run=True), width, ids)
    assert max(len(line) for line in text.splitlines()) <= width
    assert LONG_ACCOUNT.split(maxsplit=1)[0] in text


def test_a_wide_terminal_keeps_each_row_on_one_line() -> None:
    lines = text_of(summary(dry_run=True), 200).splitlines()
    [e3] = [line for line in lines if "Microsoft 365 E3" in line]
    assert LONG_ACCOUNT in e3 and DEFAULT.name in e3


def test_a_narrow_terminal_wraps_the_names_and_keeps_the_reason_whole() -> None:
    lines = text_of(summary(dry_run=True), 80).splitlines()
    [row] = [i for i, line in enumerate(lines) if line.startswith("  Microsoft 365")]
    block = lines[row : row + LONG_ACCOUNT.count(" ") + 1]
    assert "default-contract" in block[0] and "would assign" in block[0]
    cell_words = " ".join(" ".join(block).split())
    assert all(word in cell_words for word in LONG_ACCOUNT.split())
    assert len(block[0]) > 60 and "Limited," not in block[0]  # the account wrapped


@pytest.mark.parametrize("width", [56, 60, 64])
def test_narrow_columns_wrap_between_words_never_inside_one(width: int) -> None:
    data = summary(dry_run=True)
    texts = [cells(row, dry=True) for row in data["subscriptions"]]
    words = {w for text in texts for cell in text.values() for w in cell.split()}
    words |= {word for title, _, _ in COLUMNS for word in title.split()}

    table = text_of(data, width).split("\n\n", 1)[1]  # past the header lines
    printed = set(table.split())

    def whole(word: str) -> bool:  # or broken only after a hyphen: `existing-` `subscription`
        return word in printed or set(re.split(r"(?<=\w-)(?=\w)", word)) <= printed

    assert [word for word in sorted(words) if not whole(word)] == []
    assert max(len(line) for line in table.splitlines()) <= width


def test_a_word_longer_than_its_column_is_still_broken_to_fit() -> None:
    data = summary(dry_run=True)
    for row in data["subscriptions"]:
        row["subscriptionName"] = "Supercalifragilisticexpialidocious-Enterprise-Agreement-Plan"

    text = text_of(data, 52)

    assert max(len(line) for line in text.splitlines()) <= 52
    assert "Supercalifragilisticexpialidocious" not in text  # longer than any column here


def test_names_not_ids_and_ids_only_when_asked() -> None:
    data = summary(dry_run=True)
    plain, with_ids = text_of(data, 200), text_of(data, 200, ids=True)
    for row in data["subscriptions"]:
        assert row["subscriptionId"] not in plain
        assert row["subscriptionId"] in with_ids
    assert FIRST not in plain and FIRST in with_ids
    assert "Contoso Ltd" in plain and "Power BI Pro" in plain


def test_rows_are_grouped_under_a_heading_per_customer() -> None:
    lines = text_of(summary(dry_run=True), 200).splitlines()
    headings = [line for line in lines if line in ("Contoso Ltd", "Fabrikam, Inc.")]
    assert headings == ["Contoso Ltd", "Fabrikam, Inc."]
    contoso, fabrikam = lines.index("Contoso Ltd"), lines.index("Fabrikam, Inc.")
    under_contoso = "\n".join(lines[contoso:fabrikam])
    assert "Microsoft 365 E3" in under_contoso and "Azure plan" in under_contoso
    assert "Power BI Pro" in "\n".join(lines[fabrikam:])


def test_the_fix_is_printed_under_its_row() -> None:
    data = summary(dry_run=True, world=a_world(contracts=[]))
    lines = text_of(data, 80).splitlines()
    [row] = [i for i, line in enumerate(lines) if line.startswith("  Microsoft 365")]
    [fix] = [i for i, line in enumerate(lines) if line.startswith("      fix: ")]
    assert lines[fix].endswith("Set Is Default = Yes on one active Billing Contract of 'Contoso")
    assert row < fix and lines[fix + 1].startswith("        Limited,")  # wrapped, indented
    assert lines[-1].endswith("(Europe, Middle East)'.")


def test_a_dry_run_speaks_in_the_conditional_and_a_live_run_does_not() -> None:
    dry = text_of(summary(dry_run=True), 200)
    assert dry.startswith("dry run: nothing written")
    assert "2 would be assigned" in dry and "would assign" in dry
    live = text_of(summary(dry_run=False), 200)
    assert live.startswith("live run")
    assert "2 assigned" in live and "would" not in live
    assert "dry run True" not in dry and "dry run False" not in live


def test_a_scoped_run_without_customer_names_heads_its_groups_with_the_id() -> None:
    data = summary(dry_run=True)
    for row in data["subscriptions"]:
        row["customerName"] = None
    assert f"customer {FIRST}" in text_of(data, 80).splitlines()


def test_the_columns_give_way_widest_first_and_never_below_their_floor() -> None:
    assert fit([10, 50, 30], 100) == [10, 50, 30]
    assert fit([10, 50, 30], 60) == [10, 25, 25]
    assert sum(fit([40, 40, 40], 20)) == 24  # three floors of 8: as narrow as it gets


def test_the_width_follows_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "123")
    assert terminal_width() == 123
