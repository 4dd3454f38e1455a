"""Dataverse Web API: the client and the emulator against Microsoft's documented examples.

Two tests per documented operation: the client parses the documented answer (`responses`, exact
URLs and headers), and the emulator answers the documented request with the documented status,
headers and body shape. Fixtures and their pages: `fixtures/dataverse.py`; the table of
operation, page and tests: docs/fidelity.md.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests
import responses
from responses import matchers

from work365_fn.adapters.dataverse_metadata import (
    SubscriptionBindings,
    has_alternate_key,
    subscription_bindings,
)
from work365_fn.adapters.dataverse_repository import Repository, deterministic_record_id
from work365_fn.adapters.odata_batch import BatchOperation
from work365_fn.adapters.partner_center import parse_subscription
from work365_fn.adapters.schema import Schema
from work365_fn.errors import ConflictError, ThrottledError
from work365_fn.rules.model import SubscriptionRecord
from work365_fn.sandbox.core import Response as SandboxResponse
from work365_fn.sandbox.dataverse import SETTING_ROW_ID
from work365_fn.sandbox.faults import Limiter, Limits, Slot

from ..contract.clients import TOKEN, dv_client, policy
from . import multipart
from .fixtures import dataverse as doc
from .fixtures.partner_center import NCE_SUBSCRIPTION
from .seed import ACC, CON, CUS, PSUB, REC, Service
from .shape import assert_shape

SCHEMA = Schema()
SUBS = SCHEMA.subscription
# Formatted values: a lookup's `_x_value@OData.Community.Display.V1.FormattedValue` is the related
# row's primary name, sent only when the Prefer header asks for it.
# https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/select-columns#formatted-values
FORMATTED = "OData.Community.Display.V1.FormattedValue"
FORMATTED_PREFER = f'odata.maxpagesize=5000,odata.include-annotations="{FORMATTED}"'
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READ_HEADERS = {**doc.ODATA_HEADERS, **AUTH}
WRITE_HEADERS = {**doc.ODATA_HEADERS, "Content-Type": "application/json; charset=utf-8", **AUTH}
ROW = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
BINDINGS = SubscriptionBindings("work365_BillingContract", "work365_Account", alternate_key=False)
KEYED = SubscriptionBindings("work365_BillingContract", "work365_Account", alternate_key=True)


def _json(response: requests.Response) -> Any:
    assert "application/json" in response.headers.get("Content-Type", ""), response.headers
    return response.json()


def _error(response: requests.Response, status: int) -> dict[str, str]:
    """The documented error body, exactly {"error": {"code", "message"}}."""
    assert response.status_code == status, response.text
    body = _json(response)
    assert_shape(body, doc.ERROR_SHAPE, exact=True)
    return dict(body["error"])


def _etag(dataverse: Service, entity_set: str, row_id: str) -> str:
    response = dataverse.get(f"{entity_set}({row_id})?$select=work365_name")
    assert response.status_code == 200, response.text
    return str(response.json()["@odata.etag"])


def _query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


# ==== a paged query =============================================================================


def test_client_follows_the_documented_pages(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    for page in (doc.PAGE_1, doc.PAGE_2, doc.PAGE_3):
        rsps.get(
            page.url,
            match=[matchers.header_matcher({**page.request_headers, **AUTH})],
            json=page.response_body,
            headers=dict(page.response_headers),
        )

    rows = list(dv_client(policy(sleeps), page_size=2).iter_rows("contacts", select=["fullname"]))

    assert [r["fullname"] for r in rows] == [
        "Yvonne McKay (sample)",
        "Susanna Stubberod (sample)",
        "Nancy Anderson (sample)",
        "Maria Campbell (sample)",
        "Sidney Higa (sample)",
    ]
    # @odata.nextLink followed verbatim: not re-encoded, nothing appended.
    assert [c.request.url for c in rsps.calls] == [doc.PAGE_1.url, doc.NEXT_LINK_2, doc.NEXT_LINK_3]


def test_emulator_pages_a_query_as_documented(dataverse: Service) -> None:
    path = f"{SUBS.entity_set}?$select={SUBS.name}"
    response = dataverse.get(path, Prefer="odata.maxpagesize=2")
    pages = [response]
    while "@odata.nextLink" in pages[-1].json():
        link = pages[-1].json()["@odata.nextLink"]
        assert link.startswith(f"{dataverse.url(path)}&$skiptoken="), link
        pages.append(dataverse.get(link, Prefer="odata.maxpagesize=2"))
        assert len(pages) < 10

    # The page's shape, its contact's columns read as ours (etag, the $select, the id).
    documented = {
        "@odata.context": "",
        "value": [{"@odata.etag": 'W/"1"', SUBS.name: "", SUBS.id: ""}],
    }
    for page in pages:
        assert page.status_code == 200
        assert page.headers["OData-Version"] == "4.0"
        assert page.headers["Preference-Applied"] == "odata.maxpagesize=2"
        body = _json(page)
        assert body["@odata.context"] == f"{dataverse.base}$metadata#{SUBS.entity_set}({SUBS.name})"
        assert_shape(body, documented)
        for row in body["value"]:
            assert set(row) == {"@odata.etag", SUBS.name, SUBS.id}
    rows = [row[SUBS.id] for page in pages for row in page.json()["value"]]
    assert [len(p.json()["value"]) for p in pages] == [2, 2, 1]
    assert sorted(rows) == sorted(REC[1:])


# ==== query functions: In on a plain column and on a lookup ====================================


def test_client_sends_in_with_the_plain_column_name(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    pa = SCHEMA.provider_account
    rsps.get(
        f"{doc.API}{pa.entity_set}",
        match=[
            matchers.header_matcher({**READ_HEADERS, "Prefer": FORMATTED_PREFER}),
            matchers.query_param_matcher(
                {"$filter": doc.in_filter(pa.customer_id, [CUS[1], CUS[2]])}, strict_match=False
            ),
        ],
        json=doc.collection(
            pa.entity_set,
            f"{pa.id},{pa.name},{pa.customer_id},_{pa.account}_value",
            [
                {
                    "@odata.etag": 'W/"81359849"',
                    pa.id: ROW,
                    pa.name: "Litware, Inc. (sample)",
                    pa.customer_id: CUS[1],
                    f"_{pa.account}_value@{FORMATTED}": "Litware Account",
                    f"_{pa.account}_value": doc.LOOKUP_ROW["_primarycontactid_value"],
                }
            ],
        ),
    )

    (found,) = Repository(dv_client(policy(sleeps)), SCHEMA).provider_accounts_of_customers(
        [CUS[2], CUS[1].upper()]
    )

    assert (found.customer_id, found.account_id, found.account_name) == (
        CUS[1],
        doc.LOOKUP_ROW["_primarycontactid_value"],
        "Litware Account",
    )


def _contracts_answer(rows: list[tuple[str, str]]) -> dict[str, Any]:
    t = SCHEMA.billing_contract
    return doc.collection(
        t.entity_set,
        f"{t.id},{t.name},{t.is_default},{t.state},_{t.account}_value",
        [
            {
                "@odata.etag": 'W/"81359849"',
                t.id: contract,
                t.name: "Default",
                t.is_default: True,
                t.state: 0,
                f"_{t.account}_value": account,
            }
            for contract, account in rows
        ],
    )


def _provider_accounts_answer(rows: list[tuple[str, str]]) -> dict[str, Any]:
    t = SCHEMA.provider_account
    return doc.collection(
        t.entity_set,
        f"{t.id},{t.name},{t.customer_id},_{t.account}_value",
        [
            {
                "@odata.etag": 'W/"1"',
                t.id: pa,
                t.name: "PA",
                t.customer_id: CUS[1],
                f"_{t.account}_value": account,
            }
            for pa, account in rows
        ],
    )


LOOKUP_READS: list[tuple[str, str, str, Callable[[Repository, list[str]], list[Any]]]] = [
    (
        "default contracts of accounts",
        SCHEMA.billing_contract.entity_set,
        f"{SCHEMA.billing_contract.is_default} eq true and "
        + doc.in_filter(SCHEMA.billing_contract.account, [ACC[1]]),
        lambda repo, ids: repo.default_contracts_of_accounts(ids),
    ),
    (
        "contracts of accounts",
        SCHEMA.billing_contract.entity_set,
        doc.in_filter(SCHEMA.billing_contract.account, [ACC[1]]),
        lambda repo, ids: repo.contracts_of_accounts(ids),
    ),
    (
        "provider accounts of accounts",
        SCHEMA.provider_account.entity_set,
        doc.in_filter(SCHEMA.provider_account.account, [ACC[1]]),
        lambda repo, ids: repo.provider_accounts_of_accounts(ids),
    ),
]


@pytest.mark.parametrize(
    ("entity_set", "flt", "read"),
    [pytest.param(s, f, r, id=name) for name, s, f, r in LOOKUP_READS],
)
def test_client_sends_in_on_a_lookup_by_its_logical_name(
    rsps: responses.RequestsMock,
    sleeps: list[float],
    entity_set: str,
    flt: str,
    read: Callable[[Repository, list[str]], list[Any]],
) -> None:
    answer = (
        _contracts_answer([(CON[1], ACC[1])])
        if entity_set == SCHEMA.billing_contract.entity_set
        else _provider_accounts_answer([(ROW, ACC[1])])
    )
    rsps.get(
        f"{doc.API}{entity_set}",
        match=[matchers.query_param_matcher({"$filter": flt}, strict_match=False)],
        json=answer,
    )

    (found,) = read(Repository(dv_client(policy(sleeps)), SCHEMA), [ACC[1].upper()])

    assert found.account_id == ACC[1]
    assert "_value" not in _query_of(rsps.calls[0].request.url)["$filter"].split("In(")[1]


def test_emulator_answers_in_on_a_plain_column(dataverse: Service) -> None:
    pa = SCHEMA.provider_account
    response = dataverse.get(
        f"{pa.entity_set}?$select={pa.name},{pa.customer_id}"
        f"&$filter={doc.in_filter(pa.customer_id, [CUS[1], CUS[2]])}"
    )

    assert response.status_code == 200, response.text
    body = _json(response)
    assert_shape(body, {"@odata.context": "", "value": [{"@odata.etag": "", pa.name: ""}]})
    assert sorted(r[pa.customer_id] for r in body["value"]) == [CUS[1], CUS[2]]


def test_emulator_answers_in_on_a_lookup_by_its_logical_name(dataverse: Service) -> None:
    t = SCHEMA.billing_contract
    response = dataverse.get(
        f"{t.entity_set}?$select={t.name},_{t.account}_value"
        f"&$filter={doc.in_filter(t.account, [ACC[1]])}"
    )

    assert response.status_code == 200, response.text
    body = _json(response)
    assert sorted(r[t.id] for r in body["value"]) == [CON[1], CON[2]]
    assert {r[f"_{t.account}_value"] for r in body["value"]} == {ACC[1]}


def test_emulator_refuses_in_on_the_read_side_lookup_property(dataverse: Service) -> None:
    t = SCHEMA.billing_contract
    read_side = f"_{t.account}_value"
    response = dataverse.get(
        f"{t.entity_set}?$select={t.name}&$filter={doc.in_filter(read_side, [ACC[1]])}"
    )

    error = _error(response, 400)
    assert read_side in error["message"]


def test_emulator_answers_in_with_parameter_aliases(dataverse: Service) -> None:
    """The In page's own syntax: parameter aliases, double-quoted values ("Manage single
    quotes" in "Filter rows using OData")."""
    response = dataverse.get(
        f"{SUBS.entity_set}?$select={SUBS.name}&$filter={doc.IN_WITH_ALIASES}"
        f"&@p1='{SUBS.name}'&@p2=" + json.dumps(["E3", "O'Brien plan"])
    )

    assert response.status_code == 200, response.text
    assert sorted(r[SUBS.name] for r in _json(response)["value"]) == ["E3", "O'Brien plan"]


