"""Two traps of the Dataverse Web API, on the wire (issue 11, defects 1 and 2).

1. Query functions take the column's LOGICAL name, lookups included:
   `Microsoft.Dynamics.CRM.In(PropertyName='work365_account',...)`, never `_work365_account_value`
   (a real org answers that with 400 0x80041103), while plain `$filter` comparisons read a lookup
   as `_x_value`. https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/use-web-api-functions#query-functions
2. A row created through an alternate key comes back with the KEY in `OData-EntityId`, not its
   id: the client asks for the row (`Prefer: return=representation`, `$select` of the id: 201),
   and re-reads it by key when no row comes back (a 204, or a `$batch` part).
   https://learn.microsoft.com/en-us/power-apps/developer/data-platform/use-upsert-insert-update-record#use-web-api
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
import responses
from responses import matchers

from tests.builders import ACCOUNT, a_provider_account, a_subscription, a_world
from work365_fn.adapters.dataverse import odata_in
from work365_fn.adapters.dataverse_metadata import SubscriptionBindings
from work365_fn.adapters.dataverse_repository import Repository
from work365_fn.adapters.schema import Schema
from work365_fn.operations.writer import NOT_READ_BACK, BatchWriter, WriteLimits
from work365_fn.rules import Action, Reason, plan
from work365_fn.rules.summary import RunSummary
from work365_fn.sandbox.batch import Operation, parse_batch

from .clients import dv_client, policy
from .shapes import API
from .test_batch_contract import batch_answer

A1 = "a0000000-0000-0000-0000-000000000001"
A2 = "a0000000-0000-0000-0000-000000000002"
RECORD = "f0000000-0000-0000-0000-000000000001"
CONTRACT = "cccccccc-0000-0000-0000-000000000001"
SUB = "55555555-5555-5555-5555-555555555555"  # tests.builders' subscription
SUBS = f"{API}work365_subscriptions"
KEY_URL = f"{SUBS}(work365_providersubscriptionid='{SUB}')"
KEYED = SubscriptionBindings("work365_BillingContract", "work365_Account", alternate_key=True)
RECORD_SELECT = (
    "work365_subscriptionid,work365_name,work365_providersubscriptionid,"
    "_work365_account_value,_work365_billingcontract_value,createdon"
)


def repository(sleeps: list[float]) -> Repository:
    return Repository(dv_client(policy(sleeps)), Schema())


def in_query(column: str, *ids: str) -> str:
    listed = ",".join(f'"{i}"' for i in ids)
    return f"Microsoft.Dynamics.CRM.In(PropertyName='{column}',PropertyValues=[{listed}])"


def record_json(record_id: str, sub: str) -> dict[str, Any]:
    return {
        "@odata.etag": 'W/"9"',
        "work365_subscriptionid": record_id,
        "work365_name": "Microsoft 365 E3",
        "work365_providersubscriptionid": sub,
        "_work365_account_value": A1,
        "_work365_billingcontract_value": CONTRACT,
        "createdon": "2026-04-01T12:00:00Z",
    }


# ---------------------------------------------------------------- 1. query functions


@pytest.mark.parametrize(
    ("read", "entity_set", "select", "flt"),
    [
        (
            "provider_accounts_of_accounts",
            "work365_provideraccounts",
            "work365_provideraccountid,work365_name,work365_customertenantid,_work365_account_value",
            in_query("work365_account", A1, A2),
        ),
        (
            "contracts_of_accounts",
            "work365_billingcontracts",
            "work365_billingcontractid,work365_name,work365_isdefault,statecode,"
            "_work365_account_value",
            in_query("work365_account", A1, A2),
        ),
        (
            "default_contracts_of_accounts",
            "work365_billingcontracts",
            "work365_billingcontractid,work365_name,work365_isdefault,statecode,"
            "_work365_account_value",
            f"work365_isdefault eq true and {in_query('work365_account', A1, A2)}",
        ),
    ],
)
def test_in_on_a_lookup_names_its_logical_name(
    rsps: responses.RequestsMock,
    sleeps: list[float],
    read: str,
    entity_set: str,
    select: str,
    flt: str,
) -> None:
    rsps.get(
        f"{API}{entity_set}",
        match=[matchers.query_param_matcher({"$select": select, "$filter": flt})],
        json={"value": []},
    )

    assert getattr(repository(sleeps), read)([A2, A1.upper()]) == []

    assert "_work365_account_value'" not in str(rsps.calls[0].request.url)


def test_plain_comparisons_still_read_the_lookup_as_its_value_property(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        SUBS,
        match=[
            matchers.query_param_matcher(
                {
                    "$select": RECORD_SELECT,
                    "$filter": (
                        "work365_providersubscriptionid ne null and "
                        "_work365_billingcontract_value eq null and "
                        "createdon ge 2026-03-01T00:00:00Z"
                    ),
                }
            )
        ],
        json={"value": []},
    )

    assert repository(sleeps).unassigned_records_since(datetime(2026, 3, 1, tzinfo=UTC)) == []


def test_odata_in_refuses_the_value_property() -> None:
    with pytest.raises(ValueError, match="logical name"):
        odata_in("_work365_account_value", [A1])


# ---------------------------------------------------------------- 2. creates through the key


def test_a_keyed_create_asks_for_the_row_and_reads_the_id_from_it(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.patch(
        KEY_URL,
        match=[
            matchers.query_param_matcher({"$select": "work365_subscriptionid"}),
            matchers.header_matcher({"If-None-Match": "*", "Prefer": "return=representation"}),
            # the key is in the URL: Microsoft says not to repeat it in the body
            matchers.json_params_matcher({"work365_name": "Microsoft 365 E3"}),
        ],
        status=201,
        headers={"OData-EntityId": KEY_URL, "Preference-Applied": "return=representation"},
        json={
            "@odata.context": f"{API}$metadata#work365_subscriptions(work365_subscriptionid)"
            "/$entity",
            "@odata.etag": 'W/"71004878"',
            "work365_subscriptionid": RECORD.upper(),
        },
    )

    assert repository(sleeps).create(a_subscription(), None, None, KEYED) == RECORD
    assert len(rsps.calls) == 1


def test_a_keyed_create_answered_without_a_row_is_read_back_by_key(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.patch(KEY_URL, status=204, headers={"OData-EntityId": KEY_URL})
    rsps.get(
        KEY_URL,
        match=[matchers.query_param_matcher({"$select": RECORD_SELECT})],
        json=record_json(RECORD, SUB),
    )

    assert repository(sleeps).create(a_subscription(), None, None, KEYED) == RECORD


def keyed_writer(rsps_sleeps: list[float], summary: RunSummary) -> BatchWriter:
    return BatchWriter(
        repository(rsps_sleeps),
        a_world(records=[], create_missing=True),
        KEYED,
        summary,
        logging.LoggerAdapter(logging.getLogger("test")),
        WriteLimits(batch_size=100, deadline=None, monotonic=lambda: 0.0, sleep=rsps_sleeps.append),
    )


def sent_operations(call: Any) -> list[Operation]:
    """The operations of a sent `$batch`, read by the sandbox's own parser."""
    parts = parse_batch(call.request.headers["Content-Type"], call.request.body)
    assert all(isinstance(p, Operation) for p in parts)
    return [p for p in parts if isinstance(p, Operation)]


