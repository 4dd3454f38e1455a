"""Azure Functions triggers (Python v2 model). Thin: no I/O and no environment reads at import.

The services are built on the first invocation of a worker, from the app settings.
"""

from __future__ import annotations

import functools

import azure.functions as func

from work365_fn.composition import Services
from work365_fn.entrypoints.functions import handlers, health, operations, pages, records, runs
from work365_fn.settings import Settings

app = func.FunctionApp()


@functools.cache
def services() -> Services:
    """Built lazily, once per worker process."""
    return Services.build(Settings.from_env())


@app.timer_trigger(
    schedule="%WORK365_SYNC_SCHEDULE%",
    arg_name="timer",
    run_on_startup=False,
    use_monitor=True,
)
def sync_timer(timer: func.TimerRequest) -> None:
    handlers.sync_timer(timer, services)


@app.route(route="sync", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def sync_http(req: func.HttpRequest) -> func.HttpResponse:
    return handlers.sync_http(req, services)


# Some records decided alone (docs/events.md): Power Automate's "assign record", and the
# Dataverse webhook (WebhookKey authentication: Dataverse sends the function key as ?code=).
@app.route(route="records", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def records_http(req: func.HttpRequest) -> func.HttpResponse:
    return records.records_http(req, services)


@app.route(route="records/{recordId}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def record_http(req: func.HttpRequest) -> func.HttpResponse:
    return records.records_http(req, services)


@app.route(route="diagnose", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def diagnose_http(req: func.HttpRequest) -> func.HttpResponse:
    return operations.diagnose_http(req, services)


@app.route(route="report", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def report_http(req: func.HttpRequest) -> func.HttpResponse:
    return operations.report_http(req, services)


@app.route(route="backfill", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def backfill_http(req: func.HttpRequest) -> func.HttpResponse:
    return operations.backfill_http(req, services)


# 200 healthy, 503 with reasons (docs/operations.md#health); ?deep=true also proves the services.
@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health_http(req: func.HttpRequest) -> func.HttpResponse:
    return health.health_http(req, services)


# The status URL of an asynchronous run: anonymous (it must not carry the function key), authorized
# by the run's signature in `sig` (work365_fn/entrypoints/functions/runs.py).
@app.route(route="runs/{runId}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def run_status(req: func.HttpRequest) -> func.HttpResponse:
    return runs.run_status_http(req, services)


# Undo of any run that wrote (docs/undo.md): the function key, like every endpoint that writes.
@app.route(route="runs/{runId}/undo", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def undo_run(req: func.HttpRequest) -> func.HttpResponse:
    return runs.undo_http(req, services)


# The report page of a run, the Teams card's "Open the report": anonymous like the status URL,
# authorized by its own signature in `sig` (work365_fn/entrypoints/functions/pages.py).
@app.route(route="runs/{runId}/report", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def run_report_page(req: func.HttpRequest) -> func.HttpResponse:
    return pages.report_page_http(req, services)


@app.queue_trigger(
    arg_name="msg", queue_name="%WORK365_JOBS_QUEUE%", connection="AzureWebJobsStorage"
)
def run_job(msg: func.QueueMessage) -> None:
    runs.run_job_message(msg, services)


@app.queue_trigger(
    arg_name="msg", queue_name="%WORK365_JOBS_QUEUE%-poison", connection="AzureWebJobsStorage"
)
def run_job_poison(msg: func.QueueMessage) -> None:
    runs.poison_message(msg, services)
