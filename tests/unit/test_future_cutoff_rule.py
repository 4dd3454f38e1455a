"""`cutoff_warnings`: a cutoff after the run's start is one sentence naming the cutoff, where it
came from and what to do; a cutoff at or before it, or none, is nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from work365_fn.rules.fixes import cutoff_warnings
from work365_fn.rules.model import AssociationSetting
from work365_fn.rules.timestamps import format_timestamp

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=1)

# Each source of a cutoff, what the sentence calls it, and the start of what to do.
SOURCES = {
    "setting": ("WORK365_ASSOCIATE_SINCE", "set WORK365_ASSOCIATE_SINCE to the date"),
    "audit": ("the audit history of", "clock skew"),
    "modifiedon": ("modifiedon", "clock skew"),
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_a_future_cutoff_is_one_sentence_with_its_source_and_fix(source: str) -> None:
    [warning] = cutoff_warnings(AssociationSetting(True, LATER, source), NOW)
    where, todo = SOURCES[source]
    assert format_timestamp(LATER) in warning
    assert where in warning
    assert todo in warning
    assert format_timestamp(NOW) not in warning  # the batches of one run say it alike


@pytest.mark.parametrize("since", [NOW, NOW - timedelta(days=1), None])
def test_a_cutoff_not_after_now_is_not_warned(since: datetime | None) -> None:
    assert cutoff_warnings(AssociationSetting(True, since, "setting"), NOW) == []


def test_no_setting_is_not_warned() -> None:
    assert cutoff_warnings(None, NOW) == []


def test_an_unknown_source_still_says_what_to_do() -> None:
    [warning] = cutoff_warnings(AssociationSetting(True, LATER, None), NOW)
    assert "WORK365_ASSOCIATE_SINCE" in warning
