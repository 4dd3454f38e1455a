"""The fan-out's pieces on a local run store: batches, the aggregation rules, the guard."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from work365_fn.adapters.storage import FileRunStore, LeaseTakenError
from work365_fn.operations.fanout import (
    MARKER,
    MARKER_RUN_ID,
    POISONED_MESSAGE,
    Aggregation,
    live_fanout,
    refuse_while_fanned_out,
    split,
)
from work365_fn.rules import LISTED, Reason, count_groups, count_reasons

RUN = "7b1e5f0a-9c3d-4e2f-8a1b-2c3d4e5f6a7b"
NEW_RUN = "1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d"
NOW = datetime(2026, 11, 26, 22, 0, tzinfo=UTC)
SETTING = {"associateDefaultBillingContract": True, "since": None, "sinceSource": "modifiedon"}


def cid(n: int) -> str:
    return f"d0000000-0000-0000-0000-{n:012d}"


def row(customer: int, sub: int, reason: str = "default-contract") -> dict[str, Any]:
    return {
        "customerId": cid(customer),
        "subscriptionId": f"e0000000-0000-0000-0000-{sub:012d}",
        "recordId": None,
        "accountId": None,
        "action": "assign" if reason == "default-contract" else "none",
        "billingContractId": None,
        "reason": reason,
    }


def batch_doc(
    index: int,
    customers: list[int],
    rows: list[dict[str, Any]],
    *,
    status: str = "succeeded",
    errors: list[dict[str, Any]] | None = None,
    warnings: list[str] | None = None,
    setting: dict[str, Any] | None = None,
    skipped: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    reasons = [r["reason"] for r in rows]
    counts = {"customers": len(customers), **count_groups(reasons), "created": 0}
    return {
        "runId": RUN,
        "kind": "sync",
        "index": index,
        "count": 3,
        "customerIds": [cid(c) for c in customers],
        "status": status,
        "result": {
            "status": status,
            "setting": setting or SETTING,
            "counts": counts,
            "byReason": {r: reasons.count(r) for r in set(reasons)},  # zeros left out
            "subscriptions": rows,
            "skippedCustomers": skipped or [],
            "errors": errors or [],
            "warnings": warnings or [],
        },
        "error": None,
    }


def aggregate(
    store: FileRunStore, *documents: dict[str, Any]
) -> tuple[Aggregation, dict[str, Any]]:
    with Aggregation(RUN, "2026-11-26T22:00:00Z", "2026-11-26T22:30:00Z") as agg:
        for document in documents:
            agg.add(document)
        agg.write(store)
    result = store.get(RUN, "result")
    assert result is not None
    return agg, result


def test_batches_are_consecutive_slices_of_at_most_the_batch_size() -> None:
    ids = [cid(n) for n in range(7)]
    assert split(ids, 3) == [tuple(ids[0:3]), tuple(ids[3:6]), (ids[6],)]
    assert split(ids, 7) == [tuple(ids)]
    assert split([], 5) == []


def test_counts_and_reasons_are_summed_and_rows_concatenated_in_order(tmp_path: Path) -> None:
    store = FileRunStore(tmp_path)
    rows = [row(1, 1), row(2, 2, "no-default-contract"), row(3, 3), row(3, 4, "already-assigned")]
    agg, result = aggregate(
        store,
        batch_doc(0, [1, 2], rows[:2]),
        batch_doc(1, [3, 4], rows[2:]),
        batch_doc(2, [5], []),
    )

    reasons = [r["reason"] for r in rows]
    assert result["counts"] == {"customers": 5, **count_groups(reasons), "created": 0}
    assert result["counts"]["subscriptions"] == len(rows)
    assert result["byReason"] == count_reasons(reasons)  # every reason, zeros included
    assert set(result["byReason"]) == {reason.value for reason in Reason}
    assert [r["subscriptionId"][-1] for r in result["subscriptions"]] == ["1", "2", "3", "4"]
    assert result["status"] == "succeeded"
    assert (result["runId"], result["mode"], result["dryRun"]) == (RUN, "full", False)
    assert list(result) == [
        "schemaVersion", "runId", "mode", "dryRun", "status", "startedAt", "finishedAt",
        "setting", "counts", "byReason", "subscriptions", "skippedCustomers", "errors",
        "warnings",
    ]  # fmt: skip
    assert agg.log_line() == {k: v for k, v in result.items() if k != "subscriptions"}
    listed = [r for r in rows if r["reason"] in LISTED]
    assert listed == [row(2, 2, "no-default-contract")]
    assert agg.notification()["subscriptions"] == listed


def test_rows_out_of_order_across_batches_are_still_sorted(tmp_path: Path) -> None:
    _, result = aggregate(
        FileRunStore(tmp_path),
        batch_doc(0, [5], [row(5, 9)]),
        batch_doc(1, [1], [row(1, 2), row(1, 1)]),
    )
    assert [(r["customerId"][-1], r["subscriptionId"][-1]) for r in result["subscriptions"]] == [
        ("1", "1"),
        ("1", "2"),
        ("5", "9"),
    ]


def test_errors_skipped_customers_and_warnings_are_merged_once(tmp_path: Path) -> None:
    err = {"customerId": cid(2), "service": "partnerCenter", "status": 403, "code": "20002"}
    agg, result = aggregate(
        FileRunStore(tmp_path),
        batch_doc(0, [1, 2], [row(1, 1)], status="partial", errors=[err], warnings=["w1"]),
        batch_doc(
            1,
            [3],
            [row(3, 3, "error")],
            status="partial",
            warnings=["w1", "w2"],
            skipped=[{"customerId": cid(4), "why": "deadline"}],
        ),
    )
    assert result["errors"] == [err]
    assert result["warnings"] == ["w1", "w2"]
    assert result["skippedCustomers"] == [{"customerId": cid(4), "why": "deadline"}]
    assert result["status"] == "partial"
    # 403 20002 is no reason to retry; a failed subscription and a skipped customer are
    assert agg.pending_customers() == {cid(3), cid(4)}


def test_a_poisoned_batch_gives_each_of_its_customers_a_queue_error(tmp_path: Path) -> None:
    poisoned = {
        "runId": RUN,
        "kind": "sync",
        "index": 1,
        "count": 2,
        "customerIds": [cid(3), cid(4)],
        "status": "failed",
        "result": None,
        "error": {"code": "poisoned", "message": "the job failed 5 times; see the logs"},
    }
    agg, result = aggregate(FileRunStore(tmp_path), batch_doc(0, [1], [row(1, 1)]), poisoned)

    assert result["status"] == "partial"
    assert result["errors"] == [
        {
            "customerId": cid(n),
            "service": "queue",
            "status": 0,
            "code": "poisoned",
            "message": POISONED_MESSAGE,
        }
        for n in (3, 4)
    ]
    assert result["counts"]["customers"] == 3
    assert agg.pending_customers() == {cid(3), cid(4)}


def test_a_batch_whose_sync_failed_names_its_customers_with_the_cause(tmp_path: Path) -> None:
    cause = {
        "customerId": None,
        "service": "dataverse",
        "status": 503,
        "code": "",
        "message": "down",
    }
    failed = batch_doc(1, [3, 4], [], status="failed", errors=[cause])
    _, result = aggregate(FileRunStore(tmp_path), batch_doc(0, [1], [row(1, 1)]), failed)

    assert result["status"] == "partial"
    assert [(e["customerId"], e["service"], e["status"]) for e in result["errors"]] == [
        (cid(3), "dataverse", 503),
        (cid(4), "dataverse", 503),
    ]
    assert {e["message"] for e in result["errors"]} == {"batch failed: down"}


def test_the_run_failed_only_when_every_batch_failed(tmp_path: Path) -> None:
    cause = {"customerId": None, "service": "auth", "status": 401, "code": "x", "message": "no"}
    _, result = aggregate(
        FileRunStore(tmp_path),
        batch_doc(0, [1], [], status="failed", errors=[cause]),
        batch_doc(1, [2], [], status="failed", errors=[cause]),
    )
    assert result["status"] == "failed"


def test_batches_that_saw_another_setting_are_warned_about(tmp_path: Path) -> None:
    other = {**SETTING, "associateDefaultBillingContract": False}
    _, result = aggregate(
        FileRunStore(tmp_path),
        batch_doc(0, [1], [row(1, 1)]),
        batch_doc(1, [2], [row(2, 2, "setting-off")], setting=other),
    )
    assert result["setting"] == SETTING
    assert len(result["warnings"]) == 1
    assert "changed during the run" in result["warnings"][0]


# ---- the guard -------------------------------------------------------------------------------


def in_flight(store: FileRunStore, *, expires: datetime, status: str = "running") -> None:
    store.put(RUN, "state", {"runId": RUN, "status": status, "fanout": {"batches": 4}})
    store.put(RUN, "batch-0000", {"status": "succeeded"})
    store.put(
        MARKER_RUN_ID,
        MARKER,
        {
            "runId": RUN,
            "startedAt": (expires - timedelta(minutes=240)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "batches": 4,
        },
    )


def test_a_full_run_is_refused_while_a_fanout_is_in_flight(tmp_path: Path) -> None:
    store = FileRunStore(tmp_path)
    in_flight(store, expires=NOW + timedelta(minutes=1))

    with pytest.raises(LeaseTakenError) as caught:
        refuse_while_fanned_out(store, NEW_RUN, NOW)

    assert caught.value.holder == RUN
    assert live_fanout(store, NOW) == RUN
    refuse_while_fanned_out(store, RUN, NOW)  # the fan-out run itself may


def test_a_fanout_past_its_expiry_is_marked_timed_out_and_no_longer_blocks(tmp_path: Path) -> None:
    store = FileRunStore(tmp_path)
    in_flight(store, expires=NOW)

    assert live_fanout(store, NOW) is None
    refuse_while_fanned_out(store, NEW_RUN, NOW)

    state = store.get(RUN, "state")
    assert state is not None
    assert state["status"] == "failed"
    assert state["error"]["code"] == "timed-out"
    assert state["error"]["message"] == (
        f"the fan-out run was not aggregated within 240 minutes (1 of 4 batches done); "
        f"run {NEW_RUN} started after it"
    )


@pytest.mark.parametrize("status", ["succeeded", "partial", "failed"])
def test_a_finished_fanout_does_not_block(tmp_path: Path, status: str) -> None:
    store = FileRunStore(tmp_path)
    in_flight(store, expires=NOW + timedelta(hours=1), status=status)
    refuse_while_fanned_out(store, NEW_RUN, NOW)
    assert live_fanout(store, NOW) is None


@pytest.mark.parametrize("marker", [None, {}, {"runId": "not-a-guid"}, {"runId": NEW_RUN}])
def test_no_or_an_unreadable_marker_does_not_block(tmp_path: Path, marker: Any) -> None:
    store = FileRunStore(tmp_path)
    if marker is not None:
        store.put(MARKER_RUN_ID, MARKER, marker)
    refuse_while_fanned_out(store, RUN, NOW)  # NEW_RUN has no state: nothing in flight
    assert json.dumps(store.get(RUN, "state")) == "null"


def test_a_batch_that_failed_as_a_whole_blames_its_fatal_error_not_a_customers_own() -> None:
    """A customer's own 403 20002 listed before the run-level failure must not be copied onto
    every customer of the batch: that would drop them all from the next incremental run."""
    from work365_fn.operations.fanout import _batch_errors

    own = {"customerId": cid(1), "service": "partnerCenter", "status": 403, "code": "20002"}
    fatal = {"customerId": None, "service": "dataverse", "status": 503, "code": "503"}
    failed = {"status": "failed", "error": None}
    errors = _batch_errors(failed, [cid(1), cid(2)], {"errors": [own, fatal]})
    assert {(e["customerId"], e["service"], e["status"]) for e in errors} == {
        (cid(1), "dataverse", 503),
        (cid(2), "dataverse", 503),
    }