def test_emulator_answers_in_with_single_quoted_aliased_values(dataverse: Service) -> None:
    """The In page's syntax example writes the collection single-quoted:
    `&@p1='name'&@p2=['value','value']` (a quote inside doubled, as in any OData string)."""
    response = dataverse.get(
        f"{SUBS.entity_set}?$select={SUBS.name}&$filter={doc.IN_WITH_ALIASES}"
        f"&@p1='{SUBS.name}'&@p2=['E5','O''Brien plan']"
    )

    assert response.status_code == 200, response.text
    assert sorted(r[SUBS.name] for r in _json(response)["value"]) == ["E5", "O'Brien plan"]


def test_emulator_in_with_an_alias_given_no_value_is_refused(dataverse: Service) -> None:
    """An alias with no value is null, and In's parameters are not nullable."""
    response = dataverse.get(
        f"{SUBS.entity_set}?$select={SUBS.name}&$filter={doc.IN_WITH_ALIASES}&@p1='{SUBS.name}'"
    )

    error = _error(response, 400)
    assert error["code"] == "0x80060888"
    assert "'PropertyValues' of Microsoft.Dynamics.CRM.In cannot be null" in error["message"]
    assert "'@p2' has no value" in error["message"]


def test_emulator_answers_the_query_pages_aliased_orderby_and_filter(dataverse: Service) -> None:
    """`$orderby=@p1 asc,@p2 desc&$filter=@p1 ne @p3&@p1=revenue&@p2=name`, with a lookup for
    `revenue`: `@p3` is never given, so the filter reads `_x_value ne null`."""
    account = f"_{SUBS.account}_value"
    query = doc.ALIASED_QUERY.format(p1=account, p2=SUBS.name)
    response = dataverse.get(f"{SUBS.entity_set}?$select={SUBS.name},{account}&{query}")

    assert response.status_code == 200, response.text
    assert [r[SUBS.name] for r in _json(response)["value"]] == [
        "E5",
        "E3",
        "O'Brien plan",
        "Azure plan",
    ]


