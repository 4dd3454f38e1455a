"""The report page over HTTP, through the real handlers (real `func.HttpRequest`s) over the demo
sandbox with Azurite as the app's storage: `GET /api/report?format=html`, and the signed link of
a timer run's Teams card (`GET /api/runs/{runId}/report?sig=...`): one signer for status URLs
and page links, neither opening the other; forged, altered, expired links are a 403 that shows
nothing of the report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import pytest
import responses

import function_app
from tests.e2e.async_support import SIGNING_KEY, App, app, body, signed, signer
from work365_fn.operations.page_cache import DOCUMENT
from work365_fn.rules import Reason
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


def test_without_a_signing_key_the_page_link_is_a_500_naming_the_setting(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WORK365_RUN_SIGNING_KEY")
    function_app.services.cache_clear()
    resp = function_app.run_report_page(page_request(RUN, page_sig(RUN)))
    assert resp.status_code == 500 and "WORK365_RUN_SIGNING_KEY" in body(resp)["message"]


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
