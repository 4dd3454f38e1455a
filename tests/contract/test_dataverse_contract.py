"""Dataverse Web API client against recorded API shapes: headers, paging, writes, errors."""

from __future__ import annotations

import json

import pytest
import responses
from responses import matchers

from work365_fn.adapters.dataverse import odata_string
from work365_fn.errors import (
    ApiError,
    ConflictError,
    InvalidResponseError,
    NotFoundError,
    ThrottledError,
)

from .clients import TOKEN, dv_client, policy
from .shapes import (
    API,
    DV_ALREADY_EXISTS,
    DV_CONTACTS_NEXT_LINK,
    DV_CONTACTS_PAGE_1,
    DV_CONTACTS_PAGE_2,
    DV_NOT_FOUND,
    DV_TOO_MANY_REQUESTS,
    DV_VERSION_MISMATCH,
    PC_SUBSCRIPTION,
    dv_error,
)

ROW = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
CONTRACT = "c0000000-0000-0000-0000-000000000001"
SUBSCRIPTIONS = f"{API}work365_subscriptions"
READ_HEADERS = {
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "Authorization": f"Bearer {TOKEN}",
}
WRITE_HEADERS = {
    "Accept": "application/json",
    "Content-Type": "application/json; charset=utf-8",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "Authorization": f"Bearer {TOKEN}",
}
BIND = {"work365_BillingContract@odata.bind": f"/work365_billingcontracts({CONTRACT})"}


def test_queries_send_the_odata_headers_and_the_page_size(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        f"{API}contacts",
        match=[
            matchers.query_param_matcher({"$select": "fullname"}),
            matchers.header_matcher({**READ_HEADERS, "Prefer": "odata.maxpagesize=2"}),
        ],
        json={**DV_CONTACTS_PAGE_1, "@odata.nextLink": None},
    )

    rows = list(dv_client(policy(sleeps), page_size=2).iter_rows("contacts", select=["fullname"]))

    assert [r["fullname"] for r in rows] == ["Yvonne McKay (sample)", "Susanna Stubberod (sample)"]
    assert rsps.calls[0].request.url == f"{API}contacts?$select=fullname"


def test_a_single_row_read_sends_no_paging_preference(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        f"{SUBSCRIPTIONS}({ROW})",
        match=[
            matchers.query_param_matcher({"$select": "work365_name"}),
            matchers.header_matcher(READ_HEADERS),
        ],
        json={"@odata.etag": 'W/"123"', "work365_subscriptionid": ROW, "work365_name": "E3"},
    )

    row = dv_client(policy(sleeps)).get_row(
        "work365_subscriptions", ROW.upper(), select=["work365_name"]
    )

    assert row["@odata.etag"] == 'W/"123"'
    assert "Prefer" not in rsps.calls[0].request.headers


def test_next_link_is_followed_byte_for_byte(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        f"{API}contacts",
        match=[matchers.query_param_matcher({"$select": "fullname"})],
        json=DV_CONTACTS_PAGE_1,
    )
    rsps.get(
        DV_CONTACTS_NEXT_LINK,
        match=[matchers.header_matcher({"Prefer": "odata.maxpagesize=2"})],
        json=DV_CONTACTS_PAGE_2,
    )

    rows = list(dv_client(policy(sleeps), page_size=2).iter_rows("contacts", select=["fullname"]))

    assert [r["contactid"] for r in rows] == [
        "49b0be2e-d01c-ed11-b83e-000d3a572421",
        "70bf4d48-34cb-ed11-b596-0022481d68cd",
        "d5026a4d-d01c-ed11-b83e-000d3a572421",
    ]
    assert rsps.calls[1].request.url == DV_CONTACTS_NEXT_LINK


