"""The run summary's log record, as Application Insights, the workbook and the alerts read it.

- The record names the subscriptions that need someone (customer, subscription, Account, reason,
  fix), caps its lists so the message stays far below Application Insights' 32 KB trace limit
  (past it the JSON is cut and the run vanishes from the workbook and the alerts), and carries
  the run's requests per service.
- infra/alerts/*.kql and infra/workbook.json find the record and parse its JSON with their own
  `extract` regex (RE2: the same syntax as Python's `re` for these patterns); every `s.<path>`
  they read exists in that JSON, every `work365.*` custom dimension they read is one the app
  emits, and no panel depends on custom dimensions alone (they reach Application Insights only
  with OpenTelemetry on: docs/operations.md#monitoring).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.builders import ACCOUNT, CUSTOMER, new_id
from tests.unit.test_reasons import world_for
from work365_fn.adapters import transport
from work365_fn.logs import log_summary
from work365_fn.rules import LISTED, Reason, plan
from work365_fn.rules.association import Decision
from work365_fn.rules.fixes import Namer
from work365_fn.rules.summary import (
    LOG_JSON_BUDGET,
    LOG_LIST_ITEMS,
    RunSummary,
    log_record,
)

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
APP_INSIGHTS_MESSAGE_LIMIT = 32_768  # characters of a trace's message Application Insights keeps
NOW = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
REQUESTS = {"dataverse": 41, "partnerCenter": 17}


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def one_of_each_reason() -> list[Decision]:
    return [plan(world_for(reason))[0] for reason in Reason]


def a_summary(decisions: list[Decision], **fields: Any) -> RunSummary:
    namer = Namer(
        provider_accounts=(),
        contracts=(),
        account_names={ACCOUNT: "Contoso Ltd"},
        since=None,
        customer_names={CUSTOMER: "Contoso (Partner Center)"},
    )
    return RunSummary(
        run_id="11111111-2222-4333-8444-555555555555",
        started_at=NOW,
        finished_at=NOW,
        customers=1,
        decisions=decisions,
        namer=namer,
        requests=dict(REQUESTS),
        **fields,
    )


def logged(summary: RunSummary) -> logging.LogRecord:
    """The one record `log_summary` emits, through a real logger and handler."""
    logger = logging.getLogger("work365_fn.test_log_summary")
    handler = Collect()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        log_summary(summary, logger)
    finally:
        logger.removeHandler(handler)
    (record,) = handler.records
    return record


def a_huge_summary() -> RunSummary:
    """A bad day: 3,000 subscriptions left unassigned, 400 customers failing with long
    messages, 300 skipped, 60 warnings."""
    base = plan(world_for(Reason.NO_DEFAULT_CONTRACT))[0]
    decisions = [
        dataclasses.replace(
            base,
            subscription=dataclasses.replace(base.subscription, id=new_id(), offer_name="Ö" * 40),
        )
        for _ in range(3000)
    ]
    errors: list[dict[str, object]] = [
        {
            "customerId": new_id(),
            "service": "partnerCenter",
            "status": 403,
            "code": "20002",
            "message": "no reseller relationship " + "x" * 2000,
        }
        for _ in range(400)
    ]
    skipped = [{"customerId": new_id(), "why": "deadline"} for _ in range(300)]
    return a_summary(
        decisions,
        errors=errors,
        skipped_customers=skipped,
        warnings=[f"warning {i} " + "w" * 500 for i in range(60)],
    )


# ---- the record -------------------------------------------------------------------------------


def test_the_log_record_names_every_unassigned_and_failed_subscription_with_its_fix() -> None:
    summary = a_summary(one_of_each_reason())
    line = logged(summary).summary  # type: ignore[attr-defined]
    rows = summary.to_json()["subscriptions"]
    listed = [r for r in rows if Reason(r["reason"]) in LISTED]
    assert [r["subscriptionId"] for r in line["needsAttention"]] == [
        r["subscriptionId"] for r in listed
    ]
    for row in line["needsAttention"]:
        assert {"customerName", "subscriptionName", "accountName", "reason", "fix"} <= set(row)
        assert row["fix"], row  # one sentence to act on
    contoso = [r for r in line["needsAttention"] if r["reason"] == Reason.NO_DEFAULT_CONTRACT]
    assert contoso and contoso[0]["customerName"] == "Contoso (Partner Center)"
    assert contoso[0]["accountName"] == "Contoso Ltd"
    assert "subscriptions" not in line  # not the whole list: the run's result has it
    assert line["notLogged"] == {}


def test_the_log_record_carries_the_runs_requests_per_service() -> None:
    record = logged(a_summary(one_of_each_reason()))
    message = record.getMessage()
    assert record.summary["requests"] == REQUESTS  # type: ignore[attr-defined]
    assert json.loads(extract_json(message))["requests"] == REQUESTS


def test_a_huge_run_stays_far_below_the_trace_limit_and_its_json_parses() -> None:
    summary = a_huge_summary()
    record = logged(summary)
    message = record.getMessage()

    assert len(message) < APP_INSIGHTS_MESSAGE_LIMIT // 2
    parsed = json.loads(extract_json(message))
    assert len(json.dumps(parsed, separators=(",", ":"))) <= LOG_JSON_BUDGET
    assert parsed["counts"] == summary.counts()  # the counts are never cut
    full = summary.to_json()
    for name, total in (
        ("needsAttention", 3000),
        ("errors", len(full["errors"])),
        ("skippedCustomers", len(full["skippedCustomers"])),
        ("warnings", len(full["warnings"])),
    ):
        kept = len(parsed[name])
        assert kept <= LOG_LIST_ITEMS
        assert kept + parsed["notLogged"].get(name, 0) == total, name
    assert parsed["errors"][0]["customerId"] == full["errors"][0]["customerId"]  # the first ones
    assert re.search(r"; and .*\b\d+ more errors\b.* not logged", message), message[-300:]
    # The dimensions count everything, not what the message kept.
    assert getattr(record, "work365.errors") == 400
    assert getattr(record, "work365.skippedCustomers") == 300


def test_a_record_made_twice_is_the_same_record() -> None:
    once = log_record(a_huge_summary().to_json())
    assert log_record(once) == once


# ---- the queries of infra/ against a real record ----------------------------------------------


def kql_sources() -> dict[str, str]:
    """Every query the alerts and the workbook run: name -> KQL. An alert rule's query is
    summary.kql followed by its own file (infra/monitoring.bicep)."""
    sources = {p.name: p.read_text() for p in sorted((INFRA / "alerts").glob("*.kql"))}
    summary = sources["summary.kql"]
    queries = {
        f"alert {name}": f"{summary}\n{text}".replace("{threshold}", "0")
        for name, text in sources.items()
        if name != "summary.kql"
    }
    workbook = json.loads((INFRA / "workbook.json").read_text())
    for item in workbook["items"]:
        query = item.get("content", {}).get("query")
        if query and "traces" in query:
            queries[f"workbook {item['name']}"] = query
    return queries


def summary_queries() -> dict[str, str]:
    return {n: q for n, q in kql_sources().items() if '"] summary {"' in q}


EXTRACT = re.compile(r'extract\(@"((?:[^"]|"")*)",\s*1,\s*message\)')


def extract_json(message: str, query: str | None = None) -> str:
    """Group 1 of the query's `extract(@"...", 1, message)` on the message, as KQL gives it."""
    query = query or next(iter(summary_queries().values()))
    (pattern,) = {m.group(1).replace('""', '"') for m in EXTRACT.finditer(query)}
    found = re.search(pattern, message)
    assert found, f"{pattern!r} finds nothing in {message[:200]!r}"
    return found.group(1)


