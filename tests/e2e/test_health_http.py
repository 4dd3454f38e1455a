"""GET /api/health through the registered function, with real `func.HttpRequest`s, over the demo
sandbox (loopback HTTPS) and Azurite as the app's storage: 200 after a good run, 503 naming the
reason after a failed run, when the last success is too old (injected clock), when a credential
expires within 7 days or the settings cannot be read; `?deep=true` proves a token and one read
per service and writes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

import function_app
from tests.e2e.async_support import App, app, post
from tests.e2e.test_openapi import conforms
from work365_fn.composition import Services
from work365_fn.entrypoints.functions import health
from work365_fn.settings import Settings

__all__ = ["app"]  # the fixture

UNKNOWN_APP = "0d7e6f5a-4b3c-4d2e-8f10-a1b2c3d4e5f6"


def get(params: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET",
        url="http://localhost:7071/api/health",
        params={"code": "function-key", **(params or {})},
        body=b"",
    )


def answer(resp: func.HttpResponse, app: App) -> dict[str, Any]:
    """The body, checked against the OpenAPI file; no secret in it."""
    assert resp.mimetype == "application/json"
    text = resp.get_body().decode()
    assert app.box.env["WORK365_CLIENT_SECRET"] not in text  # never a secret
    assert "Bearer" not in text
    body = conforms(resp, "/health", "get")  # as openapi/work365-fn.swagger.json documents it
    assert resp.headers["x-ms-correlation-id"]
    return body


def codes(body: dict[str, Any]) -> list[str]:
    return [r["code"] for r in body["reasons"]]


def good_run() -> dict[str, Any]:
    resp = function_app.sync_http(post({}))
    assert resp.status_code == 200, resp.get_body()
    summary = json.loads(resp.get_body())
    assert summary["status"] in ("succeeded", "partial")
    return summary


def use_settings(monkeypatch: pytest.MonkeyPatch, **values: str | None) -> None:
    """Changed app settings, as a fresh worker reads them."""
    for key, value in values.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    function_app.services.cache_clear()


def test_503_before_any_run_then_200_after_a_good_run(app: App) -> None:
    resp = function_app.health_http(get())
    body = answer(resp, app)
    assert resp.status_code == 503
    assert codes(body) == ["no-run-yet"]
    assert body["status"] == "unhealthy" and body["lastRun"] is None

    summary = good_run()
    resp = function_app.health_http(get())
    body = answer(resp, app)
    assert resp.status_code == 200, body["reasons"]
    assert (body["status"], body["reasons"]) == ("healthy", [])
    assert body["lastRun"]["runId"] == summary["runId"]
    assert body["lastSuccess"]["runId"] == summary["runId"]
    assert body["lastFullRun"]["at"] == body["watermark"]["lastFullAt"] == summary["startedAt"]
    assert body["lease"] == {"held": False, "holder": None}  # released after the run
    assert body["schedule"] == {
        "expression": "0 0 * * * *",
        "periodMinutes": 60,
        "maxSuccessAgeMinutes": 120,
    }
    assert body["settings"] == {"valid": True, "error": None}
    assert "deep" not in body


def test_503_naming_the_failed_run(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    good_run()
    app.box.faults.add({"service": "dataverse", "kind": "503", "every": 1})
    use_settings(monkeypatch, WORK365_MAX_ATTEMPTS="1")
    failed = function_app.sync_http(post({}))
    assert failed.status_code == 502
    run_id = json.loads(failed.get_body())["runId"]
    app.box.faults.clear()

    resp = function_app.health_http(get())
    body = answer(resp, app)
    assert resp.status_code == 503
    assert codes(body) == ["last-run-failed"]
    assert run_id in body["reasons"][0]["message"]
    assert (body["lastRun"]["runId"], body["lastRun"]["status"]) == (run_id, "failed")
    assert body["lastSuccess"]["runId"] != run_id


def test_503_when_the_last_success_is_older_than_twice_the_schedule(app: App) -> None:
    summary = good_run()
    finished = datetime.fromisoformat(summary["finishedAt"].replace("Z", "+00:00"))

    def health_at(moment: datetime) -> func.HttpResponse:
        built = Services.build(Settings.from_env())
        built.clock = lambda: moment
        return health.health_http(get(), lambda: built)

    assert health_at(finished + timedelta(hours=2)).status_code == 200
    late = health_at(finished + timedelta(hours=2, minutes=1))
    body = answer(late, app)
    assert late.status_code == 503
    assert codes(body) == ["last-success-too-old"]
    assert body["lastSuccess"]["ageMinutes"] == 121


def test_deep_proves_a_token_and_one_read_per_service_and_writes_nothing(app: App) -> None:
    good_run()
    app.box.reset_counts()
    resp = function_app.health_http(get({"deep": "true"}))
    body = answer(resp, app)
    assert resp.status_code == 200, body["reasons"]
    assert {service: check["ok"] for service, check in body["deep"].items()} == {
        "dataverse": True,
        "partnerCenter": True,
    }
    served = app.box.counts()
    assert served["dataverse"] == {"GET WhoAmI": 1}
    assert sum(served["partnerCenter"].values()) == 1
    assert all(kind.startswith("GET ") for kind in served["partnerCenter"])


def test_deep_is_503_naming_the_service_whose_token_cannot_be_had(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    good_run()
    wrong_secret = "not-the-registered-secret-value"
    use_settings(
        monkeypatch, WORK365_PC_CLIENT_ID=UNKNOWN_APP, WORK365_PC_CLIENT_SECRET=wrong_secret
    )
    resp = function_app.health_http(get({"deep": "true"}))
    body = answer(resp, app)
    assert resp.status_code == 503
    [failure] = body["reasons"]
    assert (failure["code"], failure["service"]) == ("deep-check-failed", "partnerCenter")
    assert "partnerCenter" in failure["message"] and "700016" in failure["message"]
    assert body["deep"]["dataverse"]["ok"] is True
    assert body["deep"]["partnerCenter"]["ok"] is False
    assert wrong_secret not in resp.get_body().decode()


def test_without_deep_no_service_is_called(app: App) -> None:
    app.box.reset_counts()
    function_app.health_http(get())
    assert app.box.counts().get("dataverse", {}) == {}
    assert app.box.counts().get("partnerCenter", {}) == {}


def test_settings_that_cannot_be_read_are_503_naming_the_setting_not_its_value(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_settings(monkeypatch, WORK365_DATAVERSE_URL=None)
    body = answer(resp := function_app.health_http(get()), app)
    assert resp.status_code == 503
    assert codes(body) == ["settings-invalid"]
    assert "WORK365_DATAVERSE_URL is not set" in body["settings"]["error"]
    assert body["settings"]["valid"] is False

    use_settings(
        monkeypatch,
        WORK365_DATAVERSE_URL=app.box.env["WORK365_DATAVERSE_URL"],
        WORK365_CLIENT_SECRET_EXPIRES="soon-SECRETISH",
    )
    body = answer(resp := function_app.health_http(get()), app)
    assert resp.status_code == 503
    assert "WORK365_CLIENT_SECRET_EXPIRES is malformed" in body["reasons"][0]["message"]
    assert "SECRETISH" not in resp.get_body().decode()


@pytest.mark.parametrize(("days", "status"), [(20, 200), (3, 503)])
def test_a_secret_expiring_within_7_days_is_503_and_within_30_a_warning(
    app: App, monkeypatch: pytest.MonkeyPatch, days: int, status: int
) -> None:
    good_run()
    end = (datetime.now(UTC) + timedelta(days=days)).date().isoformat()
    use_settings(monkeypatch, WORK365_CLIENT_SECRET_EXPIRES=end)
    body = answer(resp := function_app.health_http(get()), app)
    assert resp.status_code == status
    assert codes(body) == ([] if status == 200 else ["credential-expiring"])
    [warning] = body["warnings"]
    assert "WORK365_CLIENT_SECRET_EXPIRES" in warning and end in warning
    [known] = body["credentials"]["expiries"]
    assert known["setting"] == "WORK365_CLIENT_SECRET_EXPIRES"
    # every run summary carries the warning too
    assert warning.split(" (in ")[0] in " ".join(good_run()["warnings"])


@pytest.mark.parametrize(
    ("params", "field"), [({"deep": "maybe"}, "deep"), ({"verbose": "true"}, "verbose")]
)
def test_bad_input_is_a_400_naming_the_field(app: App, params: dict[str, str], field: str) -> None:
    body = answer(resp := function_app.health_http(get(params)), app)
    assert resp.status_code == 400
    assert (body["error"], body["field"]) == ("invalid-request", field)


class Ticks:
    """A monotonic clock the test moves (no real time passes)."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 1000.0
        self.step = step  # added at each read: each read is a probe that took `step` seconds

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def deep_services(sleeps: list[float], ticks: Ticks) -> Services:
    built = Services.build(Settings.from_env(), sleep=sleeps.append)
    built.monotonic = ticks
    return built


