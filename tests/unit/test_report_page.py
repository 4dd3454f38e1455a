"""The report page's renderer (operations/report_page.py) over built report documents, the run
history it shows (operations/run_history.py), and the settings that make the card's link."""

from __future__ import annotations

from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from work365_fn.adapters.storage import FileRunStore
from work365_fn.errors import ApiError, InvalidSettingError
from work365_fn.operations.report import LISTS, SCHEMA_VERSION, report_counts
from work365_fn.operations.report_page import (
    NO_HISTORY,
    SHOWN,
    PageData,
    content_security_policy,
    render_page,
    unassigned_reasons,
)
from work365_fn.operations.run_history import MAX_RUNS, recent_runs, remember_run
from work365_fn.rules import LISTED, Reason, count_reasons
from work365_fn.rules.summary import setting_json
from work365_fn.settings import Settings

EVIL = "<script>alert(1)</script>\"'&<img src=x onerror=alert(2)>"
NONCE = "n0nce-value"


def a_report(reasons: list[Reason], name: str = "Contoso") -> dict[str, Any]:
    """A report document as build_report makes it: one listed row per listed reason, one item
    in every problem list, every name `name`."""
    rows = [
        {"customerId": "c1", "customerName": name, "subscriptionId": f"s{i}",
         "subscriptionName": name, "recordId": None, "recordName": name, "accountId": "a1",
         "accountName": name, "reason": r.value, "message": name, "fix": name}
        for i, r in enumerate(reasons) if r in LISTED
    ]  # fmt: skip
    ref = {"id": "r1", "name": name}
    lists: dict[str, list[dict[str, Any]]] = {name: [] for name in LISTS} | {
        "unassignedSubscriptions": rows,
        "accountsWithoutDefault": [
            {"accountId": "a1", "accountName": name, "providerAccounts": [ref],
             "inactiveDefaults": [ref], "fix": name}
        ],
        "accountsWithSeveralDefaults": [
            {"accountId": "a2", "accountName": name, "contracts": [ref, ref], "fix": name}
        ],
        "inactiveDefaultContracts": [],
        "unmappedProviderAccounts": [
            {"providerAccountId": "p1", "providerAccountName": name, "customerId": None,
             "fix": name}
        ],
        "customersWithoutProviderAccount": [
            {"customerId": "c2", "customerName": name, "subscriptions": 1, "fix": name}
        ],
        "customersWithSeveralAccounts": [
            {"customerId": "c3", "customerName": name, "fix": name,
             "providerAccounts": [{"id": "p2", "name": name, "accountId": "a3",
                                   "accountName": name}]}
        ],
    }  # fmt: skip
    return {
        "schemaVersion": SCHEMA_VERSION, "runId": "r", "status": "partial",
        "startedAt": "2026-11-30T00:00:00Z", "finishedAt": "2026-11-30T00:00:01Z",
        "setting": {"associateDefaultBillingContract": True, "since": "2026-01-01T00:00:00Z",
                    "sinceSource": "audit"},
        "counts": report_counts(3, reasons, lists),
        "byReason": count_reasons(reasons),
        **lists,
        "skippedCustomers": [{"customerId": "c9", "why": name}],
        "errors": [{"customerId": None, "service": "dataverse", "status": 503, "code": name,
                    "message": name}],
        "warnings": [name],
    }  # fmt: skip


class Tags(HTMLParser):
    """The elements and attribute names a browser would build from the page."""

    def __init__(self) -> None:
        super().__init__()
        self.names: Counter[str] = Counter()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names[tag] += 1
        self.attributes.update(name for name, _ in attrs)


def run(run_id: str, assigned: int = 1) -> dict[str, Any]:
    return {
        "runId": run_id, "mode": "full", "dryRun": False, "status": "succeeded",
        "startedAt": "2026-11-29T22:00:00Z", "finishedAt": "2026-11-29T22:00:05Z",
        "counts": {"customers": 1, "subscriptions": 3, "assigned": assigned, "unassigned": 1,
                   "unchanged": 1, "failed": 0, "created": 0},
        "subscriptions": [{"customerId": "x"}],
    }  # fmt: skip


ALL = list(Reason)


@pytest.mark.parametrize("reason", unassigned_reasons())
def test_every_unassigned_reason_has_a_tile_with_the_reports_count(reason: Reason) -> None:
    report = a_report([*ALL, reason])
    html = render_page(PageData(report), NONCE)
    tile = f'data-count="byReason.{reason.value}"><span class="num">2</span>'
    assert tile in html


@pytest.mark.parametrize("reason", sorted(LISTED))
def test_every_listed_reason_is_a_filter_option(reason: Reason) -> None:
    html = render_page(PageData(a_report(ALL)), NONCE)
    assert f'<option value="{reason.value}">{reason.value} (1)</option>' in html


def test_the_tiles_show_the_reports_counts_not_a_recount() -> None:
    report = a_report(ALL)
    report["counts"] = {**report["counts"], "subscriptions": 97, "failed": 5}  # as given
    html = render_page(PageData(report), NONCE)
    assert 'data-count="subscriptions"><span class="num">97</span>' in html
    assert 'data-count="failed"><span class="num">5</span>' in html


def test_every_name_is_escaped_and_the_page_has_one_script_and_no_inline_attribute() -> None:
    html = render_page(PageData(a_report(ALL, EVIL), [run("r<1>")], "x"), NONCE)
    assert EVIL not in html and "<img" not in html and "alert(1)</script>" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 10
    assert html.count("<script") == 1 and html.count(f'<script nonce="{NONCE}">') == 1
    assert html.count("<style") == 1 and f'<style nonce="{NONCE}">' in html
    tags = Tags()
    tags.feed(html)
    assert tags.names["script"] == 1 and "img" not in tags.names
    assert [a for a in tags.attributes if a == "style" or a.startswith("on")] == []
    assert {"src", "href", "action"} & tags.attributes == set()  # nothing to fetch


