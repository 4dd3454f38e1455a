"""The report page over HTTP, through the real handlers (real `func.HttpRequest`s) over the demo
sandbox with Azurite as the app's storage: `GET /api/report?format=html`, and the signed link of
a timer run's Teams card (`GET /api/runs/{runId}/report?sig=...`): one signer for status URLs
and page links, neither opening the other; forged, altered, expired links are a 403 that shows
nothing of the report."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from html import escape
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import pytest
import responses

import function_app
from tests.e2e.async_support import SIGNING_KEY, App, app, body, signed, signer
from work365_fn.composition import Services
from work365_fn.entrypoints.functions import pages
from work365_fn.entrypoints.functions.responses import MISCONFIGURED
from work365_fn.operations.page_cache import BUILDING, DOCUMENT, FAILED_MESSAGE, WAIT_SECONDS
from work365_fn.rules import Reason
from work365_fn.rules.timestamps import format_timestamp
from work365_fn.settings import Settings
from work365_fn.signing import LinkSigner, report_page_resource

__all__ = ["app"]

HOOK = "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke"
PUBLIC = "https://work365-test.azurewebsites.net"
RUN = "0f0e0d0c-0b0a-4908-8706-050403020100"
NAMES = ("Contoso", "Litware", "Coho Winery", "Default")  # demo names the page shows


class _Timer:
    past_due = False


def page_request(run_id: str, sig: str | None, **extra: str) -> func.HttpRequest:
    params = {"sig": sig} if sig is not None else {}
    return func.HttpRequest(
        method="GET",
        url=f"http://localhost:7071/api/runs/{run_id}/report",
        params={**params, **extra},
        route_params={"runId": run_id},
        body=b"",
    )


def report_request(**params: str) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET", url="http://localhost:7071/api/report", params=params, body=b""
    )


def page_sig(run_id: str, key: str = SIGNING_KEY) -> str:
    return signer(key).sign(report_page_resource(run_id))


def assert_page(resp: func.HttpResponse) -> str:
    assert resp.status_code == 200
    assert resp.mimetype == "text/html" and resp.charset == "utf-8"
    policy = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    nonce = policy.split("script-src 'nonce-", 1)[1].split("'", 1)[0]
    html = resp.get_body().decode("utf-8")
    assert f'<script nonce="{nonce}">' in html and f'<style nonce="{nonce}">' in html
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"] == "no-store"
    return html


def assert_refused(resp: func.HttpResponse) -> None:
    """403 and nothing of the report: JSON, no name, no count."""
    assert resp.status_code == 403, resp.get_body()[:300]
    assert resp.mimetype == "application/json"
    text = resp.get_body().decode("utf-8")
    assert body(resp)["error"] == "forbidden"
    for name in NAMES:
        assert name not in text
    assert not any(r.value in text for r in Reason if r is not Reason.ERROR)  # "error": key


def test_the_report_as_html_carries_the_json_reports_numbers_under_a_fresh_policy(
    app: App,
) -> None:
    report = body(function_app.report_http(report_request()))
    first = function_app.report_http(report_request(format="html"))
    html = assert_page(first)
    for key in ("subscriptions", "assigned", "unassigned", "failed"):
        want = f'data-count="{key}"><span class="num">{report["counts"][key]}</span>'
        assert want in html, key
    assert html.count('<tr data-reason="') == report["counts"]["unassignedSubscriptions"]
    again = function_app.report_http(report_request(format="HTML"))
    assert again.headers["Content-Security-Policy"] != first.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"format": "pdf"}, "format"), ({"format": "html", "async": "true"}, "format")],
)
def test_a_bad_format_is_a_400_naming_it(app: App, params: dict[str, str], field: str) -> None:
    resp = function_app.report_http(report_request(**params))
    assert resp.status_code == 400 and body(resp)["field"] == field


def test_the_timer_cards_button_opens_the_runs_page_without_the_function_key(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORK365_NOTIFY_URL", HOOK)
    monkeypatch.setenv("WORK365_PUBLIC_URL", PUBLIC)
    function_app.services.cache_clear()
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.add_passthru(app.box.url)
        rsps.add_passthru("http://127.0.0.1")  # Azurite, the app's storage
        rsps.post(HOOK, status=202)
        function_app.sync_timer(_Timer())
        [call] = [c for c in rsps.calls if c.request.url.startswith(HOOK)]
    card = json.loads(call.request.body)["attachments"][0]["content"]
    [action] = card["actions"]
    assert action["title"] == "Open the report"
    link = urlsplit(action["url"])
    run_id = link.path.split("/")[-2]
    assert f"{link.scheme}://{link.netloc}" == PUBLIC
    assert link.path == f"/api/runs/{run_id}/report"
    query = parse_qs(link.query)
    assert set(query) == {"sig"}  # no function key in the link
    html = assert_page(function_app.run_report_page(page_request(run_id, query["sig"][0])))
    assert f"Opened from the notification of run <code>{run_id}</code>" in html
    assert f"<code>{run_id}</code></td>" in html  # the run is in the last runs
    # the same signature is no status URL, and a status URL's is no page link
    status = function_app.run_status(
        func.HttpRequest(
            method="GET",
            url=f"http://localhost:7071/api/runs/{run_id}",
            params={"sig": query["sig"][0]},
            route_params={"runId": run_id},
            body=b"",
        )
    )
    assert status.status_code == 403
    assert_refused(function_app.run_report_page(page_request(run_id, signed(run_id))))


def _altered(sig: str) -> str:
    kid, exp, mac = sig.split(".")
    return f"{kid}.{exp}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"


def _expired(run_id: str) -> str:
    past = LinkSigner(
        SIGNING_KEY,
        lifetime=timedelta(hours=1),
        clock=lambda: datetime.now(UTC) - timedelta(hours=2),
    )
    return past.sign(report_page_resource(run_id))


@pytest.mark.parametrize(
    "sig",
    [
        None,
        "",
        "forged",
        _altered(page_sig(RUN)),
        page_sig("1f0e0d0c-0b0a-4908-8706-050403020100"),  # another run's page
        page_sig(RUN, key="another-signing-key-0123456789-abcdefghij"),
        _expired(RUN),
    ],
    ids=["missing", "empty", "forged", "altered", "other-run", "other-key", "expired"],
)
def test_a_wrong_or_expired_page_link_is_a_403_showing_nothing(app: App, sig: str | None) -> None:
    assert_refused(function_app.run_report_page(page_request(RUN, sig)))


def test_an_expired_page_link_says_when_and_what_to_do(app: App) -> None:
    message = body(function_app.run_report_page(page_request(RUN, _expired(RUN))))["message"]
    assert "expired at" in message and "GET /api/report?format=html" in message
    assert SIGNING_KEY not in message


def test_a_valid_page_link_opens_the_page_and_a_bad_run_id_is_a_400(app: App) -> None:
    assert_page(function_app.run_report_page(page_request(RUN, page_sig(RUN))))
    assert_page(function_app.run_report_page(page_request(RUN.upper(), page_sig(RUN))))
    bad = function_app.run_report_page(page_request("not-a-guid", page_sig(RUN)))
    assert bad.status_code == 400 and body(bad)["field"] == "runId"
    extra = function_app.run_report_page(page_request(RUN, page_sig(RUN), code="x", other="1"))
    assert extra.status_code == 400 and body(extra)["field"] == "other"


def test_without_a_signing_key_the_page_link_is_a_500_naming_the_setting_only_in_the_log(
    app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("WORK365_RUN_SIGNING_KEY")
    function_app.services.cache_clear()
    resp = function_app.run_report_page(page_request(RUN, page_sig(RUN)))
    answer = body(resp)
    assert resp.status_code == 500 and answer["error"] == "configuration"
    assert "WORK365_RUN_SIGNING_KEY" not in answer["message"]  # an anonymous caller
    assert answer["message"] == f"{MISCONFIGURED} (run {answer['runId']})"
    assert f"[run {answer['runId']}] configuration error" in caplog.text
    assert "WORK365_RUN_SIGNING_KEY" in caplog.text


def test_opening_a_link_again_soon_shows_the_kept_report_without_reading_the_tenant(
    app: App,
) -> None:
    first = assert_page(function_app.run_report_page(page_request(RUN, page_sig(RUN))))
    app.box.reset_counts()

    again = assert_page(function_app.run_report_page(page_request(RUN, page_sig(RUN))))

    served = app.box.counts()
    assert not served.get("partnerCenter") and not served.get("dataverse"), served
    assert again.split("<body", 1)[1].count("<tr") == first.split("<body", 1)[1].count("<tr")
    kept = app.app_storage().run_store().get(RUN, DOCUMENT)
    assert kept is not None and kept["report"]["counts"]["subscriptions"] > 0


def reads(box_counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The requests of tenant reads: Partner Center's and Dataverse's (not the token's)."""
    return {k: v for k, v in box_counts.items() if k in ("partnerCenter", "dataverse") and v}


