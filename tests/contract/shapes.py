"""Canned payloads shaped like the real services' answers, taken from Microsoft's documentation.

Each shape cites the page it was copied from. Ids, names and tokens are the documentation's own
where it gives them; the builders only vary what a test needs (ids, continuation tokens).
"""

from __future__ import annotations

from typing import Any

PC = "https://api.partnercenter.microsoft.com"
ORG = "https://contoso.crm.dynamics.com"
API = f"{ORG}/api/data/v9.2/"

# ---- Partner Center ----------------------------------------------------------------------------

# Customer items as in "Get a list of customers" (response example):
# https://learn.microsoft.com/partner-center/developer/get-a-list-of-customers
CUSTOMERS = [
    ("c5757d70-06f3-4f23-8367-5a9e55019f94", "contoso190.onmicrosoft.com", "Contoso190"),
    ("7b26b357-9ca3-48b8-a58e-4febe2662a5d", "ContosoCorpCo.onmicrosoft.com", "Contoso"),
    ("53eb21cb-6b2d-4ee5-9e92-27dfc927e93c", "FourthCoffee137.onmicrosoft.com", "FourthCoffee137"),
    (
        "3dfe847b-cad9-4fc1-86d3-cf16c2790087",
        "WingtipToys1254789149.onmicrosoft.com",
        "Wingtip Toys",
    ),
    ("b44bb1fb-c595-45b0-9e09-d657365580bf", "domain", "companyName"),
]


def pc_customer(customer_id: str, domain: str, name: str) -> dict[str, Any]:
    """One item of `GET /v1/customers` (same page as CUSTOMERS)."""
    return {
        "id": customer_id,
        "companyProfile": {
            "tenantId": customer_id,
            "domain": domain,
            "companyName": name,
            "links": {
                "self": {
                    "uri": f"/customers/{customer_id}/profiles/company",
                    "method": "GET",
                    "headers": [],
                }
            },
            "attributes": {"objectType": "CustomerCompanyProfile"},
        },
        "relationshipToPartner": "reseller",
        "links": {"self": {"uri": f"/customers/{customer_id}", "method": "GET", "headers": []}},
        "attributes": {"objectType": "Customer"},
    }


def pc_customers_page(
    items: list[tuple[str, str, str]], size: int, continuation: str | None = None
) -> dict[str, Any]:
    """A page of `GET /v1/customers?size=N`. `links.next` carries the token in its headers, as
    in the paged collections of the Partner Center docs (e.g. "Get invoice line items",
    https://learn.microsoft.com/partner-center/developer/get-invoicelineitems , response with
    `links.next.headers[{key: MS-ContinuationToken}]`); no `links.next` on the last page."""
    links: dict[str, Any] = {
        "self": {"uri": f"/customers?size={size}", "method": "GET", "headers": []}
    }
    body: dict[str, Any] = {
        "totalCount": len(items),
        "items": [pc_customer(*item) for item in items],
        "links": links,
        "attributes": {"objectType": "Collection"},
    }
    if continuation is not None:
        links["next"] = {
            # Relative, and its form varies (DESIGN.md section 3): the client must not use it.
            "uri": f"/customers?size={size}?seekOperation=Next",
            "method": "GET",
            "headers": [{"key": "MS-ContinuationToken", "value": continuation}],
        }
        body["continuationToken"] = continuation
    return body


# A continuation token as the docs show them (opaque, with '/', '=' and ','):
# https://learn.microsoft.com/partner-center/developer/get-invoicelineitems
CONTINUATION_1 = (
    "d19617b8-fbe5-4684-a5d8-0230972fb0cf,0705c4a9-39f7-4261-ba6d-53e24a9ce47d_"
    "a4ayc/80/OGda4BO/1o/V0etpOqiLx1JwB5S3beHW0s=,0d81c700-98b4-4b13-9129-ffd5620f72e7"
)
CONTINUATION_2 = (
    "d19617b8-fbe5-4684-a5d8-0230972fb0cf,0705c4a9-39f7-4261-ba6d-53e24a9ce47d_"
    "b5bzd/91/PHeb5CP/2p/W1fuqPrjMy2KxC6T4cfIX1t=,0d81c700-98b4-4b13-9129-ffd5620f72e7"
)