def test_the_policy_allows_only_the_nonced_inline_style_and_script() -> None:
    header = content_security_policy(NONCE)
    assert header == (
        "default-src 'none'; style-src 'nonce-n0nce-value'; script-src 'nonce-n0nce-value'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    meta = content_security_policy(NONCE, meta=True)
    assert "frame-ancestors" not in meta and meta in header
    assert f'content="{meta}"' in render_page(PageData(a_report([])), NONCE).replace("&#x27;", "'")


def test_without_run_history_the_page_says_so() -> None:
    html = render_page(PageData(a_report(ALL), None), NONCE)
    assert NO_HISTORY.capitalize() in html
    assert 'data-count="lastRunAssigned"><span class="num">none</span>' in html


def test_the_last_runs_and_the_assigned_by_the_last_run_tile() -> None:
    html = render_page(PageData(a_report(ALL), [run("new", 4), run("old", 9)], "new"), NONCE)
    assert 'data-count="lastRunAssigned"><span class="num">4</span>' in html
    assert html.index("<code>new</code>") < html.index("<code>old</code>")
    assert "succeeded (this notification)" in html
    assert NO_HISTORY not in html


def test_the_attention_list_names_each_kind_of_problem() -> None:
    html = render_page(PageData(a_report(ALL)), NONCE)
    for problem in (
        "only an inactive default",
        "several defaults",
        "Provider Account without an Account",
        "mapped to different Accounts",
        "customer without a Provider Account",
    ):
        assert f"<td>{problem}</td>" in html, problem
    assert "Accounts that need attention (5)" in html


def test_a_list_the_page_does_not_know_is_shown_with_its_fix() -> None:
    report = a_report([])
    new = next((n for n in LISTS if n not in SHOWN), None)
    if new is None:  # every list of today's report has its own place: make one up
        pytest.skip("no list of the report lacks its own place on the page")
    report[new] = [{"accountId": "a9", "accountName": "Fourth Coffee", "reason": "r", "fix": "F"}]
    html = render_page(PageData(report), NONCE)
    assert "Fourth Coffee" in html and "<td>F</td>" in html


def test_the_setting_and_its_cutoff() -> None:
    html = render_page(PageData(a_report([])), NONCE)
    assert '<dd id="setting-value">Yes</dd>' in html
    assert '<dd id="cutoff">2026-01-01T00:00:00Z (from audit)</dd>' in html
    assert "No subscription is left unassigned." in html


def test_a_report_that_never_read_the_setting_says_so_not_no() -> None:
    report = {**a_report([]), "setting": setting_json(None)}
    html = render_page(PageData(report), NONCE)
    assert '<dd id="setting-value">not read</dd>' in html
    assert '<dd id="cutoff">not read</dd>' in html


# ---- the run history ---------------------------------------------------------------------------


def test_the_history_keeps_the_newest_runs_first_once_each(tmp_path: Path) -> None:
    store = FileRunStore(tmp_path)
    assert recent_runs(store) == []
    for i in range(MAX_RUNS + 3):
        assert remember_run(store, run(f"run-{i}", i))
    assert remember_run(store, run("run-5", 55))  # again: moved first, not twice
    runs = recent_runs(store)
    assert len(runs) == MAX_RUNS
    assert [r["runId"] for r in runs[:2]] == ["run-5", f"run-{MAX_RUNS + 2}"]
    assert [r["runId"] for r in runs].count("run-5") == 1
    assert runs[0]["counts"]["assigned"] == 55 and "subscriptions" not in runs[0]


class _DownStore(FileRunStore):
    """The app's storage failing after retries (the blob store raises ApiError then)."""

    def put(self, run_id: str, name: str, document: dict[str, Any]) -> None:
        raise ApiError("storage", 503, "ServerBusy", "the storage account is busy")


def test_an_unwritable_history_never_fails_the_run(tmp_path: Path) -> None:
    assert remember_run(_DownStore(tmp_path), run("r")) is False


def test_a_history_document_of_another_shape_reads_as_empty(tmp_path: Path) -> None:
    store = FileRunStore(tmp_path)
    store.put("state", "recent-runs", {"runs": "nope"})
    assert recent_runs(store) == []
    store.put("state", "recent-runs", {"runs": [1, {"runId": "x"}, run("ok")]})
    assert [r["runId"] for r in recent_runs(store)] == ["ok"]


# ---- the app's public address -------------------------------------------------------------------


BASE = {
    "WORK365_TENANT_ID": "00000000-0000-0000-0000-000000000001",
    "WORK365_CLIENT_ID": "00000000-0000-0000-0000-000000000002",
    "WORK365_CLIENT_SECRET": "s",
    "WORK365_DATAVERSE_URL": "https://org.crm.dynamics.com",
}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WEBSITE_HOSTNAME": "app.azurewebsites.net"}, "https://app.azurewebsites.net"),
        ({"WEBSITE_HOSTNAME": "bad host/x"}, None),
        (
            {"WORK365_PUBLIC_URL": "https://reports.contoso.com/", "WEBSITE_HOSTNAME": "a.net"},
            "https://reports.contoso.com",
        ),
    ],
)
def test_the_public_url_setting(env: dict[str, str], expected: str | None) -> None:
    assert Settings.from_env({**BASE, **env}).public_url == expected


def test_a_public_url_that_is_not_https_is_refused_naming_the_setting() -> None:
    with pytest.raises(InvalidSettingError, match="WORK365_PUBLIC_URL"):
        Settings.from_env({**BASE, "WORK365_PUBLIC_URL": "http://app.azurewebsites.net"})
