"""Partner Center client against recorded API shapes: exact calls, paging, retries, errors."""

from __future__ import annotations

import pytest
import requests
import responses
from responses import matchers

from work365_fn.adapters.partner_center import is_no_relationship
from work365_fn.errors import (
    ApiError,
    ConnectionFailedError,
    InvalidResponseError,
    ThrottledError,
)

from .clients import CORRELATION_ID, TOKEN, pc_client, policy
from .shapes import (
    CONTINUATION_1,
    CONTINUATION_2,
    CUSTOMERS,
    PC,
    PC_NO_RELATIONSHIP,
    PC_SUBSCRIPTION,
    pc_customers_page,
    pc_error,
    pc_subscriptions,
)

CUSTOMERS_URL = f"{PC}/v1/customers"
CUSTOMER = CUSTOMERS[0][0]
SUBSCRIPTIONS_URL = f"{PC}/v1/customers/{CUSTOMER}/subscriptions"
FIRST_PAGE = matchers.query_string_matcher("size=2")
NEXT_PAGE = matchers.query_string_matcher("size=2&seekOperation=Next")
PC_HEADERS = matchers.header_matcher(
    {
        "Accept": "application/json",
        "MS-CorrelationId": CORRELATION_ID,
        "Authorization": f"Bearer {TOKEN}",
    }
)


def request_ids(rsps: responses.RequestsMock) -> list[str]:
    return [str(call.request.headers["MS-RequestId"]) for call in rsps.calls]


def test_customers_are_read_page_by_page_with_the_continuation_token_header(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        CUSTOMERS_URL,
        match=[FIRST_PAGE, PC_HEADERS],
        json=pc_customers_page(CUSTOMERS[0:2], 2, CONTINUATION_1),
    )
    rsps.get(
        CUSTOMERS_URL,
        match=[
            NEXT_PAGE,
            PC_HEADERS,
            matchers.header_matcher({"MS-ContinuationToken": CONTINUATION_1}),
        ],
        json=pc_customers_page(CUSTOMERS[2:4], 2, CONTINUATION_2),
    )
    rsps.get(
        CUSTOMERS_URL,
        match=[
            NEXT_PAGE,
            PC_HEADERS,
            matchers.header_matcher({"MS-ContinuationToken": CONTINUATION_2}),
        ],
        json=pc_customers_page(CUSTOMERS[4:5], 2),
    )

    customers = list(pc_client(policy(sleeps), page_size=2).iter_customers())

    assert [c.id for c in customers] == [c[0] for c in CUSTOMERS]
    assert [c.company_name for c in customers] == [c[2] for c in CUSTOMERS]
    assert len(rsps.calls) == 3
    assert "MS-ContinuationToken" not in rsps.calls[0].request.headers
    assert sleeps == []


