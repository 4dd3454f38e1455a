"""What the demo scenario says about itself: its `description` lists the expected reason of every
Partner Center subscription. Tests read it from there rather than repeating it."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import Any

from work365_fn.operations.report import LISTS
from work365_fn.rules import LISTED, count_groups, count_reasons
from work365_fn.sandbox.scenario import Scenario

_ROW = re.compile(r"^([0-9A-Fa-f-]{36}) \| ([a-z-]+) \| (\S+) \| (.+)$")

# Demo customers (Partner Center tenant ids) by the mapping problem they show.
CONTOSO = (
    "c0000001-0000-4000-8000-000000000001"  # healthy; an inactive default beside the active one
)
FABRIKAM = "c0000002-0000-4000-8000-000000000002"
NORTHWIND = "c0000003-0000-4000-8000-000000000003"  # upper-case in Partner Center
ADVENTURE_WORKS = "c0000004-0000-4000-8000-000000000004"  # no Provider Account
TAILSPIN = "c0000005-0000-4000-8000-000000000005"  # Provider Account without Account
WIDE_WORLD = "c0000006-0000-4000-8000-000000000006"  # two Provider Accounts, two Accounts
WINGTIP = "c0000007-0000-4000-8000-000000000007"  # record under another Account
LITWARE = "c0000008-0000-4000-8000-000000000008"  # no default contract at all
PROSEWARE = "c0000009-0000-4000-8000-000000000009"  # its only default is inactive
COHO = "c000000a-0000-4000-8000-00000000000a"  # two active defaults
ALPINE = "c000000b-0000-4000-8000-00000000000b"  # two Provider Accounts, one Account
BLUE_YONDER = "c000000c-0000-4000-8000-00000000000c"
MARGIES = "c000000d-0000-4000-8000-00000000000d"  # no subscriptions


@dataclass(frozen=True)
class Expected:
    subscription_id: str  # lower case
    reason: str
    contract_id: str | None
    what: str


def expected() -> dict[str, Expected]:
    """Subscription id (lower case) -> what the demo's description says of it: one row for each
    subscription the demo's Partner Center serves, no more, no less."""
    ref = resources.files("work365_fn.sandbox").joinpath("scenarios", "demo.json")
    lines = json.loads(ref.read_text(encoding="utf-8"))["description"]
    out = {}
    for line in lines:
        match = _ROW.match(line.strip())
        if match:
            sub, reason, contract, what = match.groups()
            assert sub.lower() not in out, f"the demo description lists {sub} twice"
            out[sub.lower()] = Expected(
                sub.lower(), reason, None if contract == "null" else contract.lower(), what
            )
    served = {s.id.lower() for c in Scenario.builtin("demo").customers for s in c.subscriptions}
    assert set(out) == served, "the demo description lists each Partner Center subscription"
    return out


def reasons() -> Counter[str]:
    """How many of the demo's subscriptions get each reason, as its description says."""
    return Counter(e.reason for e in expected().values())


def assert_is_the_demo_report(report: dict[str, Any]) -> None:
    """A report of the demo lists the subscriptions its description gives a listed reason (the
    ones an admin acts on), counts each reason as described, and counts its list items as its
    problems."""
    want = {e.subscription_id: e.reason for e in expected().values() if e.reason in LISTED}
    got = {r["subscriptionId"].lower(): r["reason"] for r in report["unassignedSubscriptions"]}
    assert got == want
    assert report["byReason"] == count_reasons(e.reason for e in expected().values())
    counts = count_groups(e.reason for e in expected().values())
    assert {k: report["counts"][k] for k in counts} == counts
    assert report["counts"]["problems"] == sum(len(report[name]) for name in LISTS)
    assert report["counts"]["problems"] > len(want)  # the demo's mapping problems are listed too
