"""The timer run posts its digest (notify.py) through the real handler, over the demo sandbox:
the sandbox is reached over loopback, the webhook is `responses`."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import pytest
import responses

import function_app
from tests.integration import demo
from work365_fn.composition import Services
from work365_fn.entrypoints.functions import handlers as triggers
from work365_fn.rules import LISTED, Reason, count_groups
from work365_fn.rules.summary import count_label
from work365_fn.sandbox import Sandbox, Scenario
from work365_fn.settings import Settings

HOOK = "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke"
SIGNED = f"{HOOK}?api-version=2016-06-01&sig=SECRET-SIGNATURE-VALUE"


class _Timer:
    past_due = False


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    for key in list(os.environ):
        if key.startswith(("WORK365_", "AzureWebJobsStorage")):
            monkeypatch.delenv(key)
    with Sandbox.start(Scenario.builtin("demo")) as sandbox:
        for key, value in sandbox.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("WORK365_NOTIFY_URL", SIGNED)
        function_app.services.cache_clear()
        yield sandbox
    function_app.services.cache_clear()


def test_the_timer_posts_a_teams_card_of_what_was_left(box: Sandbox) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.add_passthru(box.url)
        rsps.post(HOOK, status=202)
        function_app.sync_timer(_Timer())
        [call] = [c for c in rsps.calls if c.request.url.startswith(HOOK)]
    card = json.loads(call.request.body)["attachments"][0]["content"]
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    want = count_groups(demo.reasons().elements())
    labels = (count_label("assigned", dry_run=False), count_label("unassigned", dry_run=False))
    assert (facts[labels[0]], facts[labels[1]]) == (
        str(want["assigned"]),
        str(want["unassigned"]),
    )
    listed = card["body"][3]["facts"]
    reasons = [f["title"] for f in listed]
    assert sorted(reasons) == sorted(
        r for r in demo.reasons().elements() if Reason(r) in LISTED
    )  # every unassigned (or failed) subscription, by its reason
    # ... by name, with its fix (issue 13)
    names = {c.company_name for c in Scenario.builtin("demo").customers}
    assert all(f["value"].split(":")[0] in names and ". Fix: " in f["value"] for f in listed)


def test_a_webhook_that_keeps_failing_never_fails_the_timer_run(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WORK365_NOTIFY_FORMAT", "json")
    sleeps: list[float] = []

    def services() -> Services:  # the worker's services, with the sleep injected
        return Services.build(Settings.from_env(), sleep=sleeps.append)

    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.add_passthru(box.url)
        rsps.post(HOOK, status=500)
        triggers.sync_timer(_Timer(), services)  # returns normally
        assert len([c for c in rsps.calls if c.request.url.startswith(HOOK)]) == 4
    assert len(sleeps) == 3
    assert any("notification not delivered" in r.getMessage() for r in caplog.records)
    assert "SECRET-SIGNATURE-VALUE" not in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records)
