"""How the async-run functions are registered, and the host settings their queue relies on."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

import azure.functions as func

from work365_fn.operations.jobs import MAX_DEQUEUE_COUNT

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def functions() -> dict[str, Any]:
    """The registrations of a fresh copy of function_app.py: `get_functions()` builds its list
    once per FunctionApp object, so the shared module's app is left to the other tests."""
    spec = importlib.util.spec_from_file_location("function_app_fresh", ROOT / "function_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {f.get_function_name(): f for f in module.app.get_functions()}


def binding(name: str) -> dict[str, Any]:
    repr_: dict[str, Any] = functions()[name].get_bindings()[0].get_dict_repr()
    return repr_


def test_the_status_url_route_is_anonymous_and_get_only() -> None:
    http = binding("run_status")
    assert http["route"] == "runs/{runId}"
    assert [str(m.value) for m in http["methods"]] == ["GET"]
    assert http["authLevel"] == func.AuthLevel.ANONYMOUS  # the signature authorizes it


def test_the_job_functions_listen_on_the_jobs_queue_and_its_poison_queue() -> None:
    job, poison = binding("run_job"), binding("run_job_poison")
    assert (job["type"], job["name"]) == ("queueTrigger", "msg")
    assert job["queueName"] == "%WORK365_JOBS_QUEUE%"
    assert poison["queueName"] == "%WORK365_JOBS_QUEUE%-poison"
    assert job["connection"] == poison["connection"] == "AzureWebJobsStorage"


def test_host_json_keeps_base64_messages_and_poisons_after_the_documented_count() -> None:
    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    assert queues["messageEncoding"] == "base64"
    assert queues["maxDequeueCount"] == MAX_DEQUEUE_COUNT == 5
    assert queues["batchSize"] <= 4
    assert queues["newBatchThreshold"] <= queues["batchSize"]


def test_the_test_tools_stay_out_of_the_deployed_package() -> None:
    ignored = {p.strip("/") for p in (ROOT / ".funcignore").read_text().split()}
    assert {"node_modules", "package.json", "package-lock.json"} <= ignored
    package = json.loads((ROOT / "package.json").read_text())
    # test tooling only, pinned exactly (Azurite 3.36+ needs Node 22)
    assert package["devDependencies"] == {"azurite": "3.35.0", "dynamics-web-api": "2.5.0"}
