"""The report page (docs/report-page.md) in headless Chromium, served by the real HTTP handler
(`GET /api/report?format=html`, through the local host harness, its CSP header enforced by the
browser) over the sandbox: the demo scenario, and a scenario of hidden names.

What a billing admin relies on: the tiles show the numbers of `report --json` (and the last
run's); the reason filter and the name search narrow the table; a column sorts by click and by
keyboard; a name is text, never markup or script; nothing is fetched but the page; axe finds no
serious or critical violation. A screenshot of each page goes to the artifacts folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.azurite import StorageNames
from tests.e2e.browser.support import (
    artifacts_dir,
    browser,
    clear_app_settings,
    open_page,
    serious_violations,
)
from tests.e2e.host import LocalHost, http_functions, load_function_app
from work365_fn.operations.report_page import NO_HISTORY, unassigned_reasons
from work365_fn.sandbox import Sandbox, Scenario
from work365_fn.sandbox.scenario import parse_scenario

__all__ = ["browser"]

APP = load_function_app(name="function_app_report_page")
FUNCTIONS = http_functions(APP.app)  # get_functions() works once per FunctionApp
FUNCTION_KEY = "page-function-key-0123456789"
SIGNING_KEY = "page-signing-key-0123456789-abcdefghijklmnopq"

SCRIPT_NAME = "<script>alert(1)</script>"
IMG_NAME = '<img src=x onerror="window.__pwned=1;alert(2)">'
RTL_NAME = "شركة الاختبار \u202eevil.exe"
EMOJI_NAME = "Café 😀 Ltd 🚀"
OBRIEN = "O'Brien & Sons"


def hidden_names() -> Scenario:
    """Names that break a page that does not escape: in customers, Accounts, contracts and
    subscriptions, on rows the page lists (no default, several defaults, unmapped)."""
    acc = [f"a0000000-0000-4000-8000-00000000000{i}" for i in range(1, 4)]
    cust = [f"c1000000-0000-4000-8000-00000000000{i}" for i in range(1, 5)]

    def pc_sub(n: int, friendly: str) -> dict[str, Any]:
        return {"id": f"e0000000-0000-4000-8000-00000000000{n}", "offerId": "X",
                "offerName": "Plan", "friendlyName": friendly, "quantity": 1,
                "status": "active", "billingType": "license",
                "creationDate": "2026-03-01T08:00:00Z"}  # fmt: skip

    def record(n: int, account: str | None, name: str) -> dict[str, Any]:
        return {"id": f"f0000000-0000-4000-8000-00000000000{n}",
                "providerSubscriptionId": f"e0000000-0000-4000-8000-00000000000{n}",
                "accountId": account, "billingContractId": None,
                "createdOn": "2026-03-01T09:00:00Z", "name": name}  # fmt: skip

    return parse_scenario(
        {
            "settings": {"associateDefaultBillingContract": True,
                         "enabledOn": "2026-01-01T00:00:00Z"},
            "accounts": [{"id": acc[0], "name": SCRIPT_NAME}, {"id": acc[1], "name": RTL_NAME},
                         {"id": acc[2], "name": EMOJI_NAME}],
            "providerAccounts": [
                {"id": "b1000000-0000-4000-8000-000000000001", "customerId": cust[0],
                 "accountId": acc[0], "name": IMG_NAME},
                {"id": "b1000000-0000-4000-8000-000000000002", "customerId": cust[1],
                 "accountId": acc[1], "name": RTL_NAME},
                {"id": "b1000000-0000-4000-8000-000000000003", "customerId": cust[3],
                 "accountId": acc[2], "name": EMOJI_NAME},
            ],
            "billingContracts": [
                {"id": "d1000000-0000-4000-8000-000000000001", "accountId": acc[0],
                 "name": IMG_NAME, "isDefault": True, "active": False},
                {"id": "d1000000-0000-4000-8000-000000000002", "accountId": acc[1],
                 "name": SCRIPT_NAME, "isDefault": True, "active": True},
                {"id": "d1000000-0000-4000-8000-000000000003", "accountId": acc[1],
                 "name": EMOJI_NAME, "isDefault": True, "active": True},
                {"id": "d1000000-0000-4000-8000-000000000004", "accountId": acc[2],
                 "name": OBRIEN, "isDefault": True, "active": True},
            ],
            "subscriptions": [record(1, acc[0], SCRIPT_NAME), record(2, acc[1], RTL_NAME),
                              record(3, None, OBRIEN), record(4, acc[2], EMOJI_NAME)],
            "partnerCenter": {"customers": [
                {"id": cust[0], "companyName": OBRIEN, "subscriptions": [pc_sub(1, IMG_NAME)]},
                {"id": cust[1], "companyName": RTL_NAME,
                 "subscriptions": [pc_sub(2, EMOJI_NAME)]},
                {"id": cust[2], "companyName": SCRIPT_NAME,
                 "subscriptions": [pc_sub(3, RTL_NAME)]},
                {"id": cust[3], "companyName": EMOJI_NAME,
                 "subscriptions": [pc_sub(4, SCRIPT_NAME)]},
            ]},
        },
        origin="hidden-names",
    )  # fmt: skip


@dataclass
class Served:
    host: LocalHost
    box: Sandbox

    def get(self, path: str, **params: str) -> requests.Response:
        return requests.get(
            f"{self.host.url}{path}",
            params=params,
            headers={"x-functions-key": FUNCTION_KEY},
            timeout=60,
        )

    @property
    def page_url(self) -> str:
        return f"{self.host.url}/report?format=html&code={FUNCTION_KEY}"


def serve(
    monkeypatch: pytest.MonkeyPatch, scenario: Scenario, storage: StorageNames | None
) -> Iterator[Served]:
    clear_app_settings(monkeypatch)  # WORK365_ARTIFACTS_DIR stays: the screenshots follow it
    with Sandbox.start(scenario) as box:
        settings = {**box.env, "WORK365_RUN_SIGNING_KEY": SIGNING_KEY}
        settings.update(storage.settings if storage else {})
        for key, value in settings.items():
            monkeypatch.setenv(key, value)
        APP.services.cache_clear()
        with LocalHost(FUNCTIONS, function_keys=[FUNCTION_KEY]) as host:
            yield Served(host, box)
    APP.services.cache_clear()


@pytest.fixture
def demo(monkeypatch: pytest.MonkeyPatch, storage: StorageNames) -> Iterator[Served]:
    yield from serve(monkeypatch, Scenario.builtin("demo"), storage)


@pytest.fixture
def hidden(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    yield from serve(monkeypatch, hidden_names(), None)


def test_the_served_app_runs_on_clean_settings_and_the_screenshots_go_where_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WORK365_ARTIFACTS_DIR", str(tmp_path / "shots"))
    monkeypatch.setenv("WORK365_BATCH_SIZE", "7")  # the machine's setting: never the app's here
    served = serve(monkeypatch, hidden_names(), None)
    next(served)
    try:
        assert artifacts_dir() == tmp_path / "shots"
        assert os.environ.get("WORK365_BATCH_SIZE") is None
    finally:
        served.close()


# ---- reading the page -----------------------------------------------------------------------


def tile(page: Any, key: str) -> str:
    return str(page.locator(f'[data-count="{key}"] .num').inner_text())


def visible_rows(page: Any) -> list[dict[str, str]]:
    """The unassigned table's rows a person sees: reason and cell texts."""
    return list(
        page.eval_on_selector_all(
            "#unassigned tbody tr:not([hidden])",
            "rows => rows.map(r => ({reason: r.dataset.reason,"
            " cells: Array.from(r.cells).map(c => c.innerText)}))",
        )
    )


