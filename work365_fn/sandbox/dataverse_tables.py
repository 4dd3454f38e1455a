"""The tables the Dataverse emulator serves, derived from the schema map, and their metadata.

Names follow Dataverse's conventions: a column's SchemaName is its logical name in PascalCase
after the publisher prefix (`work365_providersubscriptionid` -> `work365_ProviderSubscriptionId`),
and a custom lookup's navigation property is the lookup's SchemaName (`work365_account` ->
`work365_Account`, `work365_billingcontract` -> `work365_BillingContract`). Lookups read as
`_<logical name>_value`. Navigation property names are case-sensitive, as in Dataverse.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from work365_fn.adapters.schema import Schema

from .odata import EdmType, ODataError, Property, bad_request

_NS = uuid.UUID("8f0b5a52-1f3e-4a4c-9c55-2b7e1c4d9a10")  # MetadataIds are stable across runs


def metadata_id(*parts: str) -> str:
    return str(uuid.uuid5(_NS, "/".join(parts)))


class Kind(enum.StrEnum):
    """AttributeType values of Dataverse's AttributeMetadata."""

    UNIQUEIDENTIFIER = "Uniqueidentifier"
    STRING = "String"
    MEMO = "Memo"
    BOOLEAN = "Boolean"
    DATETIME = "DateTime"
    INTEGER = "Integer"
    BIGINT = "BigInt"
    LOOKUP = "Lookup"
    STATE = "State"
    STATUS = "Status"
    PICKLIST = "Picklist"
    ENTITYNAME = "EntityName"


_EDM = {
    Kind.UNIQUEIDENTIFIER: EdmType.GUID,
    Kind.LOOKUP: EdmType.GUID,
    Kind.STRING: EdmType.STRING,
    Kind.MEMO: EdmType.STRING,
    Kind.ENTITYNAME: EdmType.STRING,
    Kind.BOOLEAN: EdmType.BOOLEAN,
    Kind.DATETIME: EdmType.DATETIME,
    Kind.INTEGER: EdmType.INT32,
    Kind.STATE: EdmType.INT32,
    Kind.STATUS: EdmType.INT32,
    Kind.PICKLIST: EdmType.INT32,
    Kind.BIGINT: EdmType.INT64,
}
_METADATA_TYPE = {
    Kind.UNIQUEIDENTIFIER: "UniqueIdentifierAttributeMetadata",
    Kind.LOOKUP: "LookupAttributeMetadata",
    Kind.STRING: "StringAttributeMetadata",
    Kind.MEMO: "MemoAttributeMetadata",
    Kind.ENTITYNAME: "EntityNameAttributeMetadata",
    Kind.BOOLEAN: "BooleanAttributeMetadata",
    Kind.DATETIME: "DateTimeAttributeMetadata",
    Kind.INTEGER: "IntegerAttributeMetadata",
    Kind.STATE: "StateAttributeMetadata",
    Kind.STATUS: "StatusAttributeMetadata",
    Kind.PICKLIST: "PicklistAttributeMetadata",
    Kind.BIGINT: "BigIntAttributeMetadata",
}

