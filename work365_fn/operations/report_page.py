"""The report page: one self-contained HTML document built from the report (`report --json`,
operations/report.py) and the run history (operations/run_history.py). Pure: data in, text out.

Self-contained and safe under a strict Content-Security-Policy: no external script, style, font
or image; one inline `<style>` and one inline `<script>`, both carrying the response's nonce
(`content_security_policy(nonce)` is the header to send with it, and the page repeats it in a
`<meta>` for the copy saved by `report --html`). No `style=` attribute and no inline handler (a
nonce policy blocks both). Every value from Dataverse or Partner Center goes through
`html.escape` (names are data: `<script>` in a customer name shows as text, never runs).

Every number shown is one the report already holds (`counts`, `byReason`, the lists' lengths,
the runs' `counts`): nothing is counted again here, so the page, `report --json`, the sync and
the card agree. Reasons come from `Reason` and their groups (rules/reasons.py): a new reason
shows here without an edit.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from work365_fn.operations.report import LISTS
from work365_fn.rules import GROUP_OF, LISTED, Group, Reason

NO_HISTORY = "no run history available"
TITLE = "Work 365: default Billing Contracts report"
# Columns of the unassigned table: (heading, item key of the name, item key of the id).
COLUMNS = (
    ("Customer", "customerName", "customerId"),
    ("Subscription", "subscriptionName", "subscriptionId"),
    ("Account", "accountName", "accountId"),
    ("Reason", "reason", ""),
    ("Fix", "fix", ""),
)
SEARCHED = ("customerName", "subscriptionName", "accountName", "recordName")

Item = Mapping[str, Any]


def new_nonce() -> str:
    """A fresh nonce for one response (never reused across answers)."""
    return secrets.token_urlsafe(18)


def content_security_policy(nonce: str, *, meta: bool = False) -> str:
    """The page's policy: nothing from anywhere but the nonced inline style and script.
    `frame-ancestors` is not allowed in a `<meta>` policy (CSP 3, 6.3.2.5): header only."""
    parts = [
        "default-src 'none'",
        f"style-src 'nonce-{nonce}'",
        f"script-src 'nonce-{nonce}'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
    ]
    if not meta:
        parts.append("frame-ancestors 'none'")
    return "; ".join(parts)


@dataclass(frozen=True)
class PageData:
    """What one page shows: the report, the last runs (None: no run history where this runs),
    and the run a signed link was made for."""

    report: Mapping[str, Any]
    runs: Sequence[Mapping[str, Any]] | None = None
    run_id: str | None = None


def render_page(data: PageData, nonce: str) -> str:
    report = data.report
    sections = [
        _header(data),
        _status(report),
        _tiles(data),
        _unassigned(report),
        _attention(report),
        _runs(data),
        _setting(report),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f'<meta http-equiv="Content-Security-Policy" '
        f'content="{escape(content_security_policy(nonce, meta=True))}">'
        f"<title>{escape(TITLE)}</title>"
        f'<style nonce="{escape(nonce)}">{STYLE}</style></head>'
        "<body><main>" + "".join(sections) + "</main>"
        f'<script nonce="{escape(nonce)}">{SCRIPT}</script></body></html>\n'
    )


# ---- pieces -----------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return escape("" if value is None else str(value))


def _name(name: Any, record_id: Any) -> str:
    """A name, with its id in small type; an unnamed record shows its id. `<bdi>`: a
    right-to-left name (or one carrying bidi controls) never reorders the text around it."""
    if name and record_id:
        return f'<bdi>{_text(name)}</bdi><br><span class="id">{_text(record_id)}</span>'
    return f"<bdi>{_text(name or record_id or '')}</bdi>"


def _header(data: PageData) -> str:
    report = data.report
    link = (
        f"<p>Opened from the notification of run <code>{_text(data.run_id)}</code>.</p>"
        if data.run_id
        else ""
    )
    return (
        f"<header><h1>{escape(TITLE)}</h1>"
        f"<p>Report <code>{_text(report.get('runId'))}</code>, status "
        f'<strong data-status="{_text(report.get("status"))}">{_text(report.get("status"))}'
        f"</strong>, read at {_text(report.get('finishedAt'))}.</p>{link}</header>"
    )


def _status(report: Mapping[str, Any]) -> str:
    """The errors and warnings of the read (a failed or partial report says what is missing)."""
    errors = [
        f"{e.get('service')} {e.get('status')} {e.get('code') or ''}: {e.get('message') or ''}"
        for e in report.get("errors") or []
    ]
    skipped = [
        f"customer {s.get('customerId')} skipped ({s.get('why')})"
        for s in report.get("skippedCustomers") or []
    ]
    notes = [*errors, *skipped, *(str(w) for w in report.get("warnings") or [])]
    if not notes:
        return ""
    items = "".join(f"<li>{_text(n)}</li>" for n in notes)
    return f'<section aria-labelledby="notes-h"><h2 id="notes-h">Notes</h2><ul>{items}</ul>' + (
        "</section>"
    )


def _tile(key: str, label: str, value: Any, note: str = "") -> str:
    extra = f'<span class="note">{_text(note)}</span>' if note else ""
    return (
        f'<li class="tile" data-count="{_text(key)}"><span class="num">{_text(value)}</span>'
        f'<span class="label">{_text(label)}</span>{extra}</li>'
    )


def unassigned_reasons() -> list[Reason]:
    """The reasons that leave a subscription unassigned, in the table's order."""
    return [r for r in Reason if GROUP_OF[r] is Group.UNASSIGNED]


