"""One set of counts (issue 13): the sync's JSON, the report, the Teams card and the sync's human
table never disagree on the same data.

Each output is produced the way a user gets it (the CLI over the sandbox, `--scenario`; the card
from the summary the timer would send) and read back into the same shape: the four group counts,
`subscriptions` and the count of every reason. `count_views` is the one place that reads them;
another output (the report page) adds its reader there and is compared with the rest."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration import demo
from work365_fn.adapters.notify import MAX_LISTED, teams_card
from work365_fn.entrypoints.cli.main import main
from work365_fn.rules import LISTED, UNASSIGNED, Group, Reason
from work365_fn.rules.summary import count_label

Json = dict[str, Any]
Counts = dict[str, int]
KEYS = ("subscriptions", *(g.value for g in Group))


@pytest.fixture(autouse=True)
def wide_terminal_and_clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No WORK365_ setting of the machine leaks in; a terminal wide enough that no table line
    wraps (the table's wrapping has its own tests)."""
    import os

    for key in list(os.environ):
        if key.startswith("WORK365_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("COLUMNS", "250")
    yield


def cli(*argv: str) -> str:
    out = io.StringIO()
    code = main(["-q", *argv], out=out)
    assert code in (0, 1), (argv, code)
    return out.getvalue()


def counted(counts: Json, by_reason: Json) -> Counts:
    """The shape every output is read into: `subscriptions`, the four groups, every reason."""
    return {**{k: int(counts[k]) for k in KEYS}, **{r.value: int(by_reason[r]) for r in Reason}}


# ---- one reader per output -------------------------------------------------------------------


def of_summary(summary: Json) -> Counts:
    return counted(summary["counts"], summary["byReason"])


def of_report(report: Json) -> Counts:
    listed = sum(report["counts"][Group(g)] for g in (Group.UNASSIGNED, Group.FAILED))
    assert report["counts"]["unassignedSubscriptions"] == listed  # its list is the LISTED rows
    assert len(report["unassignedSubscriptions"]) == listed
    return counted(report["counts"], report["byReason"])


def of_card(summary: Json) -> Counts:
    """The numbers the Teams card shows for this summary: its counts (under their labels in the
    run's mood), its reasons (zeros left out) and its listed rows (capped, "and N more")."""
    body = teams_card(summary)["attachments"][0]["content"]["body"]
    dry = bool(summary["dryRun"])
    shown = {f["title"]: f["value"] for f in body[2]["facts"]}
    counts = {k: shown[count_label(k, dry)] for k in KEYS}
    heading = next((i for i, b in enumerate(body) if b.get("text") == "By reason"), len(body))
    reasons = {f["title"]: f["value"] for f in body[heading + 1]["facts"]} if body[heading:] else {}
    between = body[3:heading]
    rows = [f for b in between if b["type"] == "FactSet" for f in b["facts"]]
    more = [int(b["text"].split()[1]) for b in between if b.get("text", "").startswith("and ")]
    assert len(rows) + sum(more) == int(counts[Group.UNASSIGNED]) + int(counts[Group.FAILED])
    assert len(rows) <= MAX_LISTED
    assert all(Reason(f["title"]) in LISTED for f in rows)
    return counted(counts, {r.value: reasons.get(r.value, "0") for r in Reason})


def of_table(text: str, dry: bool) -> Counts:
    """The numbers the human table prints (the counts sentence, the `by reason` line), checked
    against the rows it lists: as many rows of each reason as it says."""
    flat = " ".join(text.split())
    counts = {}
    for key in KEYS:
        found = re.search(rf"(\d+) {re.escape(count_label(key, dry))}\b", flat)
        assert found, (key, flat[:300])
        counts[key] = int(found.group(1))
    line = re.search(r"by reason: (.*)", text)
    assert line
    said = dict(item.rsplit(" ", 1) for item in line.group(1).split(", ") if item != "none")
    rows = [r for r in text.splitlines() if r.startswith("  ") and not r.startswith("   ")]
    for reason in Reason:
        listed = sum(1 for r in rows[1:] if re.search(rf"\s{re.escape(reason.value)}\s", r))
        assert listed == int(said.get(reason.value, 0)), (reason, listed, said)
    return counted(counts, {r.value: said.get(r.value, 0) for r in Reason})


def of_page(html: str) -> Counts:
    """The numbers the report page (`report --html`) shows: its tiles (the groups and every
    unassigned reason) and its table's rows (one per listed subscription, by reason). Only what
    the page shows: the reasons of the other groups are not on it."""
    tiles = {
        key: int(n)
        for key, n in re.findall(r'data-count="([^"]+)"><span class="num">(\d+)</span>', html)
    }
    counts = {k: tiles[k] for k in KEYS}
    reasons = {r.value: tiles[f"byReason.{r.value}"] for r in Reason if r in UNASSIGNED}
    rows = re.findall(r'<tr data-reason="([^"]+)"', html)
    for reason in LISTED:  # as many rows as the reason's tile says (`error` has rows only)
        assert rows.count(reason.value) == reasons.get(reason.value, rows.count(reason.value))
        reasons[reason.value] = rows.count(reason.value)
    return {**counts, **reasons}


def count_views(scenario: str) -> dict[str, Counts]:
    """Every output's numbers for one scenario (a file or a built-in name): `sync --json`,
    `report --json`, the Teams card of that summary, and the human `sync` table (all dry runs
    over the same seed, so all see the same data)."""
    box = ("--sandbox", "--scenario", scenario)
    summary = json.loads(cli("sync", "--dry-run", "--json", *box))
    report = json.loads(cli("report", "--json", *box))
    table = cli("sync", "--dry-run", *box)
    page = cli("report", "--html", "-", *box)
    return {
        "report page": of_page(page),
        "sync json": of_summary(summary),
        "report json": of_report(report),
        "teams card": of_card(summary),
        "sync table": of_table(table, dry=True),
    }


# ---- the scenarios ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["demo", "setting-off"])
def test_sync_report_card_and_table_give_the_same_counts(name: str) -> None:
    views = count_views(name)
    reference = views["sync json"]
    assert sum(reference[g.value] for g in Group) == reference["subscriptions"]
    for view, counts in views.items():  # the page shows a part: that part must agree
        assert counts == {k: reference[k] for k in counts}, f"{view} disagrees with the sync's"
    assert len(views["report page"]) == len(KEYS) + len(LISTED)


def test_the_demo_counts_are_the_ones_its_description_gives() -> None:
    views = count_views("demo")
    wanted = demo.reasons()
    assert {r: n for r, n in views["sync json"].items() if r in wanted} == dict(wanted)
    assert views["report json"][Group.UNASSIGNED] == sum(
        n for r, n in wanted.items() if Reason(r) in LISTED and r != Reason.ERROR
    )
