"""A client secret about to expire is never silent (issue 15): over the sandbox, every sync
summary warns from 30 days before its end date (WORK365_CLIENT_SECRET_EXPIRES), diagnose fails
its `credentials` check from 7 days before; and the run's summary record carries the counts and
ids as `work365.*` attributes (customDimensions with OpenTelemetry), its requests per service
counted as the sandbox served them. The clock is injected: nothing sleeps."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.conftest import ScenarioBuilder, services_for
from work365_fn.adapters.transport import failure_fields
from work365_fn.composition import Services
from work365_fn.errors import ApiError
from work365_fn.logs import install, log_summary, run_context
from work365_fn.operations.diagnose import DiagnoseRequest, failed_checks, run_diagnose
from work365_fn.operations.sync import SyncRequest
from work365_fn.sandbox import Sandbox

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def at(box: Sandbox, now: datetime, **settings: str) -> Services:
    services = services_for(box, **settings)
    services.clock = lambda: now
    return services


def ends_in(days: int) -> str:
    """The secret's end date as the app registration shows it, `days` days after NOW."""
    return (NOW + timedelta(days=days)).isoformat().replace("+00:00", "Z")


def expiry_warnings(warnings: list[str]) -> list[str]:
    return [w for w in warnings if "WORK365_CLIENT_SECRET_EXPIRES" in w]


def tenant(world: ScenarioBuilder) -> tuple[str, str]:
    account = world.account(1)
    customer = world.customer(1, account_id=account)
    return customer, world.new_subscription(1, customer)


@pytest.mark.parametrize(("days", "warned"), [(31, False), (30, True), (8, True)])
def test_every_sync_summary_warns_from_30_days_before(
    world: ScenarioBuilder, start: Any, days: int, warned: bool
) -> None:
    tenant(world)
    box = start(world.scenario())
    services = at(box, NOW, WORK365_CLIENT_SECRET_EXPIRES=ends_in(days))
    for request in (SyncRequest(dry_run=True), SyncRequest()):  # dry run and live run alike
        found = expiry_warnings(services.sync(request).to_json()["warnings"])
        assert bool(found) is warned, found
        if warned:
            [warning] = found
            assert (NOW + timedelta(days=days)).date().isoformat() in warning
            assert box.env["WORK365_CLIENT_SECRET"] not in warning


@pytest.mark.parametrize(("days", "ok"), [(8, True), (7, False)])
def test_diagnose_fails_its_credentials_check_from_7_days_before(
    world: ScenarioBuilder, start: Any, days: int, ok: bool
) -> None:
    customer, _ = tenant(world)
    box = start(world.scenario())
    services = at(box, NOW, WORK365_CLIENT_SECRET_EXPIRES=ends_in(days))
    diagnosis = run_diagnose(services.diagnose_deps(), DiagnoseRequest(customer_id=customer))
    [check] = [c for c in diagnosis["checks"] if c["check"] == "credentials"]
    assert check["ok"] is ok
    assert diagnosis["ok"] is ok  # the rest of this tenant is in order
    if not ok:
        assert [c["check"] for c in failed_checks(diagnosis)] == ["credentials"]
        assert "WORK365_CLIENT_SECRET_EXPIRES" in check["fix"]
        assert box.env["WORK365_CLIENT_SECRET"] not in check["fix"] + check["detail"]
        # The fix only (the detail says when it expires), and on Azure the setting is a Key
        # Vault reference: the new secret goes into the vault.
        assert "expires on" not in check["fix"] and "expires on" in check["detail"]
        assert "Key Vault secret" in check["fix"] and "work365-client-secret" in check["fix"]


def test_without_an_end_date_diagnose_has_no_credentials_check(
    world: ScenarioBuilder, start: Any
) -> None:
    customer, _ = tenant(world)
    box = start(world.scenario())
    diagnosis = run_diagnose(at(box, NOW).diagnose_deps(), DiagnoseRequest(customer_id=customer))
    assert "credentials" not in [c["check"] for c in diagnosis["checks"]]


def test_the_summary_record_carries_the_counts_and_ids_as_dimensions(
    world: ScenarioBuilder, start: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tenant(world)
    box = start(world.scenario())
    services = at(box, NOW)
    box.reset_counts()
    summary = services.sync(SyncRequest())
    served = box.counts()
    with caplog.at_level(logging.INFO, logger="work365_fn"):
        log_summary(summary)
    [record] = [r for r in caplog.records if "] summary {" in r.getMessage()]
    dims = {k: v for k, v in vars(record).items() if k.startswith("work365.")}
    data = summary.to_json()
    # the names infra/workbook.json and infra/alerts/*.kql query
    assert dims["work365.runId"] == data["runId"]
    assert dims["work365.status"] == data["status"]
    assert dims["work365.mode"] == data["mode"]
    assert dims["work365.dryRun"] == "false"
    for name, value in data["counts"].items():
        assert dims[f"work365.{name}"] == value
    assert dims["work365.assigned"] == 1
    assert dims["work365.errors"] == len(data["errors"])
    for reason, count in data["byReason"].items():
        assert dims[f"work365.reason.{reason}"] == count
    assert dims["work365.requests.dataverse"] == sum(served["dataverse"].values())
    assert dims["work365.requests.partnerCenter"] == sum(served["partnerCenter"].values())
    assert all(isinstance(v, str | int) for v in dims.values())  # scalar: an attribute each


def test_every_line_of_a_run_carries_its_ids_and_a_failure_its_service() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    install(handler)
    logger = logging.getLogger("work365_fn.test_dimensions")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with run_context("7f1e2d3c-4b5a-4968-8776-655443322110", "corr-1"):
            logger.info("a line of the run")
        logger.warning(
            "retrying", extra=failure_fields(ApiError("dataverse", 503, "0x1", "busy", "req-1"))
        )
    finally:
        logger.removeHandler(handler)
    line, failure = records
    assert vars(line)["work365.runId"] == "7f1e2d3c-4b5a-4968-8776-655443322110"
    assert vars(line)["work365.correlationId"] == "corr-1"
    assert "work365.runId" not in vars(failure)  # outside a run
    assert {k: v for k, v in vars(failure).items() if k.startswith("work365.")} == {
        "work365.service": "dataverse",
        "work365.httpStatus": 503,
        "work365.errorCode": "0x1",
        "work365.requestId": "req-1",
    }
