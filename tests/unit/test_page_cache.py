"""The report a signed report link shows is kept KEEP_MINUTES per run (operations/page_cache.py):
the opens within that time read nothing, the first after it reads the tenant again; a failed
read is kept FAILED_KEEP_SECONDS; an open while another worker reads (its claim) waits for that
report, else answers None; a run store that fails costs a read, never the page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from work365_fn.adapters.storage import FileRunStore
from work365_fn.errors import ConfigError
from work365_fn.operations.page_cache import (
    BUILDING,
    DOCUMENT,
    FAILED_KEEP_SECONDS,
    FAILED_MESSAGE,
    KEEP_MINUTES,
    WAIT_SECONDS,
    PageCache,
    anonymous_view,
)
from work365_fn.rules.timestamps import format_timestamp

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


def test_a_failed_read_is_kept_a_minute_not_five(tmp_path: Path, clock: Clock) -> None:
    cache, reads = PageCache(FileRunStore(tmp_path), clock), Reads(status="failed")

    cache.report(RUN, reads)
    clock.now += timedelta(seconds=FAILED_KEEP_SECONDS) - timedelta(seconds=1)
    within = cache.report(RUN, reads)
    clock.now += timedelta(seconds=1)
    after = cache.report(RUN, reads)

    assert (within, after) == (
        {"status": "failed", "runId": "read-1"},
        {"status": "failed", "runId": "read-2"},
    )


def claimed(store: FileRunStore, since: datetime) -> None:
    """Another worker is reading the tenant for RUN since `since`."""
    assert store.put_new(RUN, BUILDING, {"since": format_timestamp(since)})


def test_an_open_while_another_worker_reads_waits_then_answers_none(
    tmp_path: Path, clock: Clock
) -> None:
    store, sleeps = FileRunStore(tmp_path), []
    claimed(store, START)
    cache, reads = PageCache(store, clock, sleep=sleeps.append), Reads()

    assert cache.report(RUN, reads) is None

    assert reads.count == 0
    assert sum(sleeps) == WAIT_SECONDS
    assert store.get(RUN, BUILDING) is not None  # the other worker's claim is left alone


def test_an_open_shows_the_report_another_worker_keeps_while_it_waits(
    tmp_path: Path, clock: Clock
) -> None:
    store = FileRunStore(tmp_path)
    claimed(store, START)
    kept = {"builtAt": format_timestamp(START), "report": {"status": "succeeded", "runId": "w2"}}
    cache, reads = PageCache(store, clock, sleep=lambda _: store.put(RUN, DOCUMENT, kept)), Reads()

    assert cache.report(RUN, reads) == {"status": "succeeded", "runId": "w2"}
    assert reads.count == 0


def test_a_stale_claim_is_taken_over_and_removed_after_the_read(
    tmp_path: Path, clock: Clock
) -> None:
    store = FileRunStore(tmp_path)
    claimed(store, START - timedelta(minutes=3))  # a worker that died while reading
    cache, reads = PageCache(store, clock, building=timedelta(minutes=2)), Reads()

    assert cache.report(RUN, reads) == {"status": "succeeded", "runId": "read-1"}
    assert store.get(RUN, BUILDING) is None


def test_a_read_that_raises_leaves_no_claim_and_no_lock(tmp_path: Path, clock: Clock) -> None:
    store = FileRunStore(tmp_path)
    cache = PageCache(store, clock)

    def broken() -> dict[str, Any]:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        cache.report(RUN, broken)

    assert store.get(RUN, BUILDING) is None
    assert cache.report(RUN, Reads())["runId"] == "read-1"  # the next open reads at once


def test_an_open_that_cannot_get_the_worker_lock_in_time_answers_none(
    tmp_path: Path, clock: Clock
) -> None:
    cache, reads = PageCache(FileRunStore(tmp_path), clock, wait_seconds=0), Reads()
    inside: list[dict[str, Any] | None] = []

    def read_while_another_open_comes() -> dict[str, Any]:
        inside.append(cache.report(RUN, reads))  # the same worker, the same link, meanwhile
        return reads()

    cache.report(RUN, read_while_another_open_comes)

    assert inside == [None] and reads.count == 1


@pytest.mark.parametrize(
    ("report", "shown"),
    [
        ({"status": "succeeded", "errors": []}, {"status": "succeeded", "errors": []}),
        (
            {"status": "failed", "runId": "r1", "errors": [{"message": "upstream secret text"}]},
            {
                "status": "failed",
                "runId": "r1",
                "errors": [],
                "warnings": [FAILED_MESSAGE.format(run_id="r1")],
            },
        ),
    ],
    ids=["succeeded", "failed"],
)
def test_a_link_shows_no_upstream_text_of_a_failed_read(
    report: dict[str, Any], shown: dict[str, Any]
) -> None:
    assert anonymous_view(report) == shown


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
