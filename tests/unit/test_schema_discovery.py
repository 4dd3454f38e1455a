"""check-schema --propose: the pure matching of the schema map against an org's metadata."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from work365_fn.adapters.schema import Schema
from work365_fn.adapters.schema_discovery import (
    Finding,
    OrgMetadata,
    Status,
    label,
    propose,
    table_names,
)

Spec = dict[str, Any]


def a_label(text: str) -> dict[str, Any]:
    """A Label ComplexType as EntityDefinitions serves it."""
    localized = {"Label": text, "LanguageCode": 1033, "IsManaged": True}
    return {"LocalizedLabels": [localized], "UserLocalizedLabel": localized}


def default_tables() -> dict[str, Spec]:
    """An org with exactly the default names: table -> what its definition holds."""
    return {
        "work365_subscription": {
            "label": "Subscription",
            "attrs": [
                ("work365_name", "String", "Name"),
                ("work365_providersubscriptionid", "String", "Provider Subscription Id"),
                ("work365_lastlclid", "String", "Last LCL Id"),
                ("work365_lastinvoicenumber", "String", "Last Invoice Number"),
            ],
            "lookups": [
                ("work365_account", "account"),
                ("work365_billingcontract", "work365_billingcontract"),
            ],
        },
        "work365_billingcontract": {
            "label": "Billing Contract",
            "attrs": [("work365_name", "String", "Name"), ("work365_isdefault", "Boolean", "")],
            "lookups": [("work365_account", "account")],
        },
        "work365_provideraccount": {
            "label": "Provider Account",
            "attrs": [
                ("work365_name", "String", "Name"),
                ("work365_customertenantid", "String", ""),
            ],
            "lookups": [("work365_account", "account")],
        },
        "work365_adminhubsetting": {
            "label": "Admin Hub Setting",
            "name": None,
            "attrs": [("work365_associatedefaultbillingcontract", "Boolean", "")],
        },
        "account": {"label": "Account", "set": "accounts", "name": "name", "attrs": []},
        "contact": {"label": "Contact", "set": "contacts", "name": "fullname", "attrs": []},
    }


def metadata(tables: dict[str, Spec]) -> OrgMetadata:
    entities, attributes, many_to_one, keys = [], {}, {}, {}
    for logical, spec in tables.items():
        entity_id = f"{logical}id"
        entities.append(
            {
                "LogicalName": logical,
                "EntitySetName": spec.get("set", f"{logical}s"),
                "PrimaryIdAttribute": entity_id,
                "PrimaryNameAttribute": spec.get("name", "work365_name"),
                "DisplayName": a_label(spec["label"]),
                "MetadataId": f"00000000-0000-0000-0000-{len(entities):012d}",
            }
        )
        lookups = spec.get("lookups", [])
        attributes[logical] = [
            {"LogicalName": entity_id, "AttributeType": "Uniqueidentifier"},
            {
                "LogicalName": "statecode",
                "AttributeType": "State",
                "DisplayName": a_label("Status"),
            },
            {"LogicalName": "statuscode", "AttributeType": "Status"},
            *(
                {"LogicalName": n, "AttributeType": t, "DisplayName": a_label(lab)}
                for n, t, lab in spec["attrs"]
            ),
            *({"LogicalName": n, "AttributeType": "Lookup"} for n, _ in lookups),
        ]
        many_to_one[logical] = [
            {
                "SchemaName": f"{target}_{logical}_{attr}",
                "ReferencedEntity": target,
                "ReferencingAttribute": attr,
                "ReferencingEntityNavigationPropertyName": attr,
            }
            for attr, target in lookups
        ]
        keys[logical] = [
            {"LogicalName": f"key{i}", "KeyAttributes": cols, "EntityKeyIndexStatus": "Active"}
            for i, cols in enumerate(spec.get("keys", []))
        ]
    return OrgMetadata(entities, attributes, many_to_one, keys)


def finding(findings: tuple[Finding, ...], key: str) -> Finding:
    return next(f for f in findings if f.key == key)


def changed(findings: tuple[Finding, ...]) -> dict[str, tuple[str, Status]]:
    return {f.key: (f.value, f.status) for f in findings if f.status is not Status.KEPT}


def test_an_org_with_the_default_names_keeps_every_name() -> None:
    proposal = propose(metadata(default_tables()), Schema())

    assert proposal.ok
    assert proposal.schema == Schema()
    assert changed(proposal.findings) == {}
    assert proposal.alternate_key is None


def test_the_contracts_account_lookup_is_found_by_the_table_it_points_to() -> None:
    # A public Work 365 data model: relationship billingcontract_customer, lookup work365_customer.
    tables = default_tables()
    tables["work365_billingcontract"]["lookups"] = [("work365_customer", "account")]
    org = metadata(tables)
    org.many_to_one["work365_billingcontract"][0]["SchemaName"] = "billingcontract_customer"

    proposal = propose(org, Schema())

    assert proposal.ok
    assert proposal.schema.billing_contract.account == "work365_customer"
    got = finding(proposal.findings, "billingContract.account")
    assert (got.status, got.configured) == (Status.FOUND, "work365_account")
    assert changed(proposal.findings) == {
        "billingContract.account": ("work365_customer", Status.FOUND)
    }


def test_several_lookups_to_the_table_are_a_choice_with_the_candidates_listed() -> None:
    tables = default_tables()
    tables["work365_billingcontract"]["lookups"] = [
        ("work365_reseller", "account"),
        ("work365_customer", "account"),
        ("work365_contact", "contact"),
    ]

    proposal = propose(metadata(tables), Schema())

    got = finding(proposal.findings, "billingContract.account")
    assert got.status is Status.CHOSEN
    assert got.value == "work365_customer"  # named like an Account lookup: ranked first
    assert got.candidates == ("work365_customer", "work365_reseller")
    assert not proposal.ok


def test_the_configured_lookup_is_kept_among_several_to_the_same_table() -> None:
    tables = default_tables()
    tables["work365_subscription"]["lookups"].append(("work365_reseller", "account"))

    proposal = propose(metadata(tables), Schema())

    assert finding(proposal.findings, "subscription.account").status is Status.KEPT
    assert proposal.ok


def test_is_default_and_the_setting_column_are_found_by_display_label() -> None:
    tables = default_tables()
    tables["work365_billingcontract"]["attrs"] = [
        ("work365_name", "String", "Name"),
        ("cr5a1_flag1", "Boolean", "Is Default"),
        ("cr5a1_flag2", "Boolean", "On Hold"),
    ]
    tables["work365_adminhubsetting"]["attrs"] = [
        ("cr5a1_adbc", "Boolean", "Associate Default Billing Contract"),
        ("cr5a1_autorenew", "Boolean", "Auto Renew"),
    ]

    proposal = propose(metadata(tables), Schema())

    assert proposal.ok
    assert proposal.schema.billing_contract.is_default == "cr5a1_flag1"
    assert proposal.schema.setting.associate_default == "cr5a1_adbc"


def test_columns_of_the_wrong_type_are_not_candidates() -> None:
    tables = default_tables()
    tables["work365_billingcontract"]["attrs"] = [
        ("work365_name", "String", "Name"),
        ("work365_isdefault", "String", "Is Default"),  # text, not Two Options
    ]

    proposal = propose(metadata(tables), Schema())

    got = finding(proposal.findings, "billingContract.isDefault")
    assert (got.status, got.value) == (Status.MISSING, "work365_isdefault")
    assert "String column" in got.why
    assert not proposal.ok


def test_two_equally_good_columns_are_a_choice() -> None:
    tables = default_tables()
    tables["work365_provideraccount"]["attrs"] = [
        ("work365_name", "String", "Name"),
        ("work365_tenantid", "String", "Tenant"),
        ("work365_customerid", "String", "Customer"),
    ]

    proposal = propose(metadata(tables), Schema())

    got = finding(proposal.findings, "providerAccount.customerId")
    assert got.status is Status.CHOSEN
    assert set(got.candidates) == {"work365_tenantid", "work365_customerid"}


def test_a_name_not_found_keeps_the_default_and_is_flagged() -> None:
    tables = default_tables()
    tables["work365_subscription"]["attrs"] = [("work365_name", "String", "Name")]

    proposal = propose(metadata(tables), Schema())

    assert not proposal.ok
    for key in (
        "subscription.providerSubscriptionId",
        "subscription.billingReferences[0]",
        "subscription.billingReferences[1]",
    ):
        assert finding(proposal.findings, key).status is Status.MISSING, key
    assert proposal.schema.subscription == Schema().subscription


def test_renamed_billing_references_are_found_by_their_words() -> None:
    tables = default_tables()
    tables["work365_subscription"]["attrs"][2:] = [
        ("work365_lcl", "String", "License Change Log"),
        ("work365_invoicenumber", "String", "Invoice"),
    ]

    proposal = propose(metadata(tables), Schema())

    assert proposal.ok
    assert proposal.schema.subscription.billing_references == (
        "work365_lcl",
        "work365_invoicenumber",
    )


def test_a_table_with_another_name_is_found_with_its_set_id_and_name() -> None:
    tables = default_tables()
    tables["work365_setting"] = tables.pop("work365_adminhubsetting")
    tables["work365_setting"]["label"] = "Work 365 Setting"
    tables["work365_setting"]["attrs"] = [("work365_associatedefault", "Boolean", "")]

    proposal = propose(metadata(tables), Schema())

    assert proposal.ok
    assert proposal.schema.setting.table == "work365_setting"
    assert proposal.schema.setting.entity_set == "work365_settings"
    assert proposal.schema.setting.id == "work365_settingid"
    assert proposal.schema.setting.associate_default == "work365_associatedefault"
    assert table_names(metadata(tables).entities, Schema())["setting"] == "work365_setting"


def test_a_missing_table_flags_its_names_and_keeps_them() -> None:
    tables = default_tables()
    del tables["work365_provideraccount"]

    proposal = propose(metadata(tables), Schema())

    assert not proposal.ok
    missing = {f.key for f in proposal.findings if f.status is Status.MISSING}
    assert missing == {
        "providerAccount.table",
        "providerAccount.entitySet",
        "providerAccount.id",
        "providerAccount.name",
        "providerAccount.customerId",
        "providerAccount.account",
    }
    assert proposal.schema.provider_account == Schema().provider_account


def test_a_lookup_follows_its_target_table_when_that_is_renamed() -> None:
    tables = default_tables()
    tables["work365_contract"] = tables.pop("work365_billingcontract")
    tables["work365_subscription"]["lookups"] = [
        ("work365_account", "account"),
        ("work365_contract", "work365_contract"),
    ]

    proposal = propose(metadata(tables), Schema())

    assert proposal.ok
    assert proposal.schema.billing_contract.table == "work365_contract"
    assert proposal.schema.subscription.billing_contract == "work365_contract"


def test_the_alternate_key_ranks_its_column_and_is_reported() -> None:
    tables = default_tables()
    tables["work365_subscription"]["attrs"][1] = ("work365_msid", "String", "MS Id")
    tables["work365_subscription"]["attrs"].append(("work365_externalid", "String", "External"))
    tables["work365_subscription"]["keys"] = [["work365_msid"]]

    proposal = propose(metadata(tables), Schema())

    assert proposal.schema.subscription.provider_subscription_id == "work365_msid"
    assert finding(proposal.findings, "subscription.providerSubscriptionId").status is Status.FOUND
    assert proposal.alternate_key == ("work365_msid",)


def test_the_proposal_starts_from_the_configured_map() -> None:
    schema = Schema.from_json({"billingContract": {"isDefault": "cr5a1_flag1"}})
    tables = default_tables()
    tables["work365_billingcontract"]["attrs"].append(("cr5a1_flag1", "Boolean", "Flag"))

    proposal = propose(metadata(tables), schema)

    assert finding(proposal.findings, "billingContract.isDefault").status is Status.KEPT
    assert proposal.schema.billing_contract.is_default == "cr5a1_flag1"


def test_the_json_document_holds_a_loadable_schema_file_and_every_finding() -> None:
    tables = copy.deepcopy(default_tables())
    tables["work365_billingcontract"]["lookups"] = [("work365_customer", "account")]

    document = propose(metadata(tables), Schema()).to_json()

    assert document["ok"] is True
    assert Schema.from_json(document["schema"]).billing_contract.account == "work365_customer"
    keys = [f["key"] for f in document["findings"]]  # type: ignore[attr-defined]
    assert len(keys) == len(set(keys))
    assert "billingContract.account" in keys


@pytest.mark.parametrize(
    ("display", "expected"),
    [
        (a_label("Is Default"), "Is Default"),
        ({"LocalizedLabels": [{"Label": "Standard"}], "UserLocalizedLabel": None}, "Standard"),
        ({"LocalizedLabels": [], "UserLocalizedLabel": None}, ""),
        (None, ""),
    ],
)
def test_label_reads_the_user_label_then_the_first_localized_one(
    display: object, expected: str
) -> None:
    assert label({"LogicalName": "x", "DisplayName": display}) == expected
