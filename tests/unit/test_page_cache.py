"""The report a signed report link shows is kept KEEP_MINUTES per run (operations/page_cache.py):
the opens within that time read nothing, the first after it reads the tenant again; a failed
read is never kept; a run store that fails costs a read, never the page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from work365_fn.adapters.storage import FileRunStore
from work365_fn.errors import ConfigError
from work365_fn.operations.page_cache import DOCUMENT, KEEP_MINUTES, PageCache

RUN = "0f0e0d0c-0b0a-4908-8706-050403020100"
OTHER_RUN = "1f0e0d0c-0b0a-4908-8706-050403020100"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class Reads:
    """The tenant reads: each build is one, numbered."""

    def __init__(self, status: str = "succeeded") -> None:
        self.count = 0
        self.status = status

    def __call__(self) -> dict[str, Any]:
        self.count += 1
        return {"status": self.status, "runId": f"read-{self.count}"}


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_opens_within_the_minutes_read_the_tenant_once(tmp_path: Path, clock: Clock) -> None:
    cache, reads = PageCache(FileRunStore(tmp_path), clock), Reads()

    first = cache.report(RUN, reads)
    clock.now += timedelta(minutes=KEEP_MINUTES) - timedelta(seconds=1)
    again = cache.report(RUN, reads)

    assert reads.count == 1
    assert again == first == {"status": "succeeded", "runId": "read-1"}


def test_the_first_open_after_the_minutes_reads_again(tmp_path: Path, clock: Clock) -> None:
    cache, reads = PageCache(FileRunStore(tmp_path), clock), Reads()

    cache.report(RUN, reads)
    clock.now += timedelta(minutes=KEEP_MINUTES)
    later = cache.report(RUN, reads)
    cache.report(RUN, reads)

    assert later["runId"] == "read-2"
    assert reads.count == 2  # and kept again from then on


def test_each_link_keeps_its_own_report(tmp_path: Path, clock: Clock) -> None:
    cache, reads = PageCache(FileRunStore(tmp_path), clock), Reads()

    cache.report(RUN, reads)
    other = cache.report(OTHER_RUN, reads)

    assert other["runId"] == "read-2"


def test_a_clock_that_went_back_reads_again(tmp_path: Path, clock: Clock) -> None:
    cache, reads = PageCache(FileRunStore(tmp_path), clock), Reads()

    cache.report(RUN, reads)
    clock.now -= timedelta(minutes=1)
    cache.report(RUN, reads)

    assert reads.count == 2


def test_a_failed_read_is_never_kept(tmp_path: Path, clock: Clock) -> None:
    store = FileRunStore(tmp_path)
    cache, reads = PageCache(store, clock), Reads(status="failed")

    cache.report(RUN, reads)
    cache.report(RUN, reads)

    assert reads.count == 2
    assert store.get(RUN, DOCUMENT) is None


class BrokenStore(FileRunStore):
    def get(self, run_id: str, name: str) -> dict[str, Any] | None:
        raise ConfigError("storage is down")

    def put(self, run_id: str, name: str, document: dict[str, Any]) -> None:
        raise ConfigError("storage is down")


def test_a_store_that_fails_costs_a_read_never_the_page(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    cache, reads = PageCache(BrokenStore(tmp_path), clock), Reads()

    assert cache.report(RUN, reads)["runId"] == "read-1"
    assert cache.report(RUN, reads)["runId"] == "read-2"
    assert "the report page could not be kept: storage is down" in caplog.text


@pytest.mark.parametrize(
    "kept",
    [{"builtAt": "not a time", "report": {}}, {"builtAt": "2026-03-02T09:00:00Z"}, {}],
)
def test_a_kept_document_that_does_not_read_is_rebuilt(
    tmp_path: Path, clock: Clock, kept: dict[str, Any]
) -> None:
    store = FileRunStore(tmp_path)
    store.put(RUN, DOCUMENT, kept)
    reads = Reads()

    assert PageCache(store, clock).report(RUN, reads)["runId"] == "read-1"
