"""`python -m work365_fn bench --events N` at a tiny size: the report's fields agree with each
other, every event is delivered and gets its contract, and an event costs one Partner Center
request. Times are printed by the benchmark, never asserted here (docs/performance.md)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from work365_fn.bench.events import EventsConfig, percentile
from work365_fn.entrypoints.cli.main import main


@pytest.fixture(autouse=True)
def _no_machine_settings(clean_env: None) -> None:
    """The CLI runs without the machine's WORK365_ settings."""


def bench_events(*argv: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = main(["bench", "--events", *argv, "--json"], out=out)
    return code, json.loads(out.getvalue())


def test_every_event_is_delivered_and_gets_its_contract() -> None:
    # A rate far above what the machine makes: the events come as fast as it can create them.
    code, report = bench_events("6", "--rate", "10000", "--workers", "3")

    assert code == 0
    assert report["events"] == {
        "created": 6,
        "delivered": 6,
        "retried": 0,
        "failed": 0,
        "recoveredByTimer": 0,
        "lost": 0,
    }
    assert report["webhookAnswers"] == {"200": 6}
    assert report["handlerCrashes"] == []
    # per event: the one subscription in Partner Center; Dataverse's reads and the write batch
    assert report["requests"]["partnerCenter"] == {"GET subscription": 6}
    assert report["requestsPerEvent"]["partnerCenter"] == 1.0
    dataverse = report["requests"]["dataverse"]
    assert dataverse["POST $batch"] == 6
    assert report["requestsPerEvent"]["dataverse"] == sum(dataverse.values()) / 6
    times = report["creationToContractSeconds"]
    assert 0 < times["p50"] <= times["p95"] <= times["max"]
    assert report["scenario"]["throttle"] is None


def test_bench_events_without_customers_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "--events", "0"]) == 2
    assert "--events must be at least 1" in capsys.readouterr().err
    assert main(["bench"]) == 2
    assert "--customers" in capsys.readouterr().err


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 1)) == (
        10.0,
        19.0,
        20.0,
    )
    assert percentile([3.0], 0.95) == 3.0


def test_config_refuses_a_rate_of_zero() -> None:
    with pytest.raises(ValueError, match="--rate"):
        EventsConfig(events=1, rate=0)
