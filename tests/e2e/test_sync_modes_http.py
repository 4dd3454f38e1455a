"""`"mode"` of POST /api/sync and the timer's automatic mode, through the real handlers."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import pytest

import function_app
from tests.e2e.test_function_app_sandbox import CUSTOMER, box, post  # noqa: F401 - fixture
from work365_fn.sandbox import Sandbox


def call(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp: func.HttpResponse = function_app.sync_http(post(body))
    return resp.status_code, json.loads(resp.get_body())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"mode": "sometimes"}, "'mode' must be one of full, incremental, auto"),
        ({"mode": 1}, "'mode' must be one of full, incremental, auto"),
        ({"mode": "incremental", "customerIds": [CUSTOMER]}, "must be full"),
    ],
)
def test_a_bad_mode_is_a_400_naming_the_field(
    box: Sandbox,  # noqa: F811
    body: dict[str, Any],
    message: str,
) -> None:
    status, answer = call(body)
    assert (status, answer["error"], answer["field"]) == (400, "invalid-request", "mode")
    assert message in answer["message"]
    assert "GET customers" not in box.counts()["partnerCenter"]


def test_incremental_over_http_is_full_first_then_incremental(box: Sandbox) -> None:  # noqa: F811
    status, first = call({"mode": "incremental"})
    assert (status, first["mode"]) == (200, "full")  # no watermark yet
    box.reset_counts()

    status, second = call({"mode": "incremental"})

    assert (status, second["mode"], second["status"]) == (200, "incremental", "succeeded")
    assert "GET customers" not in box.counts()["partnerCenter"]
    assert box.counts()["partnerCenter"]["GET auditrecords"] == 1


def test_the_timer_runs_full_then_incremental(box: Sandbox) -> None:  # noqa: F811
    class Timer:
        past_due = False

    function_app.sync_timer(Timer())
    assert box.counts()["partnerCenter"]["GET customers"] == 1
    box.reset_counts()

    function_app.sync_timer(Timer())  # the last full run is minutes old: incremental

    assert "GET customers" not in box.counts()["partnerCenter"]
    assert box.counts()["partnerCenter"]["GET auditrecords"] == 1
