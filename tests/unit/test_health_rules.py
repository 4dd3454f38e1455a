"""The health verdict (rules/health.py): recorded runs, the watermark, the schedule's period and
the credentials in; the reasons out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from work365_fn.rules.expiry import CredentialExpiry
from work365_fn.rules.health import RunFacts, judge
from work365_fn.rules.timestamps import format_timestamp

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def a_run(status: str, ago: timedelta, run_id: str = "r") -> dict[str, Any]:
    return {
        "runId": run_id,
        "status": status,
        "mode": "incremental",
        "dryRun": False,
        "startedAt": format_timestamp(NOW - ago - timedelta(minutes=1)),
        "finishedAt": format_timestamp(NOW - ago),
    }


def codes(facts: RunFacts, expiries: tuple[CredentialExpiry, ...] = ()) -> list[str]:
    return [r["code"] for r in judge(facts, NOW, HOUR, expiries).reasons]


def test_a_recent_success_is_healthy() -> None:
    assert codes(RunFacts([a_run("succeeded", 10 * timedelta(minutes=1))])) == []


def test_a_partial_run_is_a_success_as_in_the_alert_rule() -> None:
    assert codes(RunFacts([a_run("partial", HOUR)])) == []


def test_nothing_recorded_is_no_run_yet() -> None:
    assert codes(RunFacts()) == ["no-run-yet"]


def test_the_last_run_failed_even_after_a_recent_success() -> None:
    runs = [a_run("failed", timedelta(minutes=5), "new"), a_run("succeeded", HOUR, "old")]
    verdict = judge(RunFacts(runs), NOW, HOUR, ())
    assert [r["code"] for r in verdict.reasons] == ["last-run-failed"]
    assert "new" in verdict.reasons[0]["message"]
    assert verdict.last_success is not None and verdict.last_success["runId"] == "old"


def test_a_success_older_than_twice_the_period_is_too_old() -> None:
    assert codes(RunFacts([a_run("succeeded", 2 * HOUR)])) == []
    assert codes(RunFacts([a_run("succeeded", 2 * HOUR + timedelta(seconds=1))])) == [
        "last-success-too-old"
    ]


def test_only_failures_recorded_is_no_successful_run() -> None:
    assert codes(RunFacts([a_run("failed", HOUR)])) == ["last-run-failed", "no-successful-run"]


def test_dry_runs_do_not_count() -> None:
    dry = {**a_run("succeeded", timedelta(minutes=1)), "dryRun": True}
    assert codes(RunFacts([dry])) == ["no-run-yet"]


def test_the_watermark_stands_for_a_success_the_history_lost() -> None:
    facts = RunFacts([a_run("succeeded", 30 * HOUR)], last_run_at=NOW - timedelta(minutes=30))
    verdict = judge(facts, NOW, HOUR, ())
    assert verdict.reasons == []
    assert verdict.last_success is None and verdict.last_success_at == facts.last_run_at


def test_a_credential_expiring_within_7_days_is_a_reason() -> None:
    soon = CredentialExpiry("the client secret of app x", "S", NOW + timedelta(days=7), "renew")
    later = CredentialExpiry("the client secret of app y", "T", NOW + timedelta(days=8), "renew")
    assert codes(RunFacts([a_run("succeeded", HOUR)]), (soon, later)) == ["credential-expiring"]


def test_a_records_run_is_no_sync_run() -> None:
    """An event's run (mode records) neither stands for the sync's success nor its failure."""
    event = {**a_run("succeeded", timedelta(minutes=5), "event"), "mode": "records"}
    verdict = judge(RunFacts([event, a_run("succeeded", 9 * 24 * HOUR, "sync")]), NOW, HOUR, ())
    assert [r["code"] for r in verdict.reasons] == ["last-success-too-old"]
    assert verdict.last_run is not None and verdict.last_run["runId"] == "sync"
    failed_event = {**a_run("failed", timedelta(minutes=5), "event"), "mode": "records"}
    assert codes(RunFacts([failed_event, a_run("succeeded", HOUR)])) == []
