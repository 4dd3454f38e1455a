"""The report page in a real browser: Debian's headless Chromium (`/usr/bin/chromium`, which
`scripts/test` installs when missing), driven by Playwright for Python. Never `playwright
install` (its browser download is not reachable here), never `bypass_csp`.

The page under test is the real HTTP handler's answer, served over loopback by the local host
harness (tests/e2e/host.py) with its Content-Security-Policy header, so the browser enforces it.
Every request the page makes is recorded (`page.route("**/*")`); screenshots go to the artifacts
folder (`.artifacts/` at the repository root, `WORK365_ARTIFACTS_DIR` to move it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = Path(os.environ.get("WORK365_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--no-first-run",
    "--disable-sync",
]


# The test run's own variables (where screenshots go, which browser, whether one is required):
# clearing the app's WORK365_ settings for a test keeps them.
HARNESS_VARIABLES = frozenset(
    {"WORK365_ARTIFACTS_DIR", "WORK365_CHROMIUM", "WORK365_REQUIRE_BROWSER"}
)
APP_SETTING_PREFIXES = ("WORK365_", "AzureWebJobsStorage", "WEBSITE_")


def clear_app_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the machine's app settings for one test, never the harness's own variables."""
    for key in list(os.environ):
        if key.startswith(APP_SETTING_PREFIXES) and key not in HARNESS_VARIABLES:
            monkeypatch.delenv(key)


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("WORK365_ARTIFACTS_DIR") or ROOT / ".artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def browser_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None. With WORK365_REQUIRE_BROWSER=1 (set by
    scripts/test) a missing browser fails the run instead of skipping it."""
    missing = []
    if not CHROMIUM.exists() and shutil.which(str(CHROMIUM)) is None:
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        import axe_playwright_python  # noqa: F401
        import playwright  # noqa: F401
    except ImportError as exc:
        missing.append(f"the Python package {exc.name} (pip install -r requirements-dev.txt)")
    if not missing:
        return None
    return "BROWSER TESTS NOT RUN: missing " + " and ".join(missing)


def require_browser() -> None:
    reason = browser_missing_reason()
    if reason is None:
        return
    if os.environ.get("WORK365_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " (WORK365_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@dataclass
class Recorded:
    """Every request the page made, and every dialog it opened."""

    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def open_page(browser: Any, url: str) -> tuple[Any, Recorded, Any]:
    """A fresh page at `url`: every request recorded (and let through only to the loopback
    server the test started), every dialog recorded and dismissed. Returns the page, the
    record and the main response."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = Recorded()

    def route(request_route: Any) -> None:
        seen.requests.append(request_route.request.url)
        if request_route.request.url.startswith(url.split("?", maxsplit=1)[0]):
            request_route.continue_()
        else:
            request_route.abort()

    def dialog(d: Any) -> None:
        seen.dialogs.append(d.message)
        d.dismiss()

    page.route("**/*", route)
    page.on("dialog", dialog)
    page.on("console", lambda message: seen.console.append(message.text))
    response = page.goto(url, wait_until="load")
    return page, seen, response


def serious_violations(page: Any) -> list[str]:
    """axe-core (bundled by axe-playwright-python, injected into the page: nothing fetched):
    the violations of impact serious or critical."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} x{len(v['nodes'])}"
        for v in results.response["violations"]
        if v.get("impact") in ("serious", "critical")
    ]