@pytest.mark.parametrize(
    "flt",
    [
        f"not {doc.IN_WITH_ALIASES}",
        f"not ({doc.IN_WITH_ALIASES})",
        f"{SUBS.name} ne null and not ({SUBS.name} eq 'x' or {doc.IN_WITH_ALIASES})",
        "not Microsoft.Dynamics.CRM.NotIn(PropertyName=@p1,PropertyValues=@p2)",
    ],
    ids=["not", "not-parenthesised", "not-over-a-group", "not-notin"],
)
def test_emulator_refuses_not_before_a_query_function(dataverse: Service, flt: str) -> None:
    response = dataverse.get(
        f"{SUBS.entity_set}?$select={SUBS.name}&$filter={flt}"
        f"&@p1='{SUBS.name}'&@p2=" + json.dumps(["E3"])
    )

    error = _error(response, 400)
    assert error == {"code": "0x80060888", "message": doc.NOT_QUERY_FUNCTION_MESSAGE}


def test_emulator_still_negates_contains_and_comparisons(dataverse: Service) -> None:
    """Only query functions are refused under `not`: the filter-rows page negates `contains`."""
    response = dataverse.get(
        f"{SUBS.entity_set}?$select={SUBS.name}"
        f"&$filter=not contains({SUBS.name},'plan') and not ({SUBS.name} eq 'E5')"
    )

    assert response.status_code == 200, response.text
    assert sorted(r[SUBS.name] for r in _json(response)["value"]) == ["E3", "Visio"]


# ==== PATCH with If-Match ========================================================================


def test_client_update_answered_204(rsps: responses.RequestsMock, sleeps: list[float]) -> None:
    rsps.patch(
        doc.UPDATED.url,
        match=[
            matchers.header_matcher(
                {**WRITE_HEADERS, "If-Match": doc.UPDATED.request_headers["If-Match"]}
            ),
            matchers.json_params_matcher(doc.UPDATED.request_body),
        ],
        status=doc.UPDATED.status,
        headers=dict(doc.UPDATED.response_headers),
    )

    etag = dv_client(policy(sleeps)).update(
        "accounts", doc.ACCOUNT_1, doc.UPDATED.request_body, etag='W/"470868"'
    )

    assert etag is None  # the documented 204 carries no ETag


@pytest.mark.parametrize(
    "code", ["", doc.LIVE_VERSION_MISMATCH_CODE], ids=["documented-empty-code", "live-code"]
)
def test_client_update_on_a_changed_row_is_a_conflict(
    rsps: responses.RequestsMock, sleeps: list[float], code: str
) -> None:
    rsps.patch(
        doc.UPDATE_IF_MATCH.url,
        match=[matchers.header_matcher({**WRITE_HEADERS, "If-Match": doc.STALE_ETAG})],
        status=412,
        headers=dict(doc.UPDATE_IF_MATCH.response_headers),
        json=doc.error(code, doc.VERSION_MISMATCH),
    )

    with pytest.raises(ConflictError) as caught:
        dv_client(policy(sleeps)).update(
            "accounts", doc.ACCOUNT_1, doc.UPDATE_IF_MATCH.request_body, etag=doc.STALE_ETAG
        )

    assert caught.value.status == 412
    assert len(rsps.calls) == 1 and sleeps == []  # decided on the status, not retried


def test_emulator_conditional_update(dataverse: Service) -> None:
    path = f"{SUBS.entity_set}({REC[1]})"
    etag = _etag(dataverse, SUBS.entity_set, REC[1])

    done = dataverse("PATCH", path, headers={"If-Match": etag}, json={SUBS.name: "Renamed"})
    stale = dataverse("PATCH", path, headers={"If-Match": etag}, json={SUBS.name: "Again"})

    assert done.status_code == 204 and done.content == b""
    assert done.headers["OData-Version"] == "4.0"
    error = _error(stale, 412)
    assert error["code"] in ("", doc.LIVE_VERSION_MISMATCH_CODE)
    assert dataverse.get(f"{path}?$select={SUBS.name}").json()[SUBS.name] == "Renamed"


# ==== create-only upsert: primary key and alternate key ===========================================


def _subscription(pc_id: str) -> Any:
    sub = parse_subscription({**NCE_SUBSCRIPTION, "id": pc_id}, CUS[1])
    assert sub is not None
    return sub


