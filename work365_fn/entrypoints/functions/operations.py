"""The operations endpoints' handlers (function_app.py registers them): diagnose, report and
backfill. JSON in and out, camelCase fields, the run id in `x-ms-correlation-id`, input checked
before anything runs. Long work answers 202 and runs off the request (`"async": true`)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any

import azure.functions as func

from work365_fn.entrypoints import http_input as validation
from work365_fn.entrypoints.functions.pages import page_response
from work365_fn.entrypoints.functions.responses import (
    ServicesFactory,
    error_response,
    json_response,
)
from work365_fn.entrypoints.functions.runs import start_async
from work365_fn.entrypoints.http_input import BadRequest
from work365_fn.errors import ConfigError, Work365Error
from work365_fn.operations.backfill import BackfillRequest, JournalNotFoundError, run_backfill
from work365_fn.operations.diagnose import DiagnoseRequest, run_diagnose
from work365_fn.operations.report import run_report
from work365_fn.operations.report_page import PageData

log = logging.getLogger(__name__)


def _invalid(exc: BadRequest, run_id: str) -> func.HttpResponse:
    return error_response(exc.status, "invalid-request", str(exc), run_id, field=exc.field)


def _answer(run_id: str, result: dict[str, Any], what: str) -> func.HttpResponse:
    """200 with the result, or 502 (with the result) when the upstream services failed."""
    headers = {"x-ms-correlation-id": run_id}
    if result.get("status") == "failed":
        first = (result.get("errors") or [{}])[0]
        return json_response(
            502,
            {
                "error": "upstream",
                "message": f"{what}: {first.get('service', 'upstream')} failed: "
                f"{first.get('message', '')}",
                "runId": run_id,
                "result": result,
            },
            headers,
        )
    return json_response(200, result, headers)


def diagnose_http(req: func.HttpRequest, services: ServicesFactory) -> func.HttpResponse:
    """GET /api/diagnose?customerId=...|subscriptionId=... (both: the subscription, searched
    under that customer only)."""
    run_id = str(uuid.uuid4())
    try:
        params = validation.query(req, ("customerId", "subscriptionId"))
        customer = validation.optional_guid(params, "customerId")
        subscription = validation.optional_guid(params, "subscriptionId")
        if customer is None and subscription is None:
            raise BadRequest("customerId", "give 'customerId' or 'subscriptionId' (a GUID)")
    except BadRequest as exc:
        return _invalid(exc, run_id)
    try:
        built = services()
        result = run_diagnose(
            built.diagnose_deps(),
            DiagnoseRequest(customer, subscription),
            run_id,
            budget_seconds=built.settings.http_budget_seconds,
        )
    except ConfigError as exc:
        log.error("[run %s] configuration error: %s", run_id, exc)
        return error_response(500, "configuration", str(exc), run_id)
    return _answer(run_id, result, "diagnose")


REPORT_FORMATS = ("json", "html")


def report_http(req: func.HttpRequest, services: ServicesFactory) -> func.HttpResponse:
    """GET /api/report[?async=true][?format=json|html] (html: the report page, at once)."""
    run_id = str(uuid.uuid4())
    try:
        params = validation.query(req, ("async", "format"))
        run_async = validation.query_boolean(params, "async")
        page = _report_format(params) == "html"
        if page and run_async:
            raise BadRequest("format", "'format=html' is answered at once: leave out 'async'")
    except BadRequest as exc:
        return _invalid(exc, run_id)
    try:
        built = services()
        if run_async:
            return start_async("report", {}, built, run_id=run_id, request=req)
        result = run_report(
            built.reader_deps(), run_id, budget_seconds=built.settings.http_budget_seconds
        )
        runs = built.recent_runs() if page else None
    except ConfigError as exc:
        log.error("[run %s] configuration error: %s", run_id, exc)
        return error_response(500, "configuration", str(exc), run_id)
    if page:
        return page_response(PageData(result, runs), run_id)
    return _answer(run_id, result, "report")


def _report_format(params: dict[str, str]) -> str:
    value = (params.get("format") or "json").lower()
    if value not in REPORT_FORMATS:
        raise BadRequest("format", "'format' must be json or html")
    return value


def backfill_http(req: func.HttpRequest, services: ServicesFactory) -> func.HttpResponse:
    """POST /api/backfill {"apply": false, "customerIds": [...], "undo": "<run id>", "async":
    false}: a dry run unless `apply` is true."""
    run_id = str(uuid.uuid4())
    try:
        body = validation.json_body(req, (*BackfillRequest.FIELDS, "async"))
        run_async = validation.boolean(body, "async")
        body.pop("async", None)
        request = BackfillRequest.from_payload(body)
    except BadRequest as exc:
        return _invalid(exc, run_id)
    try:
        built = services()
        if run_async:
            return start_async("backfill", request.payload(), built, run_id=run_id, request=req)
        request = replace(request, budget_seconds=built.settings.http_budget_seconds)
        result = run_backfill(built.backfill_deps(), request, run_id)
    except JournalNotFoundError as exc:
        return error_response(404, "not-found", str(exc), run_id)
    except ConfigError as exc:
        log.error("[run %s] configuration error: %s", run_id, exc)
        return error_response(500, "configuration", str(exc), run_id)
    except Work365Error as exc:  # storage failures of the journal
        log.error("[run %s] backfill failed: %s", run_id, exc)
        return error_response(502, "upstream", str(exc), run_id)
    return _answer(run_id, result, "backfill")