def test_a_repeated_next_link_is_refused(rsps: responses.RequestsMock, sleeps: list[float]) -> None:
    rsps.get(
        f"{API}contacts",
        match=[matchers.query_param_matcher({"$select": "fullname"})],
        json=DV_CONTACTS_PAGE_1,
    )
    rsps.get(
        DV_CONTACTS_NEXT_LINK, json={**DV_CONTACTS_PAGE_2, "@odata.nextLink": DV_CONTACTS_NEXT_LINK}
    )

    with pytest.raises(InvalidResponseError) as caught:
        list(dv_client(policy(sleeps)).iter_rows("contacts", select=["fullname"]))

    assert caught.value.code == "paging-loop"
    assert len(rsps.calls) == 2


def test_a_next_link_to_another_host_is_refused(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    elsewhere = DV_CONTACTS_NEXT_LINK.replace("contoso.crm.dynamics.com", "evil.example.test")
    rsps.get(f"{API}contacts", json={**DV_CONTACTS_PAGE_1, "@odata.nextLink": elsewhere})

    with pytest.raises(InvalidResponseError) as caught:
        list(dv_client(policy(sleeps)).iter_rows("contacts", select=["fullname"]))

    assert caught.value.code == "invalid-paging"
    assert len(rsps.calls) == 1


def test_single_quotes_in_filter_literals_are_doubled(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        f"{API}work365_provideraccounts",
        match=[
            matchers.query_param_matcher(
                {"$select": "work365_name", "$filter": "work365_name eq 'O''Brien'"}
            )
        ],
        json={"value": []},
    )

    name = odata_string("O'Brien")
    rows = list(
        dv_client(policy(sleeps)).iter_rows(
            "work365_provideraccounts", select=["work365_name"], filter=f"work365_name eq {name}"
        )
    )

    assert rows == []
    assert rsps.calls[0].request.url == (
        f"{API}work365_provideraccounts?$select=work365_name"
        "&$filter=work365_name%20eq%20%27O%27%27Brien%27"
    )


def test_update_is_conditional_on_the_etag_and_binds_by_navigation_property(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.patch(
        f"{SUBSCRIPTIONS}({ROW})",
        match=[
            matchers.header_matcher({**WRITE_HEADERS, "If-Match": 'W/"123"'}),
            matchers.json_params_matcher(BIND),
        ],
        status=204,
        headers={"ETag": 'W/"124"'},
    )

    etag = dv_client(policy(sleeps)).update("work365_subscriptions", ROW, BIND, etag='W/"123"')

    assert etag == 'W/"124"'
    assert "If-None-Match" not in rsps.calls[0].request.headers


def test_a_changed_row_is_a_conflict_and_not_retried(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.patch(f"{SUBSCRIPTIONS}({ROW})", status=412, json=DV_VERSION_MISMATCH)

    with pytest.raises(ConflictError) as caught:
        dv_client(policy(sleeps)).update("work365_subscriptions", ROW, BIND, etag='W/"123"')

    # The documented body carries `"code": ""`: the status stands in for it.
    assert (caught.value.status, caught.value.code) == (412, "412")
    assert "RowVersion" in caught.value.detail
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_create_only_sends_if_none_match_star(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    body = {"work365_name": "Microsoft 365 Business Basic", **BIND}
    rsps.patch(
        f"{SUBSCRIPTIONS}({ROW})",
        match=[
            matchers.header_matcher({**WRITE_HEADERS, "If-None-Match": "*"}),
            matchers.json_params_matcher(body),
        ],
        status=204,
        headers={"OData-EntityId": f"{SUBSCRIPTIONS}({ROW})"},
    )

    entity_id = dv_client(policy(sleeps)).create_only("work365_subscriptions", ROW, body)

    assert entity_id == f"{SUBSCRIPTIONS}({ROW})"
    assert "If-Match" not in rsps.calls[0].request.headers


def test_create_only_of_an_existing_row_is_a_conflict(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.patch(f"{SUBSCRIPTIONS}({ROW})", status=412, json=DV_ALREADY_EXISTS)

    with pytest.raises(ConflictError) as caught:
        dv_client(policy(sleeps)).create_only("work365_subscriptions", ROW, {"work365_name": "x"})

    assert (caught.value.status, caught.value.code) == (412, "0x80040237")
    assert len(rsps.calls) == 1


def test_create_through_the_alternate_key_addresses_the_key(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    sub_id = PC_SUBSCRIPTION["id"]
    address = f"work365_providersubscriptionid={odata_string(sub_id)}"
    url = f"{SUBSCRIPTIONS}(work365_providersubscriptionid='{sub_id}')"
    rsps.patch(
        url,
        match=[matchers.header_matcher({"If-None-Match": "*"})],
        status=204,
        headers={"OData-EntityId": f"{SUBSCRIPTIONS}({ROW})"},
    )

    entity_id = dv_client(policy(sleeps)).create_only(
        "work365_subscriptions", address, {"work365_providersubscriptionid": sub_id}
    )

    assert entity_id == f"{SUBSCRIPTIONS}({ROW})"
    assert rsps.calls[0].request.url == url


def test_a_missing_row_is_not_found(rsps: responses.RequestsMock, sleeps: list[float]) -> None:
    rsps.get(f"{SUBSCRIPTIONS}({ROW})", status=404, json=DV_NOT_FOUND)

    with pytest.raises(NotFoundError) as caught:
        dv_client(policy(sleeps)).get_row("work365_subscriptions", ROW, select=["work365_name"])

    assert (caught.value.status, caught.value.code) == (404, "0x80040217")
    assert len(rsps.calls) == 1


def test_service_protection_429_waits_for_retry_after(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        f"{API}contacts",
        status=429,
        headers={"Retry-After": "3"},
        json=DV_TOO_MANY_REQUESTS,
    )
    rsps.get(f"{API}contacts", json=DV_CONTACTS_PAGE_2)

    rows = list(dv_client(policy(sleeps)).iter_rows("contacts", select=["fullname"]))

    assert len(rows) == 1
    assert sleeps == [3.0]
    assert len(rsps.calls) == 2


def test_error_mapping_keeps_the_service_code_and_request_id(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        f"{API}contacts",
        status=429,
        headers={
            "Retry-After": "12",
            "x-ms-service-request-id": "7d9ac3a1-1b2c-4d5e-8f90-123456789abc",
        },
        json=DV_TOO_MANY_REQUESTS,
    )

    with pytest.raises(ThrottledError) as caught:
        list(dv_client(policy(sleeps, max_attempts=1)).iter_rows("contacts", select=["fullname"]))

    error = caught.value
    assert (error.service, error.status, error.code) == ("dataverse", 429, "0x80072322")
    assert error.retry_after == 12.0
    assert error.request_id == "7d9ac3a1-1b2c-4d5e-8f90-123456789abc"
    assert "Number of requests exceeded the limit of 6000" in error.detail
    assert error.to_json("c5757d70-06f3-4f23-8367-5a9e55019f94")["code"] == "0x80072322"
    assert sleeps == []


def test_error_messages_never_carry_the_bearer_token(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    # A gateway that echoes the request back in its error text.
    echo = dv_error("0x80048d19", f"Bad request. Headers: Authorization: Bearer {TOKEN}")
    rsps.get(f"{API}contacts", status=400, json=echo)

    with pytest.raises(ApiError) as caught:
        list(dv_client(policy(sleeps)).iter_rows("contacts", select=["fullname"]))

    error = caught.value
    assert TOKEN not in str(error)
    assert TOKEN not in error.detail
    assert TOKEN not in json.dumps(error.to_json())
    assert "Authorization: Bearer <redacted>" in error.detail


@pytest.mark.parametrize("status", [200, 400])
def test_a_body_nested_too_deep_to_read_is_an_invalid_answer_not_a_crash(
    rsps: responses.RequestsMock, sleeps: list[float], status: int
) -> None:
    """An upstream body of [[[[... (deeper than Python's recursion limit) is never an
    unexpected RecursionError: a 2xx is an invalid answer, an error status keeps its status."""
    deep = "[" * 100_000 + "]" * 100_000
    rsps.get(f"{API}contacts", body=deep, status=status, content_type="application/json")

    with pytest.raises(ApiError) as caught:
        list(dv_client(policy(sleeps, max_attempts=1)).iter_rows("contacts", select=["fullname"]))

    assert caught.value.status == status