def test_ten_opens_at_once_of_a_fresh_link_read_the_tenant_once(app: App) -> None:
    warm, one, shared = (str(uuid.uuid4()) for _ in range(3))
    assert_page(function_app.run_report_page(page_request(warm, page_sig(warm))))  # tokens
    app.box.reset_counts()
    assert_page(function_app.run_report_page(page_request(one, page_sig(one))))
    one_read = reads(app.box.counts())
    app.box.reset_counts()
    # each read is slow enough (the customer list, 0.3 s) for all ten to arrive during it
    app.box.faults.add(
        {
            "service": "partnerCenter",
            "path": "customers$",
            "kind": "slow",
            "delayMs": 300,
            "every": 1,
        }
    )

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(
            pool.map(
                lambda _: function_app.run_report_page(page_request(shared, page_sig(shared))),
                range(10),
            )
        )

    assert [a.status_code for a in answers] == [200] * 10
    assert one_read and reads(app.box.counts()) == one_read  # one read: the same requests
    store = app.app_storage().run_store()
    assert store.get(shared, BUILDING) is None  # the claim is gone with the read


def test_a_failed_read_is_kept_a_minute_and_the_page_shows_no_upstream_text(
    app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WORK365_MAX_ATTEMPTS", "1")
    function_app.services.cache_clear()
    app.box.faults.add({"service": "partnerCenter", "kind": "500", "every": 1})

    first = function_app.run_report_page(page_request(RUN, page_sig(RUN)))
    app.box.reset_counts()
    again = function_app.run_report_page(page_request(RUN, page_sig(RUN)))

    assert (first.status_code, again.status_code) == (502, 502)
    assert reads(app.box.counts()) == {}  # within FAILED_KEEP_SECONDS: nothing asked again
    kept = app.app_storage().run_store().get(RUN, DOCUMENT)
    assert kept is not None
    [error] = kept["report"]["errors"]
    assert error["message"] and error["message"] in caplog.text  # the detail: in the log only
    for page in (first, again):
        html = page.get_body().decode("utf-8")
        assert error["message"] not in html and str(error["code"]) not in html
        assert escape(FAILED_MESSAGE.format(run_id=kept["report"]["runId"])) in html


def test_an_open_while_another_worker_reads_waits_then_says_the_report_is_being_prepared(
    app: App,
) -> None:
    store = app.app_storage().run_store()
    assert store.put_new(RUN, BUILDING, {"since": format_timestamp(datetime.now(UTC))})
    sleeps: list[float] = []
    built = Services.build(Settings.from_env(), sleep=sleeps.append)
    app.box.reset_counts()

    resp = pages.report_page_http(page_request(RUN, page_sig(RUN)), lambda: built)

    assert resp.status_code == 503 and int(resp.headers["Retry-After"]) > 0
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert "being prepared" in resp.get_body().decode("utf-8")
    assert sleeps and sum(sleeps) <= WAIT_SECONDS
    assert reads(app.box.counts()) == {}


def test_an_open_shows_the_report_another_worker_kept_while_it_waited(app: App) -> None:
    store = app.app_storage().run_store()
    report = body(function_app.report_http(report_request()))
    assert store.put_new(RUN, BUILDING, {"since": format_timestamp(datetime.now(UTC))})

    def other_worker_finishes(_: float) -> None:
        store.put(RUN, DOCUMENT, {"builtAt": format_timestamp(datetime.now(UTC)), "report": report})

    built = Services.build(Settings.from_env(), sleep=other_worker_finishes)
    app.box.reset_counts()

    html = assert_page(pages.report_page_http(page_request(RUN, page_sig(RUN)), lambda: built))

    assert f"<code>{report['runId']}</code>" in html
    assert reads(app.box.counts()) == {}
