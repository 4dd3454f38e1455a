"""Dataverse `$batch` on the wire: the exact request the client sends, and how it reads the
answers Microsoft documents ("Execute batch operations using the Web API",
https://learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api).
"""

from __future__ import annotations

import json

import pytest
import responses
from responses import matchers

from work365_fn.adapters.odata_batch import BatchOperation, decode_batch
from work365_fn.errors import ApiError, InvalidResponseError, ThrottledError

from .clients import TOKEN, dv_client, policy
from .shapes import API, DV_ALREADY_EXISTS, DV_VERSION_MISMATCH, ORG, dv_error

BATCH = f"{API}$batch"
ROW = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
NEW_ROW = "6a1d1a2e-7f1f-5b55-9b8e-0c8c6f0a8f21"
CONTRACT = "c0000000-0000-0000-0000-000000000001"
BIND = {"work365_BillingContract@odata.bind": f"/work365_billingcontracts({CONTRACT})"}

# The answer of the documented continue-on-error example ("Handling errors"), verbatim but for
# the organization URI placeholder and the CRLF line breaks HTTP carries.
DOCS_CONTINUE_ON_ERROR = "\r\n".join(
    [
        "--batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139",
        "Content-Type: application/http",
        "Content-Transfer-Encoding: binary",
        "",
        "HTTP/1.1 400 Bad Request",
        "REQ_ID: de4c5227-4a28-4ebd-8ced-3392ece1697b",
        "Content-Type: application/json; odata.metadata=minimal",
        "OData-Version: 4.0",
        "",
        '{"error":{"code":"0x80044331","message":"A validation error occurred.  The length of '
        "the 'subject' attribute of the 'task' entity exceeded the maximum allowed length of "
        "'200'.\"}}",
        "--batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139",
        "Content-Type: application/http",
        "Content-Transfer-Encoding: binary",
        "",
        "HTTP/1.1 204 No Content",
        "OData-Version: 4.0",
        f"Location: {API}tasks(aed2ae8b-3c94-ed11-aad1-000d3a9933c9)",
        f"OData-EntityId: {API}tasks(aed2ae8b-3c94-ed11-aad1-000d3a9933c9)",
        "",
        "",
        "--batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139",
        "Content-Type: application/http",
        "Content-Transfer-Encoding: binary",
        "",
        "HTTP/1.1 204 No Content",
        "OData-Version: 4.0",
        f"Location: {API}tasks(b181a991-3c94-ed11-aad1-000d3a9933c9)",
        f"OData-EntityId: {API}tasks(b181a991-3c94-ed11-aad1-000d3a9933c9)",
        "",
        "",
        "--batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139--",
        "",
    ]
)
DOCS_BOUNDARY = "batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139"

# The change-set answer of the documented "Change sets" example (three creates, then a GET).
DOCS_CHANGE_SET = """--batchresponse_f27ef42d-51b0-4685-bac9-f468f844de2f
Content-Type: multipart/mixed; boundary=changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15

--changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: [Organization Uri]/api/data/v9.2/tasks(e73ffc82-e292-ed11-aad1-000d3a9933c9)
OData-EntityId: [Organization Uri]/api/data/v9.2/tasks(e73ffc82-e292-ed11-aad1-000d3a9933c9)


--changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 2

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: [Organization Uri]/api/data/v9.2/tasks(e83ffc82-e292-ed11-aad1-000d3a9933c9)
OData-EntityId: [Organization Uri]/api/data/v9.2/tasks(e83ffc82-e292-ed11-aad1-000d3a9933c9)


--changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15--
--batchresponse_f27ef42d-51b0-4685-bac9-f468f844de2f
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 200 OK
Content-Type: application/json; odata.metadata=minimal; odata.streaming=true
OData-Version: 4.0

{
  "value": [{"@odata.etag": "W/\\"77181173\\"", "subject": "Task 1 in batch"}]
}
--batchresponse_f27ef42d-51b0-4685-bac9-f468f844de2f--
"""


