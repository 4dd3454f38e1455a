"""Azure Functions triggers (Python v2 model). Thin: no I/O and no environment reads at import.

The services are built on the first invocation of a worker, from the app settings.
"""

from __future__ import annotations

import functools

import azure.functions as func

from work365_fn import triggers
from work365_fn.services import Services
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
    triggers.sync_timer(timer, services)


@app.route(route="sync", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def sync_http(req: func.HttpRequest) -> func.HttpResponse:
    return triggers.sync_http(req, services)
