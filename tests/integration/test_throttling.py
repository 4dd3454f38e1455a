"""Throttling as a good citizen, over the sandbox with a fake clock (nothing sleeps for real):
the client-side limit keeps Partner Center under the limit the sandbox enforces, and a 429
storm costs a bounded number of requests and the run still completes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.integration.conftest import ScenarioBuilder
from tests.integration.reliability import FakeClock, reasons, run, services
from work365_fn.operations.sync import SyncRequest
from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.faults import Limits


def many_customers(world: ScenarioBuilder, n: int) -> set[str]:
    account = world.account(1)
    return {
        world.new_subscription(i, world.customer(i, account_id=account)) for i in range(1, n + 1)
    }


def pc_requests(box: Sandbox) -> int:
    return sum(box.counts()["partnerCenter"].values())


def test_the_client_limit_keeps_partner_center_under_its_limit(
    world: ScenarioBuilder, tmp_path: Path
) -> None:
    subs = many_customers(world, 12)
    clock = FakeClock(start=time.time())  # the sandbox's clock too: tokens and the limits
    limits = Limits(partner_center_requests=5, partner_center_window_seconds=60)
    with Sandbox.start(world.scenario(), enforce_limits=True, limits=limits, clock=clock) as box:
        summary = run(
            box,
            str(tmp_path),
            sleep=clock.sleep,
            monotonic=clock,
            WORK365_PC_MAX_REQUESTS_PER_MINUTE="5",
            WORK365_CONCURRENCY="1",
        )
        served = pc_requests(box)

    assert summary.status == "succeeded"
    assert set(reasons(summary)) == subs
    assert served == 13  # one customers page, twelve subscription lists: not one 429
    # 13 requests at 5 a minute: the 11th cannot go before two minutes have passed.
    assert sum(clock.sleeps) >= 120


def test_without_the_client_limit_the_service_throttles_and_the_run_still_completes(
    world: ScenarioBuilder, tmp_path: Path
) -> None:
    subs = many_customers(world, 12)
    clock = FakeClock(start=time.time())
    limits = Limits(partner_center_requests=5, partner_center_window_seconds=60)
    with Sandbox.start(world.scenario(), enforce_limits=True, limits=limits, clock=clock) as box:
        summary = run(
            box,
            str(tmp_path),
            sleep=clock.sleep,
            monotonic=clock,
            WORK365_PC_MAX_REQUESTS_PER_MINUTE="0",  # off
            WORK365_CONCURRENCY="1",
        )
        served = pc_requests(box)

    assert summary.status == "succeeded"
    assert set(reasons(summary)) == subs
    # Each window: five answered, one 429 whose Retry-After is waited out before the next.
    assert served == 13 + 2


def test_a_429_storm_costs_bounded_requests_and_the_run_completes(
    world: ScenarioBuilder, tmp_path: Path
) -> None:
    """Partner Center answers every subscription call 429 (Retry-After 5) for 30 s."""
    subs = many_customers(world, 12)
    clock = FakeClock()
    storm_seconds, retry_after, workers = 30.0, 5, 4
    with Sandbox.start(world.scenario()) as box:
        box.faults.add(
            {
                "service": "partnerCenter",
                "path": "/subscriptions$",
                "kind": "429",
                "retryAfter": retry_after,
                "every": 1,
            }
        )

        def storm_passes(now: float) -> None:
            if now >= storm_seconds:
                box.faults.clear()

        clock.on_sleep.append(storm_passes)
        built = services(
            box,
            str(tmp_path),
            sleep=clock.sleep,
            monotonic=clock,
            WORK365_CONCURRENCY=str(workers),
            WORK365_MAX_ATTEMPTS="10",
        )
        summary = built.sync(SyncRequest())
        counts = box.counts()["partnerCenter"]
        limiter: Any = built.partner_center_transport.limiter

    assert summary.status == "succeeded", summary.to_json()["errors"]
    assert set(reasons(summary)) == subs
    throttled = counts["GET subscriptions"] - 12
    # Bounded: while the storm lasts, each worker sends at most one request per Retry-After.
    assert 0 < throttled <= workers * (storm_seconds / retry_after + 1)
    assert limiter.pauses >= 1
    assert clock.now >= storm_seconds  # the storm was waited out, not hammered through
