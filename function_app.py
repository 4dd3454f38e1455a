"""Azure Functions triggers (Python v2 model). Thin: no I/O and no environment reads at import.

The services are built on the first invocation of a worker, from the app settings.
"""

from __future__ import annotations

import functools

import azure.functions as func

from work365_fn.composition import Services
from work365_fn.entrypoints.functions import handlers, operations, runs
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


@app.route(route="diagnose", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def diagnose_http(req: func.HttpRequest) -> func.HttpResponse:
    return operations.diagnose_http(req, services)


@app.route(route="report", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def report_http(req: func.HttpRequest) -> func.HttpResponse:
    return operations.report_http(req, services)


@app.route(route="backfill", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def backfill_http(req: func.HttpRequest) -> func.HttpResponse:
    return operations.backfill_http(req, services)


# The status URL of an asynchronous run: anonymous (it must not carry the function key), authorized
# by the run's signature in `sig` (work365_fn/entrypoints/functions/runs.py).
@app.route(route="runs/{runId}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def run_status(req: func.HttpRequest) -> func.HttpResponse:
    return runs.run_status_http(req, services)


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
