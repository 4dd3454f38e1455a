"""Helpers of the reliability tests (fault matrix, crash and rerun, concurrency, throttling):
a run with injected sleep/clock/session, the final Dataverse state, a session that dies."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import requests

from work365_fn.adapters.transport import build_session
from work365_fn.composition import Services
from work365_fn.operations.sync import SyncRequest
from work365_fn.rules.summary import RunSummary
from work365_fn.sandbox import Sandbox
from work365_fn.settings import Settings

Row = tuple[str, str | None, str | None, str | None, str]


def services(
    box: Sandbox,
    state_dir: str,
    *,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] | None = None,
    monotonic: Callable[[], float] | None = None,
    **settings: str,
) -> Services:
    env = {**box.env, "WORK365_STATE_DIR": state_dir, **settings}
    extra: dict[str, Any] = {} if monotonic is None else {"monotonic": monotonic}
    return Services.build(
        Settings.from_env({}, overrides=env),
        session=session,
        sleep=sleep if sleep is not None else (lambda _s: None),
        **extra,
    )


def run(box: Sandbox, state_dir: str, request: SyncRequest | None = None, **kw: Any) -> RunSummary:
    return services(box, state_dir, **kw).sync(request or SyncRequest())


def final_state(box: Sandbox) -> list[Row]:
    """The subscription records as a person sees them: id, Partner Center id, Account, Billing
    Contract, name (not the timestamps or versions)."""
    return sorted(
        (
            r["work365_subscriptionid"],
            r.get("work365_providersubscriptionid"),
            r.get("_work365_account_value"),
            r.get("_work365_billingcontract_value"),
            r.get("work365_name") or "",
        )
        for r in box.dataverse.rows("work365_subscriptions")
    )


def reasons(summary: RunSummary) -> dict[str, str]:
    """Subscription id -> reason; fails when a subscription appears twice."""
    rows = summary.to_json()["subscriptions"]
    out = {r["subscriptionId"]: r["reason"] for r in rows}
    assert len(out) == len(rows), "a subscription has more than one reason"
    return out


def rows_by_subscription(summary: RunSummary) -> dict[str, dict[str, Any]]:
    return {r["subscriptionId"]: r for r in summary.to_json()["subscriptions"]}


def is_dataverse_write(method: str, url: str) -> bool:
    return method.upper() in {"PATCH", "POST", "DELETE", "PUT"} and "/api/data/" in url


class Killed(BaseException):
    """The process died: nothing in the app catches a BaseException."""


class KillingSession(requests.Session):
    """A session whose process "dies" at the Nth Dataverse write: `when="before"` raises before
    the Nth write is sent (it never reaches the server), `when="after"` once the Nth write has
    been answered (it reached the server; the answer is lost). After the death every request, in
    every thread, raises too."""

    def __init__(self, kill_at: int, when: str) -> None:
        super().__init__()
        pooled = build_session()
        for prefix, adapter in pooled.adapters.items():
            self.mount(prefix, adapter)
        self.kill_at = kill_at
        self.when = when
        self.writes = 0
        self.dead = False
        self._lock = threading.Lock()

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        m, u = str(method, "ascii") if isinstance(method, bytes) else method, str(url)
        write = is_dataverse_write(m, u)
        with self._lock:
            if self.dead:
                raise Killed("the process is gone")
            if write and self.when == "before" and self.writes + 1 == self.kill_at:
                self.dead = True
                raise Killed(f"killed before write {self.kill_at}")
        response = super().request(method, url, *args, **kwargs)
        with self._lock:
            if write:
                self.writes += 1
                if self.when == "after" and self.writes == self.kill_at:
                    self.dead = True
                    raise Killed(f"killed after write {self.kill_at} reached the server")
        return response


class FakeClock:
    """Monotonic time that moves only when slept on (thread-safe); `on_sleep` hooks see it."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()
        self.on_sleep: list[Callable[[float], None]] = []

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(0.0, seconds)
            now = self.now
        for hook in list(self.on_sleep):
            hook(now)
