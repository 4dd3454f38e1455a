"""Names without extra requests: what the reads carried (rules/names.py), what a fan-out batch
message carries within the queue's size (fanout.py), and who may pass names in (sync input)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from work365_fn.operations.fanout import QUEUE_MESSAGE_MAX_JSON, _with_names
from work365_fn.operations.inputs import BadRequest
from work365_fn.operations.run_documents import CustomerBatch, JobMessage
from work365_fn.operations.sync import SyncRequest
from work365_fn.rules.model import BillingContract, ProviderAccount, SubscriptionRecord
from work365_fn.rules.names import account_names_read, contract_names_read, unnamed

A1 = "00000000-0000-4000-8000-0000000000a1"
A2 = "00000000-0000-4000-8000-0000000000a2"
C1 = "00000000-0000-4000-8000-0000000000c1"
C9 = "00000000-0000-4000-8000-0000000000c9"
RUN = "00000000-0000-4000-8000-000000000001"


def a_record(**kw: object) -> SubscriptionRecord:
    values: dict[str, object] = {
        "id": "00000000-0000-4000-8000-0000000000e1",
        "provider_subscription_id": None,
        "account_id": None,
        "billing_contract_id": None,
        "created_on": None,
    }
    values.update(kw)
    return SubscriptionRecord(**values)  # type: ignore[arg-type]


def test_the_reads_name_accounts_and_the_records_own_contract() -> None:
    pa = ProviderAccount("00000000-0000-4000-8000-0000000000b1", None, A1, account_name="Contoso")
    default = BillingContract(C1, A1, True, True, name="Contoso - Default")
    record = a_record(
        account_id=A2.upper(),
        account_name="Fabrikam",
        billing_contract_id=C9,
        billing_contract_name="Fabrikam - Arrears",
    )
    names = account_names_read([pa], [default], [record])
    assert names == {A1: "Contoso", A2: "Fabrikam"}
    assert contract_names_read([default], [record]) == {
        C1: "Contoso - Default",
        C9: "Fabrikam - Arrears",
    }
    assert unnamed([A1, A2, "00000000-0000-4000-8000-0000000000a3"], names) == [
        "00000000-0000-4000-8000-0000000000a3"
    ]


def batch_message(ids: list[str]) -> JobMessage:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return JobMessage(RUN, "sync", {}, start, CustomerBatch(0, 1, tuple(ids)))


def test_a_batch_message_carries_its_customers_names_and_reads_them_back() -> None:
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(50)]
    message = _with_names(batch_message(ids), {i: f"Customer {i[-2:]}" for i in ids})
    back = JobMessage.parse(json.dumps(message.to_json()))
    assert back.batch is not None
    assert dict(back.batch.customer_names) == {i: f"Customer {i[-2:]}" for i in ids}


def test_names_that_would_overflow_the_queue_message_are_left_out() -> None:
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(100)]
    message = _with_names(batch_message(ids), {i: "x" * 1000 for i in ids})
    assert message.batch is not None
    assert 0 < len(message.batch.customer_names) < len(ids)
    assert len(json.dumps(message.to_json()).encode()) <= QUEUE_MESSAGE_MAX_JSON


def test_only_a_queued_job_may_carry_customer_names() -> None:
    payload = {"customerIds": [A1], "customerNames": {A1: "Contoso"}}
    with pytest.raises(BadRequest) as refused:
        SyncRequest.from_payload(payload)
    assert refused.value.field == "customerNames"
    assert SyncRequest.from_payload(payload, queued=True).customer_names == ((A1, "Contoso"),)
