"""What the Functions triggers do, apart from the registration (function_app.py stays thin)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from .errors import ConfigError, Work365Error
from .model import is_guid
from .services import Services
from .summary import RunSummary
from .sync import SyncRequest

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_CUSTOMER_IDS = 1000

ServicesFactory = Callable[[], Services]


class BadRequest(Exception):
    def __init__(self, field: str, message: str, status: int = 400) -> None:
        self.field = field
        self.status = status
        super().__init__(message)


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


@dataclass(frozen=True)
class SyncHttpRequest:
    dry_run: bool
    customer_ids: tuple[str, ...]

    @classmethod
    def parse(cls, req: func.HttpRequest) -> SyncHttpRequest:
        raw = req.get_body() or b""
        if len(raw) > MAX_BODY_BYTES:
            raise BadRequest("body", f"the body is over {MAX_BODY_BYTES} bytes", status=413)
        if not raw.strip():
            return cls(False, ())
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadRequest("body", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("body", "the body must be a JSON object")
        unknown = sorted(set(body) - {"dryRun", "customerIds"})
        if unknown:
            raise BadRequest(
                unknown[0], f"unknown field '{unknown[0]}' (known: dryRun, customerIds)"
            )
        dry_run = body.get("dryRun", False)
        if not isinstance(dry_run, bool):
            raise BadRequest("dryRun", "'dryRun' must be true or false")
        ids = body.get("customerIds", [])
        if ids is None:
            ids = []
        if not isinstance(ids, list):
            raise BadRequest("customerIds", "'customerIds' must be a list of GUIDs")
        if len(ids) > MAX_CUSTOMER_IDS:
            raise BadRequest("customerIds", f"'customerIds' takes at most {MAX_CUSTOMER_IDS} ids")
        out: dict[str, None] = {}
        for i, value in enumerate(ids):
            if not isinstance(value, str) or not is_guid(value):
                raise BadRequest(f"customerIds[{i}]", f"'customerIds[{i}]' is not a GUID")
            out[value.lower()] = None
        return cls(dry_run, tuple(out))


def sync_http(req: func.HttpRequest, services: ServicesFactory) -> func.HttpResponse:
    run_id = str(uuid.uuid4())
    try:
        parsed = SyncHttpRequest.parse(req)
    except BadRequest as exc:
        return error_response(exc.status, "invalid-request", str(exc), run_id, field=exc.field)
    try:
        built = services()
        summary = built.sync(
            SyncRequest(
                dry_run=parsed.dry_run,
                customer_ids=parsed.customer_ids,
                budget_seconds=built.settings.http_budget_seconds,
            ),
            run_id=run_id,
        )
    except ConfigError as exc:
        log.error("[run %s] configuration error: %s", run_id, exc)
        return error_response(500, "configuration", str(exc), run_id)
    except Work365Error as exc:  # pragma: no cover - run_sync turns upstream errors into a summary
        log.error("[run %s] failed: %s", run_id, exc)
        return error_response(502, "upstream", str(exc), run_id)
    log_summary(summary)
    headers = {"x-ms-correlation-id": run_id}
    if summary.status == "failed":
        first = summary.errors[0] if summary.errors else {}
        return json_response(
            502,
            {
                "error": "upstream",
                "message": f"{first.get('service', 'upstream')} failed: {first.get('message', '')}",
                "runId": run_id,
                "summary": summary.to_json(),
            },
            headers,
        )
    return json_response(200, summary.to_json(), headers)


def sync_timer(timer: Any, services: ServicesFactory) -> None:
    if getattr(timer, "past_due", False):
        log.warning("the timer is past due: running now")
    try:
        summary = services().sync(SyncRequest())
    except ConfigError as exc:
        log.error("sync not run: configuration error: %s", exc)
        raise
    log_summary(summary)


def log_summary(summary: RunSummary) -> None:
    """One structured record with the counts (not the per-subscription list: 32 KB limit)."""
    line = summary.log_line()
    level = logging.INFO if summary.status == "succeeded" else logging.WARNING
    log.log(
        level,
        "[run %s] summary %s",
        summary.run_id,
        json.dumps(line, separators=(",", ":")),
        extra={"run_id": summary.run_id, "summary": line},
    )
