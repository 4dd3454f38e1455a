"""Records runs (POST /api/records, the Dataverse webhook) are no sync: through the registered
functions, with real `func.HttpRequest`s, over the demo sandbox (loopback HTTPS) and Azurite as
the app's storage, a records run never stands for a sync in `GET /api/health` (a timer that
stopped is still reported), and a burst of them never pushes the sync runs off the report page's
last runs."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import azure.functions as func

import function_app
from tests.e2e.async_support import App, app, post
from tests.integration.conftest import gid
from work365_fn.composition import Services
from work365_fn.entrypoints.functions import health, records
from work365_fn.settings import Settings

__all__ = ["app"]  # the fixture

CONTOSO = "c0000001-0000-4000-8000-000000000001"  # demo: one active default contract


def sync_run() -> dict[str, Any]:
    resp = function_app.sync_http(post({}))
    assert resp.status_code == 200, resp.get_body()
    summary: dict[str, Any] = json.loads(resp.get_body())
    assert summary["status"] in ("succeeded", "partial")
    return summary


def records_run(app: App, n: int, built: Services | None = None) -> dict[str, Any]:
    """A new subscription's record (Work 365's provider sync), then POST /api/records: a
    records run that writes (its record assigned)."""
    record = app.box.order(CONTOSO, {"id": gid("sub", 900 + n), "offerId": "CFQ7TTC0LFLX"})
    request = post({"recordIds": [record]}, route="records")
    resp = (
        records.records_http(request, lambda: built)
        if built is not None
        else function_app.records_http(request)
    )
    assert resp.status_code == 200, resp.get_body()
    summary: dict[str, Any] = json.loads(resp.get_body())
    assert (summary["mode"], summary["counts"]["assigned"]) == ("records", 1), summary
    return summary


def health_get() -> func.HttpRequest:
    return func.HttpRequest(
        method="GET", url="http://localhost:7071/api/health", params={"code": "k"}, body=b""
    )


def test_a_records_run_nine_days_after_the_last_sync_leaves_health_503(app: App) -> None:
    sync = sync_run()
    later = datetime.fromisoformat(sync["finishedAt"].replace("Z", "+00:00")) + timedelta(days=9)
    built = Services.build(Settings.from_env())
    built.clock = lambda: later  # the timer has not run for 9 days; an event comes in now
    event = records_run(app, 1, built)

    resp = health.health_http(health_get(), lambda: built)

    answer = json.loads(resp.get_body())
    assert resp.status_code == 503
    assert [r["code"] for r in answer["reasons"]] == ["last-success-too-old"]
    assert "216.0 h ago" in answer["reasons"][0]["message"]  # 9 days: the sync's age
    assert answer["lastRun"]["runId"] == sync["runId"] != event["runId"]
    assert answer["lastRun"]["mode"] == "full"


def test_twenty_records_runs_do_not_push_the_syncs_off_the_pages_last_runs(app: App) -> None:
    sync = sync_run()
    events = [records_run(app, n)["runId"] for n in range(21)]

    resp = function_app.report_http(
        func.HttpRequest(
            method="GET",
            url="http://localhost:7071/api/report",
            params={"format": "html"},
            body=b"",
        )
    )

    assert resp.status_code == 200, resp.get_body()
    html = resp.get_body().decode("utf-8")
    last_runs = html.split('id="runs-h"', 1)[1].split("</section>", 1)[0]
    assert f"<code>{sync['runId']}</code>" in last_runs
    assert not any(run_id in last_runs for run_id in events)
    history = function_app.services().recent_runs()
    assert history is not None and [r["runId"] for r in history] == [sync["runId"]]
