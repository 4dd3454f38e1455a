"""`POST /api/records[/{recordId}]`: some records decided alone, for Power Automate, and the
endpoint of the Dataverse webhook (docs/events.md). function_app.py only registers it.

One handler, two bodies told apart by their shape: `{"recordIds": [...], "dryRun": false}` (or
the route's one id), and Dataverse's `RemoteExecutionContext` (it carries `MessageName` and
`PrimaryEntityName`). Dataverse authenticates with WebhookKey: it sends `?code=<key>`, which is
exactly a Functions key, so the host checks it before this code runs.
https://learn.microsoft.com/power-apps/developer/data-platform/register-web-hook#authentication-options

Of the webhook's body only the table, the message and the row id are used: the record is read
again (the payload may be stale by the time an asynchronous step runs). Dataverse waits 60 s for
the answer and tries a step again after a 502, 503 or 504 only; any other non-2xx fails the
system job for good. So: a call for another table or message is a 200 that does nothing (and a
log line), or a mis-registered step would fail forever; a throttled or unavailable upstream is a
503 with Retry-After; what is still missed, the timer run decides.
https://learn.microsoft.com/power-apps/developer/data-platform/use-webhooks#troubleshoot-webhook-registrations
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import azure.functions as func

from work365_fn.composition import Services
from work365_fn.entrypoints.functions.responses import (
    ServicesFactory,
    error_response,
    json_response,
    summary_response,
)
from work365_fn.entrypoints.http_input import MAX_BODY_BYTES, BadRequest, json_object
from work365_fn.errors import ConfigError
from work365_fn.logs import log_summary
from work365_fn.operations.records import MODE, RecordsOutcome, RecordsRequest
from work365_fn.rules.model import is_guid
from work365_fn.rules.summary import RunSummary

log = logging.getLogger(__name__)

# Dataverse trims its payload at 256 KB (x-ms-dynamics-msg-size-exceeded); a webhook body may
# be that long, the `recordIds` body stays under the other endpoints' 64 KiB.
MAX_EVENT_BYTES = 512 * 1024
EVENT_KEYS = ("MessageName", "PrimaryEntityName")
# A message's or table's logical name (they go into log lines and the summary's warnings).
LOGICAL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
MESSAGES = ("Create", "Update")
RETRY_AFTER_SECONDS = 30  # a 503 without a Retry-After from upstream
# Dataverse waits 60 s for a webhook's answer: no record is read, and no write batch starts,
# after this long (the calls themselves give up sooner too: composition.EVENT_RETRY_SECONDS).
EVENT_BUDGET_SECONDS = 40.0


@dataclass(frozen=True)
class DataverseEvent:
    """What the webhook handler takes of a `RemoteExecutionContext`, and of its headers."""

    message: str  # MessageName: Create, Update, ...
    table: str  # PrimaryEntityName: the table's logical name
    record_id: str | None  # PrimaryEntityId, lower case (None when it is not a GUID)
    organization: str = ""  # x-ms-dynamics-organization
    request_id: str = ""  # x-request-id (or x-ms-correlation-request-id)

    def describe(self) -> str:
        org = f" from {self.organization}" if self.organization else ""
        ask = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.message} of {self.table} {self.record_id}{org}{ask}"


def is_event(body: Mapping[str, Any]) -> bool:
    return any(key in body for key in EVENT_KEYS)


def parse_event(body: Mapping[str, Any], headers: Mapping[str, str]) -> DataverseEvent:
    """The documented `RemoteExecutionContext` (MessageName, PrimaryEntityName,
    PrimaryEntityId; the headers x-ms-dynamics-*): BadRequest naming the field when one has
    the wrong type, or when a name is not a logical name (they are logged: a name with a line
    break in it would forge log lines). A `PrimaryEntityId` that is not a GUID gives
    `record_id` None. The headers are cut short and their control characters dropped."""
    fields: dict[str, str] = {}
    for key in ("MessageName", "PrimaryEntityName", "PrimaryEntityId"):
        value = body.get(key)
        if not isinstance(value, str) or not value:
            raise BadRequest(key, f"'{key}' must be a non-empty string (a Dataverse webhook body)")
        if key != "PrimaryEntityId" and not LOGICAL_NAME.fullmatch(value):
            raise BadRequest(
                key, f"'{key}' must be a logical name: a letter, then up to 63 letters, digits or _"
            )
        fields[key] = value
    lowered = {k.lower(): v for k, v in headers.items()}
    record = fields["PrimaryEntityId"]
    asked = lowered.get("x-request-id") or lowered.get("x-ms-correlation-request-id") or ""
    return DataverseEvent(
        message=fields["MessageName"],
        table=fields["PrimaryEntityName"].lower(),
        record_id=record.lower() if is_guid(record) else None,
        organization=loggable(lowered.get("x-ms-dynamics-organization", ""), 200),
        request_id=loggable(asked, 100),
    )


def loggable(value: object, limit: int) -> str:
    """A header value fit for a log line: no control (or other unprintable) character, at most
    `limit` characters."""
    return "".join(c for c in str(value)[: limit * 2] if c.isprintable())[:limit]


def _payload(req: func.HttpRequest) -> tuple[dict[str, Any], int]:
    """The body as an object. Only a webhook's may be over MAX_BODY_BYTES: a longer body that
    does not even name a webhook's keys is a 413 before it is parsed. The keys are looked for
    in the whole body (a byte search, far cheaper than parsing): Dataverse writes
    `InputParameters`, the whole Target row, before `MessageName`."""
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES and not any(f'"{k}"'.encode() in raw for k in EVENT_KEYS):
        raise BadRequest("body", f"the body is over {MAX_BODY_BYTES} bytes", status=413)
    return json_object(req, MAX_EVENT_BYTES), len(raw)


def records_http(req: func.HttpRequest, services: ServicesFactory) -> func.HttpResponse:
    run_id = str(uuid.uuid4())
    record_id = (req.route_params or {}).get("recordId")
    try:
        body, size = _payload(req)
        event = parse_event(body, dict(req.headers)) if is_event(body) else None
        if event is not None and record_id is not None:
            raise BadRequest("recordId", "the Dataverse webhook posts to /api/records, no id")
        if event is not None and "recordIds" in body:
            raise BadRequest(
                "recordIds",
                "the body has both 'recordIds' and a Dataverse webhook's 'MessageName' or "
                "'PrimaryEntityName': send one or the other",
            )
        if event is None and size > MAX_BODY_BYTES:
            raise BadRequest("body", f"the body is over {MAX_BODY_BYTES} bytes", status=413)
        request = None if event is not None else RecordsRequest.from_payload(body, record_id)
    except BadRequest as exc:
        return error_response(exc.status, "invalid-request", str(exc), run_id, field=exc.field)
    try:
        built = services()
        if event is not None:
            return _event(built, event, run_id)
        assert request is not None
        request = replace(request, budget_seconds=built.settings.http_budget_seconds)
        outcome = built.records(request, run_id=run_id)
    except ConfigError as exc:
        log.error("[run %s] configuration error: %s", run_id, exc)
        return error_response(500, "configuration", str(exc), run_id)
    return _answer(outcome, webhook=False)


def _event(built: Services, event: DataverseEvent, run_id: str) -> func.HttpResponse:
    """A webhook call: the record decided and written, or nothing done for another table or
    message (200 either way), or 503 when an upstream asks to be tried again later."""
    table = built.schema.subscription.table
    why = ""
    if event.table != table.lower():
        why = f"table {event.table} is not {table}"
    elif event.message not in MESSAGES:
        why = f"message {event.message} is not one of {', '.join(MESSAGES)}"
    elif event.record_id is None:
        why = "PrimaryEntityId is not a GUID"
    if why or event.record_id is None:
        log.warning("[run %s] webhook call ignored: %s (%s)", run_id, event.describe(), why)
        return _ignored(built, run_id, f"webhook call ignored: {why}")
    log.info("[run %s] webhook: %s", run_id, event.describe())
    request = RecordsRequest((event.record_id,), budget_seconds=EVENT_BUDGET_SECONDS)
    return _answer(built.records(request, run_id=run_id), webhook=True)


def _ignored(built: Services, run_id: str, why: str) -> func.HttpResponse:
    now = built.clock()
    summary = RunSummary(run_id=run_id, started_at=now, finished_at=now, mode=MODE)
    summary.warnings.append(why)
    return json_response(200, summary.to_json(), {"x-ms-correlation-id": run_id})


def _answer(outcome: RecordsOutcome, *, webhook: bool) -> func.HttpResponse:
    summary = outcome.summary
    log_summary(summary, log)
    run_id = summary.run_id
    headers = {"x-ms-correlation-id": run_id}
    if webhook and outcome.needs_retry:
        wait = outcome.retry_after if outcome.retry_after is not None else RETRY_AFTER_SECONDS
        first = summary.errors[0] if summary.errors else {}
        return json_response(
            503,
            {
                "error": "upstream",
                "message": f"{first.get('service', 'upstream')} failed: "
                f"{first.get('message', '')}; Dataverse tries the step again, and the timer run "
                "decides the record if it is still missed",
                "runId": run_id,
                "summary": summary.to_json(),
            },
            {**headers, "Retry-After": str(max(1, math.ceil(wait)))},
        )
    return summary_response(summary, headers)