# A new-commerce subscription as in "Get a customer's subscriptions" / "Update a subscription":
# https://learn.microsoft.com/partner-center/developer/get-all-of-a-customer-s-subscriptions
PC_SUBSCRIPTION: dict[str, Any] = {
    "id": "a4c1340d-6911-4758-bba3-0c4c6007d161",
    "offerId": "CFQ7TTC0LH18:0001:CFQ7TTC0K971",
    "offerName": "Microsoft 365 Business Basic",
    "friendlyName": "Microsoft 365 Business Basic",
    "productType": {"id": "OnlineServicesNCE", "displayName": "OnlineServicesNCE"},
    "quantity": 1,
    "unitType": "Licenses",
    "hasPurchasableAddons": False,
    "creationDate": "2021-01-14T16:57:15.0966728Z",
    "effectiveStartDate": "2021-01-14T16:57:14.498252Z",
    "commitmentEndDate": "2022-01-13T00:00:00Z",
    "status": "active",
    "autoRenewEnabled": True,
    "isTrial": False,
    "billingType": "license",
    "billingCycle": "monthly",
    "termDuration": "P1Y",
    "renewalTermDuration": "",
    "refundOptions": [{"type": "Full", "expiresAt": "2021-01-15T00:00:00Z"}],
    "isMicrosoftProduct": True,
    "partnerId": "",
    "attentionNeeded": False,
    "actionTaken": False,
    "contractType": "subscription",
    "links": {
        "product": {"uri": "/products/CFQ7TTC0LH18?country=US", "method": "GET", "headers": []},
    },
    "orderId": "CF3B0E37-BE0B-4CDD-B584-D1A97D98A922",
    "attributes": {"objectType": "Subscription"},
}


def pc_subscriptions(customer_id: str, *items: dict[str, Any]) -> dict[str, Any]:
    """`GET /v1/customers/{id}/subscriptions` (same page as PC_SUBSCRIPTION): not paged."""
    return {
        "totalCount": len(items),
        "items": list(items),
        "links": {
            "self": {
                "uri": f"/customers/{customer_id}/subscriptions",
                "method": "GET",
                "headers": [],
            }
        },
        "attributes": {"objectType": "Collection"},
    }


def pc_error(code: int | str, description: str) -> dict[str, Any]:
    """The error schema `{code, description, data, source}` of "Partner Center REST error codes":
    https://learn.microsoft.com/partner-center/developer/error-codes"""
    return {"code": code, "description": description, "data": [], "source": "PartnerFD"}


# 403 / 20002 from the same page: "The partner ID {0} has no commerce relationship with the
# customer ID {1}." (the live API sends the code as a number; the docs type it as a string).
PC_NO_RELATIONSHIP = pc_error(
    20002,
    "The partner ID 4847383 has no commerce relationship with the customer ID "
    "c5757d70-06f3-4f23-8367-5a9e55019f94.",
)

# ---- Dataverse ---------------------------------------------------------------------------------

# "Page results by using OData": the second page's @odata.nextLink, verbatim (with the paging
# cookie XML encoded twice), [Organization URI] replaced by ORG.
# https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/page-results
DV_CONTACTS_NEXT_LINK = (
    f"{API}contacts?$select=fullname&$skiptoken=%3Ccookie%20pagenumber=%222%22%20pagingcookie="
    "%22%253ccookie%2520page%253d%25221%2522%253e%253ccontactid%2520last%253d%2522%257bD5026A4D"
    "-D01C-ED11-B83E-000D3A572421%257d%2522%2520first%253d%2522%257b49B0BE2E-D01C-ED11-B83E-000D"
    "3A572421%257d%2522%2520%252f%253e%253c%252fcookie%253e%22%20istracking=%22False%22%20/%3E"
)

DV_CONTACTS_PAGE_1: dict[str, Any] = {
    "@odata.context": f"{API}$metadata#contacts(fullname)",
    "value": [
        {
            "@odata.etag": 'W/"72201545"',
            "fullname": "Yvonne McKay (sample)",
            "contactid": "49b0be2e-d01c-ed11-b83e-000d3a572421",
        },
        {
            "@odata.etag": 'W/"80648695"',
            "fullname": "Susanna Stubberod (sample)",
            "contactid": "70bf4d48-34cb-ed11-b596-0022481d68cd",
        },
    ],
    "@odata.nextLink": DV_CONTACTS_NEXT_LINK,
}

DV_CONTACTS_PAGE_2: dict[str, Any] = {
    "@odata.context": f"{API}$metadata#contacts(fullname)",
    "value": [
        {
            "@odata.etag": 'W/"80648700"',
            "fullname": "Nancy Anderson (sample)",
            "contactid": "d5026a4d-d01c-ed11-b83e-000d3a572421",
        }
    ],
}


def dv_error(code: str, message: str) -> dict[str, Any]:
    """`{"error": {"code", "message"}}` as the Web API answers errors:
    https://learn.microsoft.com/power-apps/developer/data-platform/webapi/compose-http-requests-handle-errors"""
    return {"error": {"code": code, "message": message}}


# 412 on If-Match, "Perform conditional operations using the Web API" (the docs show code ""):
# https://learn.microsoft.com/power-apps/developer/data-platform/webapi/perform-conditional-operations-using-web-api
DV_VERSION_MISMATCH = dv_error(
    "", "The version of the existing record doesn't match the RowVersion property provided."
)
# 412 on If-None-Match: * (same page), with the code the live service sends (0x80040237).
DV_ALREADY_EXISTS = dv_error("0x80040237", "A record with matching key values already exists.")
# 404 of "Update and delete table rows" (Prevent create in upsert):
# https://learn.microsoft.com/power-apps/developer/data-platform/webapi/update-delete-entities-using-web-api
DV_NOT_FOUND = dv_error(
    "0x80040217",
    "work365_subscription With Id = 00000000-0000-0000-0000-000000000001 Does Not Exist",
)
# 429 of "Service protection API limits", Number of requests:
# https://learn.microsoft.com/power-apps/developer/data-platform/api-limits
DV_TOO_MANY_REQUESTS = dv_error(
    "0x80072322", "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
)


