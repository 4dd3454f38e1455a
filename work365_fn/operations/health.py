"""The health check (`GET /api/health`): what the run store says about the last runs, the
watermark and the full-sync lease, the credentials' expiry, and (`deep`) a token and one cheap
read for each service. Reads only: nothing is written, anywhere.

The verdict is the rules' (rules/health.py, rules/expiry.py); here the facts are read and the
answer is shaped. Failures to read are reasons too (`run-store-unreadable`, `lease-unreadable`,
`deep-check-failed` naming the service): the check never raises for them.

The deep check answers in seconds, well under the 230 s an HTTP-triggered function has to answer
whatever its timeout (the load balancer's idle timeout: "Function app timeout duration",
https://learn.microsoft.com/azure/azure-functions/functions-scale#timeout):
each probe makes one attempt with a short timeout (the transport's `for_probe`), no probe
starts after `DEEP_DEADLINE_SECONDS`, a 429 (or 503 with Retry-After) is reported as
`deep-check-throttled` (reachable, throttled: never retried, never waited out), and the result
is kept `DEEP_CACHE_SECONDS` per worker (`DeepCache`, held by the Services instance), so a
monitor polling `?deep=true` adds at most one read per service a minute to the services.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from work365_fn.adapters.storage import RunStore
from work365_fn.errors import ThrottledError, Work365Error
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
PROBE_TIMEOUT = (3.05, 5.0)  # (connect, read) seconds of one probe's request
DEEP_DEADLINE_SECONDS = 20.0  # no probe starts after this long
DEEP_CACHE_SECONDS = 60.0  # a deep result is answered again for this long


@dataclass(frozen=True)
class DeepResult:
    """One deep check: each service's check, the reasons it gave, and when it was made."""

    checks: dict[str, dict[str, Any]]
    reasons: list[dict[str, str]]


class DeepCache:
    """The last deep result of a worker, for `seconds` (monotonic). Two checks at the same
    moment may both probe: the cache only spares the services the repeats."""

    def __init__(self, seconds: float = DEEP_CACHE_SECONDS) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._kept: tuple[float, DeepResult] | None = None

    def get(self, now: float) -> DeepResult | None:
        with self._lock:
            if self._kept is not None and now - self._kept[0] < self.seconds:
                return self._kept[1]
            return None

    def put(self, at: float, result: DeepResult) -> None:
        with self._lock:
            self._kept = (at, result)


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
    monotonic: Callable[[], float] = time.monotonic  # the deep check's deadline and cache
    deep_cache: DeepCache | None = None  # None: every deep check probes
    deep_deadline_seconds: float = DEEP_DEADLINE_SECONDS


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
    probes = _deep(deps, reasons) if deep else None
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


def _deep(deps: HealthDeps, reasons: list[dict[str, str]]) -> dict[str, dict[str, Any]]:
    """The deep checks (kept ones when the cache holds a recent result); their reasons added."""
    start = deps.monotonic()
    result = deps.deep_cache.get(start) if deps.deep_cache is not None else None
    if result is None:
        at = format_timestamp(deps.clock())
        result = _probes(deps.probes, at, deps.monotonic, start + deps.deep_deadline_seconds)
        if deps.deep_cache is not None:
            deps.deep_cache.put(start, result)
    reasons.extend(result.reasons)
    return result.checks


def _probes(
    probes: Mapping[str, Callable[[], str]],
    at: str,
    monotonic: Callable[[], float],
    deadline: float,
) -> DeepResult:
    """Each service's token and cheap read, one after the other, none started after `deadline`;
    a failure names the service, a throttled answer says so (reachable: not retried)."""
    checks: dict[str, dict[str, Any]] = {}
    reasons: list[dict[str, str]] = []
    for service, probe in probes.items():
        if monotonic() >= deadline:
            detail = "not checked: the deep check's time ran out on the services before it"
            checks[service] = {"ok": False, "detail": detail, "checkedAt": at}
            reasons.append(reason("deep-check-failed", f"{service}: {detail}", service=service))
            continue
        try:
            checks[service] = {"ok": True, "detail": probe(), "checkedAt": at}
        except ThrottledError as exc:
            wait = f", Retry-After {exc.retry_after:g} s" if exc.retry_after is not None else ""
            detail = f"reachable, throttled (HTTP {exc.status}{wait}): not retried"
            checks[service] = {"ok": True, "throttled": True, "detail": detail, "checkedAt": at}
            message = f"{service} is throttled ({exc.status}{wait}): runs now wait and go slower"
            reasons.append(reason("deep-check-throttled", message, service=service))
        except Work365Error as exc:  # AuthError, ApiError, ConfigError: messages hold no secret
            checks[service] = {"ok": False, "detail": str(exc), "checkedAt": at}
            reasons.append(reason("deep-check-failed", f"{service}: {exc}", service=service))
    return DeepResult(checks, reasons)


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


__all__: Sequence[str] = ("DeepCache", "HealthDeps", "check_health", "settings_invalid")