# SchemaNames that PascalCase-after-the-prefix cannot guess (word boundaries are not in the
# logical name). Anything else: prefix_ + each underscore-separated word capitalised.
KNOWN_SCHEMA_NAMES = {
    "work365_account": "work365_Account",
    "work365_billingcontract": "work365_BillingContract",
    "work365_billingcontractid": "work365_BillingContractId",
    "work365_subscription": "work365_Subscription",
    "work365_subscriptionid": "work365_SubscriptionId",
    "work365_provideraccount": "work365_ProviderAccount",
    "work365_provideraccountid": "work365_ProviderAccountId",
    "work365_adminhubsetting": "work365_AdminHubSetting",
    "work365_adminhubsettingid": "work365_AdminHubSettingId",
    "work365_providersubscriptionid": "work365_ProviderSubscriptionId",
    "work365_customertenantid": "work365_CustomerTenantId",
    "work365_isdefault": "work365_IsDefault",
    "work365_associatedefaultbillingcontract": "work365_AssociateDefaultBillingContract",
    "work365_lastlclid": "work365_LastLclId",
    "work365_lastinvoicenumber": "work365_LastInvoiceNumber",
    "work365_name": "work365_Name",
    "account": "Account",
    "accountid": "AccountId",
    "name": "Name",
    "audit": "Audit",
    "auditid": "AuditId",
    "createdon": "CreatedOn",
    "modifiedon": "ModifiedOn",
    "overriddencreatedon": "OverriddenCreatedOn",
    "statecode": "StateCode",
    "statuscode": "StatusCode",
    "versionnumber": "VersionNumber",
    "operation": "Operation",
    "action": "Action",
    "attributemask": "AttributeMask",
    "objecttypecode": "ObjectTypeCode",
    "objectid": "ObjectId",
    "userid": "UserId",
    "transactionid": "TransactionId",
    "annotation": "Annotation",
    "annotationid": "AnnotationId",
    "subject": "Subject",
    "notetext": "NoteText",
    "isdocument": "IsDocument",
}


def schema_name_for(logical: str) -> str:
    known = KNOWN_SCHEMA_NAMES.get(logical)
    if known:
        return known
    prefix, sep, rest = logical.partition("_")
    if not sep:
        return logical[:1].upper() + logical[1:]
    return prefix + "_" + "".join(word[:1].upper() + word[1:] for word in rest.split("_"))


@dataclass(frozen=True)
class Column:
    name: str  # logical name
    kind: Kind
    number: int  # AttributeMetadata.ColumnNumber, used in audit attribute masks
    target: str | None = None  # lookups: the referenced table's logical name
    creatable: bool = True
    updatable: bool = True
    schema_name: str = ""
    nav_name: str | None = None  # a polymorphic lookup's navigation property to its target

    @property
    def prop(self) -> str:
        """The Web API property: `_x_value` for lookups, else the logical name."""
        return f"_{self.name}_value" if self.kind is Kind.LOOKUP else self.name

    @property
    def edm(self) -> EdmType:
        return _EDM[self.kind]

    @property
    def nav(self) -> str | None:
        """Single-valued navigation property of a lookup (case-sensitive)."""
        if self.kind is not Kind.LOOKUP or not self.target:
            return None
        return self.nav_name or self.schema_name


@dataclass(frozen=True)
class Table:
    logical: str
    entity_set: str
    id: str
    name: str | None
    columns: tuple[Column, ...]
    type_code: int
    custom: bool = True
    read_only: bool = False  # audit: no create, update or delete through the API
    versioned: bool = True  # has versionnumber / @odata.etag
    schema_name: str = ""
    extra_sql: tuple[str, ...] = field(default=())  # stored, never served (audit change data)

    @property
    def sql(self) -> str:
        return f"dv_{self.logical}"

    @property
    def metadata_id(self) -> str:
        return metadata_id("entity", self.logical)

    @property
    def odata_type(self) -> str:
        return f"Microsoft.Dynamics.CRM.{self.logical}"

    @cached_property
    def by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}

    @cached_property
    def by_prop(self) -> dict[str, Column]:
        return {c.prop: c for c in self.columns}

    @cached_property
    def by_nav(self) -> dict[str, Column]:
        return {c.nav: c for c in self.columns if c.nav}

    def column(self, name: str) -> Column:
        return self.by_name[name]

    def resolve(self, prop: str) -> Property:
        """The query property named `prop` (case-sensitive), or Dataverse's 400."""
        column = self.by_prop.get(prop)
        if column is None:
            raise bad_request(
                f"Could not find a property named '{prop}' on type '{self.odata_type}'."
            )
        return Property(prop, column.name, column.edm)


