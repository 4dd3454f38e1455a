"""Schema.load: the default map, overridden name by name from WORK365_SCHEMA_FILE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from work365_fn.adapters.schema import Schema
from work365_fn.errors import SchemaError


def schema_file(tmp_path: Path, content: object) -> str:
    path = tmp_path / "schema.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), "utf-8")
    return str(path)


def test_no_file_gives_the_defaults() -> None:
    assert Schema.load(None) == Schema()
    assert Schema.load("") == Schema()


def test_a_partial_file_overrides_only_the_names_it_gives(tmp_path: Path) -> None:
    path = schema_file(
        tmp_path,
        {
            "subscription": {"table": "new_cspsubscription", "entitySet": "new_cspsubscriptions"},
            "billingContract": {"isDefault": "new_isdefaultcontract", "activeState": 1},
            "providerAccount": {},
        },
    )
    default = Schema()

    schema = Schema.load(path)

    assert schema.subscription.table == "new_cspsubscription"
    assert schema.subscription.entity_set == "new_cspsubscriptions"
    assert schema.subscription.id == default.subscription.id
    assert schema.subscription.billing_contract == default.subscription.billing_contract
    assert schema.billing_contract.is_default == "new_isdefaultcontract"
    assert schema.billing_contract.active_state == 1
    assert schema.billing_contract.table == default.billing_contract.table
    assert schema.provider_account == default.provider_account
    assert schema.setting == default.setting
    assert schema.account == default.account


def test_the_map_may_be_given_inline_in_the_setting() -> None:
    inline = json.dumps({"subscription": {"table": "new_cspsubscription"}})

    schema = Schema.load(f"  {inline}  ")

    assert schema.subscription.table == "new_cspsubscription"
    assert schema.billing_contract == Schema().billing_contract


def test_bad_inline_json_is_named_as_inline() -> None:
    with pytest.raises(SchemaError, match=r"WORK365_SCHEMA_FILE \(inline JSON\)"):
        Schema.load('{"subscription": ')


def test_billing_references_take_a_list_of_names(tmp_path: Path) -> None:
    path = schema_file(tmp_path, {"subscription": {"billingReferences": ["new_lastinvoice"]}})

    assert Schema.load(path).subscription.billing_references == ("new_lastinvoice",)


def test_the_defaults_round_trip_through_json() -> None:
    assert Schema.from_json(json.loads(json.dumps(Schema().to_json()))) == Schema()


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ({"subscription": {"tabel": "new_x"}}, "subscription.tabel"),
        ({"subscriptions": {"table": "new_x"}}, "subscriptions"),
        ({"setting": {"associateDefault": "new col"}}, "setting.associateDefault"),
        ({"setting": {"associateDefault": "new_col;drop"}}, "setting.associateDefault"),
        ({"account": {"entitySet": ""}}, "account.entitySet"),
        ({"account": {"entitySet": 7}}, "account.entitySet"),
        ({"billingContract": {"activeState": "0"}}, "billingContract.activeState"),
        ({"billingContract": {"activeState": True}}, "billingContract.activeState"),
        (
            {"subscription": {"billingReferences": "new_lastinvoice"}},
            "subscription.billingReferences",
        ),
        ({"subscription": ["table"]}, "subscription"),
    ],
)
def test_a_bad_entry_is_refused_with_its_key_named(
    tmp_path: Path, content: object, named: str
) -> None:
    with pytest.raises(SchemaError) as caught:
        Schema.load(schema_file(tmp_path, content))

    assert f"'{named}'" in str(caught.value)


def test_an_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(SchemaError) as caught:
        Schema.load(schema_file(tmp_path, {"subscription": {"tabel": "new_x"}}))

    assert "known: " in str(caught.value)
    assert "entitySet" in str(caught.value)


def test_a_file_that_is_not_json_is_named_with_the_line(tmp_path: Path) -> None:
    path = schema_file(tmp_path, '{\n  "subscription": {"table": "new_x",}\n}')

    with pytest.raises(SchemaError) as caught:
        Schema.load(path)

    assert "WORK365_SCHEMA_FILE" in str(caught.value)
    assert path in str(caught.value)
    assert "line 2" in str(caught.value)


def test_the_top_level_must_be_an_object(tmp_path: Path) -> None:
    with pytest.raises(SchemaError):
        Schema.load(schema_file(tmp_path, ["subscription"]))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.json")

    with pytest.raises(SchemaError) as caught:
        Schema.load(missing)

    assert "WORK365_SCHEMA_FILE" in str(caught.value)
    assert missing in str(caught.value)