def test_every_query_that_reads_the_summary_finds_and_parses_a_real_record() -> None:
    summary = a_summary(one_of_each_reason(), errors=[{"service": "dataverse", "status": 429}])
    message = logged(summary).getMessage()
    queries = summary_queries()
    assert len(queries) >= 8  # 3 alerts, the workbook's panels
    for name, query in queries.items():
        assert "] summary {" in message, name  # the `has` filter
        parsed = json.loads(extract_json(message, query))
        assert parsed["runId"] == summary.run_id, name


def s_paths(query: str) -> set[str]:
    """The fields a query reads from the parsed summary: `s.counts.unassigned`,
    `s.errors[0].message`, `s.byReason` -> ("counts.unassigned", "errors.message", ...)."""
    paths = re.findall(r"\bs\.([A-Za-z][\w.\[\]0-9]*)", query)
    return {re.sub(r"\[\d+\]", "", p).rstrip(".") for p in paths}


def test_every_summary_field_a_query_reads_exists_in_the_record() -> None:
    errors: list[dict[str, object]] = [
        {"customerId": CUSTOMER, "service": "dataverse", "status": 500, "code": "x", "message": "m"}
    ]
    decisions = one_of_each_reason()
    line = logged(
        a_summary(decisions, errors=errors, skipped_customers=[{"customerId": "c", "why": "x"}])
    ).summary  # type: ignore[attr-defined]
    optional = {"notLogged"}  # present, and {} when nothing was cut: its keys come and go
    for name, query in summary_queries().items():
        for path in sorted(s_paths(query)):
            node: Any = line
            for part in path.split("."):
                if isinstance(node, list):
                    node = node[0]
                if node == {} and path.split(".")[0] in optional:
                    break
                assert isinstance(node, dict) and part in node, f"{name}: s.{path} is not logged"
                node = node[part]


def dimension_names(query: str) -> set[str]:
    return set(re.findall(r'customDimensions\["(work365\.[^"]+)"\]', query))


def test_every_custom_dimension_a_query_reads_is_one_the_app_emits() -> None:
    record = logged(a_summary(one_of_each_reason()))
    emitted = {k for k in vars(record) if k.startswith("work365.")}
    # The retry and failure lines of the transport carry their own (adapters/transport.py).
    emitted |= set(
        transport._with_dimensions(
            {"service": "dataverse", "status": 429, "error_code": "x", "request_id": "r"}
        )
    )
    asked = set().union(*(dimension_names(q) for q in kql_sources().values()))
    assert asked, "the queries read no work365.* dimension: is the pattern stale?"
    assert asked <= emitted, sorted(asked - emitted)


@pytest.mark.parametrize("name", sorted(kql_sources()))
def test_no_query_depends_on_custom_dimensions_alone(name: str) -> None:
    """Without OpenTelemetry the Functions host forwards the message only: each dimension a
    query reads sits in a coalesce() with the message's JSON (or an extract) beside it."""
    for line in kql_sources()[name].splitlines():
        uses = line.split("customDimensions[")
        for before, after in itertools.pairwise(uses):
            assert re.search(r"coalesce\((?:to\w+\()?$", before), line
            assert re.search(r"\bs\.|extract\(", after), line  # the fallback, before the next


def test_adaptive_sampling_never_drops_a_summary_record() -> None:
    """The summary record is a trace: sampled out, a run would vanish from the workbook and
    the "no successful run" alert could fire for a run that succeeded (host.json)."""
    host = json.loads((ROOT / "host.json").read_text())
    sampling = host["logging"]["applicationInsights"]["samplingSettings"]
    if sampling.get("isEnabled", True):
        assert "Trace" in sampling.get("excludedTypes", "").split(";")
