"""A cutoff in the future assigns nothing, so it is never silent (issue 12, defect 4): the sync's
summary and the report warn with a sentence naming the cutoff, where it came from and what to do,
and diagnose's setting check fails with it. The same for an audit-derived cutoff after this
host's clock (clock skew). The clock is injected: nothing sleeps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.integration.conftest import ENABLED_ON, ScenarioBuilder, services_for
from work365_fn.composition import Services
from work365_fn.operations.diagnose import DiagnoseRequest, failed_checks, run_diagnose
from work365_fn.operations.report import run_report
from work365_fn.operations.sync import SyncRequest
from work365_fn.rules import Reason
from work365_fn.rules.timestamps import parse_timestamp
from work365_fn.sandbox import Sandbox

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # after ENABLED_ON and the scenario's NEW records
FUTURE = "2099-01-01T00:00:00Z"


def at(box: Sandbox, now: datetime, **settings: str) -> Services:
    services = services_for(box, **settings)
    services.clock = lambda: now
    return services


def tenant(world: ScenarioBuilder) -> tuple[str, str]:
    """One customer mapped to an Account with one default contract, one new subscription."""
    a1 = world.account(1)
    c1 = world.customer(1, account_id=a1)
    return c1, world.new_subscription(1, c1)


def future_warnings(warnings: list[str]) -> list[str]:
    return [w for w in warnings if "is in the future" in w]


def test_a_future_override_is_warned_in_the_sync_summary(
    world: ScenarioBuilder, start: Any
) -> None:
    _, sub = tenant(world)
    box = start(world.scenario())
    summary = at(box, NOW, WORK365_ASSOCIATE_SINCE=FUTURE).sync(SyncRequest(dry_run=True))
    data = summary.to_json()
    [warning] = future_warnings(data["warnings"])
    assert FUTURE in warning
    assert "WORK365_ASSOCIATE_SINCE" in warning
    assert "set WORK365_ASSOCIATE_SINCE to the date" in warning  # what to do
    [row] = data["subscriptions"]
    assert (row["subscriptionId"], row["reason"]) == (sub, Reason.EXISTING_SUBSCRIPTION)


def test_an_audit_cutoff_after_this_hosts_clock_is_warned_as_clock_skew(
    world: ScenarioBuilder, start: Any
) -> None:
    tenant(world)
    box = start(world.scenario())
    enabled_on = parse_timestamp(ENABLED_ON)
    assert enabled_on is not None
    behind = datetime(2025, 12, 31, tzinfo=UTC)  # the host's clock, before the audited change
    assert behind < enabled_on
    data = at(box, behind).sync(SyncRequest(dry_run=True)).to_json()
    assert data["setting"]["sinceSource"] == "audit"
    [warning] = future_warnings(data["warnings"])
    assert ENABLED_ON in warning
    assert "audit history" in warning
    assert "clock skew" in warning


def test_a_past_cutoff_is_not_warned(world: ScenarioBuilder, start: Any) -> None:
    tenant(world)
    box = start(world.scenario())
    data = at(box, NOW).sync(SyncRequest(dry_run=True)).to_json()
    assert data["setting"]["since"] == ENABLED_ON
    assert data["warnings"] == []
    override = at(box, NOW, WORK365_ASSOCIATE_SINCE="2026-02-01T00:00:00Z")
    assert override.sync(SyncRequest(dry_run=True)).to_json()["warnings"] == []
    report = run_report(at(box, NOW).reader_deps())
    assert report["warnings"] == []


def test_the_report_warns_too(world: ScenarioBuilder, start: Any) -> None:
    tenant(world)
    box = start(world.scenario())
    report = run_report(at(box, NOW, WORK365_ASSOCIATE_SINCE=FUTURE).reader_deps())
    [warning] = future_warnings(report["warnings"])
    assert FUTURE in warning


def test_a_future_cutoff_fails_diagnoses_setting_check(world: ScenarioBuilder, start: Any) -> None:
    customer, _ = tenant(world)
    box = start(world.scenario())
    services = at(box, NOW, WORK365_ASSOCIATE_SINCE=FUTURE)
    result = run_diagnose(services.diagnose_deps(), DiagnoseRequest(customer_id=customer))
    first = failed_checks(result)[0]
    assert first["check"] == "setting"
    assert FUTURE in first["fix"]
    assert "WORK365_ASSOCIATE_SINCE" in first["fix"]
    assert "in the future" in first["detail"]
    assert result["ok"] is False


def test_a_past_cutoff_passes_diagnoses_setting_check(world: ScenarioBuilder, start: Any) -> None:
    customer, _ = tenant(world)
    box = start(world.scenario())
    result = run_diagnose(at(box, NOW).diagnose_deps(), DiagnoseRequest(customer_id=customer))
    [setting] = [c for c in result["checks"] if c["check"] == "setting"]
    assert setting["ok"] is True
    assert result["ok"] is True
