"""The batch writer against recorded `$batch` answers (`responses`): what each per-operation
answer does to its decision, the run deadline, and answers cut short."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import responses

from tests.builders import a_contract, a_provider_account, a_record, a_setting, a_subscription
from work365_fn.adapters.dataverse_metadata import SubscriptionBindings
from work365_fn.adapters.dataverse_repository import Repository
from work365_fn.adapters.schema import Schema
from work365_fn.operations.writer import DEADLINE_MESSAGE, BatchWriter, WriteLimits
from work365_fn.rules import Action, Decision, Reason, World, plan
from work365_fn.rules.summary import RunSummary

from .clients import dv_client, policy
from .shapes import API, DV_VERSION_MISMATCH, dv_error
from .test_batch_contract import batch_answer

BINDINGS = SubscriptionBindings("work365_BillingContract", "work365_Account", False)
SUBS = [f"5555555{n}-5555-5555-5555-555555555555" for n in range(4)]
RECORDS = [f"f000000{n}-0000-0000-0000-000000000000" for n in range(4)]


def world() -> World:
    return World(
        setting=a_setting(),
        subscriptions=[a_subscription(id=s) for s in SUBS],
        records=[
            a_record(provider_subscription_id=s, id=r) for s, r in zip(SUBS, RECORDS, strict=True)
        ],
        provider_accounts=[a_provider_account()],
        contracts=[a_contract(id="cccccccc-0000-0000-0000-000000000001")],
    )


def writer(
    w: World, summary: RunSummary, *, size: int = 100, now: list[float] | None = None
) -> tuple[BatchWriter, list[float]]:
    sleeps: list[float] = []
    clock = now if now is not None else [0.0]
    repo = Repository(dv_client(policy(sleeps)), Schema())
    return (
        BatchWriter(
            repo,
            w,
            BINDINGS,
            summary,
            logging.LoggerAdapter(logging.getLogger("test")),
            WriteLimits(
                batch_size=size, deadline=10.0, monotonic=lambda: clock[0], sleep=sleeps.append
            ),
        ),
        sleeps,
    )


def summary() -> RunSummary:
    return RunSummary(run_id="r", started_at=datetime.now(UTC))


def record_json(record_id: str, sub: str, contract: str | None) -> dict[str, Any]:
    return {
        "@odata.etag": 'W/"9"',
        "work365_subscriptionid": record_id,
        "work365_name": "E3",
        "work365_providersubscriptionid": sub,
        "_work365_account_value": "aaaaaaaa-0000-0000-0000-000000000001",
        "_work365_billingcontract_value": contract,
        "createdon": "2026-03-01T00:00:00Z",
    }


def test_each_answer_decides_its_own_operation(rsps: responses.RequestsMock) -> None:
    w = world()
    s = summary()
    write, sleeps = writer(w, s)
    other = "cccccccc-0000-0000-0000-000000000099"
    rsps.post(
        f"{API}$batch",
        body=batch_answer(
            (204, {}, ""),
            (412, {"Content-Type": "application/json"}, json.dumps(DV_VERSION_MISMATCH)),
            (
                400,
                {"Content-Type": "application/json"},
                json.dumps(dv_error("0x80048d19", "Error identified in Payload")),
            ),
            (204, {}, ""),
        ),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )
    # the 412: re-read, someone assigned it by hand meanwhile
    rsps.get(
        f"{API}work365_subscriptions({RECORDS[1]})",
        json=record_json(RECORDS[1], SUBS[1], other),
    )

    final = write.write(plan(w))

    assert [d.reason for d in final] == [
        Reason.DEFAULT_CONTRACT,
        Reason.ALREADY_ASSIGNED,
        Reason.ERROR,
        Reason.DEFAULT_CONTRACT,
    ]
    assert final[1].contract_id == other
    assert "0x80048d19" in final[2].message and "Error identified in Payload" in final[2].message
    assert s.errors == [
        {
            "customerId": a_subscription().customer_id,
            "service": "dataverse",
            "status": 400,
            "code": "0x80048d19",
            "message": "Error identified in Payload",
        }
    ]
    assert sleeps == []


def test_a_throttled_operation_waits_and_goes_in_a_later_batch(
    rsps: responses.RequestsMock,
) -> None:
    w = world()
    write, sleeps = writer(w, summary())
    rsps.post(
        f"{API}$batch",
        body=batch_answer(
            (204, {}, ""),
            (204, {}, ""),
            (204, {}, ""),
            (429, {"Retry-After": "3"}, json.dumps(dv_error("0x80072322", "too many"))),
        ),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )
    rsps.post(
        f"{API}$batch",
        body=batch_answer((204, {}, "")),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )

    final = write.write(plan(w))

    assert {d.reason for d in final} == {Reason.DEFAULT_CONTRACT}
    assert sleeps == [3.0]
    assert RECORDS[3] in rsps.calls[1].request.body.decode()
    assert RECORDS[0] not in rsps.calls[1].request.body.decode()


def test_an_answer_cut_short_sends_the_rest_again(rsps: responses.RequestsMock) -> None:
    """Without continue-on-error honoured, Dataverse stops at the first failure: the operations
    after it were never run and go in the next batch."""
    w = world()
    write, _ = writer(w, summary())
    rsps.post(
        f"{API}$batch",
        status=400,
        body=batch_answer(
            (204, {}, ""),
            (400, {}, json.dumps(dv_error("0x80044331", "A validation error occurred."))),
        ),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )
    rsps.post(
        f"{API}$batch",
        body=batch_answer((204, {}, ""), (204, {}, "")),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )

    final = write.write(plan(w))

    assert [d.reason for d in final] == [
        Reason.DEFAULT_CONTRACT,
        Reason.ERROR,
        Reason.DEFAULT_CONTRACT,
        Reason.DEFAULT_CONTRACT,
    ]


def test_past_the_deadline_the_remaining_writes_wait_for_the_next_run(
    rsps: responses.RequestsMock,
) -> None:
    w = world()
    s = summary()
    now = [0.0]
    write, _ = writer(w, s, size=2, now=now)

    def first_batch(request: Any) -> tuple[int, dict[str, str], str]:
        now[0] = 11.0  # the batch took the run past its deadline
        return (
            200,
            {"Content-Type": "multipart/mixed; boundary=batchresponse_1"},
            batch_answer((204, {}, ""), (204, {}, "")),
        )

    rsps.add_callback(responses.POST, f"{API}$batch", callback=first_batch)

    final = write.write(plan(w))

    assert [d.reason for d in final[:2]] == [Reason.DEFAULT_CONTRACT] * 2
    assert [(d.reason, d.action, d.message) for d in final[2:]] == [
        (Reason.ERROR, Action.NONE, DEADLINE_MESSAGE)
    ] * 2
    assert len(rsps.calls) == 1
    assert any("deadline" in warning for warning in s.warnings)


def test_no_writes_no_request(rsps: responses.RequestsMock) -> None:
    w = world()
    decisions = [Decision(sub, None, Reason.NOT_SYNCED, Action.NONE) for sub in w.subscriptions]
    write, _ = writer(w, summary())
    assert write.write(decisions) == decisions
