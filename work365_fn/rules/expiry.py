"""When a credential's expiry is known, how close it is: dates in, sentences out. Pure.

A client secret (its end date in `WORK365_CLIENT_SECRET_EXPIRES`) or a certificate (its
`notAfter`) that expires stops every sync at once, silently until someone reads the logs. So:

- from `WARN_DAYS` (30) days before, every run summary carries a warning naming the credential
  and the date (`expiry_warnings`), and `GET /api/health` lists it;
- from `FAIL_DAYS` (7) days before (and once expired), `diagnose` fails its `credentials` check
  and `GET /api/health` answers 503 (`expiry_failures`).

Never the secret itself: a credential is named by its kind, its setting and its app (client id).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from work365_fn.rules.timestamps import format_timestamp

WARN_DAYS = 30
FAIL_DAYS = 7


@dataclass(frozen=True)
class CredentialExpiry:
    """One credential whose expiry is known. `what`: "the client secret of app <client id>"
    (never the secret); `setting`: where its value or date comes from; `fix`: what to do."""

    what: str
    setting: str
    expires_at: datetime
    fix: str

    def left(self, now: datetime) -> timedelta:
        return self.expires_at - now

    def within(self, now: datetime, days: int) -> bool:
        """Expires in `days` days or less (or has expired)."""
        return self.left(now) <= timedelta(days=days)

    def sentence(self, now: datetime) -> str:
        """'the client secret of app ... (WORK365_CLIENT_SECRET_EXPIRES) expires on 2026-05-01
        (in 12 days): <fix>'."""
        return f"{self.state(now)}: {self.fix}"

    def state(self, now: datetime) -> str:
        """The sentence without the fix."""
        day = self.expires_at.date().isoformat()
        left = self.left(now)
        if left <= timedelta(0):
            when = f"expired on {day}"
        elif left < timedelta(days=1):
            when = f"expires on {day} (in less than a day)"
        else:
            when = f"expires on {day} (in {left.days} day{'' if left.days == 1 else 's'})"
        return f"{self.what} ({self.setting}) {when}"

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "credential": self.what,
            "setting": self.setting,
            "expiresAt": format_timestamp(self.expires_at),
            "daysLeft": self.left(now).days,
            "status": _status(self, now),
        }


def _status(expiry: CredentialExpiry, now: datetime) -> str:
    if expiry.left(now) <= timedelta(0):
        return "expired"
    if expiry.within(now, FAIL_DAYS):
        return "failing"
    if expiry.within(now, WARN_DAYS):
        return "expiring"
    return "ok"


def expiry_warnings(expiries: Iterable[CredentialExpiry], now: datetime) -> list[str]:
    """A sentence for each credential that expires within WARN_DAYS days (or has expired),
    soonest first: the run summary's warnings."""
    return [e.sentence(now) for e in _soonest(expiries) if e.within(now, WARN_DAYS)]


def expiry_failures(expiries: Iterable[CredentialExpiry], now: datetime) -> list[str]:
    """A sentence for each credential that expires within FAIL_DAYS days (or has expired):
    what fails diagnose's `credentials` check and makes the health check 503."""
    return [e.sentence(now) for e in _soonest(expiries) if e.within(now, FAIL_DAYS)]


def expiry_fixes(expiries: Iterable[CredentialExpiry], now: datetime) -> list[str]:
    """What to do about each credential of `expiry_failures`, without the state sentence
    (diagnose's `fix:` line; its `detail` already says when each expires)."""
    fixes = [e.fix for e in _soonest(expiries) if e.within(now, FAIL_DAYS)]
    return list(dict.fromkeys(fixes))


def _soonest(expiries: Iterable[CredentialExpiry]) -> list[CredentialExpiry]:
    return sorted(expiries, key=lambda e: (e.expires_at, e.setting))
