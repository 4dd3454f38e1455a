"""When the webhook answers 503 (Dataverse tries the step again) rather than 200."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.builders import a_record, a_subscription
from work365_fn.operations.records import RecordsOutcome
from work365_fn.operations.writer import DEADLINE_MESSAGE
from work365_fn.rules import Action, Decision
from work365_fn.rules.reasons import Reason
from work365_fn.rules.summary import RunSummary


def an_outcome(decision: Decision) -> RecordsOutcome:
    summary = RunSummary(run_id="r", started_at=datetime(2026, 11, 30, tzinfo=UTC), mode="records")
    summary.decisions = [decision]
    return RecordsOutcome(summary)


def test_a_write_the_deadline_stopped_is_tried_again_not_lost() -> None:
    stopped = Decision(
        a_subscription(), a_record(), Reason.ERROR, Action.NONE, message=DEADLINE_MESSAGE
    )
    assert an_outcome(stopped).needs_retry


def test_a_decided_record_is_not_tried_again() -> None:
    decided = Decision(a_subscription(), a_record(), Reason.NO_DEFAULT_CONTRACT, Action.NONE)
    assert not an_outcome(decided).needs_retry
