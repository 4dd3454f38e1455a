"""Observability: every log line of a run carries its run id and correlation id (worker threads
and the HTTP clients' lines too), the summary is one structured record (Functions and CLI), and
a failure's record names the service, status, error code and request id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import ScenarioBuilder, gid
from tests.integration.reliability import run
from work365_fn.logs import install, run_context
from work365_fn.sandbox import Sandbox


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    install(handler)  # as the app's logging set-up does for its handlers
    root = logging.getLogger()
    old_level, old_urllib3 = root.level, logging.getLogger("urllib3").level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.getLogger("urllib3").setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)
    logging.getLogger("urllib3").setLevel(old_urllib3)


def five_customers(world: ScenarioBuilder) -> None:
    account = world.account(1)
    for n in range(1, 6):
        world.new_subscription(n, world.customer(n, account_id=account))


def test_every_line_of_a_run_carries_its_run_id_and_correlation_id(
    records: Records, world: ScenarioBuilder, tmp_path: Path
) -> None:
    five_customers(world)
    with Sandbox.start(world.scenario()) as box:
        summary = run(box, str(tmp_path), WORK365_CONCURRENCY="4")

    mine = [
        r
        for r in records.records
        if not r.name.startswith("work365_fn.sandbox")  # the emulators' own threads
    ]
    during = mine[
        next(i for i, r in enumerate(mine) if "sync started" in r.getMessage()) : next(
            i for i, r in enumerate(mine) if "sync succeeded in" in r.getMessage()
        )
        + 1
    ]
    threads = {r.threadName for r in during}
    assert len(threads) > 1, "the subscription calls ran in worker threads"
    assert any(r.name.startswith("urllib3") for r in during)
    assert any(r.name == "work365_fn.adapters.partner_center" for r in during)
    for r in during:
        assert getattr(r, "run_id", None) == summary.run_id, (r.name, r.getMessage())
        assert getattr(r, "correlation_id", None) == summary.run_id
        assert r.getMessage().startswith(f"[run {summary.run_id}]"), r.getMessage()


def test_a_correlation_id_of_the_caller_is_kept_beside_the_run_id(records: Records) -> None:
    log = logging.getLogger("work365_fn.example")
    with run_context("run-1", "caller-7"):
        log.info("reading %d rows", 3)
    [record] = [r for r in records.records if r.name == "work365_fn.example"]
    assert record.getMessage() == "[run run-1 corr caller-7] reading 3 rows"
    assert (record.run_id, record.correlation_id) == ("run-1", "caller-7")  # type: ignore[attr-defined]


def test_a_failure_logs_service_status_code_and_request_id(
    records: Records, world: ScenarioBuilder, tmp_path: Path
) -> None:
    five_customers(world)
    with Sandbox.start(world.scenario()) as box:
        box.faults.add(
            {"service": "partnerCenter", "path": gid("cus", 3), "kind": "500", "every": 1}
        )
        summary = run(box, str(tmp_path), WORK365_MAX_ATTEMPTS="2")

    assert summary.status == "partial"
    [failure] = [r for r in records.records if "subscriptions failed" in r.getMessage()]
    assert failure.levelno == logging.ERROR
    fields = {
        k: getattr(failure, k, None) for k in ("service", "status", "error_code", "request_id")
    }
    assert fields["service"] == "partnerCenter"
    assert fields["status"] == 500
    assert fields["error_code"] == "800003"
    assert fields["request_id"] and fields["request_id"] in failure.getMessage()
    retries = [r for r in records.records if "retrying after" in r.getMessage()]
    assert retries and all(getattr(r, "request_id", None) for r in retries)


def test_the_cli_logs_the_summary_as_one_structured_record(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from work365_fn.entrypoints.cli import main as cli

    for key in list(os.environ):
        if key.startswith("WORK365_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("WORK365_STATE_DIR", str(tmp_path))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        code = cli.main(["sync", "--sandbox", "--json"], out=out)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    printed = json.loads(out.getvalue())
    stderr = capsys.readouterr().err
    [line] = [line for line in stderr.splitlines() if "] summary {" in line]
    assert f"[run {printed['runId']}] summary " in line
    logged, end = json.JSONDecoder().raw_decode(line.split("] summary ", 1)[1])
    assert line.split("] summary ", 1)[1][end:].startswith("; live run, status succeeded: ")
    assert code == 0
    assert logged["counts"] == printed["counts"]
    assert "subscriptions" not in logged  # counts, not the list (32 KB)