def _tiles(data: PageData) -> str:
    counts, by_reason = data.report.get("counts", {}), data.report.get("byReason", {})
    last = _last_sync(data.runs)
    if last is None:
        assigned = _tile("lastRunAssigned", "assigned by the last run", "none", NO_HISTORY)
    else:
        when = last.get("finishedAt") or last.get("startedAt")
        mode = "dry run" if last.get("dryRun") else "live run"
        assigned = _tile(
            "lastRunAssigned",
            "assigned by the last run",
            last.get("counts", {}).get("assigned", 0),
            f"{mode}, {when}",
        )
    tiles = [
        _tile("subscriptions", "subscriptions", counts.get("subscriptions", 0)),
        assigned,
        _tile("assigned", "the next sync would assign", counts.get("assigned", 0)),
        _tile("unassigned", "left unassigned", counts.get("unassigned", 0)),
        _tile("unchanged", "left as they are", counts.get("unchanged", 0)),
        _tile("failed", "failed", counts.get("failed", 0)),
    ]
    reasons = [
        _tile(f"byReason.{r.value}", r.value, by_reason.get(r.value, 0))
        for r in unassigned_reasons()
    ]
    return (
        '<section aria-labelledby="counts-h"><h2 id="counts-h">Counts</h2>'
        f'<ul class="tiles">{"".join(tiles)}</ul>'
        '<h3 id="by-reason-h">Unassigned by reason</h3>'
        f'<ul class="tiles" aria-labelledby="by-reason-h">{"".join(reasons)}</ul></section>'
    )


def _last_sync(runs: Sequence[Mapping[str, Any]] | None) -> Mapping[str, Any] | None:
    return next(iter(runs or []), None)


def _unassigned(report: Mapping[str, Any]) -> str:
    items = report.get("unassignedSubscriptions") or []
    by_reason = report.get("byReason", {})
    options = "".join(
        f'<option value="{_text(r.value)}">{_text(r.value)} ({_text(by_reason.get(r.value, 0))})'
        "</option>"
        for r in Reason
        if r in LISTED
    )
    heads = "".join(
        f'<th scope="col"><button type="button" data-column="{i}">{_text(title)}'
        '<span class="arrow" aria-hidden="true"></span></button></th>'
        for i, (title, _, _) in enumerate(COLUMNS)
    )
    rows = "".join(_row(item) for item in items)
    empty = "" if items else '<p class="empty">No subscription is left unassigned.</p>'
    return (
        '<section aria-labelledby="unassigned-h">'
        f'<h2 id="unassigned-h">Unassigned subscriptions ({_text(len(items))})</h2>'
        '<div class="controls"><label for="reason-filter">Reason</label>'
        f'<select id="reason-filter"><option value="">every reason</option>{options}</select>'
        '<label for="name-search">Search names</label>'
        '<input id="name-search" type="search" autocomplete="off">'
        f'<output id="shown" aria-live="polite">{_text(len(items))} of {_text(len(items))} '
        "shown</output></div>"
        '<div class="scroll"><table id="unassigned"><caption>Subscriptions the next sync '
        "would leave unassigned or that failed, with the fix for each. Select a column heading "
        f"to sort.</caption><thead><tr>{heads}</tr></thead><tbody>{rows}</tbody></table></div>"
        f"{empty}</section>"
    )


def _row(item: Item) -> str:
    names = " ".join(str(item.get(k) or "") for k in SEARCHED)
    cells = []
    for _, name_key, id_key in COLUMNS:
        if id_key:
            cells.append(f"<td>{_name(item.get(name_key), item.get(id_key))}</td>")
        elif name_key == "reason":
            cells.append(f"<td><code>{_text(item.get('reason'))}</code></td>")
        else:
            cells.append(f"<td>{_text(item.get(name_key))}</td>")
    return (
        f'<tr data-reason="{_text(item.get("reason"))}" data-names="{_text(names)}">'
        f"{''.join(cells)}</tr>"
    )


