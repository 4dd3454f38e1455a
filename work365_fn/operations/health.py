"""The health check (`GET /api/health`): what the run store says about the last runs, the
watermark and the full-sync lease, the credentials' expiry, and (`deep`) a token and one cheap
read for each service. Reads only: nothing is written, anywhere.

The verdict is the rules' (rules/health.py, rules/expiry.py); here the facts are read and the
answer is shaped. Failures to read are reasons too (`run-store-unreadable`, `lease-unreadable`,
`deep-check-failed` naming the service): the check never raises for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from work365_fn.adapters.storage import RunStore
from work365_fn.errors import Work365Error
from work365_fn.operations.incremental import load_watermark
from work365_fn.operations.run_history import recent_runs
from work365_fn.rules.expiry import CredentialExpiry, expiry_warnings
from work365_fn.rules.health import (
    MAX_AGE_PERIODS,
    RunFacts,
    Verdict,
    judge,
    reason,
    run_moment,
)
from work365_fn.rules.schedule import ScheduleError, schedule_period
from work365_fn.rules.timestamps import format_timestamp

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SERVICES = ("dataverse", "partnerCenter")
NEVER = timedelta(days=36500)  # no period known: no age limit


@dataclass(frozen=True)
class HealthDeps:
    run_store: RunStore | None  # None: nothing recorded anywhere
    schedule: str  # WORK365_SYNC_SCHEDULE (six-field NCRONTAB, checked by Settings)
    clock: Callable[[], datetime]
    # (held, holder's run id) of the full-sync lease; None without app storage (no lease)
    lease_holder: Callable[[], tuple[bool, str | None]] | None = None
    expiries: tuple[CredentialExpiry, ...] = ()
    unknown_expiries: tuple[str, ...] = ()
    # service -> a token and one cheap read of it, returning a short proof (no secret in it)
    probes: Mapping[str, Callable[[], str]] = field(default_factory=dict)


def check_health(deps: HealthDeps, *, deep: bool = False) -> dict[str, Any]:
    """The health answer: `status` healthy or unhealthy, with `reasons` when unhealthy."""
    now = deps.clock()
    reasons: list[dict[str, str]] = []
    try:
        period: timedelta | None = schedule_period(deps.schedule)
    except ScheduleError as exc:  # Settings.from_env refuses these; defensive only
        period = None
        reasons.append(reason("schedule-not-understood", f"WORK365_SYNC_SCHEDULE: {exc}"))
    facts, watermark, readable = _run_facts(deps.run_store, reasons)
    verdict = judge(facts, now, period or NEVER, deps.expiries)
    # An unreadable store says nothing about the runs: only the credentials are judged then.
    reasons.extend(r for r in verdict.reasons if readable or r["code"] == "credential-expiring")
    lease = _lease(deps, reasons)
    probes = _probes(deps.probes, reasons) if deep else None
    answer = {
        "schemaVersion": SCHEMA_VERSION,
        "status": "unhealthy" if reasons else "healthy",
        "checkedAt": format_timestamp(now),
        "reasons": reasons,
        "warnings": expiry_warnings(deps.expiries, now),
        "settings": {"valid": True, "error": None},
        "schedule": _schedule_json(deps.schedule, period),
        **_runs_json(verdict, facts, now),
        "watermark": watermark,
        "lease": lease,
        "credentials": {
            "expiries": [e.to_json(now) for e in deps.expiries],
            "unknown": list(deps.unknown_expiries),
        },
    }
    if probes is not None:
        answer["deep"] = probes
    log.log(
        logging.INFO if not reasons else logging.WARNING,
        "health: %s%s",
        answer["status"],
        f" ({', '.join(r['code'] for r in reasons)})" if reasons else "",
    )
    return answer


def settings_invalid(message: str, now: datetime) -> dict[str, Any]:
    """The health answer when the app settings cannot be read: the error names the setting and
    what it expects, never its value (errors.InvalidSettingError)."""
    return {
        "schemaVersion": SCHEMA_VERSION,
        "status": "unhealthy",
        "checkedAt": format_timestamp(now),
        "reasons": [reason("settings-invalid", message)],
        "warnings": [],
        "settings": {"valid": False, "error": message},
        "schedule": None,
        "lastRun": None,
        "lastSuccess": None,
        "lastFullRun": None,
        "watermark": None,
        "lease": None,
        "credentials": None,
    }


def _run_facts(
    store: RunStore | None, reasons: list[dict[str, str]]
) -> tuple[RunFacts, dict[str, Any] | None, bool]:
    """The run history and the watermark (with its JSON), and whether they could be read (an
    unreadable store is a reason)."""
    if store is None:
        return RunFacts(), None, True
    try:
        runs = recent_runs(store)
        mark = load_watermark(store)
    except Work365Error as exc:
        reasons.append(reason("run-store-unreadable", f"the run documents cannot be read: {exc}"))
        return RunFacts(), None, False
    if mark is None:
        return RunFacts(runs), None, True
    watermark = {
        "watermark": format_timestamp(mark.watermark),
        "lastRunAt": format_timestamp(mark.last_run_at),
        "lastFullAt": format_timestamp(mark.last_full_at) if mark.last_full_at else None,
        "pendingCustomers": len(mark.pending_customers),
    }
    return RunFacts(runs, mark.last_run_at, mark.last_full_at), watermark, True


def _lease(deps: HealthDeps, reasons: list[dict[str, str]]) -> dict[str, Any] | None:
    if deps.lease_holder is None:
        return None
    try:
        held, holder = deps.lease_holder()
    except Work365Error as exc:
        reasons.append(reason("lease-unreadable", f"the full-sync lease cannot be read: {exc}"))
        return None
    return {"held": held, "holder": holder}


def _probes(
    probes: Mapping[str, Callable[[], str]], reasons: list[dict[str, str]]
) -> dict[str, dict[str, Any]]:
    """Each service's token and cheap read, one after the other; a failure names the service."""
    out: dict[str, dict[str, Any]] = {}
    for service, probe in probes.items():
        try:
            out[service] = {"ok": True, "detail": probe()}
        except Work365Error as exc:  # AuthError, ApiError, ConfigError: messages hold no secret
            out[service] = {"ok": False, "detail": str(exc)}
            reasons.append(reason("deep-check-failed", f"{service}: {exc}", service=service))
    return out


