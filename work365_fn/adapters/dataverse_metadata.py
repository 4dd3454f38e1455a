"""What the organisation's metadata says about the schema map: navigation property names for
`@odata.bind`, the alternate key on the provider subscription id, and `check-schema`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from work365_fn.adapters.dataverse import DataverseClient
from work365_fn.adapters.schema import Schema
from work365_fn.errors import ApiError, NotFoundError, SchemaError


@dataclass(frozen=True)
class SubscriptionBindings:
    """How to write a subscription row in this org."""

    billing_contract_nav: str
    account_nav: str
    alternate_key: bool  # an active alternate key on exactly the provider subscription id column


def _nav_for(client: DataverseClient, table: str, attribute: str, referenced: str) -> str:
    for rel in client.many_to_one(table):
        if (
            str(rel.get("ReferencingAttribute", "")).lower() == attribute.lower()
            and str(rel.get("ReferencedEntity", "")).lower() == referenced.lower()
        ):
            nav = rel.get("ReferencingEntityNavigationPropertyName")
            if nav:
                return str(nav)
    raise SchemaError(
        f"{table}.{attribute} is not a lookup to {referenced} in this organisation: fix the "
        "schema map (WORK365_SCHEMA_FILE) and run `python -m work365_fn check-schema`"
    )


def has_alternate_key(client: DataverseClient, table: str, column: str) -> bool:
    for key in client.keys(table):
        attrs = [str(a).lower() for a in key.get("KeyAttributes") or []]
        status = str(key.get("EntityKeyIndexStatus", "Active"))
        if attrs == [column.lower()] and status == "Active":
            return True
    return False


def subscription_bindings(client: DataverseClient, schema: Schema) -> SubscriptionBindings:
    s = schema.subscription
    try:
        return SubscriptionBindings(
            billing_contract_nav=_nav_for(
                client, s.table, s.billing_contract, schema.billing_contract.table
            ),
            account_nav=_nav_for(client, s.table, s.account, schema.account.table),
            alternate_key=has_alternate_key(client, s.table, s.provider_subscription_id),
        )
    except NotFoundError:
        raise SchemaError(
            f"table {s.table} does not exist in this organisation: fix the schema map "
            "(WORK365_SCHEMA_FILE) and run `python -m work365_fn check-schema`"
        ) from None


class _Table(Protocol):
    @property
    def table(self) -> str: ...
    @property
    def entity_set(self) -> str: ...
    @property
    def id(self) -> str: ...


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, object]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


def check_schema(client: DataverseClient, schema: Schema) -> list[Check]:
    """Every configured table, column and lookup against the metadata. Reads only."""
    checks: list[Check] = []
    tables: dict[str, tuple[_Table, list[str]]] = {
        "subscription": (
            schema.subscription,
            [schema.subscription.provider_subscription_id, *schema.subscription.billing_references],
        ),
        "billingContract": (
            schema.billing_contract,
            [schema.billing_contract.is_default, schema.billing_contract.state],
        ),
        "providerAccount": (schema.provider_account, [schema.provider_account.customer_id]),
        "setting": (schema.setting, [schema.setting.associate_default]),
        "account": (schema.account, []),
    }
    present: set[str] = set()
    for label, (table, columns) in tables.items():
        try:
            definition = client.entity_definition(table.table)
        except NotFoundError:
            checks.append(Check(f"{label} table", False, f"no table named {table.table}"))
            continue
        except ApiError as exc:
            checks.append(Check(f"{label} table", False, f"cannot read metadata: {exc}"))
            continue
        present.add(table.table)
        entity_set = str(definition.get("EntitySetName", ""))
        id_attr = str(definition.get("PrimaryIdAttribute", ""))
        problems = []
        if entity_set != table.entity_set:
            problems.append(f"entity set is {entity_set}, the map says {table.entity_set}")
        if id_attr != table.id:
            problems.append(f"primary id is {id_attr}, the map says {table.id}")
        checks.append(
            Check(
                f"{label} table",
                not problems,
                "; ".join(problems) or f"{table.table} ({entity_set})",
            )
        )
        attributes = {str(a.get("LogicalName", "")).lower() for a in client.attributes(table.table)}
        name_column: str | None = getattr(table, "name", None)
        for column in [c for c in [name_column, *columns] if c]:
            found = column.lower() in attributes
            checks.append(
                Check(
                    f"{table.table}.{column}",
                    found,
                    "present" if found else f"no column {column} on {table.table}",
                )
            )
    for table_name, attribute, referenced in schema.lookups():
        name = f"{table_name}.{attribute} -> {referenced}"
        if table_name not in present:
            checks.append(Check(name, False, f"table {table_name} is missing"))
            continue
        try:
            nav = _nav_for(client, table_name, attribute, referenced)
        except SchemaError:
            checks.append(Check(name, False, f"no lookup {attribute} to {referenced}"))
            continue
        checks.append(Check(name, True, f"navigation property {nav}"))
    if schema.subscription.table in present:
        key = has_alternate_key(
            client, schema.subscription.table, schema.subscription.provider_subscription_id
        )
        checks.append(
            Check(
                "alternate key on provider subscription id",
                True,
                (
                    "present: create mode creates through the key, so no duplicate can arise"
                    if key
                    else "absent: create mode uses deterministic ids; do not run it beside "
                    "another provider sync (see README)"
                ),
            )
        )
    return checks