def _col(
    name: str,
    kind: Kind,
    target: str | None = None,
    *,
    creatable: bool = True,
    updatable: bool = True,
) -> Column:
    return Column(name, kind, 0, target, creatable, updatable, schema_name_for(name))


def _system_columns() -> list[Column]:
    return [
        _col("createdon", Kind.DATETIME, creatable=False, updatable=False),
        _col("modifiedon", Kind.DATETIME, creatable=False, updatable=False),
        _col("overriddencreatedon", Kind.DATETIME, updatable=False),
        _col("statecode", Kind.STATE),
        _col("statuscode", Kind.STATUS),
        _col("versionnumber", Kind.BIGINT, creatable=False, updatable=False),
    ]


def _table(
    logical: str,
    entity_set: str,
    id_column: str,
    name_column: str | None,
    columns: list[Column],
    type_code: int,
    **options: Any,
) -> Table:
    merged: dict[str, Column] = {}
    for column in [_col(id_column, Kind.UNIQUEIDENTIFIER, updatable=False), *columns]:
        merged.setdefault(column.name, column)  # a schema map naming one column twice keeps one
    numbered = tuple(replace(c, number=n) for n, c in enumerate(merged.values(), start=1))
    return Table(
        logical,
        entity_set,
        id_column,
        name_column,
        numbered,
        type_code,
        schema_name=schema_name_for(logical),
        **options,
    )


def _extra_columns(kinds: Mapping[str, str] | None) -> list[Column]:
    return [_col(name, Kind(kind)) for name, kind in sorted((kinds or {}).items())]


AUDIT_TABLE = "audit"
# The Note table. Its Regarding lookup `objectid` is polymorphic: one relationship (and one
# navigation property, `objectid_<table>`) per table with notes; here, the subscription table's.
# https://learn.microsoft.com/power-apps/developer/data-platform/reference/entities/annotation
ANNOTATION_TABLE = "annotation"
NOTE_LOOKUP = "objectid"


def build_tables(
    schema: Schema, contract_columns: Mapping[str, str] | None = None
) -> dict[str, Table]:
    """Every table the emulator serves, by logical name. `contract_columns`: extra columns of
    the billing contract table (logical name -> AttributeType), from a scenario's contracts."""
    s = schema
    account = s.account.table
    contract = s.billing_contract
    sub = s.subscription
    pa = s.provider_account
    setting = s.setting
    tables = [
        _table(
            account,
            s.account.entity_set,
            s.account.id,
            s.account.name,
            [_col(s.account.name, Kind.STRING), *_system_columns()],
            1,
            custom=False,
        ),
        _table(
            sub.table,
            sub.entity_set,
            sub.id,
            sub.name,
            [
                _col(sub.name, Kind.STRING),
                _col(sub.provider_subscription_id, Kind.STRING),
                _col(sub.account, Kind.LOOKUP, account),
                _col(sub.billing_contract, Kind.LOOKUP, contract.table),
                *(_col(ref, Kind.STRING) for ref in sub.billing_references),
                *_system_columns(),
            ],
            10001,
        ),
        _table(
            contract.table,
            contract.entity_set,
            contract.id,
            contract.name,
            [
                _col(contract.name, Kind.STRING),
                _col(contract.account, Kind.LOOKUP, account),
                _col(contract.is_default, Kind.BOOLEAN),
                *_system_columns(),
                _col(contract.state, Kind.STATE if contract.state == "statecode" else Kind.INTEGER),
                *_extra_columns(contract_columns),
            ],
            10002,
        ),
        _table(
            pa.table,
            pa.entity_set,
            pa.id,
            pa.name,
            [
                _col(pa.name, Kind.STRING),
                _col(pa.customer_id, Kind.STRING),
                _col(pa.account, Kind.LOOKUP, account),
                *_system_columns(),
            ],
            10003,
        ),
        _table(
            setting.table,
            setting.entity_set,
            setting.id,
            "work365_name",
            [
                _col("work365_name", Kind.STRING),
                _col(setting.associate_default, Kind.BOOLEAN),
                *_system_columns(),
            ],
            10004,
        ),
        _table(
            AUDIT_TABLE,
            "audits",
            "auditid",
            None,
            [
                _col("createdon", Kind.DATETIME, creatable=False, updatable=False),
                _col("operation", Kind.PICKLIST),
                _col("action", Kind.PICKLIST),
                _col("attributemask", Kind.MEMO),
                _col("objecttypecode", Kind.ENTITYNAME),
                _col("objectid", Kind.LOOKUP),
                _col("userid", Kind.LOOKUP, "systemuser"),
                _col("transactionid", Kind.UNIQUEIDENTIFIER),
            ],
            4567,
            custom=False,
            read_only=True,
            versioned=False,
            extra_sql=("changedata",),
        ),
        _table(
            ANNOTATION_TABLE,
            "annotations",
            "annotationid",
            "subject",
            [
                _col("subject", Kind.STRING),
                _col("notetext", Kind.MEMO),
                _col("isdocument", Kind.BOOLEAN),
                replace(
                    _col(NOTE_LOOKUP, Kind.LOOKUP, sub.table),
                    nav_name=f"{NOTE_LOOKUP}_{sub.table}",
                ),
                _col("objecttypecode", Kind.ENTITYNAME, updatable=False),
                *[c for c in _system_columns() if not c.name.startswith("stat")],
            ],
            5,
            custom=False,
        ),
    ]
    out: dict[str, Table] = {}
    for table in tables:
        out.setdefault(table.logical, table)
    return out


