"""`GET /api/health[?deep=true]` (function key): 200 when the sync is healthy, 503 with
`reasons` when it is not (operations/health.py says what is read, rules/health.py what is
decided). App settings that cannot be read are a reason too (the setting named, never its
value), so a probe sees 503, never a 500 it cannot tell from a broken endpoint."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import azure.functions as func

from work365_fn.entrypoints import http_input as validation
from work365_fn.entrypoints.functions.responses import (
    ServicesFactory,
    error_response,
    json_response,
)
from work365_fn.entrypoints.http_input import BadRequest
from work365_fn.errors import ConfigError
from work365_fn.operations.health import check_health, settings_invalid

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def health_http(
    req: func.HttpRequest,
    services: ServicesFactory,
    clock: Callable[[], datetime] = _utc_now,
) -> func.HttpResponse:
    """`clock` is only read when the settings cannot be (the services carry their own)."""
    check_id = str(uuid.uuid4())
    try:
        params = validation.query(req, ("deep",))
        deep = validation.query_boolean(params, "deep")
    except BadRequest as exc:
        return error_response(exc.status, "invalid-request", str(exc), check_id, field=exc.field)
    try:
        answer = check_health(services().health_deps(), deep=deep)
    except ConfigError as exc:  # the settings (or a file they name) cannot be read
        log.error("health: unhealthy (settings-invalid): %s", exc)
        answer = settings_invalid(str(exc), clock())
    status = 200 if answer["status"] == "healthy" else 503
    return json_response(status, answer, {"x-ms-correlation-id": check_id})
