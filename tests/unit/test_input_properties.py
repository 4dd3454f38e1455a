"""Files a person writes, under property-based testing: any value in a schema map or a scenario
file is either taken (and then harmless: a logical name, a GUID) or refused with its field
named. Nothing else reaches a URL, a $select or a $filter."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from work365_fn.adapters.schema import Schema
from work365_fn.errors import SchemaError
from work365_fn.rules.model import is_guid
from work365_fn.sandbox.scenario import ScenarioError, parse_scenario

NAME = re.compile(r"^[A-Za-z0-9_]+$")
ODD = ["' or 1 eq 1", "a,b", "x)", "name;drop", "caf\u00e9", "", " ", "a b", "$filter", "%27"]

values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(ODD),
    st.integers(),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=10) | st.sampled_from(ODD), max_size=3),
    # NaN and Infinity are not JSON: the gate refuses the file (tests/unit/test_outside_inputs.py)
    st.floats(allow_nan=False, allow_infinity=False),
)

SCHEMA_KEYS = [
    (section, key)
    for section, table in json.loads(json.dumps(Schema().to_json())).items()
    for key in table
]


@pytest.mark.parametrize(("section", "key"), SCHEMA_KEYS)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=values)
def test_a_schema_value_is_a_logical_name_or_refused_naming_its_key(
    tmp_path: Path, section: str, key: str, value: Any
) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({section: {key: value}}), encoding="utf-8")
    try:
        schema = Schema.load(str(path))
    except SchemaError as exc:
        assert f"'{section}.{key}'" in str(exc)
        return
    loaded = schema.to_json()[section][key]
    names = loaded if isinstance(loaded, list) else [loaded]
    for name in names:
        assert isinstance(name, int) or NAME.match(name), (section, key, name)


def _scenario() -> dict[str, Any]:
    acc, cus = "a0000000-0000-0000-0000-000000000001", "d0000000-0000-0000-0000-000000000001"
    return {
        "accounts": [{"id": acc, "name": "A"}],
        "providerAccounts": [{"id": "b0000000-0000-0000-0000-000000000001", "customerId": cus,
                              "accountId": acc}],
        "billingContracts": [{"id": "c0000000-0000-0000-0000-000000000001", "accountId": acc,
                              "isDefault": True}],
        "subscriptions": [{"id": "f0000000-0000-0000-0000-000000000001",
                           "providerSubscriptionId": "e0000000-0000-0000-0000-000000000001",
                           "billingContractId": "c0000000-0000-0000-0000-000000000001"}],
        "partnerCenter": {"customers": [{"id": cus, "subscriptions": [
            {"id": "e0000000-0000-0000-0000-000000000001", "offerId": "X"}]}]},
    }  # fmt: skip


# (the field's path in error messages, how to reach it in the raw scenario)
SCENARIO_IDS: list[tuple[str, tuple[Any, ...]]] = [
    ("accounts[0].id", ("accounts", 0, "id")),
    ("providerAccounts[0].customerId", ("providerAccounts", 0, "customerId")),
    ("billingContracts[0].id", ("billingContracts", 0, "id")),
    ("subscriptions[0].providerSubscriptionId", ("subscriptions", 0, "providerSubscriptionId")),
    ("partnerCenter.customers[0].id", ("partnerCenter", "customers", 0, "id")),
    (
        "partnerCenter.customers[0].subscriptions[0].id",
        ("partnerCenter", "customers", 0, "subscriptions", 0, "id"),
    ),
]


@pytest.mark.parametrize(("path", "keys"), SCENARIO_IDS, ids=[p for p, _ in SCENARIO_IDS])
@settings(max_examples=25, deadline=None)
@given(value=values | st.uuids().map(str))
def test_a_scenario_id_is_a_guid_or_refused_naming_its_field(
    path: str, keys: tuple[Any, ...], value: Any
) -> None:
    raw = copy.deepcopy(_scenario())
    where: Any = raw
    for k in keys[:-1]:
        where = where[k]
    where[keys[-1]] = value
    try:
        parse_scenario(raw, origin="s.json")
    except ScenarioError as exc:
        if isinstance(value, str) and is_guid(value):
            assert "s.json" in str(exc)  # a valid GUID that breaks a reference elsewhere
        else:
            assert f"'{path}'" in str(exc), str(exc)
        return
    # taken: a GUID, or nothing where the field is optional
    assert value is None or (isinstance(value, str) and is_guid(value)), (path, value)
