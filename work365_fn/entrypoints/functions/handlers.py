"""What the Functions triggers do, apart from the registration (function_app.py stays thin)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from work365_fn.adapters.notify import notify_run
from work365_fn.adapters.storage import LeaseTakenError
from work365_fn.composition import Services
from work365_fn.entrypoints.http_input import BadRequest, guid_list, json_body
from work365_fn.errors import ConfigError, Work365Error
from work365_fn.operations.fanout import FanoutRun, start_timer_run
from work365_fn.operations.incremental import MODES
from work365_fn.operations.sync import SyncRequest
from work365_fn.rules.summary import RunSummary

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class SyncHttpRequest:
    dry_run: bool
    customer_ids: tuple[str, ...]
    mode: str = "full"
    run_async: bool = False  # "async": true -> 202 and a status URL to poll (runs.py)

    def payload(self) -> dict[str, Any]:
        """The job input of an asynchronous run (jobs.sync_job reads it back)."""
        return {"dryRun": self.dry_run, "customerIds": list(self.customer_ids), "mode": self.mode}

    @classmethod
    def parse(cls, req: func.HttpRequest) -> SyncHttpRequest:
        body = json_body(req, ("dryRun", "customerIds", "mode", "async"))
        run_async = body.get("async", False)
        if not isinstance(run_async, bool):
            raise BadRequest("async", "'async' must be true or false")
        dry_run = body.get("dryRun", False)
        if not isinstance(dry_run, bool):
            raise BadRequest("dryRun", "'dryRun' must be true or false")
        ids = guid_list(body, "customerIds")
        mode = body.get("mode", "full")
        if mode not in MODES:
            raise BadRequest("mode", f"'mode' must be one of {', '.join(MODES)}")
        if ids and mode != "full":
            raise BadRequest("mode", "'mode' must be full (or absent) when customerIds is given")
        return cls(dry_run, ids, mode, run_async)


def sync_http(req: func.HttpRequest, services: ServicesFactory) -> func.HttpResponse:
    run_id = str(uuid.uuid4())
    try:
        parsed = SyncHttpRequest.parse(req)
    except BadRequest as exc:
        return error_response(exc.status, "invalid-request", str(exc), run_id, field=exc.field)
    if parsed.run_async:
        from work365_fn.entrypoints.functions.runs import start_sync_async

        try:
            built = services()
        except ConfigError as exc:
            log.error("[run %s] configuration error: %s", run_id, exc)
            return error_response(500, "configuration", str(exc), run_id)
        return start_sync_async(parsed.payload(), built, req, run_id)
    try:
        built = services()
        summary = built.sync(
            SyncRequest(
                dry_run=parsed.dry_run,
                customer_ids=parsed.customer_ids,
                budget_seconds=built.settings.http_budget_seconds,
                mode=parsed.mode,
            ),
            run_id=run_id,
        )
    except LeaseTakenError as exc:
        from work365_fn.entrypoints.functions.runs import conflict_response

        log.warning("[run %s] not started: sync already running (run %s)", run_id, exc.holder)
        return conflict_response(run_id, exc.holder)
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
        built = services()
        # many customers and app storage: queue customer batches instead (fanout.py)
        outcome = start_timer_run(built)
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
    log_summary(summary)
    notify_run(summary, built.settings, sleep=built.sleep)  # never raises


def log_summary(summary: RunSummary) -> None:
    """One structured record with the counts (not the per-subscription list: 32 KB limit)."""
    log_summary_json(summary.log_line())


def log_summary_json(line: dict[str, Any]) -> None:
    """`log_summary` of a summary in its JSON form, without `subscriptions` (a fanned-out
    run's aggregate, fanout.py)."""
    run_id = line.get("runId")
    level = logging.INFO if line.get("status") == "succeeded" else logging.WARNING
    log.log(
        level,
        "[run %s] summary %s",
        run_id,
        json.dumps(line, separators=(",", ":")),
        extra={"run_id": run_id, "summary": line},
    )
