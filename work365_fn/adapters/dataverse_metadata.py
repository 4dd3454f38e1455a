"""What the organisation's metadata says about the schema map: navigation property names for
`@odata.bind`, the alternate key on the provider subscription id, whether notes can be written
on subscription records (WORK365_WRITE_NOTES), and `check-schema`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from work365_fn.adapters.dataverse import DataverseClient
from work365_fn.adapters.schema import Schema
from work365_fn.adapters.schema_discovery import OrgMetadata, Proposal, propose, table_names
from work365_fn.errors import ApiError, NotFoundError, SchemaError


@dataclass(frozen=True)
class SubscriptionBindings:
    """How to write a subscription row in this org."""

    billing_contract_nav: str
    account_nav: str
    alternate_key: bool  # an active alternate key on exactly the provider subscription id column
    # Notes on (WORK365_WRITE_NOTES) and possible: the annotation's navigation property to the
    # subscription table (`objectid_<table>`), read from the annotation's relationships.
    note_nav: str | None = None


class NotesUnavailableError(SchemaError):
    """WORK365_WRITE_NOTES is on but this organisation (or the application user) cannot take
    the notes: the message names every missing piece."""


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


def subscription_bindings(
    client: DataverseClient, schema: Schema, *, notes: bool = False
) -> SubscriptionBindings:
    """How to write subscription rows. With `notes` (WORK365_WRITE_NOTES), first that notes can
    be written at all: NotesUnavailableError naming what is missing otherwise, before any
    write (a note that fails rolls back the assignment in its change set)."""
    s = schema.subscription
    note_nav = None
    if notes:
        checks, note_nav = notes_checks(client, schema)
        missing = [c.detail for c in checks if not c.ok]
        if missing or note_nav is None:
            raise NotesUnavailableError(
                "WORK365_WRITE_NOTES is on, but notes cannot be written on "
                f"{s.table} records: {'; '.join(missing)}. Fix this (see docs/notes.md) or turn "
                "WORK365_WRITE_NOTES off"
            )
    try:
        return SubscriptionBindings(
            billing_contract_nav=_nav_for(
                client, s.table, s.billing_contract, schema.billing_contract.table
            ),
            account_nav=_nav_for(client, s.table, s.account, schema.account.table),
            alternate_key=has_alternate_key(client, s.table, s.provider_subscription_id),
            note_nav=note_nav,
        )
    except NotFoundError:
        raise SchemaError(
            f"table {s.table} does not exist in this organisation: fix the schema map "
            "(WORK365_SCHEMA_FILE) and run `python -m work365_fn check-schema`"
        ) from None


# ---- notes (WORK365_WRITE_NOTES) --------------------------------------------------------------

ANNOTATION = "annotation"  # the Note table: https://learn.microsoft.com/power-apps/developer/data-platform/reference/entities/annotation
NOTE_LOOKUP = "objectid"  # the note's Regarding lookup, polymorphic: one relationship per table
# The Note table's own privileges; the subscription table's AppendTo privilege is read from its
# metadata (`Privileges`), not guessed from its name.
NOTE_PRIVILEGES = ("prvCreateNote", "prvAppendNote")
_GLOBAL_DEPTHS = {"Global", "3"}  # PrivilegeDepth: Basic 0, Local 1, Deep 2, Global 3


def notes_checks(client: DataverseClient, schema: Schema) -> tuple[list[SchemaCheck], str | None]:
    """Whether notes can be written on subscription records: the table has notes (`HasNotes`),
    the note's navigation property to it (`objectid_<table>`, from the annotation table's
    ManyToOneRelationships), and the application user's privileges: create and append notes,
    append to the records (at Organization depth: the records belong to other users). Returns
    the checks and the navigation property (None when missing). Reads only."""
    table = schema.subscription.table
    checks: list[SchemaCheck] = []
    try:
        definition = client.entity_properties(table, ["HasNotes", "Privileges"])
    except NotFoundError:
        return [SchemaCheck("notes on subscription records", False, f"no table {table}")], None
    has_notes = definition.get("HasNotes") is True
    checks.append(
        SchemaCheck(
            "notes on subscription records",
            has_notes,
            f"{table} has notes (HasNotes)"
            if has_notes
            else f"{table} does not have notes enabled (HasNotes is false): turn on "
            "'Enable attachments (including notes and files)' for the table",
        )
    )
    nav = _note_nav(client, table)
    checks.append(
        SchemaCheck(
            "note navigation property",
            nav is not None,
            f"annotation.objectid -> {table}: {nav}"
            if nav
            else f"the annotation table has no Regarding (objectid) relationship to {table}",
        )
    )
    append_to = _privilege_name(definition, "AppendTo")
    checks.extend(_privilege_checks(client, table, append_to))
    return checks, nav


def _note_nav(client: DataverseClient, table: str) -> str | None:
    for rel in client.many_to_one(ANNOTATION):
        if (
            str(rel.get("ReferencingAttribute", "")).lower() == NOTE_LOOKUP
            and str(rel.get("ReferencedEntity", "")).lower() == table.lower()
        ):
            nav = rel.get("ReferencingEntityNavigationPropertyName")
            if nav:
                return str(nav)
    return None


def _privilege_name(definition: dict[str, Any], privilege_type: str) -> str | None:
    for privilege in definition.get("Privileges") or []:
        if isinstance(privilege, dict) and privilege.get("PrivilegeType") == privilege_type:
            name = privilege.get("Name")
            return str(name) if name else None
    return None


def _privilege_checks(
    client: DataverseClient, table: str, append_to: str | None
) -> list[SchemaCheck]:
    user_id = str(client.who_am_i()["UserId"])
    checks = []
    for name in [*NOTE_PRIVILEGES, append_to]:
        label = f"privilege {name or 'AppendTo ' + table}"
        if name is None:
            checks.append(SchemaCheck(label, False, f"{table} lists no AppendTo privilege"))
            continue
        held = client.user_privileges_named(user_id, name)
        depths = {str(p.get("Depth")) for p in held}
        if not held:
            detail = f"the application user lacks {name}: add it to the user's security role"
            checks.append(SchemaCheck(label, False, detail))
        elif name == append_to and not depths & _GLOBAL_DEPTHS:
            detail = (
                f"the application user holds {name} at {', '.join(sorted(depths))} depth only: "
                "grant it at Organization level, the records belong to other users"
            )
            checks.append(SchemaCheck(label, False, detail))
        else:
            checks.append(SchemaCheck(label, True, f"held ({', '.join(sorted(depths))})"))
    return checks


class _Table(Protocol):
    @property
    def table(self) -> str: ...
    @property
    def entity_set(self) -> str: ...
    @property
    def id(self) -> str: ...


@dataclass(frozen=True)
class SchemaCheck:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, object]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


def check_schema(
    client: DataverseClient, schema: Schema, *, notes: bool = False
) -> list[SchemaCheck]:
    """Every configured table, column and lookup against the metadata; with `notes`
    (WORK365_WRITE_NOTES), whether notes can be written too. Reads only."""
    checks: list[SchemaCheck] = []
    present: set[str] = set()
    for label, (table, columns) in _configured_tables(schema).items():
        found, check = _table_check(client, label, table)
        checks.append(check)
        if not found:
            continue
        present.add(table.table)
        checks.extend(_column_checks(client, table, columns))
    checks.extend(_lookup_checks(client, schema, present))
    if schema.subscription.table in present:
        checks.append(_alternate_key_check(client, schema))
        if notes:
            checks.extend(notes_checks(client, schema)[0])
    return checks


def _configured_tables(schema: Schema) -> dict[str, tuple[_Table, list[str]]]:
    """Each table of the map by its label, with the columns checked besides its name column."""
    return {
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


def _table_check(client: DataverseClient, label: str, table: _Table) -> tuple[bool, SchemaCheck]:
    """(whether the table exists, its check: entity set and primary id as the map says)."""
    name = f"{label} table"
    try:
        definition = client.entity_definition(table.table)
    except NotFoundError:
        return False, SchemaCheck(name, False, f"no table named {table.table}")
    except ApiError as exc:
        return False, SchemaCheck(name, False, f"cannot read metadata: {exc}")
    entity_set = str(definition.get("EntitySetName", ""))
    id_attr = str(definition.get("PrimaryIdAttribute", ""))
    problems = []
    if entity_set != table.entity_set:
        problems.append(f"entity set is {entity_set}, the map says {table.entity_set}")
    if id_attr != table.id:
        problems.append(f"primary id is {id_attr}, the map says {table.id}")
    return True, SchemaCheck(
        name, not problems, "; ".join(problems) or f"{table.table} ({entity_set})"
    )


def _column_checks(client: DataverseClient, table: _Table, columns: list[str]) -> list[SchemaCheck]:
    """One check per configured column of an existing table (its name column first)."""
    attributes = {str(a.get("LogicalName", "")).lower() for a in client.attributes(table.table)}
    name_column: str | None = getattr(table, "name", None)
    checks = []
    for column in [c for c in [name_column, *columns] if c]:
        found = column.lower() in attributes
        checks.append(
            SchemaCheck(
                f"{table.table}.{column}",
                found,
                "present" if found else f"no column {column} on {table.table}",
            )
        )
    return checks


def _lookup_checks(client: DataverseClient, schema: Schema, present: set[str]) -> list[SchemaCheck]:
    """One check per lookup of the map: its navigation property, where its table exists."""
    checks = []
    for table_name, attribute, referenced in schema.lookups():
        name = f"{table_name}.{attribute} -> {referenced}"
        if table_name not in present:
            checks.append(SchemaCheck(name, False, f"table {table_name} is missing"))
            continue
        try:
            nav = _nav_for(client, table_name, attribute, referenced)
        except SchemaError:
            checks.append(SchemaCheck(name, False, f"no lookup {attribute} to {referenced}"))
            continue
        checks.append(SchemaCheck(name, True, f"navigation property {nav}"))
    return checks


def _alternate_key_check(client: DataverseClient, schema: Schema) -> SchemaCheck:
    """Informational (always ok): whether create mode can create through the alternate key."""
    key = has_alternate_key(
        client, schema.subscription.table, schema.subscription.provider_subscription_id
    )
    return SchemaCheck(
        "alternate key on provider subscription id",
        True,
        (
            "present: create mode creates through the key, so no duplicate can arise"
            if key
            else "absent: create mode uses deterministic ids; do not run it beside "
            "another provider sync (see docs/configuration.md, Create mode)"
        ),
    )


def propose_schema(client: DataverseClient, schema: Schema) -> Proposal:
    """`check-schema --propose`: every table's definition, then the columns, lookups and keys of
    the tables the proposal uses, matched by `schema_discovery.propose`. Reads only."""
    entities = client.entity_definitions()
    tables = table_names(entities, schema)
    with_lookups = [
        tables[k] for k in ("subscription", "billingContract", "providerAccount") if k in tables
    ]
    with_columns = [*with_lookups, *([tables["setting"]] if "setting" in tables else [])]
    subscription = tables.get("subscription")
    metadata = OrgMetadata(
        entities,
        attributes={t: client.attributes(t) for t in with_columns},
        many_to_one={t: client.many_to_one(t) for t in with_lookups},
        keys={subscription: client.keys(subscription)} if subscription else {},
    )
    return propose(metadata, schema)
