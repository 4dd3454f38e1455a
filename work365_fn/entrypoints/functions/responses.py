"""JSON answers of the HTTP handlers: camelCase bodies, the run id in `x-ms-correlation-id`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from work365_fn.composition import Services
from work365_fn.rules.summary import RunSummary

ServicesFactory = Callable[[], Services]


def json_response(
    status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        body=json.dumps(payload, indent=None),
        status_code=status,
        mimetype="application/json",
        charset="utf-8",
        headers=headers,
    )


def error_response(
    status: int, error: str, message: str, run_id: str | None = None, **extra: Any
) -> func.HttpResponse:
    body: dict[str, Any] = {"error": error, "message": message}
    if run_id:
        body["runId"] = run_id
    body.update(extra)
    headers = {"x-ms-correlation-id": run_id} if run_id else None
    return json_response(status, body, headers)


MISCONFIGURED = "the service is misconfigured; see its logs"


def misconfigured_response(exc: Exception, run_id: str, log: logging.Logger) -> func.HttpResponse:
    """500 for a caller without the function key (a signed link): the setting to fix is named in
    the log line, never to the caller (a configuration error is answered before, or without,
    proof that the caller may see anything of the app)."""
    log.error("[run %s] configuration error: %s", run_id, exc)
    return error_response(500, "configuration", f"{MISCONFIGURED} (run {run_id})", run_id)


def summary_response(summary: RunSummary, headers: dict[str, str]) -> func.HttpResponse:
    """A run's answer: the summary (200), or 502 naming the service when the run failed."""
    if summary.status == "failed":
        first = summary.errors[0] if summary.errors else {}
        return json_response(
            502,
            {
                "error": "upstream",
                "message": f"{first.get('service', 'upstream')} failed: {first.get('message', '')}",
                "runId": summary.run_id,
                "summary": summary.to_json(),
            },
            headers,
        )
    return json_response(200, summary.to_json(), headers)