def test_deep_reports_a_throttled_service_at_once_without_a_retry(app: App) -> None:
    good_run()
    app.box.faults.add(
        {"service": "dataverse", "path": "WhoAmI", "kind": "429", "retryAfter": 120, "every": 1}
    )
    sleeps: list[float] = []
    built = deep_services(sleeps, Ticks())
    app.box.reset_counts()

    resp = health.health_http(get({"deep": "true"}), lambda: built)

    body = answer(resp, app)
    assert resp.status_code == 503
    [throttled] = body["reasons"]
    assert (throttled["code"], throttled["service"]) == ("deep-check-throttled", "dataverse")
    assert "dataverse is throttled (429, Retry-After 120 s)" in throttled["message"]
    assert body["deep"]["dataverse"]["ok"] is True and body["deep"]["dataverse"]["throttled"]
    assert body["deep"]["partnerCenter"]["ok"] is True
    assert sleeps == []  # neither retried nor waited out
    assert app.box.counts()["dataverse"] == {"GET WhoAmI": 1}


def test_a_second_deep_check_within_60_s_makes_no_request(app: App) -> None:
    good_run()
    ticks = Ticks()
    built = deep_services([], ticks)
    app.box.reset_counts()
    first = answer(health.health_http(get({"deep": "true"}), lambda: built), app)
    assert app.box.counts()["dataverse"] == {"GET WhoAmI": 1}
    app.box.reset_counts()

    ticks.now += 59
    again = answer(health.health_http(get({"deep": "true"}), lambda: built), app)

    assert app.box.counts().get("dataverse", {}) == {}
    assert app.box.counts().get("partnerCenter", {}) == {}
    assert again["deep"] == first["deep"]  # checkedAt says when the probes ran
    ticks.now += 2  # 61 s after the probes: they run again
    health.health_http(get({"deep": "true"}), lambda: built)
    assert app.box.counts()["dataverse"] == {"GET WhoAmI": 1}


def test_no_probe_starts_after_the_deep_checks_deadline(app: App) -> None:
    good_run()
    built = deep_services([], Ticks(step=12.5))  # each probe "takes" 12.5 s: 25 s > 20 s
    app.box.reset_counts()

    body = answer(resp := health.health_http(get({"deep": "true"}), lambda: built), app)

    assert resp.status_code == 503
    assert body["deep"]["dataverse"]["ok"] is True
    assert body["deep"]["partnerCenter"]["ok"] is False
    assert [(r["code"], r["service"]) for r in body["reasons"]] == [
        ("deep-check-failed", "partnerCenter")
    ]
    assert "time ran out" in body["reasons"][0]["message"]
    assert app.box.counts().get("partnerCenter", {}) == {}