def column(page: Any, index: int) -> list[str]:
    return [row["cells"][index] for row in visible_rows(page)]


def check_page_answer(response: Any, seen: Any, url: str) -> None:
    """The handler's answer: HTML with its strict policy; the only request is the page."""
    headers = response.all_headers()
    assert response.status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    policy = headers["content-security-policy"]
    assert policy.startswith("default-src 'none'; style-src 'nonce-"), policy
    assert "frame-ancestors 'none'" in policy and "unsafe" not in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    assert seen.requests == [url], seen.requests
    assert seen.dialogs == []


def screenshot(page: Any, name: str) -> None:
    path = artifacts_dir() / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


# ---- the demo -------------------------------------------------------------------------------


def test_demo_page_shows_the_json_reports_counts_and_the_last_run(
    demo: Served, browser: Any
) -> None:
    synced = requests.post(  # a live sync first: the page shows it as the last run
        f"{demo.host.url}/sync", json={}, headers={"x-functions-key": FUNCTION_KEY}, timeout=60
    ).json()
    report = demo.get("/report").json()
    page, seen, response = open_page(browser, demo.page_url)
    check_page_answer(response, seen, demo.page_url)

    counts, by_reason = report["counts"], report["byReason"]
    for key in ("subscriptions", "assigned", "unassigned", "failed"):
        assert tile(page, key) == str(counts[key]), key
    for reason in unassigned_reasons():
        assert tile(page, f"byReason.{reason.value}") == str(by_reason[reason.value])
    assert tile(page, "lastRunAssigned") == str(synced["counts"]["assigned"]) != "0"
    assert len(visible_rows(page)) == counts["unassignedSubscriptions"] > 0
    assert page.locator("#shown").inner_text() == (
        f"{counts['unassignedSubscriptions']} of {counts['unassignedSubscriptions']} shown"
    )
    attention = page.locator("#attention tbody tr")
    assert attention.count() == sum(
        counts[name]
        for name in (
            "accountsWithoutDefault",
            "accountsWithSeveralDefaults",
            "unmappedProviderAccounts",
            "customersWithSeveralAccounts",
            "customersWithoutProviderAccount",
        )
    )
    runs = page.locator("#runs tbody tr")
    assert runs.count() == 1 and synced["runId"] in runs.first.inner_text()
    assert synced["status"] in runs.first.inner_text()
    since = report["setting"]["since"]
    assert page.locator("#cutoff").inner_text().startswith(since)
    screenshot(page, "report-page-demo.png")
    assert serious_violations(page) == []
    page.close()


