"""The Dataverse Web API emulator, driven through `handle()` with plain Request objects."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest

from work365_fn.adapters.schema import Schema
from work365_fn.sandbox.core import Headers, Request, TokenIssuer
from work365_fn.sandbox.dataverse import SETTING_ROW_ID, DataverseEmulator
from work365_fn.sandbox.scenario import Scenario, ScenarioError, parse_scenario

BASE = "https://127.0.0.1:8443"
API = "/api/data/v9.2/"
SUBS = "work365_subscriptions"
SETTING = "work365_associatedefaultbillingcontract"


def gid(prefix: str, n: int) -> str:
    return f"{prefix}0000000-0000-4000-8000-{n:012d}"


ACC1, ACC2 = gid("a", 1), gid("a", 2)
CON1, CON2, CON3 = gid("c", 1), gid("c", 2), gid("c", 3)
SUB = [gid("e", n) for n in range(6)]
PSUB = [gid("f", n) for n in range(6)]


def scenario(**overrides: Any) -> Scenario:
    raw: dict[str, Any] = {
        "settings": {
            "associateDefaultBillingContract": True,
            "enabledOn": "2026-01-01T00:00:00Z",
            "auditEnabled": True,
        },
        "accounts": [{"id": ACC1, "name": "Contoso"}, {"id": ACC2, "name": "Fabrikam"}],
        "providerAccounts": [
            {"id": gid("b", 1), "customerId": gid("d", 1), "accountId": ACC1, "name": "PA 1"}
        ],
        "billingContracts": [
            {"id": CON1, "accountId": ACC1, "name": "Default", "isDefault": True},
            {"id": CON2, "accountId": ACC1, "name": "Other", "isDefault": False},
            {"id": CON3, "accountId": ACC2, "name": "Old", "isDefault": True, "active": False},
        ],
        "subscriptions": [
            {
                "id": SUB[1],
                "providerSubscriptionId": PSUB[1],
                "accountId": ACC1,
                "billingContractId": CON1,
                "createdOn": "2025-06-01T00:00:00Z",
                "name": "E3",
            },
            {
                "id": SUB[2],
                "providerSubscriptionId": PSUB[2],
                "accountId": ACC1,
                "createdOn": "2026-02-01T00:00:00Z",
                "name": "E5",
            },
            {
                "id": SUB[3],
                "providerSubscriptionId": PSUB[3],
                "accountId": ACC2,
                "createdOn": "2026-03-01T00:00:00Z",
                "name": "Azure",
            },
            {
                "id": SUB[4],
                "providerSubscriptionId": PSUB[4],
                "createdOn": "2026-03-02T00:00:00Z",
                "name": "O'Brien plan",
            },
            {
                "id": SUB[5],
                "providerSubscriptionId": PSUB[5],
                "accountId": ACC2,
                "createdOn": "2026-03-03T00:00:00Z",
                "name": "Billed",
                "billingReferences": {"work365_lastlclid": "LCL-9"},
            },
        ],
    }
    raw.update(overrides)
    return parse_scenario(raw)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, str]:
        error = self.json()["error"]
        assert set(error) == {"code", "message"}
        return dict(error)


class Client:
    def __init__(self, dv: DataverseEmulator, token: str) -> None:
        self.dv = dv
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        query: str = "",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Request:
        raw = (
            body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        )
        all_headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            **(headers or {}),
        }
        return Request(method, API + path, query, Headers(all_headers), raw)

    def __call__(
        self,
        method: str,
        path: str,
        query: str = "",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        response = self.dv.handle(self.request(method, path, query, body, headers))
        assert response.headers["OData-Version"] == "4.0"
        return Answer(response.status, response.headers, response.body)

    def get(self, path: str, query: str = "", **headers: str) -> Answer:
        return self(
            "GET", path, query, headers={k.replace("_", "-"): v for k, v in headers.items()}
        )

    def follow(self, url: str, **headers: str) -> Answer:
        """GET an absolute URL (a nextLink) exactly as given."""
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == BASE
        path = unquote(parts.path)
        assert path.startswith(API)
        return self.get(path[len(API) :], parts.query, **headers)


def q(**options: str) -> str:
    """A query string, percent-encoded like requests does: q(select='a,b') -> $select=a%2Cb."""
    return "&".join(f"${k}={quote(v, safe='')}" for k, v in options.items())


@pytest.fixture
def tokens() -> TokenIssuer:
    return TokenIssuer(b"test-secret")


@pytest.fixture
def dv(tmp_path: Path, tokens: TokenIssuer) -> Iterator[DataverseEmulator]:
    emulator = DataverseEmulator(
        str(tmp_path / "state.sqlite"),
        BASE,
        tokens,
        clock=lambda: datetime(2026, 4, 1, 12, 0, 0, tzinfo=UTC),
    )
    emulator.seed(scenario())
    yield emulator
    emulator.close()


@pytest.fixture
def client(dv: DataverseEmulator, tokens: TokenIssuer) -> Client:
    token, _ = tokens.issue(BASE, "client")
    return Client(dv, token)


def sub(dv: DataverseEmulator, row_id: str) -> dict[str, Any]:
    return next(r for r in dv.rows(SUBS) if r["work365_subscriptionid"] == row_id)


# ---------------------------------------------------------------- auth, routing


def test_a_request_without_a_valid_token_is_refused(client: Client, tokens: TokenIssuer) -> None:
    answer = client("GET", SUBS, headers={"Authorization": "Bearer nope.nope"})
    assert answer.status == 401
    assert answer.error["code"] == "0x80072560"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")
    other, _ = tokens.issue("https://other.crm.dynamics.com", "client")
    assert client("GET", SUBS, headers={"Authorization": f"Bearer {other}"}).status == 401


def test_an_unknown_entity_set_is_404(client: Client) -> None:
    answer = client.get("work365_subscription")
    assert answer.status == 404
    assert answer.error == {
        "code": "0x80060888",
        "message": "Resource not found for the segment 'work365_subscription'.",
    }


def test_who_am_i_and_the_service_document(client: Client) -> None:
    assert client.get("WhoAmI").json()["UserId"]
    sets = {s["name"] for s in client.get("").json()["value"]}
    assert {SUBS, "accounts", "audits", "work365_adminhubsettings"} <= sets


def test_kind_labels_requests_for_counting(dv: DataverseEmulator, client: Client) -> None:
    def kind(method: str, path: str) -> str:
        return dv.kind(client.request(method, path))

    assert kind("GET", SUBS) == "GET work365_subscriptions"
    assert kind("PATCH", f"{SUBS}({SUB[1]})") == "PATCH work365_subscriptions"
    assert kind("POST", "$batch") == "POST $batch"
    assert kind("GET", "EntityDefinitions(LogicalName='x')/Attributes") == "GET EntityDefinitions"
    assert kind("GET", "RetrieveAttributeChangeHistory(Target=@t)") == (
        "GET RetrieveAttributeChangeHistory"
    )


# ---------------------------------------------------------------- queries


def test_select_returns_the_columns_the_id_and_the_etag(client: Client) -> None:
    answer = client.get(
        SUBS, q(select="work365_name,_work365_account_value", filter="work365_name eq 'E3'")
    )
    assert answer.status == 200
    body = answer.json()
    assert body["@odata.context"] == (
        f"{BASE}{API}$metadata#{SUBS}(work365_name,_work365_account_value)"
    )
    (only,) = body["value"]
    assert only == {
        "@odata.etag": only["@odata.etag"],
        "work365_name": "E3",
        "_work365_account_value": ACC1,
        "work365_subscriptionid": SUB[1],
    }
    assert re.fullmatch(r'W/"\d+"', only["@odata.etag"])


def test_selecting_an_unknown_column_is_400_like_dataverse(client: Client) -> None:
    answer = client.get(SUBS, q(select="work365_name,work365_account"))
    assert answer.status == 400
    assert answer.error == {
        "code": "0x80060888",
        "message": "Could not find a property named 'work365_account' on type "
        "'Microsoft.Dynamics.CRM.work365_subscription'.",
    }


def test_paging_follows_next_links_verbatim(client: Client) -> None:
    seen: list[str] = []
    answer = client.get(
        SUBS, q(select="work365_name", orderby="createdon desc"), Prefer="odata.maxpagesize=2"
    )
    pages = 0
    while True:
        assert answer.status == 200
        assert answer.headers["Preference-Applied"] == "odata.maxpagesize=2"
        body = answer.json()
        pages += 1
        seen += [r["work365_subscriptionid"] for r in body["value"]]
        link = body.get("@odata.nextLink")
        if link is None:
            break
        assert link.startswith(f"{BASE}{API}{SUBS}?$select=work365_name&$orderby=")
        assert "$skiptoken=" in link
        answer = client.follow(link, Prefer="odata.maxpagesize=2")
    assert pages == 3
    assert seen == [SUB[5], SUB[4], SUB[3], SUB[2], SUB[1]]


def test_paging_survives_rows_inserted_between_pages(client: Client) -> None:
    first = client.get(SUBS, q(select="work365_name"), Prefer="odata.maxpagesize=3").json()
    client("POST", SUBS, body={"work365_subscriptionid": gid("e", 99), "work365_name": "late"})
    rest = client.follow(first["@odata.nextLink"], Prefer="odata.maxpagesize=3").json()
    ids = [r["work365_subscriptionid"] for r in first["value"] + rest["value"]]
    assert len(ids) == len(set(ids)) == 6


def test_default_page_is_5000_and_top_limits(client: Client) -> None:
    answer = client.get(SUBS, q(top="2", orderby="work365_name asc"))
    assert [r["work365_name"] for r in answer.json()["value"]] == ["Azure", "Billed"]
    assert "@odata.nextLink" not in answer.json()
    assert "Preference-Applied" not in answer.headers


def test_top_is_ignored_with_maxpagesize_as_microsoft_documents(client: Client) -> None:
    answer = client.get(SUBS, q(top="1"), Prefer="odata.maxpagesize=10")
    assert len(answer.json()["value"]) == 5


def test_count(client: Client) -> None:
    body = client.get(
        SUBS, q(count="true", filter="_work365_account_value ne null"), Prefer="odata.maxpagesize=1"
    ).json()
    assert body["@odata.count"] == 4
    assert len(body["value"]) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"_work365_account_value eq {ACC1.upper()}", [1, 2]),
        ("_work365_account_value eq null", [4]),
        ("work365_name eq 'O''Brien plan'", [4]),
        ("contains(work365_name,'BRIEN')", [4]),
        ("startswith(work365_name,'e')", [1, 2]),
        ("createdon ge 2026-03-01T00:00:00Z and createdon lt 2026-03-03T00:00:00Z", [3, 4]),
        (
            f"Microsoft.Dynamics.CRM.In(PropertyName='work365_providersubscriptionid',PropertyValues=['{PSUB[2]}','{PSUB[3]}'])",
            [2, 3],
        ),
        ("not (_work365_billingcontract_value eq null) or work365_lastlclid ne null", [1, 5]),
        ("statecode eq 0 and (work365_name eq 'E3' or work365_name eq 'Azure')", [1, 3]),
    ],
)
def test_filters(client: Client, text: str, expected: list[int]) -> None:
    answer = client.get(SUBS, q(filter=text, select="work365_name"))
    assert answer.status == 200, answer.body
    got = sorted(SUB.index(r["work365_subscriptionid"]) for r in answer.json()["value"])
    assert got == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (q(filter=f"_work365_account_value eq '{ACC1}'"), "incompatible types"),
        (q(filter="tolower(work365_name) eq 'e3'"), "sandbox"),
        (q(filter="work365_Account/name eq 'x'"), "navigation paths"),
        (q(filter="work365_account eq null"), "Could not find a property named 'work365_account'"),
        (q(skip="2"), "The query parameter $skip is not supported."),
        (q(expand="work365_Account"), "$expand"),
        (q(top="x"), "$top"),
        ("$select=work365_name&$select=work365_name", "more than once"),
        (q(orderby="work365_name up"), "neither asc nor desc"),
        ("$skiptoken=garbage", "$skiptoken"),
    ],
)
def test_unsupported_or_wrong_queries_are_400(client: Client, query: str, message: str) -> None:
    answer = client.get(SUBS, query)
    assert answer.status == 400
    assert message in answer.error["message"]


# ---------------------------------------------------------------- single rows and keys


def test_get_one_row_with_select(client: Client) -> None:
    answer = client.get(f"{SUBS}({SUB[1].upper()})", q(select="_work365_billingcontract_value"))
    assert answer.status == 200
    body = answer.json()
    assert body["_work365_billingcontract_value"] == CON1
    assert body["work365_subscriptionid"] == SUB[1]
    assert body["@odata.context"].endswith(f"#{SUBS}(_work365_billingcontract_value)/$entity")
    assert answer.headers["ETag"] == body["@odata.etag"]
    named = client.get(f"{SUBS}(work365_subscriptionid={SUB[1]})", q(select="work365_name"))
    assert named.json()["work365_name"] == "E3"


def test_a_missing_row_is_404(client: Client) -> None:
    missing = gid("e", 77)
    answer = client.get(f"{SUBS}({missing})")
    assert answer.status == 404
    assert answer.error == {
        "code": "0x80040217",
        "message": f"work365_subscription With Id = {missing} Does Not Exist",
    }


def test_an_alternate_key_address_needs_the_key(dv: DataverseEmulator, client: Client) -> None:
    path = f"{SUBS}(work365_providersubscriptionid='{PSUB[2]}')"
    off = client.get(path)
    assert off.status == 400
    assert "key attributes do not exist" in off.error["message"]
    dv.alternate_key = True
    assert client.get(path).json()["work365_subscriptionid"] == SUB[2]
    upper = client.get(f"{SUBS}(work365_providersubscriptionid='{PSUB[2].upper()}')")
    assert upper.status == 200
    missing = client.get(f"{SUBS}(work365_providersubscriptionid='nope')")
    assert missing.status == 404
    assert missing.error["code"] == "0x80060891"


def test_conditional_get_answers_304_when_unchanged(client: Client) -> None:
    etag = client.get(f"{SUBS}({SUB[1]})").json()["@odata.etag"]
    assert client.get(f"{SUBS}({SUB[1]})", If_None_Match=etag).status == 304
    assert client.get(f"{SUBS}({SUB[1]})", If_None_Match="null").status == 200


# ---------------------------------------------------------------- create


def test_create_returns_204_with_the_entity_id(dv: DataverseEmulator, client: Client) -> None:
    answer = client(
        "POST",
        SUBS,
        body={
            "work365_name": "New",
            "work365_providersubscriptionid": PSUB[0],
            "work365_Account@odata.bind": f"/accounts({ACC1})",
            "work365_BillingContract@odata.bind": f"{BASE}{API}work365_billingcontracts({CON1})",
            "createdon": "2020-01-01T00:00:00Z",
        },
    )
    assert answer.status == 204
    assert answer.body == b""
    entity = answer.headers["OData-EntityId"]
    match = re.fullmatch(rf"{re.escape(BASE + API + SUBS)}\(([0-9a-f-]{{36}})\)", entity)
    assert match is not None
    created = sub(dv, match.group(1))
    assert created["_work365_account_value"] == ACC1
    assert created["_work365_billingcontract_value"] == CON1
    assert created["createdon"] == "2026-04-01T12:00:00Z"  # createdon is not settable
    assert created["modifiedon"] == "2026-04-01T12:00:00Z"
    assert created["statecode"] == 0
    assert answer.headers["ETag"] == created["@odata.etag"]


def test_create_keeps_a_client_id_and_refuses_a_duplicate(
    dv: DataverseEmulator, client: Client
) -> None:
    new_id = gid("e", 42)
    body = {
        "work365_subscriptionid": new_id.upper(),
        "work365_name": "Mine",
        "overriddencreatedon": "2024-05-05T05:05:05Z",
    }
    assert client("POST", SUBS, body=body).headers["OData-EntityId"].endswith(f"({new_id})")
    assert sub(dv, new_id)["createdon"] == "2024-05-05T05:05:05Z"
    again = client("POST", SUBS, body=body)
    assert again.status == 412
    assert again.error == {
        "code": "0x80040237",
        "message": "A record with matching key values already exists.",
    }


def test_create_with_return_representation(client: Client) -> None:
    answer = client(
        "POST",
        SUBS,
        q(select="work365_name"),
        body={"work365_name": "Shown"},
        headers={"Prefer": "return=representation"},
    )
    assert answer.status == 201
    assert answer.json()["work365_name"] == "Shown"
    assert answer.headers["Preference-Applied"] == "return=representation"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"work365_account@odata.bind": f"/accounts({ACC1})"},
            400,
            "An undeclared property 'work365_account' which only has property annotations",
        ),
        (
            {"work365_BillingContract@odata.bind": f"/accounts({ACC1})"},
            400,
            "references 'work365_billingcontract' records",
        ),
        (
            {"_work365_account_value": ACC1},
            400,
            "CRM do not support direct update of Entity Reference properties",
        ),
        (
            {"work365_account": ACC1},
            400,
            "The property 'work365_account' does not exist on type "
            "'Microsoft.Dynamics.CRM.work365_subscription'",
        ),
        ({"work365_Account@odata.bind": None}, 400, "$ref"),
        ({"work365_Account": None}, 400, "only disassociates on update"),
        ({"work365_Account": {"name": "new"}}, 400, "(deep insert)"),
        (
            {"work365_Account@odata.bind": f"/accounts({gid('a', 9)})"},
            404,
            f"account With Id = {gid('a', 9)} Does Not Exist",
        ),
        ({"work365_name": 5}, 400, "Cannot convert the literal '5' to the expected type"),
        ({"statecode": "0"}, 400, "Edm.Int32"),
    ],
)
def test_bad_payloads(client: Client, body: dict[str, Any], status: int, message: str) -> None:
    answer = client("POST", SUBS, body=body)
    assert answer.status == status
    assert message in answer.error["message"]


# ---------------------------------------------------------------- update, upsert, delete


def test_patching_a_lookup_to_null_clears_it_conditionally(client: Client) -> None:
    """Microsoft documents `{"<nav>@odata.bind": null}` in a PATCH as the way to disassociate."""
    path = f"{SUBS}({SUB[2]})"
    bind = {"work365_BillingContract@odata.bind": f"/work365_billingcontracts({CON1})"}
    assert client("PATCH", path, body=bind).status == 204
    stale = client.get(path).json()["@odata.etag"]
    assert client("PATCH", path, body={"work365_name": "touched"}).status == 204
    clear = {"work365_BillingContract@odata.bind": None}
    assert client("PATCH", path, body=clear, headers={"If-Match": stale}).status == 412
    assert client.get(path).json()["_work365_billingcontract_value"] == CON1
    fresh = client.get(path).json()["@odata.etag"]
    assert client("PATCH", path, body=clear, headers={"If-Match": fresh}).status == 204
    assert client.get(path).json()["_work365_billingcontract_value"] is None


def test_if_match_with_a_stale_etag_is_412(dv: DataverseEmulator, client: Client) -> None:
    path = f"{SUBS}({SUB[2]})"
    etag = client.get(path).json()["@odata.etag"]
    bind = {"work365_BillingContract@odata.bind": f"/work365_billingcontracts({CON1})"}
    first = client("PATCH", path, body=bind, headers={"If-Match": etag})
    assert first.status == 204
    assert first.headers["ETag"] != etag
    assert first.headers["OData-EntityId"] == f"{BASE}{API}{path}"
    second = client("PATCH", path, body=bind, headers={"If-Match": etag})
    assert second.status == 412
    assert second.error == {
        "code": "0x80060882",
        "message": "The version of the existing record doesn't match the RowVersion property "
        "provided.",
    }
    assert sub(dv, SUB[2])["modifiedon"] == "2026-04-01T12:00:00Z"


def test_if_match_star_never_creates(client: Client) -> None:
    missing = gid("e", 55)
    answer = client(
        "PATCH", f"{SUBS}({missing})", body={"work365_name": "x"}, headers={"If-Match": "*"}
    )
    assert answer.status == 404
    assert answer.error["code"] == "0x80040217"
    assert client.get(f"{SUBS}({missing})").status == 404


def test_if_none_match_star_creates_only(dv: DataverseEmulator, client: Client) -> None:
    existing = client(
        "PATCH", f"{SUBS}({SUB[1]})", body={"work365_name": "x"}, headers={"If-None-Match": "*"}
    )
    assert existing.status == 412
    assert existing.error == {
        "code": "0x80040237",
        "message": "A record with matching key values already exists.",
    }
    assert sub(dv, SUB[1])["work365_name"] == "E3"
    new_id = gid("e", 56)
    created = client(
        "PATCH", f"{SUBS}({new_id})", body={"work365_name": "fresh"}, headers={"If-None-Match": "*"}
    )
    assert created.status == 204
    assert sub(dv, new_id)["work365_name"] == "fresh"


def test_create_only_through_the_alternate_key(dv: DataverseEmulator, client: Client) -> None:
    dv.alternate_key = True
    new_psub = gid("f", 60)
    path = f"{SUBS}(work365_providersubscriptionid='{new_psub}')"
    body = {"work365_name": "keyed", "work365_Account@odata.bind": f"/accounts({ACC2})"}
    assert client("PATCH", path, body=body, headers={"If-None-Match": "*"}).status == 204
    assert client("PATCH", path, body=body, headers={"If-None-Match": "*"}).status == 412
    created = [r for r in dv.rows(SUBS) if r["work365_providersubscriptionid"] == new_psub]
    assert len(created) == 1
    duplicate = client("POST", SUBS, body={"work365_providersubscriptionid": new_psub.upper()})
    assert duplicate.status == 412
    assert duplicate.error["code"] == "0x80040237"


def test_plain_patch_is_an_upsert(dv: DataverseEmulator, client: Client) -> None:
    new_id = gid("e", 57)
    assert client("PATCH", f"{SUBS}({new_id})", body={"work365_name": "up"}).status == 204
    assert client("PATCH", f"{SUBS}({new_id})", body={"work365_name": "up2"}).status == 204
    assert sub(dv, new_id)["work365_name"] == "up2"


def test_nav_property_names_are_case_sensitive_on_update(client: Client) -> None:
    for nav in ("work365_billingcontract", "Work365_BillingContract", "work365_Billingcontract"):
        answer = client(
            "PATCH",
            f"{SUBS}({SUB[2]})",
            body={f"{nav}@odata.bind": f"/work365_billingcontracts({CON1})"},
        )
        assert answer.status == 400
        assert answer.error["code"] == "0x80060888"
        assert f"An undeclared property '{nav}'" in answer.error["message"]


def test_createdon_cannot_be_updated(dv: DataverseEmulator, client: Client) -> None:
    client("PATCH", f"{SUBS}({SUB[2]})", body={"createdon": "2020-01-01T00:00:00Z"})
    assert sub(dv, SUB[2])["createdon"] == "2026-02-01T00:00:00Z"


def test_disassociate_and_associate_through_ref(dv: DataverseEmulator, client: Client) -> None:
    before = sub(dv, SUB[1])["@odata.etag"]
    assert client("DELETE", f"{SUBS}({SUB[1]})/work365_BillingContract/$ref").status == 204
    after = sub(dv, SUB[1])
    assert after["_work365_billingcontract_value"] is None
    assert after["@odata.etag"] != before
    put = client(
        "PUT",
        f"{SUBS}({SUB[1]})/work365_BillingContract/$ref",
        body={"@odata.id": f"{BASE}{API}work365_billingcontracts({CON2})"},
    )
    assert put.status == 204
    assert sub(dv, SUB[1])["_work365_billingcontract_value"] == CON2
    wrong = client("DELETE", f"{SUBS}({SUB[1]})/work365_billingcontract/$ref")
    assert wrong.status == 404


def test_delete_removes_the_row_and_links_to_it(dv: DataverseEmulator, client: Client) -> None:
    assert client("DELETE", f"work365_billingcontracts({CON1})").status == 204
    assert client.get(f"work365_billingcontracts({CON1})").status == 404
    assert sub(dv, SUB[1])["_work365_billingcontract_value"] is None
    assert client("DELETE", f"work365_billingcontracts({CON1})").status == 404


# ---------------------------------------------------------------- $batch


def batch_body(boundary: str, parts: list[str]) -> bytes:
    return ("".join(f"--{boundary}\r\n{p}" for p in parts) + f"--{boundary}--\r\n").encode()


def http_part(
    method: str,
    url: str,
    body: Any = None,
    content_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id:
        head += f"Content-ID: {content_id}\r\n"
    lines = [f"{method} {url} HTTP/1.1"]
    if body is not None:
        lines.append("Content-Type: application/json; type=entry")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    payload = json.dumps(body) if body is not None else ""
    return head + "\r\n" + "\r\n".join(lines) + "\r\n\r\n" + payload + "\r\n"


def changeset(boundary: str, parts: list[str]) -> str:
    inner = batch_body(boundary, parts).decode()
    return f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n{inner}"


def parse_answer(answer: Answer) -> list[tuple[int, str | None, dict[str, str], str]]:
    """(status, Content-ID, headers, body) of every operation answer, change sets flattened."""
    boundary = answer.headers["Content-Type"].split("boundary=")[1]
    return _parse_parts(answer.body.decode(), boundary)


def _parse_parts(text: str, boundary: str) -> list[tuple[int, str | None, dict[str, str], str]]:
    out = []
    assert text.rstrip().endswith(f"--{boundary}--")
    for chunk in text.split(f"--{boundary}")[1:-1]:
        head, _, rest = chunk.strip("\r\n").partition("\r\n\r\n")
        part_headers = dict(line.split(": ", 1) for line in head.split("\r\n"))
        if part_headers["Content-Type"].startswith("multipart/mixed"):
            out += _parse_parts(rest, part_headers["Content-Type"].split("boundary=")[1])
            continue
        status_and_headers, _, body = rest.partition("\r\n\r\n")
        status_line, *header_lines = status_and_headers.split("\r\n")
        headers = dict(line.split(": ", 1) for line in header_lines)
        out.append(
            (int(status_line.split(" ")[1]), part_headers.get("Content-ID"), headers, body.strip())
        )
    return out


def post_batch(client: Client, body: bytes, prefer: str | None = None) -> Answer:
    headers = {"Content-Type": 'multipart/mixed; boundary="batch_AAA"'}
    if prefer:
        headers["Prefer"] = prefer
    return client("POST", "$batch", body=body, headers=headers)


def test_batch_changeset_with_content_id_references(dv: DataverseEmulator, client: Client) -> None:
    new_contract = gid("c", 50)
    body = batch_body(
        "batch_AAA",
        [
            changeset(
                "changeset_BBB",
                [
                    http_part(
                        "POST",
                        f"{API}work365_billingcontracts",
                        {"work365_billingcontractid": new_contract, "work365_name": "New"},
                        "1",
                    ),
                    http_part(
                        "PATCH",
                        f"{BASE}{API}{SUBS}({SUB[2]})",
                        {"work365_BillingContract@odata.bind": "$1"},
                        "2",
                        {"If-Match": "*"},
                    ),
                ],
            ),
            http_part("GET", f"{SUBS}({SUB[2]})?$select=_work365_billingcontract_value"),
        ],
    )
    answer = post_batch(client, body)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    created, patched, read = parse_answer(answer)
    assert created[:2] == (204, "1")
    assert created[2]["OData-EntityId"] == f"{BASE}{API}work365_billingcontracts({new_contract})"
    assert created[2]["Location"] == created[2]["OData-EntityId"]
    assert patched[:2] == (204, "2")
    assert read[0] == 200
    assert json.loads(read[3])["_work365_billingcontract_value"] == new_contract


def test_a_failing_changeset_is_rolled_back_whole(dv: DataverseEmulator, client: Client) -> None:
    stale = 'W/"1"'
    bind_con1 = {"work365_BillingContract@odata.bind": f"/work365_billingcontracts({CON1})"}
    body = batch_body(
        "batch_AAA",
        [
            changeset(
                "changeset_BBB",
                [
                    http_part(
                        "PATCH",
                        f"{API}{SUBS}({SUB[2]})",
                        bind_con1,
                        "1",
                        {"If-Match": "*"},
                    ),
                    http_part(
                        "POST", f"{API}{SUBS}", {"work365_subscriptionid": gid("e", 70)}, "2"
                    ),
                    http_part(
                        "PATCH",
                        f"{API}{SUBS}({SUB[3]})",
                        {"work365_name": "x"},
                        "3",
                        {"If-Match": stale},
                    ),
                ],
            ),
            http_part("GET", f"{API}{SUBS}?$select=work365_name"),
        ],
    )
    before = dv.rows(SUBS)
    answer = post_batch(client, body)
    assert answer.status == 412  # no continue-on-error: the batch stops at the failure
    (failure,) = parse_answer(answer)
    assert failure[0] == 412
    assert failure[1] == "3"
    assert json.loads(failure[3])["error"]["code"] == "0x80060882"
    assert dv.rows(SUBS) == before  # the PATCH and the POST of the change set are undone


def test_continue_on_error_processes_the_rest(dv: DataverseEmulator, client: Client) -> None:
    body = batch_body(
        "batch_AAA",
        [
            http_part(
                "PATCH",
                f"{API}{SUBS}({gid('e', 80)})",
                {"work365_name": "x"},
                headers={"If-Match": "*"},
            ),
            http_part(
                "PATCH",
                f"{API}{SUBS}({SUB[2]})",
                {"work365_name": "renamed"},
                headers={"If-Match": "*"},
            ),
        ],
    )
    stopped = post_batch(client, body)
    assert stopped.status == 404
    assert [a[0] for a in parse_answer(stopped)] == [404]
    assert sub(dv, SUB[2])["work365_name"] == "E5"
    answer = post_batch(client, body, prefer="odata.continue-on-error")
    assert answer.status == 200
    assert answer.headers["Preference-Applied"] == "odata.continue-on-error"
    assert [a[0] for a in parse_answer(answer)] == [404, 204]
    assert sub(dv, SUB[2])["work365_name"] == "renamed"


def test_a_failed_changeset_does_not_stop_a_continue_on_error_batch(
    dv: DataverseEmulator, client: Client
) -> None:
    body = batch_body(
        "batch_AAA",
        [
            changeset(
                "cs1",
                [
                    http_part("PATCH", f"{API}{SUBS}({SUB[2]})", {"work365_name": "lost"}, "1"),
                    http_part("PATCH", f"{API}{SUBS}({SUB[3]})", {"nope": 1}, "2"),
                ],
            ),
            changeset(
                "cs2", [http_part("PATCH", f"{API}{SUBS}({SUB[3]})", {"work365_name": "kept"}, "3")]
            ),
        ],
    )
    answer = post_batch(client, body, prefer="odata.continue-on-error")
    assert answer.status == 200
    assert [(a[0], a[1]) for a in parse_answer(answer)] == [(400, "2"), (204, "3")]
    assert sub(dv, SUB[2])["work365_name"] == "E5"
    assert sub(dv, SUB[3])["work365_name"] == "kept"


def test_batch_accepts_bare_lf_line_breaks(client: Client) -> None:
    text = (
        "--batch_AAA\nContent-Type: application/http\nContent-Transfer-Encoding: binary\n\n"
        f"GET {API}{SUBS}({SUB[1]})?$select=work365_name HTTP/1.1\n\n\n--batch_AAA--\n"
    )
    answer = post_batch(client, text.encode())
    assert [a[0] for a in parse_answer(answer)] == [200]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            batch_body("batch_AAA", [changeset("cs", [http_part("GET", f"{API}{SUBS}")])]),
            "GET requests are not allowed in a change set",
        ),
        (batch_body("batch_AAA", [http_part("GET", f"{API}{SUBS}")] * 1001), "maximum"),
        (
            b"--batch_AAA\r\nContent-Type: application/http\r\n\r\nGET x HTTP/1.1\r\n",
            "not terminated",
        ),
        (
            batch_body("batch_AAA", [changeset("cs", [http_part("PATCH", "$9", {})])]),
            "Content-ID Reference: '$9' does not exist",
        ),
    ],
)
def test_malformed_batches(client: Client, body: bytes, message: str) -> None:
    answer = post_batch(client, body)
    assert answer.status == 400
    text = answer.body.decode()
    assert message in text


# ---------------------------------------------------------------- metadata


def test_entity_definitions(client: Client) -> None:
    one = client.get(
        "EntityDefinitions(LogicalName='work365_subscription')",
        q(select="LogicalName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute,SchemaName"),
    )
    assert one.status == 200
    body = one.json()
    assert body["EntitySetName"] == SUBS
    assert body["PrimaryIdAttribute"] == "work365_subscriptionid"
    assert body["PrimaryNameAttribute"] == "work365_name"
    assert body["SchemaName"] == "work365_Subscription"
    assert re.fullmatch(r"[0-9a-f-]{36}", body["MetadataId"])
    found = client.get(
        "EntityDefinitions",
        q(select="LogicalName,EntitySetName", filter="LogicalName eq 'account'"),
    )
    assert found.json()["value"] == [
        {
            "LogicalName": "account",
            "EntitySetName": "accounts",
            "MetadataId": found.json()["value"][0]["MetadataId"],
        }
    ]
    missing = client.get("EntityDefinitions(LogicalName='nope')")
    assert missing.status == 404
    assert client.get("EntityDefinitions(LogicalName='account')", q(select="Nope")).status == 400


def test_attributes_relationships_and_keys(dv: DataverseEmulator, client: Client) -> None:
    base = "EntityDefinitions(LogicalName='work365_subscription')"
    attributes = client.get(
        f"{base}/Attributes", q(select="LogicalName,AttributeType,SchemaName")
    ).json()["value"]
    by_name = {a["LogicalName"]: a for a in attributes}
    assert by_name["work365_account"]["AttributeType"] == "Lookup"
    assert by_name["work365_account"]["SchemaName"] == "work365_Account"
    assert by_name["work365_providersubscriptionid"]["AttributeType"] == "String"
    assert by_name["createdon"]["AttributeType"] == "DateTime"
    lookups = client.get(
        f"{base}/Attributes", q(filter="AttributeType eq 'Lookup'", select="LogicalName")
    ).json()["value"]
    assert sorted(a["LogicalName"] for a in lookups) == [
        "work365_account",
        "work365_billingcontract",
    ]
    relations = client.get(f"{base}/ManyToOneRelationships").json()["value"]
    assert {
        (
            r["ReferencingAttribute"],
            r["ReferencedEntity"],
            r["ReferencedAttribute"],
            r["ReferencingEntityNavigationPropertyName"],
        )
        for r in relations
    } == {
        ("work365_account", "account", "accountid", "work365_Account"),
        (
            "work365_billingcontract",
            "work365_billingcontract",
            "work365_billingcontractid",
            "work365_BillingContract",
        ),
    }
    assert client.get(f"{base}/Keys").json()["value"] == []
    dv.alternate_key = True
    (key,) = client.get(f"{base}/Keys").json()["value"]
    assert key["KeyAttributes"] == ["work365_providersubscriptionid"]
    assert key["EntityKeyIndexStatus"] == "Active"


def test_the_sdk_picklist_probe_is_answered(client: Client) -> None:
    answer = client.get(
        "EntityDefinitions(LogicalName='work365_subscription')/Attributes/"
        "Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        "$select=LogicalName&$expand=OptionSet($select=Options)",
    )
    assert answer.status == 200
    assert answer.json()["value"] == []


# ---------------------------------------------------------------- audit


def history(client: Client, column: str = SETTING, paging: str | None = None) -> Answer:
    target = quote(json.dumps({"@odata.id": f"work365_adminhubsettings({SETTING_ROW_ID})"}))
    fn = "RetrieveAttributeChangeHistory(Target=@t,AttributeLogicalName=@a"
    fn += ",PagingInfo=@p)" if paging else ")"
    query = f"@t={target}&@a={quote(repr(column))}"
    if paging:
        query += f"&@p={quote(paging)}"
    return client.get(fn, query)


def test_attribute_change_history_has_the_documented_shape(client: Client) -> None:
    answer = history(client)
    assert answer.status == 200
    body = answer.json()
    assert body["@odata.context"] == (
        f"{BASE}{API}$metadata#Microsoft.Dynamics.CRM.RetrieveAttributeChangeHistoryResponse"
    )
    collection = body["AuditDetailCollection"]
    assert collection["MoreRecords"] is False
    (detail,) = collection["AuditDetails"]
    assert detail["@odata.type"] == "#Microsoft.Dynamics.CRM.AttributeAuditDetail"
    assert detail["OldValue"] == {
        "@odata.type": "#Microsoft.Dynamics.CRM.work365_adminhubsetting",
        SETTING: False,
    }
    assert detail["NewValue"][SETTING] is True
    assert "AuditRecord" not in detail  # Microsoft: the Web API does not return it


def test_the_date_of_a_change_is_in_the_audit_table(client: Client) -> None:
    query = q(
        select="createdon,attributemask,operation",
        filter=f"_objectid_value eq {SETTING_ROW_ID} and operation eq 2",
        orderby="createdon desc",
    )
    audits = client.get("audits", query).json()["value"]
    assert [a["createdon"] for a in audits] == ["2026-01-01T00:00:00Z"]
    details = client.get(
        f"audits({audits[0]['auditid']})/Microsoft.Dynamics.CRM.RetrieveAuditDetails"
    )
    assert details.json()["AuditDetail"]["NewValue"][SETTING] is True
    assert client("DELETE", f"audits({audits[0]['auditid']})").status == 405


def test_updates_of_the_setting_append_to_the_history(
    dv: DataverseEmulator, client: Client
) -> None:
    path = f"work365_adminhubsettings({SETTING_ROW_ID})"
    assert client("PATCH", path, body={SETTING: False}).status == 204
    assert client("PATCH", path, body={SETTING: True}).status == 204
    client("PATCH", path, body={SETTING: True})  # no change: no audit entry
    details = history(client).json()["AuditDetailCollection"]["AuditDetails"]
    assert [d["NewValue"][SETTING] for d in details] == [True, False, True]  # newest first
    paged = history(client, paging='{"PageNumber":1,"Count":2,"ReturnTotalRecordCount":true}')
    collection = paged.json()["AuditDetailCollection"]
    assert (collection["MoreRecords"], collection["TotalRecordCount"]) == (True, 3)
    assert len(collection["AuditDetails"]) == 2


def test_without_auditing_the_history_is_empty(dv: DataverseEmulator, client: Client) -> None:
    dv.seed(
        scenario(
            settings={
                "associateDefaultBillingContract": True,
                "enabledOn": "2026-01-01T00:00:00Z",
                "auditEnabled": False,
            }
        )
    )
    client("PATCH", f"work365_adminhubsettings({SETTING_ROW_ID})", body={SETTING: False})
    details = history(client).json()["AuditDetailCollection"]["AuditDetails"]
    assert details == []
    setting = dv.rows("work365_adminhubsettings")[0]
    assert setting[SETTING] is False
    assert client.get("audits").json()["value"] == []


def test_history_of_an_unknown_column_is_400(client: Client) -> None:
    answer = history(client, column="nope")
    assert answer.status == 400
    assert "doesn't contain attribute with Name = 'nope'" in answer.error["message"]


def test_seeded_setting_row(dv: DataverseEmulator) -> None:
    (setting,) = dv.rows("work365_adminhubsettings")
    assert setting[SETTING] is True
    assert setting["modifiedon"] == "2026-01-01T00:00:00Z"


def test_audit_record_can_be_switched_on_for_tests(tmp_path: Path, tokens: TokenIssuer) -> None:
    emulator = DataverseEmulator(str(tmp_path / "a.sqlite"), BASE, tokens, audit_record=True)
    emulator.seed(scenario())
    token, _ = tokens.issue(BASE, "c")
    (detail,) = history(Client(emulator, token)).json()["AuditDetailCollection"]["AuditDetails"]
    assert detail["AuditRecord"]["createdon"] == "2026-01-01T00:00:00Z"
    emulator.close()


# ---------------------------------------------------------------- race(), rows(), seeding


def test_race_changes_the_row_and_its_etag(dv: DataverseEmulator, client: Client) -> None:
    path = f"{SUBS}({SUB[2]})"
    etag = client.get(path).json()["@odata.etag"]
    patch = client.request("PATCH", path, body={"work365_name": "ours"}, headers={"If-Match": etag})
    dv.race(patch, {"_work365_billingcontract_value": CON2, "work365_name": "theirs"})
    changed = sub(dv, SUB[2])
    assert changed["_work365_billingcontract_value"] == CON2
    assert changed["@odata.etag"] != etag
    answer = dv.handle(patch)
    assert answer.status == 412
    assert sub(dv, SUB[2])["work365_name"] == "theirs"


def test_race_on_a_batch_changes_every_addressed_row(dv: DataverseEmulator, client: Client) -> None:
    body = batch_body(
        "batch_AAA",
        [
            http_part("PATCH", f"{API}{SUBS}({SUB[2]})", {"work365_name": "a"}),
            http_part("PATCH", f"{API}{SUBS}({SUB[3]})", {"work365_name": "b"}),
        ],
    )
    request = client.request(
        "POST", "$batch", body=body, headers={"Content-Type": "multipart/mixed; boundary=batch_AAA"}
    )
    dv.race(request, {"work365_lastinvoicenumber": "INV-1"})
    assert sub(dv, SUB[2])["work365_lastinvoicenumber"] == "INV-1"
    assert sub(dv, SUB[3])["work365_lastinvoicenumber"] == "INV-1"


def test_rows_for_assertions(dv: DataverseEmulator) -> None:
    contracts = {r["work365_billingcontractid"]: r for r in dv.rows("work365_billingcontracts")}
    assert contracts[CON3]["statecode"] == 1
    assert contracts[CON3]["statuscode"] == 2
    assert contracts[CON1]["work365_isdefault"] is True
    assert contracts[CON1]["_work365_account_value"] == ACC1
    (pa,) = dv.rows("work365_provideraccounts")
    assert pa["work365_customertenantid"] == gid("d", 1)
    assert sub(dv, SUB[5])["work365_lastlclid"] == "LCL-9"
    with pytest.raises(ValueError, match="no entity set"):
        dv.rows("nope")


def test_seeding_refuses_an_unknown_billing_reference(dv: DataverseEmulator) -> None:
    raw = scenario()
    bad = parse_scenario(
        {
            "settings": {"associateDefaultBillingContract": True},
            "subscriptions": [
                {"id": SUB[1], "name": "x", "billingReferences": {"work365_nope": "1"}}
            ],
        }
    )
    with pytest.raises(ScenarioError, match="work365_nope"):
        dv.seed(bad)
    dv.seed(raw)
    assert len(dv.rows(SUBS)) == 5


def test_a_custom_schema_map_is_served(tmp_path: Path, tokens: TokenIssuer) -> None:
    schema = Schema.from_json(
        {
            "subscription": {
                "table": "new_cspsubscription",
                "entitySet": "new_cspsubscriptions",
                "id": "new_cspsubscriptionid",
            }
        }
    )
    emulator = DataverseEmulator(str(tmp_path / "c.sqlite"), BASE, tokens, schema)
    emulator.seed(scenario())
    assert len(emulator.rows("new_cspsubscriptions")) == 5
    token, _ = tokens.issue(BASE, "c")
    answer = Client(emulator, token).get("EntityDefinitions(LogicalName='new_cspsubscription')")
    assert answer.json()["SchemaName"] == "new_Cspsubscription"
    emulator.close()


def test_the_state_survives_a_restart(tmp_path: Path, tokens: TokenIssuer) -> None:
    path = str(tmp_path / "s.sqlite")
    first = DataverseEmulator(path, BASE, tokens)
    first.seed(scenario(settings={"associateDefaultBillingContract": False, "auditEnabled": False}))
    first.close()
    again = DataverseEmulator(path, BASE, tokens)
    assert len(again.rows(SUBS)) == 5
    assert again.audit_enabled is False
    again.close()


def test_concurrent_requests_are_serialised(dv: DataverseEmulator, client: Client) -> None:
    errors: list[int] = []

    def work(n: int) -> None:
        for i in range(10):
            answer = client("PATCH", f"{SUBS}({SUB[1 + n % 5]})", body={"work365_name": f"{n}-{i}"})
            if answer.status != 204:
                errors.append(answer.status)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    versions = [int(r["@odata.etag"][3:-1]) for r in dv.rows(SUBS)]
    assert len(set(versions)) == 5