def test_paging_stops_when_the_page_has_no_next_link(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    last_page = pc_customers_page(CUSTOMERS[0:2], 2)
    assert "next" not in last_page["links"]
    rsps.get(CUSTOMERS_URL, match=[FIRST_PAGE], json=last_page)

    customers = list(pc_client(policy(sleeps), page_size=2).iter_customers())

    assert len(customers) == 2
    assert len(rsps.calls) == 1


def test_a_repeated_continuation_token_is_refused(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        CUSTOMERS_URL,
        match=[FIRST_PAGE],
        json=pc_customers_page(CUSTOMERS[0:2], 2, CONTINUATION_1),
    )
    rsps.get(
        CUSTOMERS_URL,
        match=[NEXT_PAGE, matchers.header_matcher({"MS-ContinuationToken": CONTINUATION_1})],
        json=pc_customers_page(CUSTOMERS[2:4], 2, CONTINUATION_1),
    )

    with pytest.raises(InvalidResponseError) as caught:
        list(pc_client(policy(sleeps), page_size=2).iter_customers())

    assert caught.value.code == "paging-loop"
    assert len(rsps.calls) == 2


def test_request_id_is_kept_across_retries_and_new_for_each_call(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(CUSTOMERS_URL, match=[FIRST_PAGE], status=503, json=pc_error(503, "busy"))
    rsps.get(CUSTOMERS_URL, match=[FIRST_PAGE], json=pc_customers_page(CUSTOMERS[0:1], 2))
    rsps.get(SUBSCRIPTIONS_URL, json=pc_subscriptions(CUSTOMER, PC_SUBSCRIPTION))
    client = pc_client(policy(sleeps), page_size=2)

    list(client.iter_customers())
    client.subscriptions(CUSTOMER)

    first, retry, other = request_ids(rsps)
    assert first == retry
    assert other != first
    assert {call.request.headers["MS-CorrelationId"] for call in rsps.calls} == {CORRELATION_ID}
    assert len(sleeps) == 1


def test_request_ids_differ_between_pages(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        CUSTOMERS_URL,
        match=[FIRST_PAGE],
        json=pc_customers_page(CUSTOMERS[0:2], 2, CONTINUATION_1),
    )
    rsps.get(CUSTOMERS_URL, match=[NEXT_PAGE], json=pc_customers_page(CUSTOMERS[2:3], 2))

    list(pc_client(policy(sleeps), page_size=2).iter_customers())

    assert len(set(request_ids(rsps))) == 2


def test_subscriptions_of_a_customer_are_read_in_one_call(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    # Ids are sent as given (Partner Center ignores case) and stored lower-case.
    rsps.get(
        SUBSCRIPTIONS_URL.replace(CUSTOMER, CUSTOMER.upper()),
        match=[PC_HEADERS, matchers.query_string_matcher(None)],
        json=pc_subscriptions(CUSTOMER, PC_SUBSCRIPTION),
    )

    (sub,) = pc_client(policy(sleeps)).subscriptions(CUSTOMER.upper())

    assert sub.id == "a4c1340d-6911-4758-bba3-0c4c6007d161"
    assert sub.customer_id == CUSTOMER
    assert sub.offer_id == "CFQ7TTC0LH18:0001:CFQ7TTC0K971"
    assert sub.display_name == "Microsoft 365 Business Basic"
    assert sub.quantity == 1
    assert (sub.status, sub.billing_type) == ("active", "license")
    assert sub.creation_date == "2021-01-14T16:57:15.0966728Z"
    assert sub.raw["termDuration"] == "P1Y"
    assert rsps.calls[0].request.url == SUBSCRIPTIONS_URL.replace(CUSTOMER, CUSTOMER.upper())


@pytest.mark.parametrize("code", [20002, "20002"], ids=["number", "string"])
def test_no_reseller_relationship_is_a_403_with_code_20002(
    rsps: responses.RequestsMock, sleeps: list[float], code: int | str
) -> None:
    body = dict(PC_NO_RELATIONSHIP, code=code)
    rsps.get(SUBSCRIPTIONS_URL, status=403, json=body)

    with pytest.raises(ApiError) as caught:
        pc_client(policy(sleeps)).subscriptions(CUSTOMER)

    error = caught.value
    assert (error.service, error.status, error.code) == ("partnerCenter", 403, "20002")
    assert is_no_relationship(error)
    assert "has no commerce relationship" in error.detail
    assert error.request_id == rsps.calls[0].request.headers["MS-RequestId"]
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_429_waits_for_retry_after_then_succeeds(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        SUBSCRIPTIONS_URL,
        status=429,
        headers={"Retry-After": "7"},
        json=pc_error(429, "Too many requests"),
    )
    rsps.get(SUBSCRIPTIONS_URL, json=pc_subscriptions(CUSTOMER, PC_SUBSCRIPTION))

    subs = pc_client(policy(sleeps)).subscriptions(CUSTOMER)

    assert len(subs) == 1
    assert sleeps == [7.0]
    assert len(rsps.calls) == 2


def test_retry_after_beyond_the_retry_budget_is_not_slept(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        SUBSCRIPTIONS_URL,
        status=429,
        headers={"Retry-After": "200"},
        json=pc_error(429, "Too many requests"),
    )

    with pytest.raises(ThrottledError) as caught:
        pc_client(policy(sleeps, max_attempts=5, max_seconds=60)).subscriptions(CUSTOMER)

    assert caught.value.retry_after == 200.0
    assert sleeps == []
    assert len(rsps.calls) == 1


def test_server_errors_are_retried_with_exponential_backoff(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(SUBSCRIPTIONS_URL, status=500, json=pc_error(500, "Internal error"))
    rsps.get(SUBSCRIPTIONS_URL, status=500, json=pc_error(500, "Internal error"))
    rsps.get(SUBSCRIPTIONS_URL, json=pc_subscriptions(CUSTOMER, PC_SUBSCRIPTION))

    subs = pc_client(policy(sleeps)).subscriptions(CUSTOMER)

    assert len(subs) == 1
    assert len(rsps.calls) == 3
    # random exponential, multiplier 0.5: the n-th wait is drawn from (0, 0.5 * 2**(n-1)]
    first, second = sleeps
    assert 0 < first <= 0.5
    assert 0 < second <= 1.0


def test_attempts_are_bounded_then_the_error_is_raised(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    for _ in range(3):
        rsps.get(SUBSCRIPTIONS_URL, status=503, json=pc_error(503, "Service unavailable"))

    with pytest.raises(ApiError) as caught:
        pc_client(policy(sleeps, max_attempts=3)).subscriptions(CUSTOMER)

    assert caught.value.status == 503
    assert len(rsps.calls) == 3
    assert len(sleeps) == 2


def test_a_bad_request_is_not_retried(rsps: responses.RequestsMock, sleeps: list[float]) -> None:
    rsps.get(SUBSCRIPTIONS_URL, status=400, json=pc_error(400, "Invalid customer id"))

    with pytest.raises(ApiError) as caught:
        pc_client(policy(sleeps)).subscriptions(CUSTOMER)

    assert (caught.value.status, caught.value.code) == (400, "400")
    assert "Invalid customer id" in str(caught.value)
    assert len(rsps.calls) == 1
    assert sleeps == []


TRUNCATED = '{"totalCount": 1, "items": [{"id": "a4c1340d-6911-4758-bba3-0c4c6007d161", "offe'


def test_a_truncated_body_is_fetched_again(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(SUBSCRIPTIONS_URL, body=TRUNCATED, content_type="application/json")
    rsps.get(SUBSCRIPTIONS_URL, json=pc_subscriptions(CUSTOMER, PC_SUBSCRIPTION))

    subs = pc_client(policy(sleeps)).subscriptions(CUSTOMER)

    assert len(subs) == 1
    assert len(rsps.calls) == 2


def test_a_body_that_stays_truncated_is_an_invalid_response(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    for _ in range(3):
        rsps.get(SUBSCRIPTIONS_URL, body=TRUNCATED, content_type="application/json")

    with pytest.raises(InvalidResponseError) as caught:
        pc_client(policy(sleeps, max_attempts=3)).subscriptions(CUSTOMER)

    assert (caught.value.status, caught.value.code) == (200, "invalid-json")
    assert len(rsps.calls) == 3


def test_no_connection_is_a_connection_error_after_bounded_retries(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    for _ in range(3):
        rsps.get(
            SUBSCRIPTIONS_URL,
            body=requests.ConnectionError("[Errno 111] Connection refused"),
        )

    with pytest.raises(ConnectionFailedError) as caught:
        pc_client(policy(sleeps, max_attempts=3)).subscriptions(CUSTOMER)

    assert (caught.value.status, caught.value.code) == (0, "connection")
    assert "connection refused" in str(caught.value)
    assert len(rsps.calls) == 3
    assert len(sleeps) == 2


def test_a_connection_broken_mid_body_is_retried_like_a_reset(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        SUBSCRIPTIONS_URL,
        body=requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"),
    )
    rsps.get(SUBSCRIPTIONS_URL, json=pc_subscriptions(CUSTOMER, PC_SUBSCRIPTION))

    subs = pc_client(policy(sleeps)).subscriptions(CUSTOMER)

    assert len(subs) == 1
    assert len(rsps.calls) == 2
    assert len(sleeps) == 1
