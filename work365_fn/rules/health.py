"""Is the sync healthy? What was recorded about its runs, the schedule and the credentials in,
the reasons it is not out. Pure: `GET /api/health` (operations/health.py) reads, this decides.

Unhealthy (each a reason `{"code", "message"}`; the codes are stable, for alert rules):

- `no-run-yet`: no sync run is recorded (a fresh deployment: run one, or wait for the timer);
- `last-run-failed`: the newest recorded run's status is `failed`;
- `no-successful-run`: runs are recorded, none of them a success;
- `last-success-too-old`: the last success finished more than twice the schedule's longest
  gap ago (the timer stopped, or every run since failed);
- `credential-expiring`: a credential expires within `FAIL_DAYS` days (rules/expiry.py).

Only sync runs count (`SYNC_MODES`: the timer's, `POST /api/sync`, a queued or fanned-out run):
a records run (`POST /api/records`, the Dataverse webhook) decides a few records, it says nothing
about the timer, so an event burst never stands for a sync that stopped.

A success is a run that wrote and finished, `succeeded` or `partial` (some customers failed and
wait for the next run), the same definition as infra/alerts/no-success.kql. The settings, the
run store and the deep checks add their own reasons where they are read (operations/health.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from work365_fn.rules.expiry import CredentialExpiry, expiry_failures
from work365_fn.rules.timestamps import format_timestamp, parse_timestamp

SUCCESS_STATUSES = ("succeeded", "partial")
# The modes a sync run's summary carries (operations/incremental.py: Mode; `auto` resolves to one
# of the others before the summary is written, kept for safety). Not "records".
SYNC_MODES = frozenset({"full", "incremental", "auto"})
MAX_AGE_PERIODS = 2  # the last success may be this many schedule periods old


@dataclass(frozen=True)
class RunFacts:
    """What the run store says: the recorded runs (newest first, the run history's entries:
    `runId`, `status`, `mode`, `startedAt`, `finishedAt` as ISO strings) and the watermark's
    moments (a whole-tenant run that did not fail moves them)."""

    runs: Sequence[Mapping[str, Any]] = ()
    last_run_at: datetime | None = None  # the watermark's lastRunAt
    last_full_at: datetime | None = None  # the watermark's lastFullAt


@dataclass(frozen=True)
class Verdict:
    reasons: list[dict[str, str]]
    last_run: Mapping[str, Any] | None
    last_success: Mapping[str, Any] | None
    last_success_at: datetime | None

    @property
    def healthy(self) -> bool:
        return not self.reasons


def reason(code: str, message: str, **extra: str) -> dict[str, str]:
    return {"code": code, "message": message, **extra}


def is_success(run: Mapping[str, Any]) -> bool:
    return run.get("status") in SUCCESS_STATUSES and run.get("dryRun") is not True


def is_sync_run(run: Mapping[str, Any]) -> bool:
    """A run of the sync (any of SYNC_MODES), not a records run."""
    return run.get("mode") in SYNC_MODES


def run_moment(run: Mapping[str, Any]) -> datetime | None:
    """When a run ended (its start when the end is not recorded)."""
    return parse_timestamp(str(run.get("finishedAt") or "")) or parse_timestamp(
        str(run.get("startedAt") or "")
    )


def judge(
    facts: RunFacts,
    now: datetime,
    period: timedelta,
    expiries: Sequence[CredentialExpiry],
) -> Verdict:
    """The reasons the sync is unhealthy at `now` ([] when healthy)."""
    runs = [r for r in facts.runs if r.get("dryRun") is not True and is_sync_run(r)]
    last_run = runs[0] if runs else None
    last_success = next((r for r in runs if is_success(r)), None)
    success_at = run_moment(last_success) if last_success else None
    if facts.last_run_at and (success_at is None or facts.last_run_at > success_at):
        # the watermark only moves after a whole-tenant run that did not fail: a success the
        # history does not hold (it keeps the last 20 runs)
        success_at, last_success = facts.last_run_at, None
    reasons = _run_reasons(last_run, success_at, now, period)
    reasons += [reason("credential-expiring", s) for s in expiry_failures(expiries, now)]
    return Verdict(reasons, last_run, last_success, success_at)


def _run_reasons(
    last_run: Mapping[str, Any] | None,
    success_at: datetime | None,
    now: datetime,
    period: timedelta,
) -> list[dict[str, str]]:
    limit = period * MAX_AGE_PERIODS
    if last_run is None and success_at is None:
        return [
            reason(
                "no-run-yet",
                "no sync run is recorded yet: the timer runs on its schedule "
                "(WORK365_SYNC_SCHEDULE), or start one with POST /api/sync",
            )
        ]
    out = []
    if last_run is not None and last_run.get("status") == "failed":
        out.append(
            reason(
                "last-run-failed",
                f"the last run ({last_run.get('runId')}, started {last_run.get('startedAt')}) "
                "failed: its summary's errors say why (GET /api/runs/<id>, or the logs)",
            )
        )
    if success_at is None:
        out.append(reason("no-successful-run", "no recorded run has succeeded yet"))
    elif now - success_at > limit:
        out.append(
            reason(
                "last-success-too-old",
                f"the last successful run finished at {format_timestamp(success_at)}, "
                f"{_hours(now - success_at)} ago: more than twice the schedule's "
                f"{_hours(period)} between runs",
            )
        )
    return out


def _hours(value: timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes / 60:.1f} h"
