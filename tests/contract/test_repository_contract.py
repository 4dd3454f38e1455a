"""Repository over the Dataverse client: the calls behind the cutoff, and conditional writes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import responses
from responses import matchers

from work365_fn.adapters.dataverse_metadata import SubscriptionBindings
from work365_fn.adapters.dataverse_repository import RECORD_NAMESPACE, Repository
from work365_fn.adapters.schema import Schema
from work365_fn.rules.model import PcSubscription, SubscriptionRecord

from .clients import dv_client, policy
from .shapes import (
    API,
    PC_SUBSCRIPTION,
    dv_attribute_change_history,
    dv_audit_detail,
    dv_audit_rows,
)

SETTING = "5e7a1c2b-0d3f-4e8a-9b6c-1f2e3d4c5b6a"
COLUMN = "work365_associatedefaultbillingcontract"
SETTINGS_URL = f"{API}work365_adminhubsettings"
SETTINGS_QUERY = matchers.query_param_matcher(
    {
        "$select": f"work365_adminhubsettingid,{COLUMN},modifiedon",
        "$orderby": "modifiedon desc",
    }
)
AUDIT_URL = f"{API}RetrieveAttributeChangeHistory(Target=@t,AttributeLogicalName=@a,PagingInfo=@p)"
AUDIT_QUERY = matchers.query_param_matcher(
    {
        "@t": json.dumps({"@odata.id": f"work365_adminhubsettings({SETTING})"}),
        "@a": f"'{COLUMN}'",
        "@p": '{"PageNumber":1,"Count":50}',
    }
)
SETTING_TABLE = "work365_adminhubsetting"
AUDITS_URL = f"{API}audits"
AUDITS_QUERY = matchers.query_param_matcher(
    {
        "$select": "auditid,createdon,operation",
        "$filter": (
            f"_objectid_value eq {SETTING} and objecttypecode eq '{SETTING_TABLE}'"
            " and (operation eq 1 or operation eq 2)"
        ),
        "$orderby": "createdon desc",
    }
)
AUDIT_1 = "12869c65-d7d3-ec11-b656-281878f0eb01"
AUDIT_2 = "12869c65-d7d3-ec11-b656-281878f0eb02"
AUDIT_3 = "12869c65-d7d3-ec11-b656-281878f0eb03"
MODIFIED_ON = "2026-02-10T09:15:00Z"
SETTING_ROW = {
    "@odata.etag": 'W/"5501"',
    "work365_adminhubsettingid": SETTING,
    COLUMN: True,
    "modifiedon": MODIFIED_ON,
}

ACCOUNT = "a0000000-0000-0000-0000-000000000001"
CONTRACT = "c0000000-0000-0000-0000-000000000001"
RECORD = "f0000000-0000-0000-0000-000000000001"
BINDINGS = SubscriptionBindings(
    billing_contract_nav="work365_BillingContract",
    account_nav="work365_Account",
    alternate_key=False,
)


def repository(sleeps: list[float]) -> Repository:
    return Repository(dv_client(policy(sleeps)), Schema())


def history(*changes: tuple[object, object, str | None]) -> dict[str, Any]:
    return dv_attribute_change_history(COLUMN, SETTING_TABLE, *changes)


def test_the_cutoff_is_the_latest_change_of_the_setting_to_yes_in_the_audit_history(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(SETTINGS_URL, match=[SETTINGS_QUERY], json={"value": [SETTING_ROW]})
    rsps.get(
        AUDIT_URL,
        match=[AUDIT_QUERY],
        json=history(
            (False, True, "2025-11-03T08:00:00Z"),
            (True, False, "2025-12-01T10:30:00Z"),
            (False, True, "2026-01-05T14:45:00Z"),
            (None, False, "2025-10-01T00:00:00Z"),
        ),
    )

    setting, warnings = repository(sleeps).read_setting(override=None)

    assert setting.enabled is True
    assert setting.since == datetime(2026, 1, 5, 14, 45, tzinfo=UTC)
    assert setting.since_source == "audit"
    assert setting.row_id == SETTING
    assert warnings == []


def test_without_audit_history_the_cutoff_is_modifiedon_with_a_warning(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(SETTINGS_URL, match=[SETTINGS_QUERY], json={"value": [SETTING_ROW]})
    rsps.get(AUDIT_URL, match=[AUDIT_QUERY], json=history())

    setting, warnings = repository(sleeps).read_setting(override=None)

    assert setting.since == datetime(2026, 2, 10, 9, 15, tzinfo=UTC)
    assert setting.since_source == "modifiedon"
    (warning,) = warnings
    assert "modifiedon" in warning
    assert "WORK365_ASSOCIATE_SINCE" in warning


def test_undated_audit_history_takes_the_date_from_the_audit_rows(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    # The documented Web API shape: AuditDetails without AuditRecord, so without dates.
    rsps.get(SETTINGS_URL, match=[SETTINGS_QUERY], json={"value": [SETTING_ROW]})
    rsps.get(
        AUDIT_URL,
        match=[AUDIT_QUERY],
        json=history((False, True, None), (True, False, None), (False, True, None)),
    )
    rsps.get(
        AUDITS_URL,
        match=[AUDITS_QUERY],
        json=dv_audit_rows(
            SETTING_TABLE,
            SETTING,
            (AUDIT_3, 2, "2026-02-10T09:15:00Z"),
            (AUDIT_2, 2, "2026-01-05T14:45:00Z"),
            (AUDIT_1, 2, "2025-12-01T10:30:00Z"),
        ),
    )
    rsps.get(
        f"{API}audits({AUDIT_3})/Microsoft.Dynamics.CRM.RetrieveAuditDetails",
        json=dv_audit_detail(SETTING_TABLE, {"work365_name": "Admin"}, {"work365_name": "Hub"}),
    )
    rsps.get(
        f"{API}audits({AUDIT_2})/Microsoft.Dynamics.CRM.RetrieveAuditDetails",
        json=dv_audit_detail(SETTING_TABLE, {COLUMN: False}, {COLUMN: True}),
    )
    # AUDIT_1 is older than the answer and is not read (an unregistered call fails the test).

    setting, warnings = repository(sleeps).read_setting(override=None)

    assert setting.since == datetime(2026, 1, 5, 14, 45, tzinfo=UTC)
    assert setting.since_source == "audit"
    assert warnings == []
    assert len(rsps.calls) == 5


def test_undated_audit_history_without_a_matching_audit_row_falls_back_and_says_why(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(SETTINGS_URL, match=[SETTINGS_QUERY], json={"value": [SETTING_ROW]})
    rsps.get(AUDIT_URL, match=[AUDIT_QUERY], json=history((False, True, None)))
    rsps.get(AUDITS_URL, match=[AUDITS_QUERY], json=dv_audit_rows(SETTING_TABLE, SETTING))

    setting, warnings = repository(sleeps).read_setting(override=None)

    assert setting.since_source == "modifiedon"
    assert any("is not in the audit rows of the setting row" in w for w in warnings)


def test_an_unreadable_audit_history_falls_back_to_modifiedon(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.get(SETTINGS_URL, match=[SETTINGS_QUERY], json={"value": [SETTING_ROW]})
    rsps.get(
        AUDIT_URL,
        match=[AUDIT_QUERY],
        status=403,
        json={
            "error": {
                "code": "0x80040220",
                "message": "Principal user is missing prvReadAuditSummary privilege",
            }
        },
    )

    setting, warnings = repository(sleeps).read_setting(override=None)

    assert setting.since_source == "modifiedon"
    assert any("403 0x80040220" in w for w in warnings)


def test_the_override_wins_and_no_audit_is_read(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    override = datetime(2025, 7, 1, tzinfo=UTC)
    rsps.get(SETTINGS_URL, match=[SETTINGS_QUERY], json={"value": [SETTING_ROW]})

    setting, warnings = repository(sleeps).read_setting(override=override)

    assert (setting.enabled, setting.since, setting.since_source) == (True, override, "setting")
    assert warnings == []
    assert len(rsps.calls) == 1


def test_create_without_alternate_key_patches_the_deterministic_id_create_only(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    sub_id = str(PC_SUBSCRIPTION["id"])
    expected = str(uuid.uuid5(RECORD_NAMESPACE, sub_id.lower()))
    rsps.patch(
        f"{API}work365_subscriptions({expected})",
        match=[
            matchers.header_matcher({"If-None-Match": "*"}),
            matchers.json_params_matcher(
                {
                    "work365_providersubscriptionid": sub_id,
                    "work365_name": "Microsoft 365 Business Basic",
                    "work365_Account@odata.bind": f"/accounts({ACCOUNT})",
                    "work365_BillingContract@odata.bind": f"/work365_billingcontracts({CONTRACT})",
                }
            ),
        ],
        status=204,
        headers={"OData-EntityId": f"{API}work365_subscriptions({expected})"},
    )
    sub = PcSubscription(
        id=sub_id.upper(),
        customer_id="c5757d70-06f3-4f23-8367-5a9e55019f94",
        friendly_name="Microsoft 365 Business Basic",
    )

    record_id = repository(sleeps).create(sub, ACCOUNT.upper(), CONTRACT, BINDINGS)

    assert record_id == expected
    assert "If-Match" not in rsps.calls[0].request.headers


def test_assign_binds_the_contract_only_if_the_record_is_unchanged(
    rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.patch(
        f"{API}work365_subscriptions({RECORD})",
        match=[
            matchers.header_matcher({"If-Match": 'W/"9876"'}),
            matchers.json_params_matcher(
                {"work365_BillingContract@odata.bind": f"/work365_billingcontracts({CONTRACT})"}
            ),
        ],
        status=204,
    )
    record = SubscriptionRecord(
        id=RECORD,
        provider_subscription_id=str(PC_SUBSCRIPTION["id"]),
        account_id=ACCOUNT,
        billing_contract_id=None,
        created_on=datetime(2026, 3, 1, tzinfo=UTC),
        etag='W/"9876"',
    )

    repository(sleeps).assign(record, CONTRACT.upper(), BINDINGS)

    assert len(rsps.calls) == 1
