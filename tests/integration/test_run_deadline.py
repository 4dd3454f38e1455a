"""The run deadline: the timer run stops taking new customers WORK365_RUN_DEADLINE_SECONDS
after it started (a margin below host.json's functionTimeout), finishes what it started, writes
what it read, and reports the customers it skipped; the HTTP run keeps its own, shorter budget.
Time is a fake clock that moves 100 s with each Partner Center subscriptions call."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests

from tests.integration.conftest import ScenarioBuilder, gid
from tests.integration.reliability import FakeClock, final_state, services
from work365_fn.adapters.transport import build_session
from work365_fn.entrypoints.functions import handlers as triggers
from work365_fn.sandbox import Sandbox

SECONDS_PER_CUSTOMER = 100.0


class SlowPartnerCenter(requests.Session):
    """Each Partner Center subscriptions call takes 100 s of the fake clock."""

    def __init__(self, clock: FakeClock, seconds: float = SECONDS_PER_CUSTOMER) -> None:
        super().__init__()
        self.seconds = seconds
        for prefix, adapter in build_session().adapters.items():
            self.mount(prefix, adapter)
        self.clock = clock

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        response = super().request(method, url, *args, **kwargs)
        if str(url).endswith("/subscriptions"):
            self.clock.advance(self.seconds)
        return response


def eight_customers(world: ScenarioBuilder) -> list[str]:
    account = world.account(1)
    customers = []
    for n in range(1, 9):
        customer = world.customer(n, account_id=account)
        world.new_subscription(n, customer)
        customers.append(customer)
    return customers


class _Timer:
    past_due = False


def test_the_timer_run_stops_taking_customers_at_its_deadline_and_writes_what_it_read(
    world: ScenarioBuilder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    customers = eight_customers(world)
    clock = FakeClock()
    caplog.set_level(logging.INFO)
    with Sandbox.start(world.scenario()) as box:
        built = services(
            box,
            str(tmp_path),
            session=SlowPartnerCenter(clock),
            monotonic=clock,
            WORK365_CONCURRENCY="1",  # one customer at a time: the clock is deterministic
        )
        assert built.settings.run_deadline_seconds == 480  # the default
        triggers.sync_timer(_Timer(), lambda: built)
        contracts = {row[0]: row[3] for row in final_state(box)}

    [logged] = [r.summary for r in caplog.records if hasattr(r, "summary")]  # type: ignore[attr-defined]
    # Customers 1-5 were taken at 0, 100, ... 400 s; the 5th call ended past 480 s: it was
    # finished, not abandoned. Customers 6-8 come after the deadline: skipped, and said so.
    assert logged["skippedCustomers"] == [
        {"customerId": c, "why": "deadline"} for c in customers[5:]
    ]
    assert logged["counts"]["subscriptions"] == 5
    assert logged["counts"]["assigned"] == 5  # written although the deadline had passed
    assert logged["status"] == "succeeded"
    for n in range(1, 9):
        assert contracts[gid("rec", n)] == (gid("con", 10) if n <= 5 else None)
    assert clock.now == 500.0  # no customer call started after the deadline


def test_the_http_run_keeps_its_own_shorter_budget(world: ScenarioBuilder, tmp_path: Path) -> None:
    eight_customers(world)
    clock = FakeClock()
    with Sandbox.start(world.scenario()) as box:
        built = services(
            box,
            str(tmp_path),
            session=SlowPartnerCenter(clock, seconds=85.0),
            monotonic=clock,
            WORK365_CONCURRENCY="1",
        )
        assert built.settings.http_budget_seconds == 80  # the default
        request = func.HttpRequest(
            method="POST", url="http://localhost:7071/api/sync", body=b"{}", headers={}
        )
        response = triggers.sync_http(request, lambda: built)
    summary = json.loads(response.get_body())
    assert response.status_code == 200
    assert summary["counts"]["subscriptions"] == 1  # taken at 0 s; at 100 s the budget is spent
    assert len(summary["skippedCustomers"]) == 7
    assert summary["counts"]["assigned"] == 1


def test_the_deadline_setting_is_validated() -> None:
    from work365_fn.errors import InvalidSettingError
    from work365_fn.settings import Settings

    base = {
        "WORK365_TENANT_ID": "00000000-0000-0000-0000-000000000001",
        "WORK365_CLIENT_ID": "00000000-0000-0000-0000-000000000002",
        "WORK365_CLIENT_SECRET": "x" * 20,
        "WORK365_DATAVERSE_URL": "https://contoso.crm.dynamics.com",
    }
    assert (
        Settings.from_env({**base, "WORK365_RUN_DEADLINE_SECONDS": "300"}).run_deadline_seconds
        == 300
    )
    with pytest.raises(InvalidSettingError, match="WORK365_RUN_DEADLINE_SECONDS"):
        Settings.from_env({**base, "WORK365_RUN_DEADLINE_SECONDS": "forever"})