def test_the_reason_filter_and_the_name_search_narrow_the_table(demo: Served, browser: Any) -> None:
    report = demo.get("/report").json()
    page, seen, _ = open_page(browser, demo.page_url)
    total = report["counts"]["unassignedSubscriptions"]
    listed = {item["reason"] for item in report["unassignedSubscriptions"]}
    reason = max(sorted(listed), key=lambda r: report["byReason"][r])  # the commonest listed
    page.select_option("#reason-filter", reason)
    rows = visible_rows(page)
    assert len(rows) == report["byReason"][reason] < total
    assert {r["reason"] for r in rows} == {reason}
    assert page.locator("#shown").inner_text() == f"{len(rows)} of {total} shown"

    page.select_option("#reason-filter", "")
    target = report["unassignedSubscriptions"][-1]
    page.fill("#name-search", target["customerName"][:5].upper())  # case does not matter
    names = [row["cells"][0] for row in visible_rows(page)]
    assert names and all(target["customerName"] in n for n in names)
    assert len(names) < total
    page.fill("#name-search", "no such name anywhere")
    assert visible_rows(page) == [] and page.locator("#shown").inner_text() == f"0 of {total} shown"
    page.fill("#name-search", "")
    assert len(visible_rows(page)) == total
    assert seen.requests == [demo.page_url]  # filtering fetches nothing
    page.close()


def test_a_column_sorts_by_click_and_by_keyboard_and_says_so(demo: Served, browser: Any) -> None:
    page, _, _ = open_page(browser, demo.page_url)
    header = page.locator("#unassigned thead th").nth(0)
    button = header.locator("button")
    assert header.get_attribute("aria-sort") is None
    button.click()
    ascending = column(page, 0)
    assert header.get_attribute("aria-sort") == "ascending"
    assert ascending == sorted(ascending, key=str.casefold)
    button.focus()
    page.keyboard.press("Enter")
    assert header.get_attribute("aria-sort") == "descending"
    assert column(page, 0) == list(reversed(ascending))
    page.locator("#unassigned thead th").nth(3).locator("button").press("Space")
    assert header.get_attribute("aria-sort") is None  # one sorted column at a time
    reasons = column(page, 3)
    assert reasons == sorted(reasons)
    page.close()