# ---- Accounts that need attention --------------------------------------------------------------


def _refs(refs: Iterable[Item]) -> str:
    return ", ".join(_text(r.get("name") or r.get("id")) for r in refs)


def _attention(report: Mapping[str, Any]) -> str:
    without = report.get("accountsWithoutDefault") or []
    rows = [
        *(
            ("no default", _name(a.get("accountName"), a.get("accountId")),
             f"Provider Accounts: {_refs(a.get('providerAccounts') or [])}", a.get("fix"))
            for a in without
            if not a.get("inactiveDefaults")
        ),
        *(
            ("only an inactive default", _name(a.get("accountName"), a.get("accountId")),
             f"inactive: {_refs(a.get('inactiveDefaults') or [])}", a.get("fix"))
            for a in without
            if a.get("inactiveDefaults")
        ),
        *(
            ("several defaults", _name(a.get("accountName"), a.get("accountId")),
             f"defaults: {_refs(a.get('contracts') or [])}", a.get("fix"))
            for a in report.get("accountsWithSeveralDefaults") or []
        ),
        *(
            ("Provider Account without an Account",
             _name(p.get("providerAccountName"), p.get("providerAccountId")),
             f"customer {_text(p.get('customerId') or 'not set')}", p.get("fix"))
            for p in report.get("unmappedProviderAccounts") or []
        ),
        *(
            ("mapped to different Accounts", _name(c.get("customerName"), c.get("customerId")),
             _mappings(c.get("providerAccounts") or []), c.get("fix"))
            for c in report.get("customersWithSeveralAccounts") or []
        ),
        *(
            ("customer without a Provider Account",
             _name(c.get("customerName"), c.get("customerId")),
             f"{_text(c.get('subscriptions'))} subscription(s)", c.get("fix"))
            for c in report.get("customersWithoutProviderAccount") or []
        ),
        *_other_lists(report),
    ]  # fmt: skip
    return _table(
        "attention",
        "Accounts that need attention",
        ("Problem", "Account or record", "Details", "Fix"),
        [(_text(p), who, details, _text(fix)) for p, who, details, fix in rows],
        "No Account needs attention.",
    )


# The report's lists the attention table shows by name above (inactive defaults: as "only an
# inactive default"); any other list of the report is shown by `_other_lists`.
SHOWN = frozenset(
    {
        "unassignedSubscriptions",
        "accountsWithoutDefault",
        "accountsWithSeveralDefaults",
        "inactiveDefaultContracts",
        "unmappedProviderAccounts",
        "customersWithSeveralAccounts",
        "customersWithoutProviderAccount",
    }
)
_NAMED = (
    ("accountName", "accountId"),
    ("customerName", "customerId"),
    ("providerAccountName", "providerAccountId"),
    ("contractName", "contractId"),
)


def _other_lists(report: Mapping[str, Any]) -> list[tuple[str, str, str, Any]]:
    """A list the report gained after this page was written: its items, named by their first
    name field, with their reason and fix."""
    rows = []
    for list_name in (n for n in LISTS if n not in SHOWN):
        problem = re.sub(r"(?<!^)([A-Z])", r" \1", list_name).lower()
        for item in report.get(list_name) or []:
            name, id_ = next(((item.get(n), item.get(i)) for n, i in _NAMED if i in item), ("", ""))
            rows.append(
                (problem, _name(name, id_), _text(item.get("reason") or ""), item.get("fix"))
            )
    return rows


def _mappings(pas: Iterable[Item]) -> str:
    return "; ".join(
        f"{_text(p.get('name') or p.get('id'))} maps to "
        f"{_text(p.get('accountName') or p.get('accountId'))}"
        for p in pas
    )


def _table(
    key: str, title: str, heads: Sequence[str], rows: Sequence[Sequence[str]], empty: str
) -> str:
    """A plain table of cells already escaped, with its heading; `empty` when it has no row."""
    head = f'<section aria-labelledby="{key}-h"><h2 id="{key}-h">{_text(title)} ({len(rows)})</h2>'
    if not rows:
        return f'{head}<p class="empty">{_text(empty)}</p></section>'
    ths = "".join(f'<th scope="col">{_text(h)}</th>' for h in heads)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (
        f'{head}<div class="scroll"><table id="{key}">'
        f"<thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table></div></section>"
    )


# ---- runs and setting --------------------------------------------------------------------------


