"""The report a signed report link shows, kept a few minutes per run in the run store.

Anyone who holds a run's signed link (the Teams card's "Open the report") may open it, without a
function key, for as long as the link lasts (WORK365_RUN_LINK_HOURS). Each open that builds the
report reads the whole tenant; a card shared in a channel and opened by many people would read
it once per click. So the report built for a link is kept as the run document `report-page`
for KEEP_MINUTES: the opens within that time show it (a fresh nonce and the last runs each
time), the first open after it reads the tenant again. At most one tenant read per link every
KEEP_MINUTES, whoever opens it and how often (docs/report-page.md#cost-of-an-open).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from work365_fn.adapters.storage import RunStore
from work365_fn.errors import Work365Error
from work365_fn.rules.timestamps import format_timestamp, parse_timestamp

log = logging.getLogger(__name__)

DOCUMENT = "report-page"
KEEP_MINUTES = 5


@dataclass(frozen=True)
class PageCache:
    """The kept reports of signed links: `store` is the app's run store, `clock` the time."""

    store: RunStore
    clock: Callable[[], datetime]
    keep: timedelta = timedelta(minutes=KEEP_MINUTES)

    def report(self, run_id: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The report kept for `run_id` when it is fresh, else `build()`, kept when it did not
        fail. A store that cannot be read or written costs a tenant read, never the page."""
        now = self.clock()
        kept = self._read(run_id)
        if kept is not None and is_fresh(kept, now, self.keep):
            return dict(kept["report"])
        report = build()
        if report.get("status") != "failed":  # a failed read is never shown twice
            self._write(run_id, {"builtAt": format_timestamp(now), "report": report})
        return report

    def _read(self, run_id: str) -> dict[str, Any] | None:
        try:
            return self.store.get(run_id, DOCUMENT)
        except Work365Error as exc:
            log.warning("[run %s] the kept report page could not be read: %s", run_id, exc)
            return None

    def _write(self, run_id: str, document: dict[str, Any]) -> None:
        try:
            self.store.put(run_id, DOCUMENT, document)
        except Work365Error as exc:
            log.warning("[run %s] the report page could not be kept: %s", run_id, exc)


def is_fresh(document: dict[str, Any], now: datetime, keep: timedelta) -> bool:
    """Built less than `keep` ago (and not in the future: a clock that went back rebuilds)."""
    built = parse_timestamp(str(document.get("builtAt") or ""))
    if built is None or not isinstance(document.get("report"), dict):
        return False
    return built <= now < built + keep
