"""The report a signed report link shows, kept a few minutes per run in the run store.

Anyone who holds a run's signed link (the Teams card's "Open the report") may open it, without a
function key, for as long as the link lasts (WORK365_RUN_LINK_HOURS). Each open that builds the
report reads the whole tenant; a card shared in a channel and opened by many people would read
it once per click. So the report built for a link is kept as the run document `report-page`
for KEEP_MINUTES (a failed read for FAILED_KEEP_SECONDS: a failing Partner Center is not asked
again, with its retries, on every click): the opens within that time show it (a fresh nonce and
the last runs each time), the first open after it reads the tenant again.

Opens at the same moment read once too: within a worker one lock per run id (held by the
worker's one PageCache) lets a single open build while the others wait for its report; across
workers the builder first claims the run document `report-page-building` (written only if
absent), and an open that finds it waits a few seconds for the report, else is told that the
report is being prepared (None). A claim older than `building` is a builder that died: taken
over. At most one tenant read per link every KEEP_MINUTES (docs/report-page.md#cost-of-an-open).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from work365_fn.adapters.storage import RunStore
from work365_fn.errors import Work365Error
from work365_fn.rules.timestamps import format_timestamp, parse_timestamp

log = logging.getLogger(__name__)

DOCUMENT = "report-page"
BUILDING = "report-page-building"  # the claim of the open that is reading the tenant
KEEP_MINUTES = 5
FAILED_KEEP_SECONDS = 60
WAIT_SECONDS = 5.0  # how long an open waits for another open's report before "being prepared"
POLL_SECONDS = 1.0
# An anonymous caller never sees why a read failed (the upstream's text): the logs have it.
FAILED_MESSAGE = (
    "the report could not be read from Dataverse or Partner Center; the service's logs have the "
    "detail under run {run_id}: open the link again in a minute"
)


class PageCache:
    """The kept reports of signed links: `store` is the app's run store, `clock` the time,
    `sleep` waits between looks at another worker's build, `building` how long a claim holds.
    One per worker (composition.Services.page_cache): its locks are what make it single-flight."""

    def __init__(  # noqa: PLR0913 - independent knobs, all but the store and clock keyword-only
        self,
        store: RunStore,
        clock: Callable[[], datetime],
        *,
        keep: timedelta = timedelta(minutes=KEEP_MINUTES),
        failed_keep: timedelta = timedelta(seconds=FAILED_KEEP_SECONDS),
        building: timedelta = timedelta(minutes=2),
        sleep: Callable[[float], None] = time.sleep,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        self.store, self.clock, self.sleep = store, clock, sleep
        self.keep, self.failed_keep, self.building = keep, failed_keep, building
        self.wait_seconds = wait_seconds
        self._guard = threading.Lock()
        self._flights: dict[str, tuple[threading.Lock, int]] = {}

    def report(self, run_id: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """The report kept for `run_id` when it is fresh, else `build()` (kept, a failed one for
        less long); None when another open is building it and did not finish in time. A store
        that cannot be read or written costs a tenant read, never the page."""
        with self._flight(run_id) as mine:
            kept = self._fresh(run_id)
            if kept is not None or not mine:
                return kept
            if not self._claim(run_id):
                return self._wait(run_id)
            try:  # a builder elsewhere may have finished between the first look and the claim
                report = self._fresh(run_id) or self._build(run_id, build)
            finally:
                self._forget(run_id, BUILDING)
            return report

    def _build(self, run_id: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        report = build()
        self._write(run_id, {"builtAt": format_timestamp(self.clock()), "report": report})
        return report

    @contextlib.contextmanager
    def _flight(self, run_id: str) -> Iterator[bool]:
        """The run id's lock, waited for `wait_seconds` at most: True when this open holds it."""
        with self._guard:
            lock, users = self._flights.get(run_id, (threading.Lock(), 0))
            self._flights[run_id] = (lock, users + 1)
        held = lock.acquire(timeout=self.wait_seconds) if self.wait_seconds > 0 else False
        held = held or lock.acquire(blocking=False)
        try:
            yield held
        finally:
            if held:
                lock.release()
            with self._guard:  # no lock is kept for a link nobody is opening
                users = self._flights[run_id][1] - 1
                if users:
                    self._flights[run_id] = (lock, users)
                else:
                    del self._flights[run_id]

    def _fresh(self, run_id: str) -> dict[str, Any] | None:
        kept = self._read(run_id, DOCUMENT)
        if kept is None:
            return None
        failed = isinstance(kept.get("report"), dict) and kept["report"].get("status") == "failed"
        if not is_fresh(kept, self.clock(), self.failed_keep if failed else self.keep):
            return None
        return dict(kept["report"])

    def _claim(self, run_id: str) -> bool:
        """Whether this open may read the tenant: it made the claim, or took over a stale one.
        A store that fails answers yes (a read, never the page)."""
        claim = {"since": format_timestamp(self.clock())}
        try:
            if self.store.put_new(run_id, BUILDING, claim):
                return True
            held = self.store.get(run_id, BUILDING) or {}
            since = parse_timestamp(str(held.get("since") or ""))
            if since is not None and since <= self.clock() < since + self.building:
                return False
            log.warning("[run %s] taking over a stale report page claim", run_id)
            self.store.put(run_id, BUILDING, claim)
        except Work365Error as exc:
            log.warning("[run %s] the report page could not be claimed: %s", run_id, exc)
        return True

    def _wait(self, run_id: str) -> dict[str, Any] | None:
        """Another worker is reading the tenant for this link: its report, if it comes soon."""
        for _ in range(max(1, int(self.wait_seconds / POLL_SECONDS))):
            self.sleep(POLL_SECONDS)
            kept = self._fresh(run_id)
            if kept is not None:
                return kept
        log.info("[run %s] the report page is being prepared by another open", run_id)
        return None

    def _read(self, run_id: str, name: str) -> dict[str, Any] | None:
        try:
            return self.store.get(run_id, name)
        except Work365Error as exc:
            log.warning("[run %s] the kept report page could not be read: %s", run_id, exc)
            return None

    def _write(self, run_id: str, document: dict[str, Any]) -> None:
        try:
            self.store.put(run_id, DOCUMENT, document)
        except Work365Error as exc:
            log.warning("[run %s] the report page could not be kept: %s", run_id, exc)

    def _forget(self, run_id: str, name: str) -> None:
        try:
            self.store.delete(run_id, name)
        except Work365Error as exc:
            log.warning("[run %s] the report page claim could not be removed: %s", run_id, exc)


def is_fresh(document: Mapping[str, Any], now: datetime, keep: timedelta) -> bool:
    """Built less than `keep` ago (and not in the future: a clock that went back rebuilds)."""
    built = parse_timestamp(str(document.get("builtAt") or ""))
    if built is None or not isinstance(document.get("report"), dict):
        return False
    return built <= now < built + keep


def anonymous_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """What a signed link's page may show of a report: a failed read says only that it failed
    and under which run the logs have why (never the upstream's text)."""
    if report.get("status") != "failed":
        return dict(report)
    message = FAILED_MESSAGE.format(run_id=report.get("runId"))
    return {**report, "errors": [], "warnings": [message]}
