"""Asynchronous runs over HTTP, for Power Automate's polling pattern.

`start_async` records the run (state `queued`), enqueues its job message and answers `202
Accepted` with `Location` (the status URL) and `Retry-After`. The status URL
`/api/runs/{runId}?sig=...` does not carry the function key: it is authorized by `sig`, signed by
the service's link signer (work365_fn/signing.py: key id, expiry, HMAC-SHA256 of the resource
`runs/<runId>`), so only whoever started the run can read it, for WORK365_RUN_LINK_HOURS.
`GET /api/runs/{runId}` answers 202 while the run is queued or running (with a freshly signed
link) and 200 with the result when it is done; 403 when `sig` is wrong or expired.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import azure.functions as func

from work365_fn.entrypoints import http_input
from work365_fn.entrypoints.functions.responses import (
    ServicesFactory,
    error_response,
    json_response,
    misconfigured_response,
)
from work365_fn.errors import ApiError, ConfigError, Work365Error
from work365_fn.operations.fanout import BATCH_PREFIX, live_fanout
from work365_fn.operations.inputs import BadRequest
from work365_fn.operations.jobs import fail_poisoned, run_job
from work365_fn.operations.run_documents import DONE, JobMessage, RunStates
from work365_fn.operations.undo import SYNC_LIMIT as UNDO_SYNC_LIMIT
from work365_fn.operations.undo import (
    JournalNotFoundError,
    UndoRefusedError,
    UndoRequest,
    entries_to_undo,
    run_undo,
)
from work365_fn.rules.model import is_guid
from work365_fn.signing import LinkCheck, LinkSigner, Verdict

if TYPE_CHECKING:
    from work365_fn.composition import Services

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
RUNS_PATH = "/api/runs/"


def run_resource(run_id: str) -> str:
    """What a status link signs: `runs/<run id in lower case>` (GUIDs ignore case)."""
    return f"runs/{run_id.lower()}"


def status_url(run_id: str, signer: LinkSigner, request: func.HttpRequest | None = None) -> str:
    """Absolute when the request's URL is known (Power Automate follows it as given)."""
    sig = signer.sign(run_resource(run_id))
    path = f"{RUNS_PATH}{run_id}?sig={quote(sig, safe='')}"
    if request is None:
        return path
    parts = urlsplit(request.url)
    return f"{parts.scheme}://{parts.netloc}{path}" if parts.scheme and parts.netloc else path


def _accepted(run_id: str, body: dict[str, Any], url: str, status: int = 202) -> func.HttpResponse:
    return json_response(
        status,
        body,
        {
            "Location": url,
            "Retry-After": str(RETRY_AFTER_SECONDS),
            "x-ms-correlation-id": run_id,
        },
    )


def start_async(
    kind: str,
    payload: dict[str, Any],
    services: Services,
    *,
    run_id: str | None = None,
    request: func.HttpRequest | None = None,
) -> func.HttpResponse:
    """Queue a job of `kind` with `payload` and answer 202 with the signed status URL.

    For any endpoint's `"async": true`: pass the validated input (without `async`) as the
    payload, and the request so that the status URL is absolute. The state is written and the
    message enqueued before answering; when enqueueing fails the state is removed again."""
    run_id = run_id or str(uuid.uuid4())
    try:
        signer = services.link_signer()
        store = services.run_store()
        queue = services.job_queue()
    except ConfigError as exc:
        log.error("[run %s] configuration error: %s", run_id, exc)
        return error_response(500, "configuration", str(exc), run_id)
    message = JobMessage(run_id, kind, payload)
    states = RunStates(store)
    try:
        states.queued(message)
    except ApiError as exc:
        log.error("[run %s] could not record the run: %s", run_id, exc)
        return error_response(502, "upstream", f"the app's storage failed: {exc}", run_id)
    try:
        queue.send(message.to_json())
    except ApiError as exc:
        log.error("[run %s] could not queue the run: %s", run_id, exc)
        try:
            store.delete(run_id, "state")
        except ApiError as cleanup:
            log.error("[run %s] could not remove the queued state either: %s", run_id, cleanup)
        return error_response(502, "upstream", f"the app's storage failed: {exc}", run_id)
    url = status_url(run_id, signer, request)
    log.info("[run %s] %s queued", run_id, kind, extra={"run_id": run_id})
    return _accepted(run_id, {"runId": run_id, "status": "queued", "statusUrl": url}, url)


def run_status_http(req: func.HttpRequest, services: ServicesFactory) -> func.HttpResponse:
    """GET /api/runs/{runId}?sig=...: 202 while queued/running, 200 with the result when done."""
    raw = (req.route_params or {}).get("runId", "")
    if not is_guid(raw):
        return error_response(
            400,
            "invalid-request",
            "'runId' must be a GUID",
            str(uuid.uuid4()),
            field="runId",
        )
    run_id = raw.lower()
    try:
        built = services()
        signer = built.link_signer()
    except ConfigError as exc:  # anonymous: the setting is named in the log, not to the caller
        return misconfigured_response(exc, run_id, log)
    verdict = signer.check(run_resource(run_id), req.params.get("sig"))
    if not verdict.valid:
        return _forbidden(run_id, verdict)
    states = RunStates(built.run_store())
    try:
        state = states.get(run_id)
        done = state is not None and state.get("status") in DONE
        result = states.store.get(run_id, "result") if done else None
        progress = _progress(states, state) if state is not None and not done else None
    except ApiError as exc:
        log.error("[run %s] could not read the run state: %s", run_id, exc)
        return error_response(502, "upstream", f"the app's storage failed: {exc}", run_id)
    if state is None:
        return error_response(404, "not-found", f"no run {run_id}", run_id)
    body: dict[str, Any] = {
        "runId": run_id,
        "kind": state.get("kind"),
        "status": state.get("status"),
    }
    if not done:
        url = status_url(run_id, signer, req)  # a fresh link: a polled run outlives the first
        if progress is not None:
            body["progress"] = progress
        return _accepted(run_id, {**body, "statusUrl": url}, url)
    body.update(
        startedAt=state.get("startedAt"),
        finishedAt=state.get("finishedAt"),
        result=result,
        error=state.get("error"),
    )
    return json_response(200, body, {"x-ms-correlation-id": run_id})


