"""The sandbox's Dataverse webhook delivery retries as Microsoft documents it ("Troubleshoot
WebHook registrations", https://learn.microsoft.com/power-apps/developer/data-platform/use-webhooks):
one more attempt after a 502, 503 or 504 only; any other failure, or no answer, fails the step."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from work365_fn.sandbox.webhooks import RowEvent, WebhookDelivery, WebhookStep

TABLE = "work365_subscription"


def deliver(*answers: int) -> tuple[list[int], list[float]]:
    """One Create event to a step that answers `answers` in turn: (statuses sent, sleeps)."""
    left = list(answers)
    sleeps: list[float] = []
    delivery = WebhookDelivery(
        "https://org.example.invalid", post=lambda url, h, b: left.pop(0), sleep=sleeps.append
    )
    delivery.register(WebhookStep("https://app.example.invalid/api/records", "k", TABLE))
    delivery.notify(
        RowEvent("Create", TABLE, "f0000000-0000-0000-0000-000000000001", (), datetime.now(UTC))
    )
    [done] = delivery.deliver_pending()
    return done.statuses, sleeps


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_gateway_error_gets_exactly_one_more_attempt(status: int) -> None:
    assert deliver(status, status, 200) == ([status, status], [1.0])  # the system job fails
    assert deliver(status, 200) == ([status, 200], [1.0])


@pytest.mark.parametrize("status", [0, 400, 401, 429, 500])
def test_any_other_failure_or_no_answer_fails_the_step_at_once(status: int) -> None:
    assert deliver(status, 200) == ([status], [])
