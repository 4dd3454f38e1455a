"""The digest after a timer run, against `responses`: the exact calls made, retries with an
injected sleep, nothing sent when all went well, never a failure, never the URL in a log."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from work365_fn.adapters.notify import (
    MAX_ATTEMPTS,
    MAX_LISTED,
    Delivery,
    Notifier,
    notify_run,
    teams_card,
)
from work365_fn.errors import InvalidSettingError
from work365_fn.rules import LISTED, Action, Decision, Reason
from work365_fn.rules.model import AssociationSetting, PcSubscription
from work365_fn.rules.summary import RunSummary, count_label
from work365_fn.settings import Settings

URL = "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke"
SIGNED = f"{URL}?api-version=2016-06-01&sp=%2Ftriggers&sv=1.0&sig=SECRET-SIGNATURE-VALUE"
REPORT = "https://contoso.sharepoint.com/sites/billing/work365-report"
BASE_ENV = {
    "WORK365_TENANT_ID": "00000000-0000-0000-0000-000000000001",
    "WORK365_CLIENT_ID": "00000000-0000-0000-0000-000000000002",
    "WORK365_CLIENT_SECRET": "s",
    "WORK365_DATAVERSE_URL": "https://org.crm.dynamics.com",
}


def summary(reasons: list[Reason], *, errors: int = 0) -> RunSummary:
    decisions = [
        Decision(
            PcSubscription(
                id=f"5ab00000-0000-4000-8000-{i:012d}",
                customer_id=f"c{i:07d}-0000-4000-8000-000000000000",
            ),
            None,
            reason,
            Action.NONE,
        )
        for i, reason in enumerate(reasons)
    ]
    run = RunSummary(
        run_id="11111111-1111-4111-8111-111111111111",
        started_at=datetime(2026, 11, 26, 22, 0, tzinfo=UTC),
        decisions=decisions,
        setting=AssociationSetting(True, datetime(2026, 1, 1, tzinfo=UTC), "audit"),
        customers=len(reasons),
    )
    run.errors.extend(
        {
            "customerId": None,
            "service": "dataverse",
            "status": 503,
            "code": "503",
            "message": "busy",
        }
        for _ in range(errors)
    )
    return run


def notifier(fmt: str = "teams", sleeps: list[float] | None = None) -> Notifier:
    recorder = sleeps if sleeps is not None else []
    return Notifier(SIGNED, fmt, report_url=REPORT, delivery=Delivery(sleep=recorder.append))


def sent(call: Any) -> dict[str, Any]:
    data = json.loads(call.request.body)
    assert isinstance(data, dict)
    return data


def test_an_unassigned_subscription_posts_an_adaptive_card() -> None:
    run = summary([Reason.DEFAULT_CONTRACT, Reason.NO_DEFAULT_CONTRACT, Reason.ALREADY_ASSIGNED])
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(
            URL,
            status=202,
            match=[
                matchers.query_param_matcher(
                    {
                        "api-version": "2016-06-01",
                        "sp": "/triggers",
                        "sv": "1.0",
                        "sig": "SECRET-SIGNATURE-VALUE",
                    }
                )
            ],
        )
        assert notifier().send(run) is True
        message = sent(rsps.calls[0])
    [attachment] = message["attachments"]
    assert message["type"] == "message"
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    assert "1 subscription(s) left unassigned, 0 failed" in card["body"][0]["text"]
    counts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert counts[count_label("unassigned", dry_run=False)] == "1"
    listed = card["body"][3]["facts"]
    assert [f["title"] for f in listed] == [d.reason for d in run.decisions if d.reason in LISTED]
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open the report", "url": REPORT}
    ]


def test_the_card_lists_a_capped_number_and_says_how_many_more() -> None:
    card = teams_card(summary([Reason.UNMAPPED_CUSTOMER] * (MAX_LISTED + 4)).to_json())
    body = card["attachments"][0]["content"]["body"]
    assert len(body[3]["facts"]) == MAX_LISTED
    assert body[4]["text"] == "and 4 more"
    assert "actions" not in card["attachments"][0]["content"]  # no report URL set


def test_the_card_counts_every_reason_that_occurred_and_no_other() -> None:
    reasons = [*Reason, Reason.ERROR, Reason.DEFAULT_CONTRACT]
    run = summary(reasons)
    card = teams_card(run.to_json())["attachments"][0]["content"]
    [by_reason] = [
        block
        for block in card["body"]
        if block["type"] == "FactSet" and block["facts"][0]["title"] == Reason.NOT_SYNCED
    ]
    shown = {f["title"]: f["value"] for f in by_reason["facts"]}
    assert shown == {r: str(n) for r, n in run.by_reason().items() if n}

    only_one = teams_card(summary([Reason.SETTING_OFF]).to_json())["attachments"][0]["content"]
    assert {"title": "setting-off", "value": "1"} in only_one["body"][-1]["facts"]
    assert len(only_one["body"][-1]["facts"]) == 1  # the zeros are left out


def test_the_json_format_posts_the_summary() -> None:
    run = summary([Reason.ERROR])
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(URL, status=200)
        assert notifier("json").send(run) is True
        assert sent(rsps.calls[0]) == run.to_json()


def test_nothing_is_sent_when_everything_landed() -> None:
    run = summary([Reason.DEFAULT_CONTRACT, Reason.ALREADY_ASSIGNED, Reason.EXISTING_SUBSCRIPTION])
    with responses.RequestsMock(assert_all_requests_are_fired=True):
        assert notifier().send(run) is False  # any call would fail: none is registered


def test_a_partial_run_is_sent_even_without_unassigned_subscriptions() -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(URL, status=202)
        assert notifier().send(summary([Reason.DEFAULT_CONTRACT], errors=1)) is True
        card = sent(rsps.calls[0])["attachments"][0]["content"]
    assert "first: dataverse 503 busy" in card["body"][-1]["text"]


def test_429_is_retried_after_retry_after() -> None:
    sleeps: list[float] = []
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(URL, status=429, headers={"Retry-After": "7"})
        rsps.post(URL, status=202)
        assert notifier(sleeps=sleeps).send(summary([Reason.SETTING_OFF])) is True
        assert len(rsps.calls) == 2
    assert sleeps == [7.0]


def test_5xx_is_retried_then_given_up_with_a_warning_and_no_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sleeps: list[float] = []
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(URL, status=503)
        assert notifier(sleeps=sleeps).send(summary([Reason.SETTING_OFF])) is False
        assert len(rsps.calls) == MAX_ATTEMPTS
    assert len(sleeps) == MAX_ATTEMPTS - 1
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "not delivered after 4 attempts (HTTP 503)" in warning[0].getMessage()
    assert "SECRET-SIGNATURE-VALUE" not in caplog.text
    assert "logic.azure.com" not in caplog.text


def test_a_4xx_is_not_retried() -> None:
    sleeps: list[float] = []
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(URL, status=404)
        assert notifier(sleeps=sleeps).send(summary([Reason.SETTING_OFF])) is False
        assert len(rsps.calls) == 1
    assert sleeps == []


def test_a_connection_error_never_shows_the_url(caplog: pytest.LogCaptureFixture) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(URL, body=requests.ConnectionError(f"cannot reach {SIGNED}"))
        assert notifier(sleeps=[]).send(summary([Reason.SETTING_OFF])) is False
    assert "ConnectionError" in caplog.text
    assert "SECRET-SIGNATURE-VALUE" not in caplog.text


def test_no_url_no_notification() -> None:
    settings = Settings.from_env(BASE_ENV)
    with responses.RequestsMock(assert_all_requests_are_fired=True):
        assert notify_run(summary([Reason.SETTING_OFF]), settings) is False


def test_settings_read_the_notification_and_never_show_the_url() -> None:
    settings = Settings.from_env(
        {
            **BASE_ENV,
            "WORK365_NOTIFY_URL": SIGNED,
            "WORK365_NOTIFY_FORMAT": "JSON",
            "WORK365_REPORT_URL": REPORT,
        }
    )
    assert (settings.notify_url, settings.notify_format, settings.report_url) == (
        SIGNED,
        "json",
        REPORT,
    )
    assert "SECRET-SIGNATURE-VALUE" not in repr(settings)
    assert "SECRET" not in repr(Notifier.from_settings(settings))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("WORK365_NOTIFY_URL", "http://insecure.example/hook?sig=SECRET-SIGNATURE-VALUE"),
        ("WORK365_NOTIFY_URL", "not a url SECRET-SIGNATURE-VALUE"),
        ("WORK365_NOTIFY_FORMAT", "slack"),
        ("WORK365_REPORT_URL", "ftp://x"),
    ],
)
def test_bad_notification_settings_name_the_key_not_the_value(key: str, value: str) -> None:
    with pytest.raises(InvalidSettingError) as caught:
        Settings.from_env({**BASE_ENV, key: value})
    assert key in str(caught.value)
    assert "SECRET-SIGNATURE-VALUE" not in str(caught.value)
