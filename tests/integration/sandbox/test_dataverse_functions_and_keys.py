"""The emulator as strict as Dataverse on two points the client once got wrong (issue 11):

- query functions (`Microsoft.Dynamics.CRM.In`, `NotIn`) take logical names, lookups included;
  the `_x_value` property is refused with Dataverse's 400 0x80041103, while plain comparisons
  read a lookup as `_x_value` (and refuse the logical name);
- a row written through an alternate key answers with the key in `OData-EntityId`, and
  `Prefer: return=representation` with `$select` gives 201 (create) or 200 (update) with the
  row, also inside a `$batch` part.
https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/use-web-api-functions#query-functions
https://learn.microsoft.com/en-us/power-apps/developer/data-platform/use-upsert-insert-update-record#use-web-api
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sandbox.test_dataverse_emulator import (
    ACC1,
    ACC2,
    API,
    BASE,
    CON1,
    CON2,
    SUB,
    SUBS,
    Client,
    batch_body,
    gid,
    http_part,
    parse_answer,
    post_batch,
    q,
    scenario,
)
from work365_fn.sandbox.core import TokenIssuer
from work365_fn.sandbox.dataverse import DataverseEmulator

CONTRACTS = "work365_billingcontracts"
NEW_PSUB = gid("f", 70)
KEY_PATH = f"{SUBS}(work365_providersubscriptionid='{NEW_PSUB}')"
KEY_ID = f"{BASE}{API}{KEY_PATH}"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[tuple[DataverseEmulator, Client]]:
    tokens = TokenIssuer(b"test-secret")
    dv = DataverseEmulator(
        str(tmp_path / "state.sqlite"),
        BASE,
        tokens,
        clock=lambda: datetime(2026, 4, 1, 12, 0, 0, tzinfo=UTC),
    )
    dv.seed(scenario())
    dv.alternate_key = True
    token, _ = tokens.issue(BASE, "client")
    yield dv, Client(dv, token)
    dv.close()


def ids(answer: Any, column: str) -> list[str]:
    assert answer.status == 200, answer.body
    return sorted(r[column] for r in answer.json()["value"])


# ---------------------------------------------------------------- query functions


@pytest.mark.parametrize(
    ("entity_set", "id_column", "function", "expected"),
    [
        (SUBS, "work365_subscriptionid", "In", [SUB[1], SUB[2]]),
        (SUBS, "work365_subscriptionid", "NotIn", [SUB[3], SUB[5]]),  # null lookups: unknown
        (CONTRACTS, "work365_billingcontractid", "In", [CON1, CON2]),
    ],
)
def test_in_on_a_lookup_takes_its_logical_name(
    emulator: tuple[DataverseEmulator, Client],
    entity_set: str,
    id_column: str,
    function: str,
    expected: list[str],
) -> None:
    _, client = emulator
    flt = (
        f"Microsoft.Dynamics.CRM.{function}(PropertyName='work365_account',"
        f'PropertyValues=["{ACC1.upper()}"])'
    )
    assert ids(client.get(entity_set, q(filter=flt, select=id_column)), id_column) == expected


@pytest.mark.parametrize("function", ["In", "NotIn"])
@pytest.mark.parametrize(
    ("entity_set", "table"),
    [(SUBS, "work365_subscription"), (CONTRACTS, "work365_billingcontract")],
)
def test_in_on_the_value_property_is_refused_like_a_real_org(
    emulator: tuple[DataverseEmulator, Client], function: str, entity_set: str, table: str
) -> None:
    _, client = emulator
    flt = (
        f"work365_name ne null and Microsoft.Dynamics.CRM.{function}("
        f'PropertyName=\'_work365_account_value\',PropertyValues=["{ACC1}","{ACC2}"])'
    )
    answer = client.get(entity_set, q(filter=flt))
    assert answer.status == 400
    assert answer.error == {
        "code": "0x80041103",
        "message": f"'{table}' entity doesn't contain attribute with Name = "
        "'_work365_account_value' and NameMapping = 'Logical'.",
    }


def test_in_on_an_unknown_attribute_is_refused_the_same_way(
    emulator: tuple[DataverseEmulator, Client],
) -> None:
    _, client = emulator
    flt = "Microsoft.Dynamics.CRM.In(PropertyName='work365_Account',PropertyValues=['x'])"
    answer = client.get(SUBS, q(filter=flt))
    assert (answer.status, answer.error["code"]) == (400, "0x80041103")
    assert "Name = 'work365_Account'" in answer.error["message"]


def test_plain_comparisons_read_a_lookup_as_its_value_property(
    emulator: tuple[DataverseEmulator, Client],
) -> None:
    _, client = emulator
    good = client.get(SUBS, q(filter=f"_work365_account_value eq {ACC2}"))
    assert ids(good, "work365_subscriptionid") == [SUB[3], SUB[5]]
    bad = client.get(SUBS, q(filter=f"work365_account eq {ACC2}"))
    assert (bad.status, bad.error["code"]) == (400, "0x80060888")
    assert "Could not find a property named 'work365_account'" in bad.error["message"]


# ---------------------------------------------------------------- writes through the key


def test_a_keyed_upsert_answers_with_the_key_not_the_id(
    emulator: tuple[DataverseEmulator, Client],
) -> None:
    dv, client = emulator
    created = client("PATCH", KEY_PATH, body={"work365_name": "keyed"})
    assert (created.status, created.body) == (204, b"")
    assert created.headers["OData-EntityId"] == KEY_ID
    updated = client("PATCH", KEY_PATH, body={"work365_name": "keyed again"})
    assert (updated.status, updated.headers["OData-EntityId"]) == (204, KEY_ID)
    [row] = [r for r in dv.rows(SUBS) if r["work365_providersubscriptionid"] == NEW_PSUB]
    assert row["work365_name"] == "keyed again"  # the key copied from the URL into the row
    by_id = client("PATCH", f"{SUBS}({row['work365_subscriptionid']})", body={"work365_name": "x"})
    assert by_id.headers["OData-EntityId"] == f"{BASE}{API}{SUBS}({row['work365_subscriptionid']})"


def test_return_representation_gives_201_on_create_and_200_on_update(
    emulator: tuple[DataverseEmulator, Client],
) -> None:
    dv, client = emulator
    prefer = {"Prefer": "return=representation"}
    created = client(
        "PATCH",
        KEY_PATH,
        q(select="work365_subscriptionid"),
        body={"work365_name": "3:3"},
        headers={**prefer, "If-None-Match": "*"},
    )
    assert created.status == 201
    body = created.json()
    [row] = [r for r in dv.rows(SUBS) if r["work365_providersubscriptionid"] == NEW_PSUB]
    assert body["work365_subscriptionid"] == row["work365_subscriptionid"]
    assert set(body) == {"@odata.context", "@odata.etag", "work365_subscriptionid"}
    assert body["@odata.context"].endswith(
        "$metadata#work365_subscriptions(work365_subscriptionid)/$entity"
    )
    assert created.headers["ETag"] == body["@odata.etag"]
    updated = client(
        "PATCH",
        KEY_PATH,
        q(select="work365_subscriptionid"),
        body={"work365_name": "3:3 Updated"},
        headers=prefer,
    )
    assert updated.status == 200
    assert updated.json()["work365_subscriptionid"] == row["work365_subscriptionid"]


def test_inside_a_batch_a_keyed_create_answers_the_key_and_honours_prefer(
    emulator: tuple[DataverseEmulator, Client],
) -> None:
    dv, client = emulator
    other = gid("f", 71)
    create_only = {"If-None-Match": "*"}
    body = batch_body(
        "batch_AAA",
        [
            http_part("PATCH", f"{API}{KEY_PATH}", {"work365_name": "plain"}, None, create_only),
            http_part(
                "PATCH",
                f"{API}{SUBS}(work365_providersubscriptionid='{other}')"
                "?$select=work365_subscriptionid",
                {"work365_name": "shown"},
                None,
                {**create_only, "Prefer": "return=representation"},
            ),
        ],
    )
    answer = post_batch(client, body, prefer="odata.continue-on-error")
    assert answer.status == 200
    plain, shown = parse_answer(answer)
    assert (plain[0], plain[2]["OData-EntityId"], plain[3]) == (204, KEY_ID, "")
    assert shown[0] == 201
    assert (
        shown[2]["OData-EntityId"] == f"{BASE}{API}{SUBS}(work365_providersubscriptionid='{other}')"
    )
    [row] = [r for r in dv.rows(SUBS) if r["work365_providersubscriptionid"] == other]
    assert json.loads(shown[3])["work365_subscriptionid"] == row["work365_subscriptionid"]
