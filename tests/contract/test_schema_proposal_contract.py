"""check-schema --propose reads the org's metadata with exactly these requests, and matches what
they answer. Shapes as in "Query table definitions using the Web API" (EntityMetadata with its
DisplayName Label) and the OneToManyRelationshipMetadata / EntityKeyMetadata references:
https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query-metadata-web-api
https://learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/onetomanyrelationshipmetadata
"""

from __future__ import annotations

from typing import Any

import responses
from responses import matchers

from work365_fn.adapters.dataverse_metadata import propose_schema
from work365_fn.adapters.schema import Schema
from work365_fn.adapters.schema_discovery import Status

from .clients import TOKEN, dv_client, policy
from .shapes import API

HEADERS = {
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "Authorization": f"Bearer {TOKEN}",
}
ENTITY_SELECT = "LogicalName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute,DisplayName"


def label(text: str) -> dict[str, Any]:
    localized = {
        "Label": text,
        "LanguageCode": 1033,
        "IsManaged": True,
        "MetadataId": "e3d4e8a2-1a4b-4c8e-9f00-000000000001",
        "HasChanged": None,
    }
    return {"LocalizedLabels": [localized], "UserLocalizedLabel": localized}


def entity(logical: str, entity_set: str, name: str | None, text: str) -> dict[str, Any]:
    return {
        "LogicalName": logical,
        "EntitySetName": entity_set,
        "PrimaryIdAttribute": f"{logical}id",
        "PrimaryNameAttribute": name,
        "DisplayName": label(text),
        "MetadataId": "70816501-edb9-4740-a16c-6a5efbc05d84",
    }


def attribute(logical: str, kind: str, text: str) -> dict[str, Any]:
    return {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{kind}AttributeMetadata",
        "LogicalName": logical,
        "AttributeType": kind,
        "DisplayName": label(text),
        "MetadataId": "f8cd5db9-cee8-4845-8cdd-cd4f504957e7",
    }


def relationship(attr: str, referenced: str, nav: str, name: str) -> dict[str, Any]:
    return {
        "SchemaName": name,
        "ReferencingAttribute": attr,
        "ReferencedEntity": referenced,
        "ReferencingEntityNavigationPropertyName": nav,
        "MetadataId": "2a4901bf-2241-db11-898a-0007e9e17ebd",
    }


def definition(
    rsps: responses.RequestsMock, path: str, select: str, value: list[dict[str, Any]]
) -> None:
    rsps.get(
        f"{API}{path}",
        match=[matchers.query_param_matcher({"$select": select}), matchers.header_matcher(HEADERS)],
        json={"@odata.context": f"{API}$metadata#{path}", "value": value},
    )


def part(
    rsps: responses.RequestsMock, table: str, name: str, select: str, value: list[dict[str, Any]]
) -> None:
    definition(rsps, f"EntityDefinitions(LogicalName='{table}')/{name}", select, value)


def test_propose_reads_the_definitions_and_finds_the_renamed_names(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    definition(
        rsps,
        "EntityDefinitions",
        ENTITY_SELECT,
        [
            entity("account", "accounts", "name", "Account"),
            entity("work365_subscription", "work365_subscriptions", "work365_name", "Subscription"),
            entity(
                "work365_billingcontract",
                "work365_billingcontracts",
                "work365_name",
                "Billing Contract",
            ),
            entity(
                "work365_provideraccount",
                "work365_provideraccounts",
                "work365_name",
                "Provider Account",
            ),
            entity(
                "work365_adminhubsetting", "work365_adminhubsettings", None, "Admin Hub Setting"
            ),
        ],
    )
    attrs = "LogicalName,AttributeType,DisplayName"
    rels = "ReferencingAttribute,ReferencedEntity,ReferencingEntityNavigationPropertyName"
    keys = "LogicalName,KeyAttributes,EntityKeyIndexStatus"
    sub = "work365_subscription"
    part(
        rsps,
        sub,
        "Attributes",
        attrs,
        [
            attribute("work365_name", "String", "Name"),
            attribute("work365_providersubscriptionid", "String", "Provider Subscription Id"),
            attribute("work365_lastlclid", "String", "Last LCL"),
            attribute("work365_lastinvoicenumber", "String", "Last Invoice Number"),
        ],
    )
    part(
        rsps,
        sub,
        "ManyToOneRelationships",
        rels,
        [
            relationship("work365_account", "account", "work365_Account", "subscription_account"),
            relationship(
                "work365_billingcontract",
                "work365_billingcontract",
                "work365_BillingContract",
                "work365_subscription_billingcontract",
            ),
        ],
    )
    part(
        rsps,
        sub,
        "Keys",
        keys,
        [
            {
                "LogicalName": "work365_providersubscriptionid_key",
                "KeyAttributes": ["work365_providersubscriptionid"],
                "EntityKeyIndexStatus": "Active",
            }
        ],
    )
    contract = "work365_billingcontract"
    part(
        rsps,
        contract,
        "Attributes",
        attrs,
        [
            attribute("work365_name", "String", "Name"),
            attribute("work365_flag", "Boolean", "Is Default"),
            attribute("statecode", "State", "Status"),
        ],
    )
    part(
        rsps,
        contract,
        "ManyToOneRelationships",
        rels,
        [
            relationship(
                "work365_customer", "account", "work365_Customer", "billingcontract_customer"
            )
        ],
    )
    pa = "work365_provideraccount"
    part(
        rsps,
        pa,
        "Attributes",
        attrs,
        [
            attribute("work365_name", "String", "Name"),
            attribute("work365_customertenantid", "String", "Customer Tenant Id"),
        ],
    )
    part(
        rsps,
        pa,
        "ManyToOneRelationships",
        rels,
        [relationship("work365_account", "account", "work365_Account", "provideraccount_account")],
    )
    part(
        rsps,
        "work365_adminhubsetting",
        "Attributes",
        attrs,
        [attribute("work365_associatedefaultbillingcontract", "Boolean", "Associate Default")],
    )

    proposal = propose_schema(dv_client(policy(sleeps)), Schema())

    assert proposal.ok
    assert proposal.schema.billing_contract.account == "work365_customer"
    assert proposal.schema.billing_contract.is_default == "work365_flag"
    assert proposal.alternate_key == ("work365_providersubscriptionid",)
    found = {f.key for f in proposal.findings if f.status is Status.FOUND}
    assert found == {"billingContract.account", "billingContract.isDefault"}