def _runs(data: PageData) -> str:
    if data.runs is None:
        return (
            '<section aria-labelledby="runs-h"><h2 id="runs-h">Last runs</h2>'
            f'<p class="empty" id="no-history">{_text(NO_HISTORY.capitalize())}: this copy '
            "runs without the app's storage, where the Function App keeps its runs.</p>"
            "</section>"
        )
    rows = []
    for run in data.runs:
        counts = run.get("counts") or {}
        mode = f"{run.get('mode') or ''}{' (dry run)' if run.get('dryRun') else ''}"
        run_id = str(run.get("runId") or "")
        mark = " (this notification)" if data.run_id and run_id == data.run_id else ""
        rows.append(
            (
                _text(run.get("finishedAt") or run.get("startedAt")),
                _text(mode),
                _text(f"{run.get('status')}{mark}"),
                *(_text(counts.get(k, 0)) for k in RUN_COUNTS),
                f"<code>{_text(run_id)}</code>",
            )
        )
    heads = ("Finished", "Mode", "Status", *RUN_COUNTS, "Run")
    return _table("runs", "Last runs", heads, rows, "No sync run is recorded yet.")


RUN_COUNTS = ("subscriptions", "assigned", "unassigned", "unchanged", "failed")


def _setting(report: Mapping[str, Any]) -> str:
    setting = report.get("setting") or {}
    on = "Yes" if setting.get("associateDefaultBillingContract") else "No"
    since = setting.get("since")
    cutoff = (
        f"{_text(since)} (from {_text(setting.get('sinceSource'))})"
        if since
        else "not known (no cutoff: no subscription counts as new)"
    )
    if setting.get("read") is False:  # the report failed before it read the setting
        on = cutoff = "not read"
    return (
        '<section aria-labelledby="setting-h"><h2 id="setting-h">The setting</h2><dl>'
        f'<dt>Associate Default Billing Contract</dt><dd id="setting-value">{on}</dd>'
        f'<dt>Cutoff (subscriptions created since then are new)</dt><dd id="cutoff">{cutoff}</dd>'
        "</dl></section>"
    )


STYLE = """
:root{color-scheme:light;font-family:system-ui,-apple-system,"Segoe UI",sans-serif;
color:#1b1b1b;background:#fff}
body{margin:0}main{max-width:78rem;margin:0 auto;padding:1rem 1.5rem 3rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ccc}
code,.id{font-family:ui-monospace,Consolas,monospace;font-size:.85em}.id{color:#4a4a4a}
.tiles{display:flex;flex-wrap:wrap;gap:.75rem;list-style:none;padding:0}
.tile{border:1px solid #8a8a8a;border-radius:.4rem;padding:.6rem .8rem;min-width:9rem}
.num{display:block;font-size:1.6rem;font-weight:700}.label,.note{display:block}
.note{font-size:.8rem;color:#4a4a4a}
.controls{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;margin:.5rem 0}
select,input,button{font:inherit}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}
caption{text-align:left;color:#4a4a4a;padding:.3rem 0}
th,td{border:1px solid #bbb;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f0}th button{border:0;background:none;font-weight:700;cursor:pointer;
padding:0;color:#1b1b1b}th button:focus-visible{outline:2px solid #005a9e}
th[aria-sort=ascending] .arrow::after{content:" \\25B2"}
th[aria-sort=descending] .arrow::after{content:" \\25BC"}
.empty{font-style:italic}dt{font-weight:700}dd{margin:0 0 .5rem}
"""

# Filter, search and sort of the unassigned table. Reads names with getAttribute and writes
# with textContent only: a name never becomes markup.
SCRIPT = """
(function () {
  "use strict";
  var table = document.getElementById("unassigned");
  var reason = document.getElementById("reason-filter");
  var search = document.getElementById("name-search");
  var shown = document.getElementById("shown");
  if (!table || !reason || !search || !shown) { return; }
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  function apply() {
    var want = reason.value;
    var query = search.value.trim().toLocaleLowerCase();
    var count = 0;
    rows.forEach(function (row) {
      var names = (row.getAttribute("data-names") || "").toLocaleLowerCase();
      var ok = (!want || row.getAttribute("data-reason") === want) &&
        (!query || names.indexOf(query) !== -1);
      row.hidden = !ok;
      if (ok) { count += 1; }
    });
    shown.textContent = count + " of " + rows.length + " shown";
  }
  function sortBy(button) {
    var th = button.parentNode;
    var column = Number(button.getAttribute("data-column"));
    var order = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) {
      cell.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", order);
    var sign = order === "ascending" ? 1 : -1;
    rows.sort(function (a, b) {
      var x = a.cells[column].textContent, y = b.cells[column].textContent;
      return sign * x.localeCompare(y, undefined, {numeric: true, sensitivity: "base"});
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  reason.addEventListener("change", apply);
  search.addEventListener("input", apply);
  Array.prototype.forEach.call(table.querySelectorAll("th button"), function (button) {
    button.addEventListener("click", function () { sortBy(button); });
  });
  apply();
}());
"""