def dv_attribute_change_history(
    column: str, table: str, *changes: tuple[Any, Any, str | None]
) -> dict[str, Any]:
    """`RetrieveAttributeChangeHistory` answer, from "Retrieve the history of audited data
    changes": https://learn.microsoft.com/power-apps/developer/data-platform/auditing/retrieve-audit-data
    Each change is (old, new, createdon). Microsoft notes the Web API returns no `AuditRecord`
    (so no date): createdon None gives that documented shape. Some live services are reported
    to return it; a date adds it, holding the audit row and its `createdon`."""
    details = []
    for old, new, createdon in changes:
        detail: dict[str, Any] = {
            "@odata.type": "#Microsoft.Dynamics.CRM.AttributeAuditDetail",
            "InvalidNewValueAttributes": [],
            "LocLabelLanguageCode": 0,
            "DeletedAttributes": {"Count": 0, "Keys": [], "Values": []},
            "OldValue": {"@odata.type": f"#Microsoft.Dynamics.CRM.{table}", column: old},
            "NewValue": {"@odata.type": f"#Microsoft.Dynamics.CRM.{table}", column: new},
        }
        if createdon is not None:
            detail["AuditRecord"] = {
                "@odata.type": "#Microsoft.Dynamics.CRM.audit",
                "auditid": "12869c65-d7d3-ec11-b656-281878f0eba9",
                "operation": 2,
                "action": 2,
                "objecttypecode": table,
                "createdon": createdon,
            }
        details.append(detail)
    return {
        "@odata.context": (
            f"{API}$metadata#Microsoft.Dynamics.CRM.RetrieveAttributeChangeHistoryResponse"
        ),
        "AuditDetailCollection": {
            "MoreRecords": False,
            "PagingCookie": '<cookie page="1" />',
            "TotalRecordCount": len(details),
            "AuditDetails": details,
        },
    }


def dv_audit_rows(table: str, row_id: str, *rows: tuple[str, int, str]) -> dict[str, Any]:
    """`GET audits?$select=...` (rows are (auditid, operation, createdon)), shaped as in "Retrieve
    the history of audited data changes", Find Contact records deleted by a user:
    https://learn.microsoft.com/power-apps/developer/data-platform/auditing/retrieve-audit-data"""
    return {
        "@odata.context": f"{API}$metadata#audits(auditid,createdon,operation)",
        "value": [
            {
                "@odata.etag": 'W/"1"',
                "auditid": audit_id,
                "operation": operation,
                "createdon": createdon,
                "_objectid_value": row_id,
                "objecttypecode": table,
            }
            for audit_id, operation, createdon in rows
        ],
    }


def dv_audit_detail(table: str, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`audits(<id>)/Microsoft.Dynamics.CRM.RetrieveAuditDetails`, same page (no AuditRecord)."""
    return {
        "@odata.context": f"{API}$metadata#Microsoft.Dynamics.CRM.RetrieveAuditDetailsResponse",
        "AuditDetail": {
            "@odata.type": "#Microsoft.Dynamics.CRM.AttributeAuditDetail",
            "InvalidNewValueAttributes": [],
            "LocLabelLanguageCode": 0,
            "DeletedAttributes": {"Count": 0, "Keys": [], "Values": []},
            "OldValue": {"@odata.type": f"#Microsoft.Dynamics.CRM.{table}", **old},
            "NewValue": {"@odata.type": f"#Microsoft.Dynamics.CRM.{table}", **new},
        },
    }


# ---- Entra ID (msal against a local authority host) ------------------------------------------

AUTHORITY = "https://login.example.test"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "00001111-aaaa-2222-bbbb-3333cccc4444"
SECRET = "Abc8Q~s3cr3t-value-never-shown"
SCOPE = "https://contoso.crm.dynamics.com/.default"
DISCOVERY = f"{AUTHORITY}/{TENANT}/v2.0/.well-known/openid-configuration"
TOKEN_URL = f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token"

# The tenant's OpenID configuration (the fields MSAL reads), as Entra ID publishes it:
# https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc#find-your-apps-openid-configuration-document-uri
OPENID_CONFIGURATION = {
    "token_endpoint": TOKEN_URL,
    "authorization_endpoint": f"{AUTHORITY}/{TENANT}/oauth2/v2.0/authorize",
    "issuer": f"{AUTHORITY}/{TENANT}/v2.0",
    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
}


def token_answer(value: str) -> dict[str, object]:
    """A client-credentials token response:
    https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow#successful-response-1
    """
    return {
        "token_type": "Bearer",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": value,
    }