def test_client_creates_through_the_primary_key(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    record_id = deterministic_record_id(PSUB[8])
    rsps.patch(
        f"{doc.API}{SUBS.entity_set}({record_id})",
        match=[matchers.header_matcher({**WRITE_HEADERS, "If-None-Match": "*"})],
        status=doc.CREATE_ONLY.status,
        headers=dict(doc.CREATE_ONLY.response_headers),
    )

    created = Repository(dv_client(policy(sleeps)), SCHEMA).create(
        _subscription(PSUB[8]), ACC[1], CON[1], BINDINGS
    )

    assert created == record_id
    sent = json.loads(rsps.calls[0].request.body)
    assert sent[SUBS.provider_subscription_id] == PSUB[8]
    assert sent["work365_BillingContract@odata.bind"] == f"/work365_billingcontracts({CON[1]})"


@pytest.mark.parametrize(
    "code", ["", doc.LIVE_DUPLICATE_CODE], ids=["documented-empty-code", "live-code"]
)
@pytest.mark.parametrize("bindings", [BINDINGS, KEYED], ids=["primary-key", "alternate-key"])
def test_client_create_of_an_existing_row_is_a_conflict(
    rsps: responses.RequestsMock, sleeps: list[float], code: str, bindings: SubscriptionBindings
) -> None:
    address = (
        f"{SUBS.provider_subscription_id}='{PSUB[8]}'"
        if bindings.alternate_key
        else deterministic_record_id(PSUB[8])
    )
    rsps.patch(
        f"{doc.API}{SUBS.entity_set}({address})",
        match=[matchers.header_matcher({**WRITE_HEADERS, "If-None-Match": "*"})],
        status=412,
        headers=dict(doc.CREATE_ONLY_EXISTS.response_headers),
        json=doc.error(code, doc.ALREADY_EXISTS),
    )

    with pytest.raises(ConflictError) as caught:
        Repository(dv_client(policy(sleeps)), SCHEMA).create(
            _subscription(PSUB[8]), None, None, bindings
        )

    assert caught.value.status == 412
    assert len(rsps.calls) == 1 and sleeps == []


def test_client_creates_through_the_alternate_key_and_reads_the_id_from_the_row(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    new_id = doc.CREATE_BY_KEY_RETURNING.response_body["example_recordid"]
    rsps.patch(
        f"{doc.API}{SUBS.entity_set}({SUBS.provider_subscription_id}='{PSUB[8]}')",
        match=[
            matchers.header_matcher(
                {**WRITE_HEADERS, "If-None-Match": "*", "Prefer": "return=representation"}
            ),
            matchers.query_param_matcher({"$select": SUBS.id}),  # the primary key only
        ],
        status=201,
        headers={
            k: v
            for k, v in doc.CREATE_BY_KEY_RETURNING.response_headers.items()
            if k != "Content-Type"
        },
        json={
            "@odata.context": (f"{doc.API}$metadata#{SUBS.entity_set}({SUBS.id})/$entity"),
            "@odata.etag": doc.CREATE_BY_KEY_RETURNING.response_body["@odata.etag"],
            SUBS.id: new_id,
        },
    )

    created = Repository(dv_client(policy(sleeps)), SCHEMA).create(
        _subscription(PSUB[8]), ACC[1], None, KEYED
    )

    assert created == new_id
    # "Don't include the alternate key data in the portion of the request that represents the
    # data to save."
    assert SUBS.provider_subscription_id not in json.loads(rsps.calls[0].request.body)


def test_client_creating_through_the_alternate_key_never_takes_the_key_for_the_id(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    """Answered 204 with the documented OData-EntityId (the key, not the id): the id comes from
    a re-read by key, never from the GUID inside the key."""
    keyed = f"{SUBS.entity_set}({SUBS.provider_subscription_id}='{PSUB[8]}')"
    rsps.patch(
        f"{doc.API}{keyed}",
        status=doc.CREATE_BY_KEY.status,
        headers={"OData-Version": "4.0", "OData-EntityId": f"{doc.API}{keyed}"},
    )
    rsps.get(
        f"{doc.API}{keyed}",
        json={
            "@odata.context": f"{doc.API}$metadata#{SUBS.entity_set}/$entity",
            "@odata.etag": 'W/"71004878"',
            SUBS.id: REC[5],
            SUBS.provider_subscription_id: PSUB[8],
        },
    )

    created = Repository(dv_client(policy(sleeps)), SCHEMA).create(
        _subscription(PSUB[8]), None, None, KEYED
    )

    assert created == REC[5]
    assert created != PSUB[8]


def test_emulator_create_only_through_the_primary_key(dataverse: Service) -> None:
    new_id = str(uuid.uuid4())
    path = f"{SUBS.entity_set}({new_id})"
    body = {SUBS.name: "New", SUBS.provider_subscription_id: PSUB[8]}

    created = dataverse("PATCH", path, headers={"If-None-Match": "*"}, json=body)
    again = dataverse("PATCH", path, headers={"If-None-Match": "*"}, json={SUBS.name: "Twice"})

    assert created.status_code == 204 and created.content == b""
    assert created.headers["OData-Version"] == "4.0"
    error = _error(again, 412)
    assert error["code"] in ("", doc.LIVE_DUPLICATE_CODE)
    assert dataverse.get(f"{path}?$select={SUBS.name}").json()[SUBS.name] == "New"


def test_emulator_create_only_through_the_alternate_key(dataverse: Service) -> None:
    keyed = f"{SUBS.entity_set}({SUBS.provider_subscription_id}='{PSUB[8]}')"

    created = dataverse("PATCH", keyed, headers={"If-None-Match": "*"}, json={SUBS.name: "By key"})
    again = dataverse("PATCH", keyed, headers={"If-None-Match": "*"}, json={SUBS.name: "Twice"})

    assert created.status_code == doc.CREATE_BY_KEY.status, created.text
    for header in doc.CREATE_BY_KEY.response_headers:
        assert header in created.headers, header
    # The documented OData-EntityId of a row addressed by its key is the key form.
    assert unquote(created.headers["OData-EntityId"]) == dataverse.url(keyed)
    _error(again, 412)
    row = dataverse.get(f"{keyed}?$select={SUBS.name},{SUBS.provider_subscription_id}").json()
    # The key values in the URL are copied into the new row.
    assert (row[SUBS.name], row[SUBS.provider_subscription_id]) == ("By key", PSUB[8])


def test_emulator_upsert_through_the_alternate_key_returning_the_row(dataverse: Service) -> None:
    keyed = f"{SUBS.entity_set}({SUBS.provider_subscription_id}='{PSUB[8]}')?$select={SUBS.id}"
    headers = dict(doc.CREATE_BY_KEY_RETURNING.request_headers)

    created = dataverse("PATCH", keyed, headers=headers, json={SUBS.name: "3:3"})
    updated = dataverse("PATCH", keyed, headers=headers, json={SUBS.name: "3:3 Updated"})

    for answer, exchange in (
        (created, doc.CREATE_BY_KEY_RETURNING),
        (updated, doc.UPDATE_BY_KEY_RETURNING),
    ):
        assert answer.status_code == exchange.status, answer.text
        for header in exchange.response_headers:
            assert header in answer.headers, (exchange.status, header, dict(answer.headers))
        body = _json(answer)
        documented = exchange.response_body
        assert_shape(
            body,
            {"@odata.context": "", "@odata.etag": documented["@odata.etag"], SUBS.id: ""},
            exact=True,
        )
        assert body["@odata.context"].endswith(f"$metadata#{SUBS.entity_set}({SUBS.id})/$entity")
        assert answer.headers["ETag"] == body["@odata.etag"]
    assert created.headers["Preference-Applied"] == "return=representation"
    assert created.json()[SUBS.id] == updated.json()[SUBS.id]


# ==== @odata.bind set and cleared ================================================================


def _record(etag: str = 'W/"123"') -> SubscriptionRecord:
    return SubscriptionRecord(
        id=ROW,
        provider_subscription_id=PSUB[1],
        account_id=ACC[1],
        billing_contract_id=None,
        created_on=None,
        etag=etag,
        name="E3",
    )


def test_client_sets_a_lookup_with_odata_bind(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.patch(
        f"{doc.API}{SUBS.entity_set}({ROW})",
        match=[
            matchers.header_matcher({**WRITE_HEADERS, "If-Match": 'W/"123"'}),
            matchers.json_params_matcher(
                {"work365_BillingContract@odata.bind": f"/work365_billingcontracts({CON[1]})"}
            ),
        ],
        status=doc.BIND_SET.status,
        headers=dict(doc.BIND_SET.response_headers),
    )

    Repository(dv_client(policy(sleeps)), SCHEMA).assign(_record(), CON[1].upper(), BINDINGS)


def test_client_clears_a_lookup_with_a_null_odata_bind(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.patch(
        f"{doc.API}{SUBS.entity_set}({ROW})",
        match=[
            matchers.header_matcher({**WRITE_HEADERS, "If-Match": 'W/"123"'}),
            matchers.json_params_matcher({"work365_BillingContract@odata.bind": None}),
        ],
        status=doc.BIND_CLEARED.status,
        headers=dict(doc.BIND_CLEARED.response_headers),
    )

    Repository(dv_client(policy(sleeps)), SCHEMA).clear_contract(
        ROW, "work365_BillingContract", etag='W/"123"'
    )


def _navigation(dataverse: Service, table: str, attribute: str) -> str:
    response = dataverse.get(
        f"EntityDefinitions(LogicalName='{table}')/ManyToOneRelationships"
        f"?$select={doc.MANY_TO_ONE_SELECT}"
    )
    for rel in _json(response)["value"]:
        if rel["ReferencingAttribute"] == attribute:
            return str(rel["ReferencingEntityNavigationPropertyName"])
    raise AssertionError(f"no relationship for {table}.{attribute}")


@pytest.mark.parametrize(
    "target",
    ["work365_billingcontracts({id})", "/work365_billingcontracts({id})"],
    ids=["documented-form", "leading-slash"],
)
def test_emulator_sets_and_clears_a_lookup_with_odata_bind(dataverse: Service, target: str) -> None:
    nav = _navigation(dataverse, SUBS.table, SUBS.billing_contract)
    path = f"{SUBS.entity_set}({REC[2]})"
    read = f"{path}?$select=_{SUBS.billing_contract}_value"

    bound = dataverse(
        "PATCH",
        path,
        headers={"If-Match": _etag(dataverse, SUBS.entity_set, REC[2])},
        json={f"{nav}@odata.bind": target.format(id=CON[1])},
    )
    after_bind = dataverse.get(read).json()[f"_{SUBS.billing_contract}_value"]
    cleared = dataverse(
        "PATCH",
        path,
        headers={"If-Match": _etag(dataverse, SUBS.entity_set, REC[2])},
        json={f"{nav}@odata.bind": None},
    )

    assert (bound.status_code, cleared.status_code) == (204, 204), (bound.text, cleared.text)
    assert bound.headers["OData-Version"] == "4.0"
    assert after_bind == CON[1]
    assert dataverse.get(read).json()[f"_{SUBS.billing_contract}_value"] is None


def test_emulator_clears_a_lookup_by_the_navigation_property_name(dataverse: Service) -> None:
    """`{"<nav>": null}`, without `@odata.bind`: the page's other way to disassociate."""
    nav = _navigation(dataverse, SUBS.table, SUBS.billing_contract)
    path = f"{SUBS.entity_set}({REC[2]})"
    read = f"{path}?$select=_{SUBS.billing_contract}_value"
    bound = dataverse(
        "PATCH",
        path,
        json={f"{nav}@odata.bind": f"/{SCHEMA.billing_contract.entity_set}({CON[1]})"},
    )
    assert bound.status_code == 204, bound.text
    assert dataverse.get(read).json()[f"_{SUBS.billing_contract}_value"] == CON[1]

    cleared = dataverse(
        "PATCH",
        path,
        headers=doc.BIND_CLEARED_BY_NAME.request_headers,
        json={nav: doc.BIND_CLEARED_BY_NAME.request_body["parentcustomerid_account"]},
    )

    assert cleared.status_code == doc.BIND_CLEARED_BY_NAME.status, cleared.text
    assert cleared.headers["OData-Version"] == "4.0"
    assert dataverse.get(read).json()[f"_{SUBS.billing_contract}_value"] is None


# ==== $batch: a change set, and odata.continue-on-error ==========================================


def test_client_batch_request_has_the_documented_layout(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    exchange = doc.CONTINUE_ON_ERROR_RESPONSE
    rsps.post(
        exchange.url,
        match=[
            matchers.header_matcher(
                {**doc.ODATA_HEADERS, **AUTH, "Prefer": "odata.continue-on-error"}
            )
        ],
        status=exchange.status,
        headers={"OData-Version": "4.0"},
        content_type=exchange.response_headers["Content-Type"],
        body=exchange.response_body,
    )
    client = dv_client(policy(sleeps))
    operations: list[BatchOperation] = [
        client.update_operation(SUBS.entity_set, REC[n], {SUBS.name: f"n{n}"}, etag=f'W/"{n}"')
        for n in (1, 2, 3)
    ]

    results = client.batch(operations)

    sent = rsps.calls[0].request
    parts = multipart.parse(sent.headers["Content-Type"], sent.body)
    assert re.fullmatch(r'multipart/mixed; boundary="?batch_[^"]+"?', sent.headers["Content-Type"])
    assert len(parts) == 3
    for n, part in zip((1, 2, 3), parts, strict=True):
        assert part.mime == {
            "content-type": "application/http",
            "content-transfer-encoding": "binary",
        }
        assert part.start == f"PATCH {doc.API}{SUBS.entity_set}({REC[n]}) HTTP/1.1"
        assert part.headers["content-type"] == "application/json; type=entry"
        assert part.headers["if-match"] == f'W/"{n}"'
        assert part.json() == {SUBS.name: f"n{n}"}
    # The documented answer: one result per request, the failed one with its error.
    assert [r.status for r in results] == [400, 204, 204]
    assert results[0].error() == (
        doc.SUBJECT_TOO_LONG["error"]["code"],
        doc.SUBJECT_TOO_LONG["error"]["message"],
    )
    assert results[1].entity_id and results[1].entity_id.startswith(f"{doc.API}tasks(")


def test_client_reads_the_documented_change_set_answer(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    exchange = doc.CHANGESET_RESPONSE
    rsps.post(
        exchange.url,
        status=exchange.status,
        headers={"OData-Version": "4.0"},
        content_type=exchange.response_headers["Content-Type"],
        body=exchange.response_body,
    )
    client = dv_client(policy(sleeps))
    operations = [
        client.update_operation(SUBS.entity_set, REC[n], {SUBS.name: "x"}, etag='W/"1"')
        for n in (1, 2, 3, 4)
    ]

    results = client.batch(operations)

    assert [r.status for r in results] == [204, 204, 204, 200]
    assert json.loads(results[3].body)["value"][0]["subject"] == "Task 1 in batch"


def test_client_reads_a_batch_stopped_by_an_error(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    exchange = doc.STOPPED_ON_ERROR_RESPONSE
    rsps.post(
        exchange.url,
        status=exchange.status,
        headers={"OData-Version": "4.0"},
        content_type=exchange.response_headers["Content-Type"],
        body=exchange.response_body,
    )
    client = dv_client(policy(sleeps))
    operations = [
        client.update_operation(SUBS.entity_set, REC[n], {SUBS.name: "x"}, etag='W/"1"')
        for n in (1, 2)
    ]

    results = client.batch(operations)

    assert [r.status for r in results] == [400]  # the rest did not run
    assert results[0].error()[0] == "0x80044331"


def _patch_part(
    dataverse: Service, n: int, name: str, *, etag: str | None = None, content_id: str | None = None
) -> str:
    return doc.request_part(
        "PATCH",
        f"/api/data/v9.2/{SUBS.entity_set}({REC[n]})",
        {SUBS.name: name},
        content_id=content_id,
        headers={"If-Match": etag or _etag(dataverse, SUBS.entity_set, REC[n])},
    )


def _send_batch(
    dataverse: Service, parts: list[str], *, continue_on_error: bool = False
) -> requests.Response:
    boundary = f"batch_{uuid.uuid4()}"
    headers = {
        "If-None-Match": "null",
        "Content-Type": f'multipart/mixed; boundary="{boundary}"',
    }
    if continue_on_error:
        headers["Prefer"] = "odata.continue-on-error"
    body = doc.batch_body(boundary, parts).encode("utf-8")
    return dataverse("POST", "$batch", headers=headers, data=body)


def _names(dataverse: Service) -> dict[str, str]:
    rows = dataverse.get(f"{SUBS.entity_set}?$select={SUBS.name}").json()["value"]
    return {row[SUBS.id]: row[SUBS.name] for row in rows}


def test_emulator_batch_with_a_change_set(dataverse: Service) -> None:
    inner = f"changeset_{uuid.uuid4()}"
    get = doc.request_part("GET", f"/api/data/v9.2/{SUBS.entity_set}({REC[3]})?$select={SUBS.name}")
    parts = [
        doc.changeset(
            inner,
            [
                _patch_part(dataverse, 1, "one", content_id="1"),
                _patch_part(dataverse, 2, "two", content_id="2"),
            ],
        ),
        get,
    ]

    response = _send_batch(dataverse, parts)

    assert response.status_code == 200, response.text
    assert response.headers["OData-Version"] == "4.0"
    answer = multipart.parse(response.headers["Content-Type"], response.content)
    documented = multipart.parse(
        doc.CHANGESET_RESPONSE.response_headers["Content-Type"],
        doc.CHANGESET_RESPONSE.response_body,
    )
    # As documented: the change set's answers nested in their own multipart part, then the GET's.
    assert [len(p.parts) for p in documented] == [3, 0]
    assert [len(p.parts) for p in answer] == [2, 0]
    for got, want in zip(answer[0].parts, documented[0].parts, strict=False):
        assert got.mime == want.mime  # application/http, binary, the request's Content-ID
        assert got.status == want.status == 204
        assert got.headers["odata-version"] == "4.0"
    assert answer[1].status == documented[1].status == 200
    assert_shape(answer[1].json(), {"@odata.context": "", "@odata.etag": "", SUBS.name: ""})
    names = _names(dataverse)
    assert (names[REC[1]], names[REC[2]]) == ("one", "two")


def test_emulator_change_set_is_all_or_nothing(dataverse: Service) -> None:
    before = _names(dataverse)
    inner = f"changeset_{uuid.uuid4()}"
    parts = [
        doc.changeset(
            inner,
            [
                _patch_part(dataverse, 1, "one", content_id="1"),
                _patch_part(dataverse, 2, "two", etag=doc.STALE_ETAG, content_id="2"),
            ],
        )
    ]

    response = _send_batch(dataverse, parts)

    # Without continue-on-error the batch answers with the failing request's status and answer.
    assert response.status_code == 412, response.text
    (part,) = multipart.parse(response.headers["Content-Type"], response.content)
    assert part.status == 412
    assert_shape(part.json(), doc.ERROR_SHAPE, exact=True)
    assert _names(dataverse) == before  # the first change was rolled back


@pytest.mark.parametrize("continue_on_error", [True, False], ids=["continue", "stop"])
def test_emulator_batch_error_handling(dataverse: Service, continue_on_error: bool) -> None:
    before = _names(dataverse)
    parts = [
        _patch_part(dataverse, 1, "one", etag=doc.STALE_ETAG),
        _patch_part(dataverse, 2, "two"),
        _patch_part(dataverse, 3, "three"),
    ]

    response = _send_batch(dataverse, parts, continue_on_error=continue_on_error)

    answers = multipart.parse(response.headers["Content-Type"], response.content)
    assert_shape(answers[0].json(), doc.ERROR_SHAPE, exact=True)
    names = _names(dataverse)
    if continue_on_error:
        assert response.status_code == doc.CONTINUE_ON_ERROR_RESPONSE.status == 200
        assert [a.status for a in answers] == [412, 204, 204]
        assert (names[REC[1]], names[REC[2]], names[REC[3]]) == (before[REC[1]], "two", "three")
    else:
        assert response.status_code == 412
        assert [a.status for a in answers] == [412]
        assert names == before
    for answer in answers:
        assert answer.mime["content-type"] == "application/http"
        assert answer.headers["odata-version"] == "4.0"


# ==== service protection: 429 with each code and Retry-After ======================================


@pytest.mark.parametrize("code", sorted(doc.THROTTLE_MESSAGES))
def test_client_waits_for_retry_after_on_each_service_protection_code(
    rsps: responses.RequestsMock, sleeps: list[float], code: str
) -> None:
    exchange = doc.throttled(code)
    rsps.get(
        exchange.url,
        status=429,
        headers=dict(exchange.response_headers),
        json=exchange.response_body,
    )
    rsps.get(exchange.url, json=doc.PAGE_3.response_body)

    rows = list(dv_client(policy(sleeps)).iter_rows("contacts", select=["fullname"]))

    assert len(rows) == 1
    assert sleeps == [float(doc.RETRY_AFTER_SECONDS)]


@pytest.mark.parametrize("code", sorted(doc.THROTTLE_MESSAGES))
def test_client_reports_each_service_protection_code(
    rsps: responses.RequestsMock, sleeps: list[float], code: str
) -> None:
    exchange = doc.throttled(code)
    rsps.post(
        f"{doc.API}$batch",
        status=429,
        headers=dict(exchange.response_headers),
        json=exchange.response_body,
    )
    client = dv_client(policy(sleeps))

    with pytest.raises(ThrottledError) as caught:
        client.batch([client.update_operation(SUBS.entity_set, ROW, {}, etag='W/"1"')])

    error = caught.value
    assert (error.status, error.code, error.retry_after) == (429, code, doc.RETRY_AFTER_SECONDS)
    assert len(rsps.calls) == 1  # a whole-batch 429 goes back to the caller, which shrinks


@pytest.mark.parametrize("code", sorted(doc.THROTTLE_MESSAGES))
def test_emulator_throttles_with_each_documented_code(
    dataverse: Service, sandbox: Any, code: str
) -> None:
    sandbox.faults.add(
        {"service": "dataverse", "kind": "429", "code": code, "retryAfter": doc.RETRY_AFTER_SECONDS}
    )

    response = dataverse.get(f"{SUBS.entity_set}?$select={SUBS.name}")

    error = _error(response, 429)
    assert response.headers["Retry-After"] == str(doc.RETRY_AFTER_SECONDS)
    assert error == {"code": code, "message": doc.THROTTLE_MESSAGES[code]}


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _throttled_answer(answer: Slot | SandboxResponse, code: str) -> None:
    assert isinstance(answer, SandboxResponse), "admitted, expected a 429"
    assert answer.status == 429
    assert re.fullmatch(r"\d+", answer.headers["Retry-After"]), answer.headers
    body = json.loads(answer.body)
    assert_shape(body, doc.ERROR_SHAPE, exact=True)
    assert body["error"]["code"] == code


def test_emulator_limits_the_number_of_requests() -> None:
    clock = _Clock()
    limiter = Limiter(Limits(dataverse_requests=2), clock)
    for _ in range(2):
        slot = limiter.acquire("dataverse")
        assert isinstance(slot, Slot)
        limiter.release(slot)

    _throttled_answer(limiter.acquire("dataverse"), "0x80072322")


def test_emulator_limits_the_combined_execution_time() -> None:
    clock = _Clock()
    limiter = Limiter(Limits(dataverse_execution_seconds=10), clock)
    slot = limiter.acquire("dataverse")
    assert isinstance(slot, Slot)
    clock.now += 11
    limiter.release(slot)

    _throttled_answer(limiter.acquire("dataverse"), "0x80072321")


def test_emulator_limits_concurrent_requests() -> None:
    limiter = Limiter(Limits(dataverse_concurrent=2), _Clock())
    held = [limiter.acquire("dataverse") for _ in range(2)]
    assert all(isinstance(slot, Slot) for slot in held)

    _throttled_answer(limiter.acquire("dataverse"), "0x80072326")


# ==== EntityDefinitions: ManyToOneRelationships and Keys =========================================


def test_client_reads_relationships_and_keys(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    table = SUBS.table
    base = f"{doc.API}EntityDefinitions(LogicalName='{table}')"
    rsps.get(
        f"{base}/ManyToOneRelationships",
        match=[
            matchers.query_param_matcher({"$select": doc.MANY_TO_ONE_SELECT}),
            matchers.header_matcher(READ_HEADERS),
        ],
        json=doc.many_to_one(
            table,
            [
                (SUBS.account, "account", "work365_Account", str(uuid.uuid4())),
                (
                    SUBS.billing_contract,
                    SCHEMA.billing_contract.table,
                    "work365_BillingContract",
                    str(uuid.uuid4()),
                ),
            ],
        ),
    )
    rsps.get(
        f"{base}/Keys",
        match=[matchers.query_param_matcher({"$select": doc.KEYS_SELECT})],
        json=doc.keys(
            table,
            [
                (
                    f"{SUBS.provider_subscription_id}_key",
                    [SUBS.provider_subscription_id],
                    "Active",
                    str(uuid.uuid4()),
                ),
            ],
        ),
    )

    bindings = subscription_bindings(dv_client(policy(sleeps)), SCHEMA)

    assert bindings == SubscriptionBindings(
        "work365_BillingContract", "work365_Account", alternate_key=True
    )


@pytest.mark.parametrize("status", ["Pending", "InProgress", "Failed"])
def test_client_uses_only_an_active_key(
    rsps: responses.RequestsMock, sleeps: list[float], status: str
) -> None:
    rsps.get(
        f"{doc.API}EntityDefinitions(LogicalName='{SUBS.table}')/Keys",
        json=doc.keys(
            SUBS.table,
            [("k", [SUBS.provider_subscription_id], status, str(uuid.uuid4()))],
        ),
    )
    assert not has_alternate_key(
        dv_client(policy(sleeps)), SUBS.table, SUBS.provider_subscription_id
    )


def test_emulator_serves_many_to_one_relationships(dataverse: Service) -> None:
    response = dataverse.get(
        f"EntityDefinitions(LogicalName='{SUBS.table}')/ManyToOneRelationships"
        f"?$select={doc.MANY_TO_ONE_SELECT}"
    )

    assert response.status_code == 200, response.text
    body = _json(response)
    assert "@odata.nextLink" not in body  # "There is no paging"
    assert_shape(body, {"@odata.context": "", "value": [doc.RELATIONSHIP_ITEM_SHAPE]})
    for item in body["value"]:
        assert set(item) == set(doc.RELATIONSHIP_ITEM_SHAPE)  # the $select, and MetadataId
    lookups = {(r["ReferencingAttribute"], r["ReferencedEntity"]) for r in body["value"]}
    assert {
        (SUBS.account, SCHEMA.account.table),
        (SUBS.billing_contract, SCHEMA.billing_contract.table),
    } <= lookups


def test_emulator_serves_keys(dataverse: Service) -> None:
    response = dataverse.get(
        f"EntityDefinitions(LogicalName='{SUBS.table}')/Keys?$select={doc.KEYS_SELECT}"
    )

    assert response.status_code == 200, response.text
    body = _json(response)
    assert_shape(body, {"@odata.context": "", "value": [doc.KEY_ITEM_SHAPE]})
    for item in body["value"]:
        assert set(item) == set(doc.KEY_ITEM_SHAPE)
        assert item["EntityKeyIndexStatus"] in doc.KEY_INDEX_STATUSES
    assert [k["KeyAttributes"] for k in body["value"]] == [[SUBS.provider_subscription_id]]


# ==== audit history ==============================================================================


def _paging_info(url: str) -> dict[str, Any]:
    """The PagingInfo parameter of a RetrieveAttributeChangeHistory call: inline, or the value
    of the parameter alias it names."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    match = re.search(r"PagingInfo=(@\w+|\{.*?\})(?:[,)])", path)
    assert match, f"no PagingInfo in {path}"
    raw = match.group(1)
    if raw.startswith("@"):
        raw = _query_of(url)[raw]
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


def test_client_reads_every_page_of_the_attribute_history(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    setting = SCHEMA.setting
    column = setting.associate_default
    pages = [
        doc.attribute_history(
            [doc.attribute_audit_detail(setting.table, column, False, True)],
            more=True,
            cookie=doc.PAGING_COOKIE_1,
            total=3,
        ),
        doc.attribute_history(
            [doc.attribute_audit_detail(setting.table, column, True, False)],
            more=True,
            cookie=doc.PAGING_COOKIE_2,
            total=3,
        ),
        doc.attribute_history(
            [doc.attribute_audit_detail(setting.table, column, False, True)],
            more=False,
            cookie="",
            total=3,
        ),
    ]
    for page in pages:
        rsps.add(
            responses.GET,
            re.compile(re.escape(f"{doc.API}RetrieveAttributeChangeHistory(") + ".*"),
            json=page,
        )

    pages = list(
        dv_client(policy(sleeps)).attribute_change_history(
            setting.entity_set, SETTING_ROW_ID, column
        )
    )
    details = [detail for page in pages for detail in page.items]

    assert [d["NewValue"][column] for d in details] == [True, False, True]
    infos = [_paging_info(call.request.url) for call in rsps.calls]
    assert [info.get("PageNumber") for info in infos] == [1, 2, 3]
    assert [info.get("PagingCookie") for info in infos[1:]] == [
        doc.PAGING_COOKIE_1,
        doc.PAGING_COOKIE_2,
    ]


def test_client_reads_the_audits_table_and_its_details(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    setting = SCHEMA.setting
    audit_id = "12869c65-d7d3-ec11-b656-281878f0eba9"
    rows = {
        **doc.AUDITS_QUERY.response_body,
        "value": [
            {
                **doc.AUDITS_QUERY.response_body["value"][0],
                "auditid": audit_id,
                "operation": 2,
                "objecttypecode": setting.table,
                "_objectid_value": SETTING_ROW_ID,
            }
        ],
    }
    rsps.get(re.compile(re.escape(f"{doc.API}audits?") + ".*"), json=rows)
    rsps.get(
        f"{doc.API}audits({audit_id})/Microsoft.Dynamics.CRM.RetrieveAuditDetails",
        match=[matchers.header_matcher(READ_HEADERS)],
        json=doc.AUDIT_DETAILS.response_body,
    )
    client = dv_client(policy(sleeps))

    (page,) = client.audit_rows(setting.table, SETTING_ROW_ID)
    (row,) = page.items
    detail = client.audit_detail(str(row["auditid"]))

    query = _query_of(rsps.calls[0].request.url)
    assert f"_objectid_value eq {SETTING_ROW_ID}" in query["$filter"]
    assert f"objecttypecode eq '{setting.table}'" in query["$filter"]
    assert query["$orderby"] == "createdon desc"
    assert row["createdon"] == "2022-05-12T22:19:12Z"
    assert detail["NewValue"]["_parentaccountid_value"] == "d249d106-38b5-ec11-983f-002248296cd0"


def test_client_follows_the_next_link_of_the_audits_table(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    setting = SCHEMA.setting
    body = doc.AUDITS_QUERY.response_body
    row = {**body["value"][0], "auditid": "12869c65-d7d3-ec11-b656-281878f0eba9"}
    next_link = f"{doc.API}audits?$select=auditid&$skiptoken=%3Ccookie%20pagenumber=%222%22%20/%3E"
    rsps.get(
        re.compile(re.escape(f"{doc.API}audits?") + ".*filter.*"),
        json={**body, "value": [row], "@odata.nextLink": next_link},
    )
    rsps.get(next_link, json={**body, "value": [{**row, "createdon": "2022-05-11T08:00:00Z"}]})

    pages = list(dv_client(policy(sleeps)).audit_rows(setting.table, SETTING_ROW_ID))

    assert [len(p.items) for p in pages] == [1, 1]
    assert rsps.calls[1].request.url == next_link
    assert "odata.maxpagesize=" in rsps.calls[0].request.headers["Prefer"]


def _toggle_setting(dataverse: Service, *values: bool) -> None:
    setting = SCHEMA.setting
    for value in values:
        response = dataverse(
            "PATCH",
            f"{setting.entity_set}({SETTING_ROW_ID})",
            headers={"If-Match": "*"},
            json={setting.associate_default: value},
        )
        assert response.status_code == 204, response.text


def test_emulator_pages_the_attribute_history_as_documented(dataverse: Service) -> None:
    setting = SCHEMA.setting
    _toggle_setting(dataverse, False, True)  # with the scenario's change: three changes
    target = "{'@odata.id':'" + f"{setting.entity_set}({SETTING_ROW_ID})" + "'}"

    def page(info: dict[str, Any]) -> dict[str, Any]:
        response = dataverse.get(
            f"{doc.ATTRIBUTE_HISTORY_PATH}?@target={target}"
            f"&@attributeLogicalName='{setting.associate_default}'"
            f"&@paginginfo={json.dumps(info)}",
            **{"If-None-Match": "null"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = _json(response)
        return body

    first = page({"PageNumber": 1, "Count": 1, "ReturnTotalRecordCount": True})
    details = list(first["AuditDetailCollection"]["AuditDetails"])
    bodies = [first]
    while bodies[-1]["AuditDetailCollection"]["MoreRecords"]:
        cookie = bodies[-1]["AuditDetailCollection"]["PagingCookie"]
        bodies.append(
            page(
                {
                    "PageNumber": len(bodies) + 1,
                    "Count": 1,
                    "PagingCookie": cookie,
                    "ReturnTotalRecordCount": True,
                }
            )
        )
        details += bodies[-1]["AuditDetailCollection"]["AuditDetails"]
        assert len(bodies) < 10

    # The page's answer, its `description` change read as a change of our column.
    column = setting.associate_default
    documented = {
        **doc.ATTRIBUTE_HISTORY_PAGE_1.response_body,
        "AuditDetailCollection": {
            **doc.ATTRIBUTE_HISTORY_PAGE_1.response_body["AuditDetailCollection"],
            "AuditDetails": [doc.attribute_audit_detail(setting.table, column, None, True)],
        },
    }
    for body in bodies:
        assert_shape(body, documented)
        for detail in body["AuditDetailCollection"]["AuditDetails"]:
            # No AuditRecord: the Web API's AuditDetail types don't return it.
            assert set(detail) == set(documented["AuditDetailCollection"]["AuditDetails"][0])
            for side in ("OldValue", "NewValue"):
                assert detail[side]["@odata.type"] == f"#Microsoft.Dynamics.CRM.{setting.table}"
    assert first["AuditDetailCollection"]["MoreRecords"] is True
    assert first["AuditDetailCollection"]["TotalRecordCount"] == 3
    assert len(details) == 3
    assert sorted(d["NewValue"][setting.associate_default] for d in details) == [False, True, True]


def test_emulator_pages_the_audits_table(dataverse: Service) -> None:
    setting = SCHEMA.setting
    _toggle_setting(dataverse, False, True)
    path = (
        f"audits?$select={doc.AUDITS_SELECT}&$orderby=createdon desc"
        f"&$filter=operation eq 2 and objecttypecode eq '{setting.table}'"
    )

    pages = [dataverse.get(path, Prefer="odata.maxpagesize=1")]
    while "@odata.nextLink" in pages[-1].json():
        pages.append(
            dataverse.get(pages[-1].json()["@odata.nextLink"], Prefer="odata.maxpagesize=1")
        )
        assert len(pages) < 10

    for response in pages:
        assert response.status_code == 200, response.text
        assert_shape(_json(response), doc.AUDITS_QUERY.response_body)
    rows = [row for response in pages for row in response.json()["value"]]
    assert len(rows) == 3
    assert {row["_objectid_value"] for row in rows} == {SETTING_ROW_ID}
    assert [r["createdon"] for r in rows] == sorted((r["createdon"] for r in rows), reverse=True)


def test_emulator_answers_retrieve_audit_details(dataverse: Service) -> None:
    setting = SCHEMA.setting
    _toggle_setting(dataverse, False)
    rows = dataverse.get(
        "audits?$select=auditid,createdon&$orderby=createdon desc"
        f"&$filter=objecttypecode eq '{setting.table}'"
    ).json()["value"]

    response = dataverse.get(
        f"audits({rows[0]['auditid']})/Microsoft.Dynamics.CRM.RetrieveAuditDetails",
        **{"If-None-Match": "null"},
    )

    assert response.status_code == 200, response.text
    body = _json(response)
    documented = doc.AUDIT_DETAILS.response_body
    # The page's detail, its `_parentaccountid_value` change read as a change of our column.
    assert_shape(
        body,
        {
            **documented,
            "AuditDetail": {
                **documented["AuditDetail"],
                "NewValue": {"@odata.type": "", setting.associate_default: True},
            },
        },
    )
    assert set(body["AuditDetail"]) == set(documented["AuditDetail"])  # no AuditRecord
    assert body["AuditDetail"]["NewValue"][setting.associate_default] is False


def _contracts_of_contoso(dataverse: Service, prefer: str | None) -> list[dict[str, Any]]:
    t = SCHEMA.billing_contract
    response = dataverse(
        "GET",
        f"{t.entity_set}?$select={t.name},_{t.account}_value"
        f"&$filter={doc.in_filter(t.account, [ACC[1]])}",
        headers={"Prefer": prefer} if prefer else None,
    )
    assert response.status_code == 200, response.text
    return list(_json(response)["value"])


@pytest.mark.parametrize("prefer", [FORMATTED_PREFER, 'odata.include-annotations="*"'])
def test_emulator_names_a_lookup_with_its_formatted_value_when_asked(
    dataverse: Service, prefer: str
) -> None:
    t = SCHEMA.billing_contract
    rows = _contracts_of_contoso(dataverse, prefer)
    assert {r[f"_{t.account}_value@{FORMATTED}"] for r in rows} == {"Contoso"}
    assert {r[f"_{t.account}_value"] for r in rows} == {ACC[1]}


def test_emulator_sends_no_formatted_value_unless_asked(dataverse: Service) -> None:
    rows = _contracts_of_contoso(dataverse, "odata.maxpagesize=10")
    assert rows
    assert not [k for r in rows for k in r if k.endswith(f"@{FORMATTED}")]


def test_emulator_names_a_lookup_in_a_batch_get_only_when_that_part_asks(
    dataverse: Service,
) -> None:
    select = f"$select={SUBS.name},_{SUBS.account}_value"
    url = f"/api/data/v9.2/{SUBS.entity_set}({REC[3]})?{select}"
    asked = doc.request_part("GET", url, headers={"Prefer": FORMATTED_PREFER})
    response = _send_batch(dataverse, [asked, doc.request_part("GET", url)])

    assert response.status_code == 200, response.text
    first, second = multipart.parse(response.headers["Content-Type"], response.content)
    assert first.json()[f"_{SUBS.account}_value@{FORMATTED}"] == "Fabrikam"
    assert f"_{SUBS.account}_value@{FORMATTED}" not in second.json()