def _forbidden(run_id: str, verdict: Verdict) -> func.HttpResponse:
    """403: the link is wrong, or it was right and has expired (then say what to do)."""
    if verdict.check is LinkCheck.EXPIRED:
        when = f" at {verdict.expires:%Y-%m-%dT%H:%M:%SZ}" if verdict.expires else ""
        message = (
            f"this status link expired{when} (links last WORK365_RUN_LINK_HOURS hours): "
            "start a new run with the function key to get a new link; this run's documents "
            f"stay in the app's storage under runs/{run_id}/"
        )
    else:
        message = "missing or invalid 'sig': use the statusUrl (Location) the run was started with"
    return error_response(403, "forbidden", message, run_id)


def _progress(states: RunStates, state: dict[str, Any]) -> dict[str, int] | None:
    """A fanned-out run's batches: how many there are and how many are done."""
    fanout = state.get("fanout")
    if not isinstance(fanout, dict):
        return None
    done = len(states.store.names(str(state["runId"]), BATCH_PREFIX))
    return {"batches": int(fanout.get("batches") or 0), "done": done}


def start_sync_async(
    payload: dict[str, Any], services: Services, req: func.HttpRequest, run_id: str
) -> func.HttpResponse:
    """`POST /api/sync {"async": true}`. A whole-tenant run is refused up front (409) while
    another holds the full-sync lease; the job takes the lease itself when it runs."""
    whole_tenant = not payload.get("customerIds") and not payload.get("dryRun")
    storage = services.app_storage()
    if whole_tenant and storage is not None:
        try:
            held, holder = storage.lease(run_id).holder()
            if not held:  # a fanned-out run's batches count as holding it
                holder = live_fanout(storage.run_store())
                held = holder is not None
        except ApiError as exc:
            log.error("[run %s] could not read the full-sync lease: %s", run_id, exc)
            return error_response(502, "upstream", f"the app's storage failed: {exc}", run_id)
        if held:
            return conflict_response(run_id, holder)
    return start_async("sync", payload, services, run_id=run_id, request=req)


def conflict_response(run_id: str, holder: str | None) -> func.HttpResponse:
    """409: a whole-tenant sync is running; `runId` is the running run's (null if unknown)."""
    return json_response(
        409,
        {"error": "conflict", "message": "sync already running", "runId": holder},
        {"x-ms-correlation-id": run_id},
    )


def undo_http(req: func.HttpRequest, services: ServicesFactory) -> func.HttpResponse:
    """POST /api/runs/{runId}/undo {"apply": false, "customerIds": [...], "async": false}: clear
    the lookups that run set (a dry run unless `apply`). A run of more than SYNC_LIMIT journal
    entries (or `async`) answers 202 and runs off the request (docs/undo.md)."""
    run_id = str(uuid.uuid4())
    raw = (req.route_params or {}).get("runId", "")
    try:
        if not is_guid(raw):
            raise BadRequest("runId", "'runId' must be a GUID")
        body = http_input.json_body(req, (*UndoRequest.FIELDS, "async"))
        run_async = http_input.boolean(body, "async")
        body.pop("async", None)
        request = UndoRequest.from_payload(raw, body)
    except BadRequest as exc:
        return error_response(exc.status, "invalid-request", str(exc), run_id, field=exc.field)
    try:
        built = services()
        deps = built.undo_deps()
        entries = entries_to_undo(deps.run_store, request.undo_of)  # 404 / 409 before queueing
        if run_async or entries > UNDO_SYNC_LIMIT:
            return start_async("undo", request.payload(), built, run_id=run_id, request=req)
        request = replace(request, budget_seconds=built.settings.http_budget_seconds)
        result = run_undo(deps, request, run_id)
    except JournalNotFoundError as exc:
        return error_response(404, "not-found", str(exc), run_id)
    except UndoRefusedError as exc:
        return error_response(409, "conflict", str(exc), run_id)
    except ConfigError as exc:
        log.error("[run %s] configuration error: %s", run_id, exc)
        return error_response(500, "configuration", str(exc), run_id)
    except Work365Error as exc:  # the app's storage (the journals)
        log.error("[run %s] undo failed: %s", run_id, exc)
        return error_response(502, "upstream", str(exc), run_id)
    headers = {"x-ms-correlation-id": run_id}
    if result["status"] == "failed":
        first = (result.get("errors") or [{}])[0]
        message = f"undo: {first.get('service', 'upstream')} failed: {first.get('message', '')}"
        body = {"error": "upstream", "message": message, "runId": run_id, "result": result}
        return json_response(502, body, headers)
    return json_response(200, result, headers)


def run_job_message(msg: func.QueueMessage, services: ServicesFactory) -> None:
    """The queue trigger: run the job the message names (the host retries when this raises)."""
    run_job(services().job_deps(), msg.get_body(), msg.dequeue_count)


def poison_message(msg: func.QueueMessage, services: ServicesFactory) -> None:
    """The `<queue>-poison` trigger: the host gave up on a job message; mark its run failed."""
    try:
        built = services()
    except ConfigError as exc:
        log.error("poison message not recorded: configuration error: %s", exc)
        return
    fail_poisoned(built.job_deps(), msg.get_body())