def batch_answer(*parts: tuple[int, dict[str, str], str], boundary: str = "batchresponse_1") -> str:
    """A batch answer shaped like the documented ones: one application/http part per result."""
    lines: list[str] = []
    phrases = {204: "No Content", 412: "Precondition Failed", 429: "Too Many Requests"}
    for status, headers, body in parts:
        lines += [f"--{boundary}", "Content-Type: application/http"]
        lines += ["Content-Transfer-Encoding: binary", ""]
        lines.append(f"HTTP/1.1 {status} {phrases.get(status, 'OK')}")
        lines += ["OData-Version: 4.0", *(f"{k}: {v}" for k, v in headers.items()), ""]
        lines.append(body)
    lines += [f"--{boundary}--", ""]
    return "\r\n".join(lines)


def operations() -> list[BatchOperation]:
    client = dv_client(policy([]))
    return [
        client.update_operation("work365_subscriptions", ROW.upper(), BIND, etag='W/"7"'),
        client.create_only_operation(
            "work365_subscriptions", NEW_ROW, {"work365_name": "E3", **BIND}
        ),
    ]


def test_the_batch_is_one_post_of_independent_conditional_patches(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    expected_body = (
        "--batch_test\r\n"
        "Content-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "\r\n"
        f"PATCH {API}work365_subscriptions({ROW}) HTTP/1.1\r\n"
        "Content-Type: application/json; type=entry\r\n"
        'If-Match: W/"7"\r\n'
        "\r\n"
        f"{json.dumps(BIND)}\r\n"
        "--batch_test\r\n"
        "Content-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "\r\n"
        f"PATCH {API}work365_subscriptions({NEW_ROW}) HTTP/1.1\r\n"
        "Content-Type: application/json; type=entry\r\n"
        "If-None-Match: *\r\n"
        "\r\n"
        f"{json.dumps({'work365_name': 'E3', **BIND})}\r\n"
        "--batch_test--\r\n"
    )
    rsps.post(
        BATCH,
        match=[
            matchers.header_matcher(
                {
                    "Accept": "application/json",
                    "Content-Type": 'multipart/mixed; boundary="batch_test"',
                    "OData-MaxVersion": "4.0",
                    "OData-Version": "4.0",
                    "Prefer": "odata.continue-on-error",
                    "Authorization": f"Bearer {TOKEN}",
                },
                strict_match=False,
            ),
            matchers.body_matcher(expected_body),
        ],
        body=batch_answer(
            (204, {"ETag": 'W/"8"', "OData-EntityId": f"{API}work365_subscriptions({ROW})"}, ""),
            (204, {"OData-EntityId": f"{API}work365_subscriptions({NEW_ROW})"}, ""),
        ),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )

    results = dv_client(policy(sleeps)).batch(operations(), boundary="batch_test")

    assert [r.status for r in results] == [204, 204]
    assert results[0].etag == 'W/"8"'
    assert results[1].entity_id == f"{API}work365_subscriptions({NEW_ROW})"
    assert "$batch" in rsps.calls[0].request.url


def test_the_documented_continue_on_error_answer_is_read_per_operation(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.post(
        BATCH,
        body=DOCS_CONTINUE_ON_ERROR,
        content_type=f"multipart/mixed; boundary={DOCS_BOUNDARY}",
        headers={"Preference-Applied": "odata.continue-on-error"},
    )
    ops = [*operations(), operations()[0]]

    first, second, third = dv_client(policy(sleeps)).batch(ops)

    assert (first.status, first.ok) == (400, False)
    code, message = first.error()
    assert code == "0x80044331"
    assert "exceeded the maximum allowed length of '200'" in message
    assert (second.status, third.status) == (204, 204)
    assert second.entity_id == f"{API}tasks(aed2ae8b-3c94-ed11-aad1-000d3a9933c9)"
    assert third.entity_id == f"{API}tasks(b181a991-3c94-ed11-aad1-000d3a9933c9)"
    assert sleeps == []


def test_a_412_inside_the_batch_is_that_operation_only(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.post(
        BATCH,
        body=batch_answer(
            (412, {"Content-Type": "application/json"}, json.dumps(DV_VERSION_MISMATCH)),
            (412, {"Content-Type": "application/json"}, json.dumps(DV_ALREADY_EXISTS)),
        ),
        content_type='multipart/mixed; boundary="batchresponse_1"',
    )

    changed, exists = dv_client(policy(sleeps)).batch(operations())

    assert changed.status == exists.status == 412
    assert changed.error()[0] == "412"  # the documented sample's empty code
    assert exists.error() == ("0x80040237", "A record with matching key values already exists.")


def test_change_set_answers_are_flattened_in_order() -> None:
    results = decode_batch(None, DOCS_CHANGE_SET.encode())
    assert [r.status for r in results] == [204, 204, 200]
    assert results[1].entity_id is not None and "e83ffc82" in results[1].entity_id
    assert json.loads(results[2].body)["value"][0]["subject"] == "Task 1 in batch"


def test_a_whole_batch_429_for_execution_time_is_raised_at_once_with_its_code(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.post(
        BATCH,
        status=429,
        json=dv_error(
            "0x80072321",
            "Combined execution time of incoming requests exceeded limit of 1,200,000 "
            "milliseconds over time window of 300 seconds.",
        ),
        headers={"Retry-After": "7"},
    )

    with pytest.raises(ThrottledError) as caught:
        dv_client(policy(sleeps)).batch(operations())

    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (
        429,
        "0x80072321",
        7.0,
    )
    assert sleeps == []  # not retried by the transport: the caller shrinks the batch first
    assert TOKEN not in str(caught.value)


def test_a_503_is_retried_by_the_transport(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.post(BATCH, status=503, json=dv_error("0x80040216", "Service Unavailable"))
    rsps.post(
        BATCH,
        body=batch_answer((204, {}, ""), (204, {}, "")),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )

    results = dv_client(policy(sleeps)).batch(operations())

    assert [r.status for r in results] == [204, 204]
    assert len(sleeps) == 1


def test_a_batch_refused_as_a_whole_is_an_api_error(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.post(
        BATCH,
        status=400,
        json=dv_error("0x8005f103", "The maximum number of requests in a batch is 1000."),
    )
    with pytest.raises(ApiError) as caught:
        dv_client(policy(sleeps)).batch(operations())
    assert (caught.value.status, caught.value.code) == (400, "0x8005f103")


@pytest.mark.parametrize(
    "body",
    [
        "--batchresponse_1\r\nContent-Type: application/http\r\n\r\nnot a status line\r\n"
        "--batchresponse_1--\r\n",
        "--batchresponse_1\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\n",
        batch_answer((204, {}, ""), (204, {}, ""), (204, {}, "")),  # more answers than asked
    ],
    ids=["no-status-line", "not-closed", "too-many-parts"],
)
def test_an_unreadable_batch_answer_is_an_invalid_response(
    rsps: responses.RequestsMock, sleeps: list[float], body: str
) -> None:
    rsps.post(BATCH, body=body, content_type="multipart/mixed; boundary=batchresponse_1")
    with pytest.raises(InvalidResponseError):
        dv_client(policy(sleeps, max_attempts=1)).batch(operations())


def test_an_empty_batch_sends_nothing(rsps: responses.RequestsMock, sleeps: list[float]) -> None:
    assert dv_client(policy(sleeps)).batch([]) == []


def test_more_than_a_thousand_operations_are_refused_before_sending() -> None:
    op = operations()[0]
    with pytest.raises(ValueError, match="at most 1000"):
        dv_client(policy([])).batch([op] * 1001)


def test_operation_urls_are_absolute_and_escaped() -> None:
    client = dv_client(policy([]))
    op = client.create_only_operation(
        "work365_subscriptions", "work365_providersubscriptionid='o''brien'", {}
    )
    assert op.url == (
        f"{ORG}/api/data/v9.2/work365_subscriptions(work365_providersubscriptionid='o''brien')"
    )
    with pytest.raises(ValueError):
        client.update_operation("work365_subscriptions", "1 or 1=1", {}, etag='W/"1"')
