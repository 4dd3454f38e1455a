"""`python -m work365_fn bench` on a tiny generated scenario: the JSON shape and numbers that
agree with each other and with the minimal-request formula (timings are printed, never asserted)."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pytest

from work365_fn.bench.benchmark import BenchConfig, generate, minimal_full
from work365_fn.entrypoints.cli.main import main

RUN_KEYS = {
    "mode",
    "status",
    "wallSeconds",
    "wallBoundSeconds",
    "requests",
    "totalRequests",
    "minimalRequests",
    "ratio",
    "writes",
    "writesPerBatch",
    "peakRssMb",
    "counts",
}


@pytest.fixture(autouse=True)
def _no_machine_settings(clean_env: None) -> None:
    """Every test here runs the CLI without the machine's WORK365_ settings."""


def bench(*argv: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = main(["bench", *argv, "--json"], out=out)
    return code, json.loads(out.getvalue())


def test_bench_reports_consistent_numbers_for_both_runs() -> None:
    code, report = bench(
        "--customers",
        "4",
        "--subscriptions-per-customer",
        "3",
        "--new-fraction",
        "0.5",
        "--batch-size",
        "2",
    )
    assert code == 0
    scenario, full, incremental = report["scenario"], report["full"], report["incremental"]
    assert set(full) == RUN_KEYS
    assert set(incremental) == RUN_KEYS | {"partnerCenterShareOfFull"}
    assert (full["mode"], incremental["mode"]) == ("full", "incremental")
    assert full["status"] == incremental["status"] == "succeeded"
    assert scenario["subscriptions"] == 12 and scenario["changedCustomers"] == 1

    for run in (full, incremental):
        total = sum(n for kinds in run["requests"].values() for n in kinds.values())
        assert run["totalRequests"] == total
        assert run["ratio"] == round(total / run["minimalRequests"], 3)
        batches = run["requests"]["dataverse"].get("POST $batch", 0)
        assert batches == math.ceil(run["writes"] / 2)
        assert run["writesPerBatch"] == round(run["writes"] / batches, 1)
        assert run["peakRssMb"] > 0 and run["wallSeconds"] >= 0
        assert run["totalRequests"] == run["minimalRequests"]  # nothing wasted at this size

    assert full["writes"] == scenario["newSubscriptions"]
    assert full["counts"]["subscriptions"] == 12
    assert full["requests"]["partnerCenter"] == {"GET customers": 1, "GET subscriptions": 4}
    assert incremental["writes"] == 1
    assert incremental["requests"]["partnerCenter"] == {
        "GET auditrecords": 1,
        "GET subscriptions": 1,
    }
    assert incremental["partnerCenterShareOfFull"] == round(2 / 5, 4)


def test_the_generated_scenario_is_deterministic_and_the_formula_counts_it() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 26, tzinfo=UTC)
    config = BenchConfig(customers=1200, subscriptions_per_customer=5, batch_size=100)
    one, two = generate(config, now), generate(config, now)
    assert one.raw == two.raw
    assert one.records == 6000
    # tokens 3, customer pages 3, subscriptions 1200, setting 1 + cutoff 3, provider accounts
    # 1, contracts 1, records 2 pages, metadata 3, batches ceil(writes / 100); the Account and
    # contract names come with those reads (formatted values): no request of their own
    assert minimal_full(config, one) == 3 + 3 + 1200 + 4 + 1 + 1 + 2 + 3 + math.ceil(
        one.writes / 100
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--customers", "0", "--subscriptions-per-customer", "1"], "at least 1"),
        (["--customers", "1", "--subscriptions-per-customer", "1", "--batch-size", "0"], "1000"),
        (
            ["--customers", "1", "--subscriptions-per-customer", "1", "--new-fraction", "2"],
            "0 to 1",
        ),
    ],
)
def test_bad_bench_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err