# ---------------------------------------------------------------- values


def format_datetime(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_json(column: Column, value: Any) -> Any:
    """A stored (typed) value as the Web API serves it."""
    if value is None:
        return None
    if column.kind is Kind.DATETIME:
        return format_datetime(value)
    return value


def from_json(  # noqa: PLR0912 - one case per Edm type, as Dataverse converts payload values
    table: Table, column: Column, value: Any
) -> Any:
    """A payload value as a typed value of `column`, or Dataverse's 400."""
    if value is None:
        return None
    edm = column.edm

    def wrong() -> ODataError:
        shown = value if isinstance(value, str | int | float | bool) else type(value).__name__
        return bad_request(
            f"Cannot convert the literal '{shown}' to the expected type '{edm}' "
            f"(property '{column.prop}' of '{table.odata_type}')."
        )

    match edm:
        case EdmType.STRING:
            if not isinstance(value, str):
                raise wrong()
            return value
        case EdmType.BOOLEAN:
            if not isinstance(value, bool):
                raise wrong()
            return value
        case EdmType.INT32 | EdmType.INT64:
            if isinstance(value, bool) or not isinstance(value, int):
                raise wrong()
            return value
        case EdmType.GUID:
            if not isinstance(value, str):
                raise wrong()
            try:
                parsed = uuid.UUID(value)
            except ValueError:
                raise wrong() from None
            if len(value) != 36:
                raise wrong()
            return str(parsed)
        case EdmType.DATETIME:
            if not isinstance(value, str):
                raise wrong()
            text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
            try:
                parsed_dt = datetime.fromisoformat(text)
            except ValueError:
                raise wrong() from None
            if parsed_dt.tzinfo is None:
                parsed_dt = parsed_dt.replace(tzinfo=UTC)
            return parsed_dt.astimezone(UTC).replace(microsecond=0)
    raise wrong()


def to_sql(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if column.kind is Kind.DATETIME:
        return format_datetime(value)
    if column.kind is Kind.BOOLEAN:
        return int(value)
    return value


def from_sql(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if column.kind is Kind.DATETIME:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if column.kind is Kind.BOOLEAN:
        return bool(value)
    return value


# ---------------------------------------------------------------- metadata documents


def _managed(value: bool, name: str) -> dict[str, Any]:
    return {"Value": value, "CanBeChanged": True, "ManagedPropertyLogicalName": name}


def _label(text: str) -> dict[str, Any]:
    localized = {"Label": text, "LanguageCode": 1033, "IsManaged": False}
    return {"LocalizedLabels": [localized], "UserLocalizedLabel": localized}


PRIVILEGE_TYPES = ("Create", "Read", "Write", "Delete", "Assign", "Share", "Append", "AppendTo")


def privilege_name(table: Table, privilege_type: str) -> str:
    """`prv<Type><table>`: the Note table's are `prvCreateNote`, `prvAppendNote`, ...; other
    tables' here use their SchemaName (the service reads them from metadata, never guesses)."""
    noun = "Note" if table.logical == ANNOTATION_TABLE else table.schema_name
    return f"prv{privilege_type}{noun}"


def privileges(table: Table) -> list[dict[str, Any]]:
    """EntityMetadata.Privileges (SecurityPrivilegeMetadata) of a table."""
    return [
        {
            "CanBeBasic": True,
            "CanBeDeep": True,
            "CanBeGlobal": True,
            "CanBeLocal": True,
            "CanBeEntityReference": False,
            "CanBeParentEntityReference": False,
            "Name": privilege_name(table, kind),
            "PrivilegeId": metadata_id("privilege", privilege_name(table, kind)),
            "PrivilegeType": kind,
        }
        for kind in PRIVILEGE_TYPES
    ]


def entity_metadata(table: Table, *, audited: bool, has_notes: bool = False) -> dict[str, Any]:
    """EntityMetadata properties (as `EntityDefinitions` serves them)."""
    display = table.schema_name
    return {
        "MetadataId": table.metadata_id,
        "LogicalName": table.logical,
        "SchemaName": table.schema_name,
        "EntitySetName": table.entity_set,
        "LogicalCollectionName": table.entity_set,
        "CollectionSchemaName": table.schema_name + "s",
        "PrimaryIdAttribute": table.id,
        "PrimaryNameAttribute": table.name,
        "ObjectTypeCode": table.type_code,
        "IsCustomEntity": table.custom,
        "IsActivity": False,
        "IsAuditEnabled": _managed(audited, "canmodifyauditsettings"),
        "IsOptimisticConcurrencyEnabled": table.versioned,
        "IsValidForAdvancedFind": True,
        "OwnershipType": "OrganizationOwned" if table.read_only else "UserOwned",
        "HasNotes": has_notes,
        "Privileges": [] if table.read_only else privileges(table),
        "DisplayName": _label(display),
    }


def attribute_metadata(table: Table, column: Column, *, audited: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{_METADATA_TYPE[column.kind]}",
        "MetadataId": metadata_id("attribute", table.logical, column.name),
        "LogicalName": column.name,
        "SchemaName": column.schema_name,
        "EntityLogicalName": table.logical,
        "AttributeType": column.kind.value,
        "AttributeTypeName": {"Value": f"{column.kind.value}Type"},
        "ColumnNumber": column.number,
        "IsPrimaryId": column.name == table.id,
        "IsPrimaryName": column.name == table.name,
        "IsCustomAttribute": table.custom and "_" in column.name,
        "IsValidForCreate": column.creatable and not table.read_only,
        "IsValidForUpdate": column.updatable and not table.read_only,
        "IsValidForRead": True,
        "IsAuditEnabled": _managed(audited, "canmodifyauditsettings"),
        "DisplayName": _label(column.schema_name),
    }
    if column.kind is Kind.LOOKUP:
        doc["Targets"] = [column.target] if column.target else []
    return doc


def option_set(column: Column) -> dict[str, Any] | None:
    """The OptionSet of a State, Status or Boolean column (for `$expand=OptionSet`)."""

    def option(value: int, text: str) -> dict[str, Any]:
        return {"Value": value, "Label": _label(text)}

    if column.kind is Kind.STATE:
        return {"Options": [option(0, "Active"), option(1, "Inactive")]}
    if column.kind is Kind.STATUS:
        return {"Options": [option(1, "Active"), option(2, "Inactive")]}
    if column.kind is Kind.BOOLEAN:
        return {"TrueOption": option(1, "Yes"), "FalseOption": option(0, "No")}
    return None


def relationship_name(table: Table, column: Column) -> str:
    if table.logical == ANNOTATION_TABLE:
        return f"{column.target}_Annotations"  # as Dataverse names a table's notes relationship
    return f"{column.target}_{table.logical}_{column.name}"


def relationships(tables: Mapping[str, Table]) -> list[dict[str, Any]]:
    """Every one-to-many relationship behind a lookup whose target is a served table."""
    out: list[dict[str, Any]] = []
    for table in tables.values():
        for column in table.columns:
            target = tables.get(column.target or "")
            if column.kind is not Kind.LOOKUP or target is None:
                continue
            name = relationship_name(table, column)
            out.append(
                {
                    "MetadataId": metadata_id("relationship", name),
                    "SchemaName": name,
                    "RelationshipType": "OneToManyRelationship",
                    "IsCustomRelationship": table.custom,
                    "ReferencedEntity": target.logical,
                    "ReferencedAttribute": target.id,
                    "ReferencingEntity": table.logical,
                    "ReferencingAttribute": column.name,
                    "ReferencedEntityNavigationPropertyName": name,
                    "ReferencingEntityNavigationPropertyName": column.nav,
                    "CascadeConfiguration": {
                        "Assign": "NoCascade",
                        "Delete": "RemoveLink",
                        "Merge": "NoCascade",
                        "Reparent": "NoCascade",
                        "Share": "NoCascade",
                        "Unshare": "NoCascade",
                    },
                }
            )
    return out


def alternate_key_metadata(table: Table, column: Column) -> dict[str, Any]:
    logical = f"{column.name}_key"
    return {
        "MetadataId": metadata_id("key", table.logical, logical),
        "LogicalName": logical,
        "SchemaName": f"{column.schema_name}Key",
        "EntityLogicalName": table.logical,
        "KeyAttributes": [column.name],
        "EntityKeyIndexStatus": "Active",
        "DisplayName": _label(f"{column.schema_name} key"),
    }


_DOC_TYPES = {str: EdmType.STRING, bool: EdmType.BOOLEAN, int: EdmType.INT32}


def metadata_resolver(
    type_name: str, docs: Sequence[Mapping[str, Any]], samples: Sequence[Mapping[str, Any]]
) -> Callable[[str], Property]:
    """Properties of metadata documents: every key any of `docs` or `samples` has."""
    sample: dict[str, Any] = {}
    for doc in [*docs, *samples]:
        for key, value in doc.items():
            if not key.startswith("@") and sample.get(key) is None:
                sample[key] = value

    def resolve(name: str) -> Property:
        if name not in sample:
            raise bad_request(
                f"Could not find a property named '{name}' on type "
                f"'Microsoft.Dynamics.CRM.{type_name}'."
            )
        value = sample[name]
        if name == "MetadataId":
            return Property(name, name, EdmType.GUID)
        edm = _DOC_TYPES.get(type(value), EdmType.STRING) if value is not None else EdmType.STRING
        if isinstance(value, dict | list):
            edm = EdmType.STRING  # complex values compare as nothing; filtering on them is moot
        return Property(name, name, edm)

    return resolve


def pick(doc: Mapping[str, Any], select: Sequence[str] | None) -> dict[str, Any]:
    if select is None:
        return dict(doc)
    out = {k: v for k, v in doc.items() if k == "@odata.type"}
    for name in select:
        out[name] = doc.get(name)
    out.setdefault("MetadataId", doc.get("MetadataId"))
    return out
