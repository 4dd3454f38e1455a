"""The sync triggers' handlers (HTTP and timer); function_app.py only registers them."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any

import azure.functions as func

from work365_fn.adapters.notify import notify_run
from work365_fn.adapters.storage import LeaseTakenError
from work365_fn.entrypoints.functions.responses import (
    ServicesFactory,
    error_response,
    summary_response,
)
from work365_fn.entrypoints.functions.runs import conflict_response, start_sync_async
from work365_fn.entrypoints.http_input import BadRequest, json_body
from work365_fn.errors import ConfigError, Work365Error
from work365_fn.logs import log_summary
from work365_fn.operations.fanout import FanoutRun, start_timer_run
from work365_fn.operations.sync import SyncRequest

log = logging.getLogger(__name__)


def parse_sync_request(req: func.HttpRequest) -> tuple[SyncRequest, bool]:
    """`POST /api/sync`: the sync input (checked by `SyncRequest.from_payload`, the same rules
    as a queued job's) and `async` (202 and a status URL to poll, runs.py)."""
    body = json_body(req, (*SyncRequest.FIELDS, "async"))
    run_async = body.pop("async", False)
    if not isinstance(run_async, bool):
        raise BadRequest("async", "'async' must be true or false")
    return SyncRequest.from_payload(body), run_async


def sync_http(req: func.HttpRequest, services: ServicesFactory) -> func.HttpResponse:
    run_id = str(uuid.uuid4())
    try:
        parsed, run_async = parse_sync_request(req)
    except BadRequest as exc:
        return error_response(exc.status, "invalid-request", str(exc), run_id, field=exc.field)
    if run_async:
        try:
            built = services()
        except ConfigError as exc:
            log.error("[run %s] configuration error: %s", run_id, exc)
            return error_response(500, "configuration", str(exc), run_id)
        return start_sync_async(parsed.payload(), built, req, run_id)
    try:
        built = services()
        request = replace(parsed, budget_seconds=built.settings.http_budget_seconds)
        summary = built.sync(request, run_id=run_id)
    except LeaseTakenError as exc:
        log.warning("[run %s] not started: sync already running (run %s)", run_id, exc.holder)
        return conflict_response(run_id, exc.holder)
    except ConfigError as exc:
        log.error("[run %s] configuration error: %s", run_id, exc)
        return error_response(500, "configuration", str(exc), run_id)
    except Work365Error as exc:  # pragma: no cover - run_sync turns upstream errors into a summary
        log.error("[run %s] failed: %s", run_id, exc)
        return error_response(502, "upstream", str(exc), run_id)
    log_summary(summary, log)
    headers = {"x-ms-correlation-id": run_id}
    return summary_response(summary, headers)


def sync_timer(timer: Any, services: ServicesFactory) -> None:
    if getattr(timer, "past_due", False):
        log.warning("the timer is past due: running now")
    try:
        built = services()
        # many customers and app storage: queue customer batches instead (fanout.py)
        outcome = start_timer_run(built.fanout_deps())
        if isinstance(outcome, FanoutRun):
            return  # the batches' queue function aggregates, logs and notifies
        # incremental unless a full is due; stops taking customers a margin before the host's
        # functionTimeout (WORK365_RUN_DEADLINE_SECONDS)
        summary = outcome or built.sync(
            SyncRequest(mode="auto", budget_seconds=built.settings.run_deadline_seconds)
        )
    except LeaseTakenError as exc:
        log.warning("sync skipped: sync already running (run %s)", exc.holder)
        return
    except ConfigError as exc:
        log.error("sync not run: configuration error: %s", exc)
        raise
    log_summary(summary, log)
    link = built.report_page_link(summary.run_id)  # the card's "Open the report", signed
    notify_run(summary, built.settings, sleep=built.sleep, report_url=link)  # never raises
