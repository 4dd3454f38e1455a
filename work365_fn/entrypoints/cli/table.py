"""The sync's human output: the run summary as a table an admin reads, names first.

One heading line per customer, then its subscriptions (name, what the run did or would do, the
reason, the billing contract, the Account); the fix sentence under every row that has one. Ids
only with `--ids` (and always in `--json`): beside the customer's name, and on a line under each
row, so a GUID is never cut in two by a narrow column. Cells wrap to the terminal width and never
overflow it, between words (a word is cut only when it is longer than its column can be); the
action and the reason keep their width while the names give way. The words (a
dry run's conditional, the count labels) are the run summary's own (`work365_fn.rules.summary`),
so the table, the Teams card and the log line say the same.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Mapping, Sequence
from itertools import groupby, zip_longest
from typing import Any, TextIO

from work365_fn.entrypoints.cli.operations import print_problems
from work365_fn.rules.summary import action_words, counts_sentence, run_kind, setting_words

INDENT = "  "
GAP = "  "
FIX_INDENT = "      "
MIN_COLUMN = 8  # the narrowest a column gets when its words cannot all stay whole
FALLBACK_SIZE = (100, 24)  # when the width cannot be found (output piped, no COLUMNS)

Row = dict[str, Any]
_AFTER_HYPHEN = re.compile(r"(?<=\w-)(?=\w)")  # where textwrap may break a hyphenated word


def terminal_width() -> int:
    """The terminal's columns (COLUMNS first, as `shutil.get_terminal_size` reads it)."""
    return max(40, shutil.get_terminal_size(FALLBACK_SIZE).columns)


def render(
    summary: Mapping[str, Any], out: TextIO, *, width: int | None = None, ids: bool = False
) -> None:
    """The whole human output of a sync: header, counts, the table, then the problems."""
    width = width or terminal_width()
    dry = bool(summary.get("dryRun"))
    for line in header_lines(summary):
        _print_wrapped(line, out, width, "")
    rows = list(summary.get("subscriptions") or [])
    if rows:
        print(file=out)
        _table(rows, dry, out, width, ids)
    for skipped in summary.get("skippedCustomers") or []:
        print(f"skipped customer {skipped['customerId']}: {skipped['why']}", file=out)
    print_problems(dict(summary), out)


def header_lines(summary: Mapping[str, Any]) -> list[str]:
    """The run (dry or live), the setting and cutoff, the counts, the reasons that occurred."""
    dry = bool(summary.get("dryRun"))
    setting = summary.get("setting") or {}
    occurred = ", ".join(f"{k} {n}" for k, n in (summary.get("byReason") or {}).items() if n)
    return [
        f"{run_kind(dry)}  (run {summary.get('runId')}, {summary.get('mode')} mode, status "
        f"{summary.get('status')})",
        setting_words(setting),
        counts_sentence(summary.get("counts") or {}, dry),
        f"by reason: {occurred or 'none'}",
    ]


# (title, key of `cells`, whether the column keeps its natural width while others can give way)
COLUMNS = (
    ("subscription", "subscription", False),
    ("action", "action", True),
    ("reason", "reason", True),
    ("billing contract", "contract", False),
    ("account", "account", False),
)


def cells(row: Row, dry: bool) -> dict[str, str]:
    """The text of each column for one summary row: names, falling back to ids."""
    return {
        "subscription": row.get("subscriptionName") or row["subscriptionId"],
        "action": action_words(row["action"], dry),
        "reason": row["reason"],
        # Names come from the read's FormattedValue annotations; a contract Dataverse sent no
        # display name for is said so, its id is on the `--ids` line.
        "contract": row.get("billingContractName")
        or ("(name not read)" if row.get("billingContractId") else "-"),
        "account": row.get("accountName") or row.get("accountId") or "-",
    }


def ids_line(row: Row) -> str:
    """`--ids`: the row's ids, under it."""
    named = (
        ("subscription", "subscriptionId"),
        ("record", "recordId"),
        ("account", "accountId"),
        ("billing contract", "billingContractId"),
    )
    return "ids: " + ", ".join(f"{what} {row[key]}" for what, key in named if row.get(key))