# ---- hidden names ---------------------------------------------------------------------------


def test_hidden_names_show_as_text_and_no_script_in_a_name_runs(
    hidden: Served, browser: Any
) -> None:
    report = hidden.get("/report").json()
    raw = hidden.get("/report", format="html").text
    assert SCRIPT_NAME not in raw and "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert "onerror=" not in raw.replace("onerror=&quot;", "")
    page, seen, response = open_page(browser, hidden.page_url)
    check_page_answer(response, seen, hidden.page_url)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#unassigned img, #attention img").count() == 0
    assert page.locator("script").count() == 1  # only the page's own, nonced script

    text = page.locator("main").inner_text()
    for name in (SCRIPT_NAME, IMG_NAME, RTL_NAME, EMOJI_NAME, OBRIEN):
        assert name in text, name
    assert len(visible_rows(page)) == report["counts"]["unassignedSubscriptions"] == 3
    for key in ("subscriptions", "assigned", "unassigned", "failed"):
        assert tile(page, key) == str(report["counts"][key]), key
    assert page.locator("#no-history").inner_text().lower().startswith(NO_HISTORY)
    assert tile(page, "lastRunAssigned") == "none"

    page.fill("#name-search", "😀")  # search by an emoji, and right-to-left text
    assert {r["cells"][0].split("\n")[0] for r in visible_rows(page)} == {RTL_NAME}
    page.fill("#name-search", "الاختبار")  # the customer and Account of one, the plan of another
    reasons = {r["reason"] for r in visible_rows(page)}
    assert reasons == {"multiple-default-contracts", "unmapped-customer"}
    page.fill("#name-search", "<script>")
    assert len(visible_rows(page)) == 2  # the customer and the Account named so
    page.locator("#unassigned thead th button").nth(1).click()
    assert page.evaluate("window.__pwned") is None and seen.dialogs == []
    screenshot(page, "report-page-hidden-names.png")
    assert serious_violations(page) == []
    assert seen.requests == [hidden.page_url]
    page.close()


def test_the_page_saved_by_the_cli_keeps_its_policy_offline(
    hidden: Served, browser: Any, tmp_path: Any
) -> None:
    """`report --html FILE` is opened from disk: the policy travels in a <meta>, and the page
    still filters (its script carries the nonce) with nothing fetched."""
    html = hidden.get("/report", format="html").text
    path = tmp_path / "report.html"
    path.write_text(html, encoding="utf-8")
    match = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert match and "script-src &#x27;nonce-" in match.group(1)  # escaped in the attribute
    url = path.as_uri()
    page, seen, _ = open_page(browser, url)
    page.select_option("#reason-filter", "unmapped-customer")
    assert [r["reason"] for r in visible_rows(page)] == ["unmapped-customer"]
    assert set(seen.requests) <= {url} and seen.dialogs == []  # file:// may not be routed
    assert page.evaluate("window.__pwned") is None
    assert not any("Content Security Policy" in m for m in seen.console), seen.console
    page.close()


def test_the_browser_enforces_the_policy_a_script_without_the_nonce_never_runs(
    browser: Any,
) -> None:
    """The control: the same policy, a script without the nonce is blocked (so the checks
    above would see an injected script run if escaping failed and the CSP were absent)."""
    page = browser.new_page()
    page.set_content(
        '<meta http-equiv="Content-Security-Policy" content="script-src \'nonce-abc\'">'
        "<script>window.__blocked = 1</script><script nonce=abc>window.__ran = 1</script>"
    )
    assert page.evaluate("[window.__blocked, window.__ran]") == [None, 1]
    page.close()
