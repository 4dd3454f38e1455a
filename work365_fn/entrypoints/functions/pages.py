"""The report page over HTTP: `GET /api/report?format=html` (function key, operations.py) and
`GET /api/runs/{runId}/report?sig=...`, the signed link of a run's Teams card ("Open the
report"): anonymous, authorized by `sig` (the service's one signer, resource
`report-page/<runId>`: a status link's signature does not open it, nor this one a status URL),
good for WORK365_RUN_LINK_HOURS. A wrong, altered or expired link is a 403 that shows nothing
of the report. The page is read when it is opened (the tenant as it is now, the last runs),
and its report kept a few minutes (operations/page_cache.py): a link opened by a whole channel
reads the tenant once per KEEP_MINUTES, not once per click, and opens at the same moment wait
for one read (503 "being prepared" when it takes longer than a few seconds). This route is
anonymous: a failed read and a configuration error show no detail, only the run whose log
lines have it.
"""

from __future__ import annotations

import logging
import uuid
from html import escape

import azure.functions as func

from work365_fn.entrypoints import http_input as validation
from work365_fn.entrypoints.functions.responses import (
    ServicesFactory,
    error_response,
    misconfigured_response,
)
from work365_fn.entrypoints.http_input import BadRequest
from work365_fn.errors import ConfigError
from work365_fn.operations.page_cache import anonymous_view
from work365_fn.operations.report import run_report
from work365_fn.operations.report_page import (
    TITLE,
    PageData,
    content_security_policy,
    new_nonce,
    render_page,
)
from work365_fn.rules.model import is_guid
from work365_fn.signing import LinkCheck, Verdict, report_page_resource

log = logging.getLogger(__name__)

_PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PREPARING_RETRY_SECONDS = 5


def page_response(data: PageData, run_id: str) -> func.HttpResponse:
    """The report page: HTML under a strict Content-Security-Policy (a fresh nonce each time);
    502 when the read failed (the page then says why)."""
    nonce = new_nonce()
    status = 502 if data.report.get("status") == "failed" else 200
    return func.HttpResponse(
        body=render_page(data, nonce),
        status_code=status,
        mimetype="text/html",
        charset="utf-8",
        headers={
            **_PAGE_HEADERS,
            "Content-Security-Policy": content_security_policy(nonce),
            "x-ms-correlation-id": run_id,
        },
    )


def report_page_http(req: func.HttpRequest, services: ServicesFactory) -> func.HttpResponse:
    """GET /api/runs/{runId}/report?sig=...: the report page a run's notification links to."""
    request_id = str(uuid.uuid4())
    raw = (req.route_params or {}).get("runId", "")
    try:
        if not is_guid(raw):
            raise BadRequest("runId", "'runId' must be a GUID")
        params = validation.query(req, ("sig",))
    except BadRequest as exc:
        return error_response(400, "invalid-request", str(exc), request_id, field=exc.field)
    run_id = raw.lower()
    try:
        built = services()
        verdict = built.link_signer().check(report_page_resource(run_id), params.get("sig"))
        if not verdict.valid:
            return _forbidden(run_id, verdict, request_id)
        report = built.page_cache().report(
            run_id,
            lambda: run_report(
                built.reader_deps(), request_id, budget_seconds=built.settings.http_budget_seconds
            ),
        )
        runs = built.recent_runs() if report is not None else None
    except ConfigError as exc:  # anonymous: the setting is named in the log, not to the caller
        return misconfigured_response(exc, request_id, log)
    if report is None:
        return being_prepared(request_id)
    return page_response(PageData(anonymous_view(report), runs, run_id), request_id)


def being_prepared(request_id: str) -> func.HttpResponse:
    """503 with Retry-After: another open of the link is reading the tenant right now."""
    return func.HttpResponse(
        body=(
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(TITLE)}</title></head><body><main><h1>{escape(TITLE)}</h1>"
            "<p>The report is being prepared: refresh the page in a moment.</p>"
            f"<p>Request <code>{escape(request_id)}</code>.</p></main></body></html>\n"
        ),
        status_code=503,
        mimetype="text/html",
        charset="utf-8",
        headers={
            **_PAGE_HEADERS,
            "Content-Security-Policy": content_security_policy(new_nonce()),
            "Retry-After": str(PREPARING_RETRY_SECONDS),
            "x-ms-correlation-id": request_id,
        },
    )


def _forbidden(run_id: str, verdict: Verdict, request_id: str) -> func.HttpResponse:
    """403 and nothing of the report: the link is wrong, or it was right and has expired."""
    if verdict.check is LinkCheck.EXPIRED:
        when = f" at {verdict.expires:%Y-%m-%dT%H:%M:%SZ}" if verdict.expires else ""
        message = (
            f"this report link expired{when} (links last WORK365_RUN_LINK_HOURS hours): open "
            "the report with the function key (GET /api/report?format=html), or the link of "
            "a newer notification"
        )
    else:
        message = "missing or invalid 'sig': use the link of the run's notification as given"
    log.warning("[run %s] report page refused: %s link", run_id, verdict.check.value)
    return error_response(403, "forbidden", message, request_id)