def customer_heading(row: Row, ids: bool) -> str:
    name = row.get("customerName")
    if not name:
        return f"customer {row['customerId']}"
    return f"{name}  ({row['customerId']})" if ids else str(name)


def fit(
    natural: Sequence[int],
    available: int,
    keep: Sequence[bool] | None = None,
    words: Sequence[int] | None = None,
) -> list[int]:
    """Column widths that fit `available` characters: the widest column gives a character at a
    time, down to its floor. The floors, first that fits: the `keep` columns at their natural
    width and the others at their longest word; every column at its longest word (`words`: no
    word is ever cut); every column at MIN_COLUMN (or its natural width when that is less), the
    words longer than that broken."""
    cut = [min(n, MIN_COLUMN) for n in natural]
    whole = [min(n, w) for n, w in zip(natural, words or cut, strict=True)]
    kept = [
        n if k else w
        for n, w, k in zip(natural, whole, keep or [False] * len(natural), strict=True)
    ]
    for floors in (kept, whole):
        if sum(floors) <= available:
            return _shrink(list(natural), floors, available)
    return _shrink(list(natural), cut, available)


def longest_word(texts: Sequence[str]) -> int:
    """The longest piece `wrap` keeps whole: a word, or the part of a hyphenated word up to or
    after a hyphen between letters (`existing-`, `subscription`)."""
    parts = (p for t in texts for word in t.split() for p in _AFTER_HYPHEN.split(word))
    return max((len(p) for p in parts), default=0)


def _shrink(widths: list[int], floor: Sequence[int], available: int) -> list[int]:
    while sum(widths) > available:
        i = max(range(len(widths)), key=lambda k: (widths[k] - floor[k], widths[k]))
        if widths[i] <= floor[i]:
            break  # narrower than every column's floor: nothing more to give
        widths[i] -= 1
    return widths


def wrap(text: str, width: int) -> list[str]:
    """On word boundaries (and after hyphens); a word longer than the column is broken."""
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=True) or [""]


def _table(rows: list[Row], dry: bool, out: TextIO, width: int, ids: bool) -> None:
    texts = [cells(r, dry) for r in rows]
    natural = [max([len(title)] + [len(t[key]) for t in texts]) for title, key, _ in COLUMNS]
    words = [longest_word([title] + [t[key] for t in texts]) for title, key, _ in COLUMNS]
    available = width - len(INDENT) - len(GAP) * (len(COLUMNS) - 1)
    widths = fit(natural, available, [keep for _, _, keep in COLUMNS], words)
    _print_row([title for title, _, _ in COLUMNS], widths, out)
    customer_of = lambda pair: pair[0]["customerId"]  # noqa: E731 - the group key
    for _, group in groupby(zip(rows, texts, strict=True), key=customer_of):
        members = list(group)
        print(file=out)
        _print_wrapped(customer_heading(members[0][0], ids), out, width, "")
        for row, text in members:
            _print_row([text[key] for _, key, _ in COLUMNS], widths, out)
            if ids:
                _print_wrapped(ids_line(row), out, width, FIX_INDENT)
            if row.get("message"):
                _print_wrapped(f"note: {row['message']}", out, width, FIX_INDENT)
            if row.get("fix"):
                _print_wrapped(f"fix: {row['fix']}", out, width, FIX_INDENT)


def _print_row(values: Sequence[str], widths: Sequence[int], out: TextIO) -> None:
    wrapped = [wrap(v, w) for v, w in zip(values, widths, strict=True)]
    for parts in zip_longest(*wrapped, fillvalue=""):
        line = GAP.join(p.ljust(w) for p, w in zip(parts, widths, strict=True))
        print((INDENT + line).rstrip(), file=out)


def _print_wrapped(text: str, out: TextIO, width: int, indent: str) -> None:
    for line in textwrap.wrap(
        text,
        width,
        initial_indent=indent,
        subsequent_indent=indent + "  ",
        break_long_words=True,
        break_on_hyphens=False,
    ) or [""]:
        print(line, file=out)
