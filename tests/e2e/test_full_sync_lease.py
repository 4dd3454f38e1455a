"""The full-sync lease through the Functions handlers: one whole-tenant sync at a time."""

from __future__ import annotations

import logging

import azure.functions as func
import pytest

import function_app
from tests.e2e.async_support import CUSTOMER, App, app, body, get_status, post

__all__ = ["app"]  # the fixture

HOLDER = "9f1d2c3b-4a5e-4f60-8172-93a4b5c6d7e8"


def served(app: App) -> int:
    """Requests the sandbox served, every service together."""
    return sum(n for kinds in app.box.counts().values() for n in kinds.values())


class _Timer:
    past_due = False


def test_a_full_sync_while_another_holds_the_lease_is_a_409_naming_it(app: App) -> None:
    before = app.assigned()
    with app.app_storage().lease(HOLDER, renew_every=0):
        resp = function_app.sync_http(post({}))

        assert resp.status_code == 409
        assert body(resp) == {
            "error": "conflict",
            "message": "sync already running",
            "runId": HOLDER,
        }
        assert resp.headers["x-ms-correlation-id"] not in ("", HOLDER)
        assert app.assigned() == before  # nothing written
        assert served(app) == 0  # not even read

        scoped = function_app.sync_http(post({"customerIds": [CUSTOMER]}))  # no lease needed
        assert scoped.status_code == 200
        assert body(scoped)["counts"]["customers"] == 1

    resp = function_app.sync_http(post({}))  # released: the next full sync runs
    assert resp.status_code == 200
    assert app.assigned() > before


def test_the_lease_is_held_during_the_sync_and_released_after(app: App) -> None:
    resp = function_app.sync_http(post({}))
    assert resp.status_code == 200
    assert app.app_storage().lease(HOLDER).holder() == (False, None)


def test_an_async_full_sync_is_refused_up_front_while_the_lease_is_held(app: App) -> None:
    with app.app_storage().lease(HOLDER, renew_every=0):
        resp = function_app.sync_http(post({"async": True}))
        assert resp.status_code == 409
        assert body(resp)["runId"] == HOLDER
        assert app.queued() == []

        scoped = function_app.sync_http(post({"async": True, "customerIds": [CUSTOMER]}))
        assert scoped.status_code == 202


def test_a_queued_full_sync_that_meets_the_lease_fails_its_run_without_retrying(
    app: App,
) -> None:
    resp = function_app.sync_http(post({"async": True}))
    _, decoded = app.receive()
    with app.app_storage().lease(HOLDER, renew_every=0):
        function_app.run_job(func.QueueMessage(body=decoded))  # no raise: no retry

    final = body(function_app.run_status(get_status(resp.headers["Location"])))
    assert final["status"] == "failed"
    assert final["error"] == {
        "code": "conflict",
        "message": "sync already running",
        "holderRunId": HOLDER,
    }


def test_the_timer_logs_and_skips_while_the_lease_is_held(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with app.app_storage().lease(HOLDER, renew_every=0):
        function_app.sync_timer(_Timer())

    assert served(app) == 0
    skipped = [r.getMessage() for r in caplog.records if "sync skipped" in r.getMessage()]
    assert skipped == [f"sync skipped: sync already running (run {HOLDER})"]
    assert not any("summary {" in r.getMessage() for r in caplog.records)
