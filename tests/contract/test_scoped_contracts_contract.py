"""A scoped run (a fan-out batch, an incremental run) reads the default contracts of its own
Accounts: one `In` query, or the full listing when they do not fit in one."""

from __future__ import annotations

import responses
from responses import matchers

from work365_fn.adapters.dataverse_repository import IN_CHUNK, Repository
from work365_fn.adapters.schema import Schema

from .clients import dv_client, policy
from .shapes import API

URL = f"{API}work365_billingcontracts"
SELECT = "work365_billingcontractid,work365_name,work365_isdefault,statecode,_work365_account_value"
A1 = "a0000000-0000-0000-0000-000000000001"
A2 = "a0000000-0000-0000-0000-000000000002"
C1 = "c0000000-0000-0000-0000-000000000001"


def repository(sleeps: list[float]) -> Repository:
    return Repository(dv_client(policy(sleeps)), Schema())


def test_the_contracts_of_a_few_accounts_are_one_in_query(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(
        URL,
        match=[
            matchers.query_param_matcher(
                {
                    "$select": SELECT,
                    "$filter": (
                        "work365_isdefault eq true and Microsoft.Dynamics.CRM.In("
                        "PropertyName='work365_account',"
                        f'PropertyValues=["{A1}","{A2}"])'
                    ),
                }
            )
        ],
        json={
            "value": [
                {
                    "work365_billingcontractid": C1,
                    "work365_name": "Default",
                    "work365_isdefault": True,
                    "statecode": 0,
                    "_work365_account_value": A1,
                }
            ]
        },
    )

    (contract,) = repository(sleeps).default_contracts_of_accounts([A2, A1.upper(), A1])

    assert (contract.id, contract.account_id, contract.is_default, contract.active) == (
        C1,
        A1,
        True,
        True,
    )


def test_more_accounts_than_one_query_holds_read_every_default_contract(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    many = [f"a0000000-0000-0000-0000-{n:012d}" for n in range(IN_CHUNK + 1)]
    rsps.get(
        URL,
        match=[
            matchers.query_param_matcher(
                {"$select": SELECT, "$filter": "work365_isdefault eq true"}
            )
        ],
        json={"value": []},
    )

    assert repository(sleeps).default_contracts_of_accounts(many) == []


def test_no_accounts_read_nothing(rsps: responses.RequestsMock, sleeps: list[float]) -> None:
    assert repository(sleeps).default_contracts_of_accounts([]) == []