def test_a_batch_create_through_the_key_is_read_back_in_one_query(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    summary = RunSummary(run_id="r", started_at=datetime.now(UTC))
    write = keyed_writer(sleeps, summary)
    rsps.post(
        f"{API}$batch",
        body=batch_answer((204, {"OData-EntityId": KEY_URL}, "")),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )
    rsps.get(
        SUBS,
        match=[
            matchers.query_param_matcher(
                {
                    "$select": RECORD_SELECT,
                    "$filter": in_query("work365_providersubscriptionid", SUB),
                }
            )
        ],
        json={"value": [record_json(RECORD, SUB)]},
    )
    decisions = plan(a_world(records=[], create_missing=True))
    assert [d.action for d in decisions] == [Action.CREATE]

    [final] = write.write(decisions)

    assert (final.reason, final.action) == (Reason.DEFAULT_CONTRACT, Action.CREATE)
    assert final.record is not None and final.record.id == RECORD
    assert (summary.created, summary.errors) == (1, [])
    [part] = sent_operations(rsps.calls[0])
    assert (part.method, part.url) == ("PATCH", KEY_URL)
    assert part.headers.get("If-None-Match") == "*"
    assert part.headers.get("Prefer") is None  # not documented inside a $batch part
    assert json.loads(part.body) == {  # the key is in the URL, not repeated in the body
        "work365_name": "Microsoft 365 E3",
        "work365_Account@odata.bind": f"/accounts({ACCOUNT})",
        "work365_BillingContract@odata.bind": f"/work365_billingcontracts({CONTRACT})",
    }


def test_a_batch_answer_that_carries_the_row_needs_no_read_back(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    summary = RunSummary(run_id="r", started_at=datetime.now(UTC))
    rsps.post(
        f"{API}$batch",
        body=batch_answer(
            (
                201,
                {"OData-EntityId": KEY_URL, "Content-Type": "application/json"},
                json.dumps({"@odata.etag": 'W/"5"', "work365_subscriptionid": RECORD}),
            )
        ),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )

    [final] = keyed_writer(sleeps, summary).write(plan(a_world(records=[], create_missing=True)))

    assert final.record is not None and final.record.id == RECORD
    assert summary.created == 1
    assert len(rsps.calls) == 1


def test_a_keyed_create_that_cannot_be_read_back_is_an_error_that_says_so(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    summary = RunSummary(run_id="r", started_at=datetime.now(UTC))
    rsps.post(
        f"{API}$batch",
        body=batch_answer((204, {"OData-EntityId": KEY_URL}, "")),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )
    rsps.get(SUBS, json={"value": []})
    world = a_world(records=[], create_missing=True, provider_accounts=[a_provider_account()])

    [final] = keyed_writer(sleeps, summary).write(plan(world))

    assert final.reason is Reason.ERROR
    assert final.message.startswith(NOT_READ_BACK)
    assert summary.created == 0
    assert [e["code"] for e in summary.errors] == ["created-not-found"]