def _schedule_json(expression: str, period: timedelta | None) -> dict[str, Any]:
    return {
        "expression": expression,
        "periodMinutes": _minutes(period) if period is not None else None,
        "maxSuccessAgeMinutes": _minutes(period * MAX_AGE_PERIODS) if period else None,
    }


def _runs_json(verdict: Verdict, facts: RunFacts, now: datetime) -> dict[str, Any]:
    last = verdict.last_run
    success_at = verdict.last_success_at
    success = verdict.last_success
    return {
        "lastRun": _run_json(last, now) if last is not None else None,
        "lastSuccess": (
            {
                "runId": success.get("runId") if success else None,
                "at": format_timestamp(success_at),
                "ageMinutes": _minutes(now - success_at),
            }
            if success_at is not None
            else None
        ),
        "lastFullRun": (
            {
                "at": format_timestamp(facts.last_full_at),
                "ageMinutes": _minutes(now - facts.last_full_at),
            }
            if facts.last_full_at is not None
            else None
        ),
    }


def _run_json(run: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    moment = run_moment(run)
    return {
        **{key: run.get(key) for key in ("runId", "status", "mode", "startedAt", "finishedAt")},
        "ageMinutes": _minutes(now - moment) if moment is not None else None,
    }


def _minutes(value: timedelta) -> int:
    return int(value.total_seconds() // 60)


__all__: Sequence[str] = ("HealthDeps", "check_health", "settings_invalid")
