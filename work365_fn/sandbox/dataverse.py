"""Emulator of the Dataverse Web API (v9.2) for the sandbox, on SQLite.

What it serves, shaped as Microsoft documents it (the emulator's answers are the contract the
service's Dataverse client is tested against, so they follow the real API, traps included):

- `GET /{set}/$count` (text/plain), and `GET /{set}` with `$select`, `$filter` (see `odata`),
  `$orderby`, `$top`, `$count`, and paging:
  `Prefer: odata.maxpagesize=N` (default and maximum 5000) answers `@odata.nextLink` (absolute,
  with a `$skiptoken` paging cookie) and `Preference-Applied`. With both `$top` and
  `odata.maxpagesize`, `$top` is ignored, as Microsoft documents.
- `GET|PATCH|DELETE /{set}({id})`, and `/{set}(<provider subscription id column>='...')` when the
  alternate key is on. PATCH is an upsert; `If-Match: *` forbids the create, `If-Match: <etag>`
  answers 412 when the row changed, `If-None-Match: *` forbids the update. A row written
  through the alternate key answers with the key, not the id, in `OData-EntityId`;
  `Prefer: return=representation` (with `$select`) gives 201 on create, 200 on update, in and
  outside `$batch`.
- `$filter` reads a lookup as `_x_value`; query functions (`In`, `NotIn`) take logical names,
  lookups included, and refuse `_x_value` (400 0x80041103) as a real org does.
- `POST /{set}` (client-supplied ids kept), lookups bound with case-sensitive
  `<NavigationProperty>@odata.bind` and cleared with it or `{"<NavigationProperty>": null}`;
  `PUT|DELETE /{set}({id})/{nav}/$ref` to (dis)associate.
- Parameter aliases (`@p1`) in `$filter` and `$orderby`; `not` before a query function is
  refused as Dataverse refuses it.
- `POST /$batch`: change sets are atomic, `Prefer: odata.continue-on-error`, `Content-ID` refs.
- Atomic across processes, as Dataverse is: every write request (and every change set) is one
  SQLite write transaction (`BEGIN IMMEDIATE`), its precondition (`If-Match`,
  `If-None-Match: *`, the alternate key) checked inside it, so sandboxes of several processes
  sharing one state file never both win the same ETag
  (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/perform-conditional-operations-using-web-api).
- Metadata: `EntityDefinitions` (collection with `$filter`, or `(LogicalName='x')`) and its
  `Attributes` (with type casts), `ManyToOneRelationships`, `OneToManyRelationships`, `Keys`.
- Audit: `RetrieveAttributeChangeHistory(Target=@t,AttributeLogicalName=@a[,PagingInfo=@p])`,
  the `audits` entity set and `audits({id})/Microsoft.Dynamics.CRM.RetrieveAuditDetails`. As in
  the real Web API, AttributeAuditDetail carries old and new values but no `AuditRecord` (no
  date): the date of a change is the `createdon` of its row in `audits`. Both reads are paged
  (`MoreRecords` and `PagingCookie`; `@odata.nextLink`), at most `audit_page_size` a page.
- Notes: the `annotations` entity set (subject, notetext, the polymorphic Regarding lookup
  `objectid` bound through `objectid_<subscription table>@odata.bind`, `objecttypecode` set from
  it), `HasNotes` and `Privileges` in EntityDefinitions, the annotation's ManyToOneRelationships,
  and `systemusers(<id>)/Microsoft.Dynamics.CRM.RetrieveUserPrivilegeByPrivilegeName(...)`.
  Scenario switches: the subscription table without notes (`HasNotes` false, no relationship, a
  bind refused), the application user without some privileges (the function answers none, and a
  note create that needs one answers 403 0x80040220, as Dataverse refuses it).
- `WhoAmI`, and the service document.

Every answer carries `OData-Version: 4.0`; every error is `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import functools
import itertools
import json
import logging
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from work365_fn.adapters.schema import Schema

from .batch import (
    Answer,
    AnswerPart,
    ChangeSet,
    ChangeSetAnswer,
    Operation,
    parse_batch,
    render_batch,
)
from .core import Request, Response, TokenIssuer
from .dataverse_request import (
    COLLECTION_OPTIONS,
    Key,
    Segment,
    aliases,
    etag_matches,
    lenient_json,
    prefer,
    query_options,
    resolve_content_ids,
    split_args,
    split_segments,
    string_literal,
)
from .dataverse_tables import (
    ANNOTATION_TABLE,
    AUDIT_TABLE,
    NOTE_LOOKUP,
    Column,
    Kind,
    Table,
    alternate_key_metadata,
    attribute_metadata,
    build_tables,
    entity_metadata,
    format_datetime,
    from_json,
    from_sql,
    metadata_id,
    metadata_resolver,
    option_set,
    pick,
    privilege_name,
    relationships,
    to_json,
    to_sql,
)
from .odata import (
    EdmType,
    Node,
    ODataError,
    Property,
    Resolver,
    bad_request,
    matches,
    parse_filter,
    parse_orderby,
    parse_select,
    parse_value,
    row_comparator,
    sort_rows,
    unsupported,
)
from .scenario import Scenario, ScenarioError, contract_column_kinds
from .webhooks import RowEvent

log = logging.getLogger(__name__)

API = "/api/data/v9.2"
MAX_PAGE_SIZE = 5000
SETTING_ROW_ID = "6f1d2c3b-4a59-4e68-9d7c-0b1a2c3d4e5f"
SANDBOX_USER_ID = "0c4e9a3b-7d21-4f6e-8a5b-1c2d3e4f5a6b"
SANDBOX_BUSINESS_UNIT_ID = "2b7c1d9e-3f4a-4b5c-8d6e-7f8091a2b3c4"
SANDBOX_ORGANIZATION_ID = "9e8d7c6b-5a49-4382-b1a0-f9e8d7c6b5a4"
_SYSTEM_COLUMNS = {"createdon", "modifiedon", "overriddencreatedon", "versionnumber"}
_JSON_TYPE = "application/json; odata.metadata=minimal"
_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")

# Dataverse error codes (hex, as the Web API writes them)
NOT_FOUND = "0x80040217"
KEY_NOT_FOUND = "0x80060891"
DUPLICATE = "0x80040237"
VERSION_MISMATCH = "0x80060882"
ENTITY_REFERENCE = "0x80048d19"
NO_ATTRIBUTE = "0x80041103"
UNAUTHORIZED = "0x80072560"
QUERY = "0x80060888"
MISSING_PRIVILEGE = "0x80040220"

# How long a write waits for another process's write transaction on the same state file (SQLite
# busy timeout) before it fails with "database is locked".
BUSY_TIMEOUT_SECONDS = 30


# The annotation term of display values (for a lookup: the related row's primary name).
FORMATTED_VALUE = "OData.Community.Display.V1.FormattedValue"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def error_response(error: ODataError) -> Response:
    headers = {"Content-Type": _JSON_TYPE, "OData-Version": "4.0", **error.headers}
    return Response(error.status, json.dumps(error.to_json()).encode("utf-8"), headers)


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Response:
    out = {"Content-Type": _JSON_TYPE, "OData-Version": "4.0", **(headers or {})}
    return Response(status, json.dumps(payload).encode("utf-8"), out)


def _not_found_segment(segment: str) -> ODataError:
    return ODataError(404, QUERY, f"Resource not found for the segment '{segment}'.")


def _method_not_allowed(method: str, what: str) -> ODataError:
    return ODataError(405, QUERY, f"The HTTP method '{method}' is not allowed on {what}.")


# ---------------------------------------------------------------- the emulator


class DataverseEmulator:
    service = "dataverse"

    def __init__(  # noqa: PLR0913 - independent emulator switches; tests set each alone
        self,
        db_path: str,
        base_url: str,
        tokens: TokenIssuer,
        schema: Schema = Schema(),  # noqa: B008 - frozen dataclass, safe as a default
        alternate_key: bool = False,
        clock: Callable[[], datetime] = _utcnow,
        *,
        authorization_uri: str = "https://login.microsoftonline.com/common/oauth2/authorize",
        audit_record: bool = False,
        audit_page_size: int = MAX_PAGE_SIZE,
    ) -> None:
        """`audit_record=True` adds `AuditRecord` (who/when) to each AttributeAuditDetail, which
        Microsoft documents the Web API as NOT returning; only for testing that code path.
        `audit_page_size` is the largest page of the audit reads (RetrieveAttributeChangeHistory
        and the `audits` table), whatever the client asks for: small in tests, so that a short
        history takes several pages."""
        self.base_url = base_url.rstrip("/")
        # A hook the runner sets (webhooks.py): each committed Create or Update of a row, in
        # commit order; the changes of a rolled-back transaction or change set raise nothing.
        self.on_event: Callable[[RowEvent], None] | None = None
        self._events: list[RowEvent] = []
        self._event_marks: dict[str, int] = {}
        self.api_url = self.base_url + API
        self.schema = schema
        self.alternate_key = alternate_key
        self._tokens = tokens
        self._clock = clock
        self._authorization_uri = authorization_uri
        self._audit_record = audit_record
        self._audit_page_size = audit_page_size
        self.tables = build_tables(schema)
        self._sets = {t.entity_set: t for t in self.tables.values()}
        self._setting = self.tables[schema.setting.table]
        self._lock = threading.RLock()
        self._savepoints = itertools.count()
        self._depth = 0  # nesting of _tx: 0 outside a transaction
        self._seen_version = 0  # PRAGMA data_version when the caches were last known fresh
        # Query answers (rows matching a filter, sorted) kept while no row changes, so that the
        # pages of one paged read cost one scan instead of one each; cleared by every write,
        # this process's (_touch) or another's sharing the state file (_data_version).
        self._query_cache: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
        self._rows_cache: dict[str, list[dict[str, Any]]] = {}  # table -> typed rows, likewise
        # Autocommit (isolation_level=None): reads see the last committed state; writes run in
        # the explicit transactions of _tx. `timeout` is SQLite's busy timeout.
        self._db = sqlite3.connect(
            db_path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS
        )
        # Every write is its own transaction; without this each commit waits for the disk
        # (~3 ms), which made a 100-operation $batch take 0.3 s. A crash of the machine (not of
        # the process) can lose the last writes of a sandbox: acceptable for test data.
        self._db.execute("PRAGMA synchronous = OFF")
        self._create_tables()
        self.audit_enabled = bool(self._meta("auditEnabled", True))
        extra = self._meta("contractColumns", {})  # a state file seeded with contract columns
        if isinstance(extra, dict) and extra:
            self._use_contract_columns({str(k): str(v) for k, v in extra.items()})
        # Notes (scenario `notes`): whether the subscription table has them, and the
        # privileges the application user lacks.
        self.notes_enabled = bool(self._meta("hasNotes", True))
        missing = self._meta("missingPrivileges", [])
        self.missing_privileges = frozenset(map(str, missing if isinstance(missing, list) else []))
        # A hook the server sets: the fault (a response) for one operation inside a $batch.
        self.part_fault: Callable[[Request], Response | None] | None = None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ the Emulator protocol

    def handle(self, request: Request) -> Response:
        with self._lock:
            denied = self._tokens.check(request.headers.get("Authorization"), self.base_url)
            if denied is not None:
                return error_response(
                    ODataError(
                        401,
                        UNAUTHORIZED,
                        f"Bearer token rejected: {denied}.",
                        {
                            "WWW-Authenticate": f"Bearer authorization_uri="
                            f"{self._authorization_uri}, resource_id={self.base_url}/"
                        },
                    )
                )
            return self._respond(request, batched=False)

    def kind(self, request: Request) -> str:
        path = request.path
        if not path.startswith(API + "/"):
            return f"{request.method} {path}"
        rest = path[len(API) + 1 :]
        head = re.split(r"[(/]", rest, maxsplit=1)[0] if rest else "/"
        return f"{request.method} {head}"

    def race(self, request: Request, changes: dict[str, object]) -> None:
        """Change the row(s) `request` addresses as a person would between our read and write:
        new values (lookups as `_x_value`), a new version (ETag) and modifiedon. For a `$batch`,
        every row its PATCH/DELETE/PUT operations address. Problems are logged, not raised."""
        with self._lock:
            try:
                targets = self._race_targets(request)
            except ODataError as exc:
                log.error("sandbox race: cannot read %s %s: %s", request.method, request.path, exc)
                return
            if not targets:
                log.error("sandbox race: %s %s addresses no row", request.method, request.path)
                return
            for table, key, method in targets:
                try:
                    typed = {}
                    for name, value in changes.items():
                        column = self._race_column(table, name)
                        typed[column.name] = from_json(table, column, value)
                except ODataError as exc:
                    log.error("sandbox race: bad change for %s: %s", table.logical, exc.message)
                    continue
                with self._tx():
                    row = self._find(table, key)
                    if row is None and method == "PATCH":
                        # Someone else creates the row our create-only PATCH addresses.
                        self._race_create(table, key, typed)
                    elif row is None:
                        log.warning(
                            "sandbox race: no %s row %s to change", table.logical, key.describe()
                        )
                    else:
                        self._write_update(table, row, typed)

    def _race_create(self, table: Table, key: Key, values: dict[str, Any]) -> None:
        now = self._now()
        row = self._defaults(table)
        row.update(values)
        row[table.id] = key.id or str(uuid.uuid4())
        if key.alternate is not None:
            row[key.alternate[0]] = key.alternate[1]
        row["createdon"] = now
        row["modifiedon"] = now
        with self._tx():
            row["versionnumber"] = self._next_version()
            self._insert(table, row)

    def rows(self, entity_set: str) -> list[dict[str, Any]]:
        """Every row of `entity_set` as GET answers it (all columns, @odata.etag), by id."""
        with self._lock:
            table = self._sets.get(entity_set)
            if table is None:
                raise ValueError(f"no entity set '{entity_set}' (have {', '.join(self._sets)})")
            order = [(Property(table.id, table.id, EdmType.GUID), False)]
            return [self._serialize(table, row, None) for row in sort_rows(self._all(table), order)]

    # ------------------------------------------------------------ seeding

    def _use_contract_columns(self, kinds: Mapping[str, str]) -> None:
        """Serve these extra billing contract columns (a scenario's `columns`), metadata too."""
        self.tables = build_tables(self.schema, kinds)
        self._sets = {t.entity_set: t for t in self.tables.values()}
        self._setting = self.tables[self.schema.setting.table]
        self._create_tables()
        self._query_cache.clear()
        self._rows_cache.clear()

    def seed(self, scenario: Scenario) -> None:
        """Replace every row (and the audit log) with the scenario's."""
        s = self.schema
        now = self._now()
        kinds = contract_column_kinds(scenario)
        with self._lock, self._tx():
            if kinds:
                self._use_contract_columns(kinds)
                self._set_meta("contractColumns", kinds)
            for table in self.tables.values():
                self._touch()
                self._db.execute(f'DELETE FROM "{table.sql}"')  # noqa: S608 - identifiers only
            self.alternate_key = scenario.alternate_key
            self.audit_enabled = scenario.setting.audit_enabled
            self._set_meta("auditEnabled", self.audit_enabled)
            self.notes_enabled = scenario.notes.has_notes
            self.missing_privileges = frozenset(scenario.notes.missing_privileges)
            self._set_meta("hasNotes", self.notes_enabled)
            self._set_meta("missingPrivileges", sorted(self.missing_privileges))
            account = self.tables[s.account.table]
            for a in scenario.accounts:
                self._seed_row(account, {s.account.id: a.id, s.account.name: a.name}, now)
            pa = self.tables[s.provider_account.table]
            for p in scenario.provider_accounts:
                t = s.provider_account
                self._seed_row(
                    pa,
                    {
                        t.id: p.id,
                        t.name: p.name,
                        t.customer_id: p.customer_id,
                        t.account: p.account_id,
                    },
                    now,
                )
            contract = self.tables[s.billing_contract.table]
            for c in scenario.billing_contracts:
                t2 = s.billing_contract
                inactive = 1 if t2.active_state == 0 else 0
                contract_values: dict[str, Any] = {
                    t2.id: c.id,
                    t2.name: c.name,
                    t2.account: c.account_id,
                    t2.is_default: c.is_default,
                    "statecode": 0 if c.active else 1,
                    "statuscode": 1 if c.active else 2,
                }
                contract_values[t2.state] = t2.active_state if c.active else inactive
                contract_values.update(c.columns)
                self._seed_row(contract, contract_values, now)
            subscription = self.tables[s.subscription.table]
            # One version number per record, counted here and stored once (not two statements
            # per row: 100k records seeded in seconds).
            first = self._next_version()
            for i, r in enumerate(scenario.subscriptions):
                t3 = s.subscription
                values: dict[str, Any] = {
                    t3.id: r.id,
                    t3.name: r.name,
                    t3.provider_subscription_id: r.provider_subscription_id,
                    t3.account: r.account_id,
                    t3.billing_contract: r.billing_contract_id,
                }
                for ref, value in r.billing_references.items():
                    if ref not in t3.billing_references:
                        raise ScenarioError(
                            f"scenario: 'subscriptions[{i}].billingReferences.{ref}' is not a "
                            f"billing-reference column of the schema map "
                            f"({', '.join(t3.billing_references)})"
                        )
                    values[ref] = value
                self._seed_row(subscription, values, r.created_on or now, first + i)
            self._db.execute(
                "UPDATE dv_meta SET value = ? WHERE key = 'version'",
                (str(first + len(scenario.subscriptions)),),
            )
            setting = scenario.setting
            when = setting.enabled_on or now
            column = s.setting.associate_default
            self._seed_row(
                self._setting,
                {
                    s.setting.id: SETTING_ROW_ID,
                    "work365_name": "Work 365 Admin Hub",
                    column: setting.associate_default_billing_contract,
                },
                when,
            )
            if setting.enabled_on is not None and self.audit_enabled:
                self._audit(self._setting, SETTING_ROW_ID, 2, {column: False}, {column: True}, when)

    def _seed_row(
        self, table: Table, values: Mapping[str, Any], when: datetime, version: int | None = None
    ) -> None:
        row = self._defaults(table)
        for name, value in values.items():
            column = table.column(name)
            if column.kind is Kind.UNIQUEIDENTIFIER or column.kind is Kind.LOOKUP:
                value = None if value is None else str(value).lower()
            row[name] = value
        when = when.astimezone(UTC).replace(microsecond=0)
        row["createdon"] = when
        row["modifiedon"] = when
        row["versionnumber"] = self._next_version() if version is None else version
        self._insert(table, row)

    # ------------------------------------------------------------ storage

    def _create_tables(self) -> None:
        db = self._db
        with self._tx():  # another process may be opening the same state file
            db.execute('CREATE TABLE IF NOT EXISTS "dv_meta" (key TEXT PRIMARY KEY, value TEXT)')
            for table in self.tables.values():
                columns = [f'"{c.name}" {self._sql_type(c)}' for c in table.columns]
                columns[0] += " PRIMARY KEY"
                columns += [f'"{name}" TEXT' for name in table.extra_sql]
                db.execute(f'CREATE TABLE IF NOT EXISTS "{table.sql}" ({", ".join(columns)})')
                have = {r[1] for r in db.execute(f'PRAGMA table_info("{table.sql}")')}
                wanted = [(c.name, self._sql_type(c)) for c in table.columns]
                wanted += [(name, "TEXT") for name in table.extra_sql]
                for name, sql_type in wanted:
                    if name not in have:  # a state file made under another schema map
                        db.execute(f'ALTER TABLE "{table.sql}" ADD COLUMN "{name}" {sql_type}')
            db.execute("INSERT OR IGNORE INTO dv_meta VALUES ('version', '1000000')")
        self._seen_version = self._data_version()

    @staticmethod
    def _sql_type(column: Column) -> str:
        if column.edm in (EdmType.BOOLEAN, EdmType.INT32, EdmType.INT64):
            return "INTEGER"
        return "TEXT"

    def _meta(self, key: str, default: object) -> object:
        row = self._db.execute("SELECT value FROM dv_meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def _set_meta(self, key: str, value: object) -> None:
        self._db.execute("INSERT OR REPLACE INTO dv_meta VALUES (?, ?)", (key, json.dumps(value)))

    def _next_version(self) -> int:
        """The next row version (ETag), unique across every process sharing the state file:
        one statement, inside the caller's write transaction."""
        assert self._depth > 0, "versions are allocated inside a write transaction"
        row = self._db.execute(
            "UPDATE dv_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version' "
            "RETURNING value"
        ).fetchone()
        return int(row[0])

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """One write transaction: what runs inside (reads, precondition checks, writes) is
        atomic against every other connection to the state file, other processes included.
        The outermost level is `BEGIN IMMEDIATE` (the write lock taken at once, waiting up to
        the busy timeout for another writer); inner levels are savepoints."""
        name = self._begin()
        try:
            yield
        except BaseException:
            self._rollback(name)
            raise
        self._release(name)

    def _begin(self) -> str:
        """Start a transaction ("" for the outermost) or a savepoint inside one (its name)."""
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            self._refresh()  # another process may have written since our last read
            return ""
        name = f"sp{next(self._savepoints)}"
        self._event_marks[name] = len(self._events)
        self._db.execute(f"SAVEPOINT {name}")
        self._depth += 1
        return name

    def _touch(self) -> None:
        """Rows changed: forget cached query answers."""
        self._query_cache.clear()
        self._rows_cache.clear()

    def _data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _refresh(self) -> None:
        """Forget cached query answers when another connection (another process sharing the
        state file) committed since we last looked; `PRAGMA data_version` changes only then."""
        version = self._data_version()
        if version != self._seen_version:
            self._seen_version = version
            self._touch()

    def _rollback(self, name: str) -> None:
        self._touch()
        self._depth -= 1
        del self._events[self._event_marks.pop(name, 0) if name else 0 :]
        if name:
            self._db.execute(f"ROLLBACK TO {name}")
            self._db.execute(f"RELEASE {name}")
        elif self._db.in_transaction:  # some errors end the transaction themselves
            self._db.execute("ROLLBACK")

    def _release(self, name: str) -> None:
        self._depth -= 1
        if name:
            self._event_marks.pop(name, None)
            self._db.execute(f"RELEASE {name}")
            return
        try:
            self._db.execute("COMMIT")
        except BaseException:
            self._touch()
            self._events.clear()
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        events, self._events = self._events, []
        if self.on_event is not None:
            for event in events:
                self.on_event(event)

    def _raise_event(
        self, message: str, table: Table, row: Mapping[str, Any], names: Iterable[str]
    ) -> None:
        """Keep a Create or Update for `on_event`, raised when the transaction commits."""
        if self.on_event is None:
            return
        attributes = tuple(
            (name, table.by_name[name].target, row.get(name))
            for name in names
            if name in table.by_name and name not in _SYSTEM_COLUMNS
        )
        self._events.append(
            RowEvent(message, table.logical, str(row[table.id]), attributes, self._now())
        )

    def _typed(self, table: Table, raw: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for name, value in zip(names, raw, strict=True):
            column = table.by_name.get(name)
            row[name] = from_sql(column, value) if column else value
        return row

    def _select_sql(self, table: Table) -> tuple[str, list[str]]:
        names = [c.name for c in table.columns] + list(table.extra_sql)
        cols = ", ".join(f'"{n}"' for n in names)
        return f'SELECT {cols} FROM "{table.sql}"', names  # noqa: S608 - identifiers only

    def _load(self, table: Table, row_id: str) -> dict[str, Any] | None:
        sql, names = self._select_sql(table)
        raw = self._db.execute(f'{sql} WHERE "{table.id}" = ?', (row_id.lower(),)).fetchone()
        return None if raw is None else self._typed(table, raw, names)

    def _all(self, table: Table) -> list[dict[str, Any]]:
        sql, names = self._select_sql(table)
        return [self._typed(table, raw, names) for raw in self._db.execute(sql)]

    def _insert(self, table: Table, row: Mapping[str, Any]) -> None:
        self._touch()
        names = [n for n in row if n in table.by_name or n in table.extra_sql]
        values = [to_sql(table.by_name[n], row[n]) if n in table.by_name else row[n] for n in names]
        cols = ", ".join(f'"{n}"' for n in names)
        marks = ", ".join("?" for _ in names)
        sql = f'INSERT INTO "{table.sql}" ({cols}) VALUES ({marks})'  # noqa: S608 - identifiers
        self._db.execute(sql, values)

    def _store(self, table: Table, row_id: str, values: Mapping[str, Any]) -> None:
        if not values:
            return
        self._touch()
        sets = ", ".join(f'"{n}" = ?' for n in values)
        params = [to_sql(table.by_name[n], v) for n, v in values.items()]
        sql = f'UPDATE "{table.sql}" SET {sets} WHERE "{table.id}" = ?'  # noqa: S608 - identifiers
        self._db.execute(sql, [*params, row_id])

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC).replace(microsecond=0)

    def _defaults(self, table: Table) -> dict[str, Any]:
        row: dict[str, Any] = {c.name: None for c in table.columns}
        for column in table.columns:
            if column.kind is Kind.BOOLEAN:
                row[column.name] = False
        if "statecode" in row:
            row["statecode"] = 0
        if "statuscode" in row:
            row["statuscode"] = 1
        return row

    def _find(self, table: Table, key: Key) -> dict[str, Any] | None:
        if key.id is not None:
            return self._load(table, key.id)
        assert key.alternate is not None
        column, value = key.alternate
        found = self._ids_where(table, column, value, nocase=True)
        return self._load(table, found[0]) if found else None

    def _ids_where(
        self, table: Table, column: str, value: Any, *, nocase: bool = False
    ) -> list[str]:
        """Ids of the rows whose `column` equals `value` (case-insensitively with `nocase`)."""
        collate = " COLLATE NOCASE" if nocase else ""
        sql = f'SELECT "{table.id}" FROM "{table.sql}" WHERE "{column}" = ?{collate}'  # noqa: S608
        return [str(r[0]) for r in self._db.execute(sql, (value,))]

    def _require(self, table: Table, key: Key) -> dict[str, Any]:
        row = self._find(table, key)
        if row is None:
            raise self._missing(table, key)
        return row

    @staticmethod
    def _missing(table: Table, key: Key) -> ODataError:
        if key.id is not None:
            return ODataError(404, NOT_FOUND, f"{table.logical} With Id = {key.id} Does Not Exist")
        return ODataError(
            404,
            KEY_NOT_FOUND,
            f"A record with the specified key values does not exist in {table.logical} entity",
        )

    # ------------------------------------------------------------ answers

    def _etag(self, row: Mapping[str, Any]) -> str:
        return f'W/"{row["versionnumber"]}"'

    def _entity_url(self, table: Table, row_id: str, key: Key | None = None) -> str:
        """The OData-EntityId of a written row: as addressed, so a row written through an
        alternate key comes back with its key values, not its id, as Microsoft's upsert
        examples show (`example_records(example_key1=2,example_key2=2)`).
        https://learn.microsoft.com/en-us/power-apps/developer/data-platform/use-upsert-insert-update-record#use-web-api"""
        if key is not None and key.alternate is not None:
            column, value = key.alternate
            literal = "'" + value.replace("'", "''") + "'"
            return f"{self.api_url}/{table.entity_set}({column}={literal})"
        return f"{self.api_url}/{table.entity_set}({row_id})"

    def _serialize(
        self,
        table: Table,
        row: Mapping[str, Any],
        select: Sequence[Column] | None,
        names: Callable[[Column, str], str | None] | None = None,
    ) -> dict[str, Any]:
        """`names` (the request asked for formatted values): a lookup's related row's name,
        sent as `_x_value@OData.Community.Display.V1.FormattedValue` before the value."""
        out: dict[str, Any] = {}
        if table.versioned:
            out["@odata.etag"] = self._etag(row)
        for column in select if select is not None else table.columns:
            value = to_json(column, row.get(column.name))
            if names is not None and column.kind is Kind.LOOKUP and value is not None:
                name = names(column, str(value))
                if name is not None:
                    out[f"{column.prop}@{FORMATTED_VALUE}"] = name
            out[column.prop] = value
        out.setdefault(table.id, row[table.id])
        return out

    def _lookup_names(self, request: Request) -> Callable[[Column, str], str | None] | None:
        """The lookup namer of a read whose Prefer asks for formatted values (`*` or the
        term), else None: Dataverse sends annotations only when asked.
        https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/select-columns#formatted-values
        Only lookups are annotated here (docs/fidelity.md): not choices, booleans or dates."""
        wanted = prefer(request).get("odata.include-annotations", "")
        terms = {t.strip() for t in wanted.split(",")}
        if not terms & {"*", FORMATTED_VALUE, "OData.Community.Display.V1.*"}:
            return None
        cache: dict[str, dict[str, str]] = {}

        def name(column: Column, row_id: str) -> str | None:
            target = self.tables.get(column.target or "")
            if target is None or target.name is None:
                return None
            if target.logical not in cache:
                rows = self._rows_cache.get(target.sql)
                if rows is None:
                    rows = self._rows_cache[target.sql] = self._all(target)
                cache[target.logical] = {
                    str(r[target.id]): str(r[target.name]) for r in rows if r.get(target.name)
                }
            return cache[target.logical].get(row_id.lower())

        return name

    def _context(self, table: Table, select: Sequence[Column] | None, *, single: bool) -> str:
        url = f"{self.api_url}/$metadata#{table.entity_set}"
        if select is not None:
            url += "(" + ",".join(c.prop for c in select) + ")"
        return url + ("/$entity" if single else "")

    def _select(self, table: Table, options: Mapping[str, str]) -> list[Column] | None:
        if "$select" not in options:
            return None
        return [table.by_name[p.key] for p in parse_select(options["$select"], table.resolve)]

    # ------------------------------------------------------------ routing

    def _respond(self, request: Request, *, batched: bool) -> Response:
        try:
            response = self._route(request, batched=batched)
        except ODataError as exc:
            response = error_response(exc)
        response.headers.setdefault("OData-Version", "4.0")
        response.headers.setdefault("x-ms-service-request-id", str(uuid.uuid4()))
        return response

    def _route(  # noqa: PLR0912, PLR0915 - one branch per Web API URL form, as Dataverse has
        self, request: Request, *, batched: bool
    ) -> Response:
        path = request.path
        if path in (API, API + "/"):
            if request.method != "GET":
                raise _method_not_allowed(request.method, "the service document")
            return self._service_document()
        if not path.startswith(API + "/"):
            raise _not_found_segment(path.strip("/").split("/")[0])
        segments = split_segments(path[len(API) + 1 :].rstrip("/"))
        head = segments[0]
        if head.name == "$batch" and head.args is None and len(segments) == 1:
            if batched:
                raise bad_request("A batch request cannot contain another batch request.")
            if request.method != "POST":
                raise _method_not_allowed(request.method, "$batch")
            return self._batch(request)
        if head.name == "$metadata":
            raise unsupported("the CSDL $metadata document: query EntityDefinitions instead")
        if head.name == "EntityDefinitions":
            return self._metadata(request, segments)
        if head.name == "RetrieveAttributeChangeHistory":
            return self._attribute_history(request, segments)
        if head.name == "WhoAmI" and len(segments) == 1:
            return self._who_am_i(request)
        if head.name == "systemusers":
            return self._user_function(request, segments)
        table = self._sets.get(head.name)
        if table is None:
            raise _not_found_segment(head.name)
        if head.args is None:
            if len(segments) == 2 and segments[1] == Segment("$count", None):
                if request.method != "GET":
                    raise _method_not_allowed(request.method, "$count")
                return self._count(request, table)
            if len(segments) > 1:
                raise unsupported(f"'{path}' (bound actions and functions on collections)")
            if request.method == "GET":
                return self._query(request, table)
            if request.method == "POST":
                return self._create(request, table)
            raise _method_not_allowed(request.method, f"the '{table.entity_set}' collection")
        key = self._parse_key(table, head.args)
        if len(segments) == 1:
            if request.method == "GET":
                return self._retrieve(request, table, key)
            if request.method == "PATCH":
                return self._patch(request, table, key)
            if request.method == "DELETE":
                return self._delete(request, table, key)
            raise _method_not_allowed(request.method, f"a '{table.logical}' record")
        second = segments[1]
        if table.logical == AUDIT_TABLE and second.name.endswith("RetrieveAuditDetails"):
            if len(segments) != 2 or second.args not in (None, ""):
                raise bad_request("Bad Request - Error in query syntax.")
            return self._audit_details(request, key)
        if len(segments) == 3 and segments[2].name == "$ref" and second.args is None:
            return self._reference(request, table, key, second.name)
        if len(segments) == 2 and second.args is None:
            column = table.by_prop.get(second.name)
            if column is not None:
                if request.method != "GET":
                    raise unsupported(f"{request.method} on a single property")
                return self._property(request, table, key, column)
            if second.name in table.by_nav:
                raise unsupported("reading a record through a navigation property")
            raise _not_found_segment(second.name)
        raise unsupported(f"the path '{path}'")

    def _parse_key(self, table: Table, args: str) -> Key:
        text = args.strip()
        if _GUID.fullmatch(text):
            return Key(id=text.lower())
        if "=" not in text:
            raise bad_request("Bad Request - Error in query syntax.")
        pairs = split_args(text)
        if len(pairs) == 1 and pairs[0][0] == table.id and _GUID.fullmatch(pairs[0][1]):
            return Key(id=pairs[0][1].lower())  # accounts(accountid=<guid>) names the key
        values = {name: string_literal(value) for name, value in pairs}
        alt_table = self.schema.subscription.table
        alt_column = self.schema.subscription.provider_subscription_id
        if (
            len(pairs) == 1
            and self.alternate_key
            and table.logical == alt_table
            and pairs[0][0] == alt_column
        ):
            value = values[alt_column]
            if value is None:
                raise bad_request(
                    f"The key value for '{alt_column}' must be a string literal ('...')."
                )
            return Key(alternate=(alt_column, value))
        raise bad_request(
            f"The requested key attributes do not exist for the entity {table.logical}"
        )

    # ------------------------------------------------------------ reads

    def _service_document(self) -> Response:
        value = [{"name": s, "kind": "EntitySet", "url": s} for s in self._sets]
        return _json(200, {"@odata.context": f"{self.api_url}/$metadata", "value": value})

    def _query(self, request: Request, table: Table) -> Response:
        options = query_options(request, COLLECTION_OPTIONS)
        select = self._select(table, options)
        given = aliases(request)
        node: Node | None = None
        if "$filter" in options:
            node = parse_filter(
                options["$filter"], table.resolve, _attribute_resolver(table), given
            )
        order: list[tuple[Property, bool]] = []
        if "$orderby" in options:
            order = parse_orderby(options["$orderby"], table.resolve, given)
        order = [*order, (Property(table.id, table.id, EdmType.GUID), False)]
        top = self._top(options.get("$top"))
        count = options.get("$count", "false")
        if count not in ("true", "false"):
            raise bad_request(f"'{count}' is not a valid value for $count: use true or false.")

        # Keyed by the parsed filter, not its text: one text reads differently with other aliases.
        key = (table.sql, node, tuple((p.key, d) for p, d in order))
        self._refresh()
        rows = self._query_cache.get(key)
        if rows is None:
            if table.sql not in self._rows_cache:
                self._rows_cache[table.sql] = self._all(table)
            everything = self._rows_cache[table.sql]
            rows = sort_rows((r for r in everything if matches(node, r)), order)
            self._query_cache[key] = rows
        total = len(rows)
        if "$skiptoken" in options:
            after = self._read_skiptoken(options["$skiptoken"], order)
            by = functools.cmp_to_key(row_comparator(order))
            rows = rows[bisect.bisect_right(rows, by(after), key=by) :]

        preferences = prefer(request)
        headers: dict[str, str] = {}
        # odata.maxpagesize is a preference: a service may page smaller, and does here for the
        # audit table when the emulator is built with a small `audit_page_size`.
        page_size = self._audit_page_size if table.logical == AUDIT_TABLE else MAX_PAGE_SIZE
        raw_size = preferences.get("odata.maxpagesize")
        if raw_size is not None and raw_size.isdigit() and int(raw_size) > 0:
            page_size = min(int(raw_size), page_size)
            headers["Preference-Applied"] = f"odata.maxpagesize={page_size}"
        elif top is not None:  # $top is ignored when odata.maxpagesize is given
            rows = rows[:top]
        page = rows[:page_size]

        body: dict[str, Any] = {"@odata.context": self._context(table, select, single=False)}
        if count == "true":
            body["@odata.count"] = min(total, MAX_PAGE_SIZE)
        names = self._lookup_names(request)
        body["value"] = [self._serialize(table, r, select, names) for r in page]
        if len(rows) > page_size:
            body["@odata.nextLink"] = self._next_link(request, table, page[-1], order)
        return _json(200, body, headers)

    def _count(self, request: Request, table: Table) -> Response:
        """`GET /{set}/$count[?$filter=...]`: the number alone, as text/plain
        (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/count-rows).
        The doc states the 5,000 cap for `$count=true`; the same cap is applied here."""
        options = query_options(request, {"$filter"})
        node: Node | None = None
        if "$filter" in options:
            node = parse_filter(
                options["$filter"], table.resolve, _attribute_resolver(table), aliases(request)
            )
        total = sum(1 for r in self._all(table) if matches(node, r))
        headers = {"Content-Type": "text/plain", "OData-Version": "4.0"}
        return Response(200, str(min(total, MAX_PAGE_SIZE)).encode("ascii"), headers)

    @staticmethod
    def _top(raw: str | None) -> int | None:
        if raw is None:
            return None
        if not raw.isdigit():
            raise bad_request(
                f"Invalid value '{raw}' for $top query option found. The $top query option "
                "requires a non-negative integer value."
            )
        return int(raw)

    def _next_link(
        self,
        request: Request,
        table: Table,
        last: Mapping[str, Any],
        order: Sequence[tuple[Property, bool]],
    ) -> str:
        keyed = {p.key: _key_text(p.type, last.get(p.key)) for p, _ in order}
        cookie = base64.urlsafe_b64encode(json.dumps(keyed).encode()).decode().rstrip("=")
        token = f'<cookie pagenumber="2" pagingcookie="{cookie}" istracking="False" />'
        kept = [
            piece
            for piece in request.raw_query.split("&")
            if piece and unquote(piece.split("=", 1)[0]) != "$skiptoken"
        ]
        kept.append("$skiptoken=" + quote(token, safe=""))
        return f"{self.api_url}/{table.entity_set}?{'&'.join(kept)}"

    @staticmethod
    def _read_skiptoken(token: str, order: Sequence[tuple[Property, bool]]) -> dict[str, Any]:
        match = re.search(r'pagingcookie="([A-Za-z0-9_-]*)"', token)
        invalid = bad_request("The $skiptoken is not valid: follow @odata.nextLink verbatim.")
        if match is None:
            raise invalid
        raw = match.group(1)
        try:
            keyed = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            return {
                p.key: None if keyed[p.key] is None else parse_value(p.type, keyed[p.key])
                for p, _ in order
            }
        except (ValueError, KeyError, TypeError):
            raise invalid from None

    def _retrieve(self, request: Request, table: Table, key: Key) -> Response:
        options = query_options(request, {"$select"})
        select = self._select(table, options)
        row = self._require(table, key)
        if_none = request.headers.get("If-None-Match")
        if (
            table.versioned
            and if_none is not None
            and if_none != "null"
            and etag_matches(if_none, self._etag(row))
            # Annotations may show related rows' values, so Dataverse never answers 304 then
            # (perform-conditional-operations-using-web-api#query-must-not-include-annotations).
            and "odata.include-annotations" not in prefer(request)
        ):
            return Response(304, b"", {"OData-Version": "4.0"})
        body = {"@odata.context": self._context(table, select, single=True)}
        self._refresh()
        body.update(self._serialize(table, row, select, self._lookup_names(request)))
        return _json(200, body, {"ETag": self._etag(row)} if table.versioned else None)

    def _property(self, request: Request, table: Table, key: Key, column: Column) -> Response:
        query_options(request, set())
        row = self._require(table, key)
        value = to_json(column, row.get(column.name))
        if value is None:
            return Response(204, b"", {"OData-Version": "4.0"})
        context = f"{self.api_url}/$metadata#{table.entity_set}({row[table.id]})/{column.prop}"
        return _json(200, {"@odata.context": context, "value": value})

    # ------------------------------------------------------------ writes

    def _body(self, request: Request) -> dict[str, Any]:
        try:
            payload = json.loads(request.body.decode("utf-8")) if request.body.strip() else None
        except (UnicodeDecodeError, ValueError):
            raise bad_request("The request body is not valid JSON.") from None
        if not isinstance(payload, dict):
            raise bad_request("The request body must be a JSON object (one record).")
        return payload

    def _payload(self, table: Table, body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
        """Typed column values from a create/update body; binds resolved to lookup ids."""
        if table.read_only:
            raise _method_not_allowed("POST" if creating else "PATCH", f"'{table.logical}' records")
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key == "@odata.type":
                if str(value).lstrip("#") != table.odata_type:
                    raise bad_request(
                        f"The @odata.type '{value}' does not match the entity set's type "
                        f"'{table.odata_type}'."
                    )
                continue
            if "@" in key:
                name, _, annotation = key.partition("@")
                if annotation != "odata.bind":
                    raise unsupported(f"the annotation '{key}' in a record payload")
                column = table.by_nav.get(name)
                if column is None:
                    raise bad_request(
                        f"An undeclared property '{name}' which only has property annotations "
                        "in the payload but no property value was found in the payload. In "
                        "OData, only declared navigation properties and declared named streams "
                        "can be represented as properties without values."
                    )
                if value is None and not creating:
                    # Documented disassociation: PATCH {"<nav>@odata.bind": null}.
                    out[column.name] = None
                    continue
                out[column.name] = self._bind(column, key, value)
                continue
            nav_column = table.by_nav.get(key)
            if nav_column is not None:
                self._check_bare_nav(nav_column, value, creating=creating)
                out[nav_column.name] = None
                continue
            column = table.by_prop.get(key)
            if column is not None and column.kind is Kind.LOOKUP:
                raise bad_request(
                    "CRM do not support direct update of Entity Reference properties, Use "
                    "Navigation properties instead.",
                    code=ENTITY_REFERENCE,
                )
            if column is None:
                raise bad_request(
                    f"The property '{key}' does not exist on type '{table.odata_type}'. Make "
                    "sure to only use property names that are defined by the type."
                )
            typed = from_json(table, column, value)
            if column.name == table.id or (column.creatable if creating else column.updatable):
                out[column.name] = typed
            # else: read-only columns (createdon, modifiedon, versionnumber) are ignored
        return out

    def _check_bare_nav(self, column: Column, value: object, *, creating: bool) -> None:
        """`{"<nav>": null}` in a PATCH: "When disassociating in this manner, you don't need
        to include the @odata.bind annotation. You can simply use the name of the
        single-valued navigation property" (answer 204), in
        https://learn.microsoft.com/power-apps/developer/data-platform/webapi/associate-disassociate-entities-using-web-api#disassociate-with-a-single-valued-navigation-property
        Only null on update is documented; an object there is a deep insert."""
        if value is None and not creating:
            return
        if value is None:
            raise bad_request(
                f"To leave '{column.nav}' empty on create, leave it out; "
                f"{column.nav}: null only disassociates on update (PATCH)."
            )
        raise unsupported(
            f"a value for the navigation property '{column.nav}' (deep insert): bind an "
            f"existing record with '{column.nav}@odata.bind'"
        )

    def _bind(self, column: Column, key: str, value: object) -> str:
        if not isinstance(value, str):
            target = self.tables.get(column.target or "")
            example = f"/{target.entity_set}(<id>)" if target else "/<set>(<id>)"
            raise bad_request(
                f"The value of '{key}' must be a URI string such as '{example}'. "
                f"To clear the lookup, PATCH it to null or send DELETE .../{column.nav}/$ref."
            )
        target_table, key_obj = self._resolve_entity_url(value, f"'{key}'")
        if target_table.logical != column.target:
            raise bad_request(
                f"The navigation property '{column.nav}' references '{column.target}' records; "
                f"'{value}' is a '{target_table.logical}' record."
            )
        row = self._require(target_table, key_obj)
        return str(row[target_table.id])

    def _resolve_entity_url(self, value: str, what: str) -> tuple[Table, Key]:
        """`/set(id)`, `set(id)`, `/api/data/v9.2/set(id)` or the absolute URL -> (table, key)."""
        parts = urlsplit(value)
        path = unquote(parts.path)
        if parts.scheme and f"{parts.scheme}://{parts.netloc}".lower() != self.base_url.lower():
            raise bad_request(f"The URI '{value}' in {what} is not in this organization.")
        if path.startswith(API + "/"):
            path = path[len(API) + 1 :]
        path = path.lstrip("/")
        segments = split_segments(path) if path else []
        if len(segments) != 1 or segments[0].args is None:
            raise bad_request(
                f"The URI '{value}' in {what} does not address one record: write /<set>(<id>)."
            )
        table = self._sets.get(segments[0].name)
        if table is None:
            raise _not_found_segment(segments[0].name)
        return table, self._parse_key(table, segments[0].args)

    def _create(self, request: Request, table: Table, key: Key | None = None) -> Response:
        options = query_options(request, {"$select"})
        select = self._select(table, options)
        body = self._body(request)
        with self._tx():  # the bound records, the existence check and the insert: one transaction
            if table.logical == ANNOTATION_TABLE:
                self._check_note(table, body)
            values = self._payload(table, body, creating=True)
            if table.logical == ANNOTATION_TABLE and values.get(NOTE_LOOKUP):
                values["objecttypecode"] = table.column(NOTE_LOOKUP).target
            if key is not None and key.id is not None:
                if values.get(table.id) not in (None, key.id):
                    raise bad_request(
                        "Entity Id must be the same as the value set in property bag.",
                        code="0x80040203",
                    )
                values[table.id] = key.id
            if key is not None and key.alternate is not None:
                values[key.alternate[0]] = key.alternate[1]
            row_id = values.get(table.id) or str(uuid.uuid4())
            if self._load(table, row_id) is not None:
                raise ODataError(
                    412, DUPLICATE, "A record with matching key values already exists."
                )
            self._check_alternate_key(table, row_id, values)
            now = self._now()
            row = self._defaults(table)
            row.update(values)
            row[table.id] = row_id
            row["createdon"] = values.get("overriddencreatedon") or now
            row["modifiedon"] = now
            row["versionnumber"] = self._next_version()
            self._insert(table, row)
            audited = {n: v for n, v in row.items() if v is not None and n not in _SYSTEM_COLUMNS}
            self._audit(table, row_id, 1, {}, audited, now)
            self._raise_event("Create", table, row, dict.fromkeys([table.id, *audited]))
        headers = {
            "OData-EntityId": self._entity_url(table, row_id, key),
            "ETag": self._etag(row),
        }
        if prefer(request).get("return") == "representation":
            body = {"@odata.context": self._context(table, select, single=True)}
            body.update(self._serialize(table, row, select))
            headers["Preference-Applied"] = "return=representation"
            return _json(201, body, headers)
        return Response(204, b"", headers)

    def _patch(self, request: Request, table: Table, key: Key) -> Response:
        if table.read_only:
            raise _method_not_allowed("PATCH", f"'{table.logical}' records")
        if_match = request.headers.get("If-Match")
        if_none = request.headers.get("If-None-Match")
        if if_none == "null":  # Dataverse clients send it to defeat caches; it means nothing here
            if_none = None
        if if_match is not None and if_none is not None:
            raise bad_request("If-Match and If-None-Match cannot be used together.")
        if if_none is not None and if_none.strip() != "*":
            raise unsupported(f"If-None-Match: {if_none} on PATCH (only * is meaningful)")
        # The precondition is checked and the row written in one transaction, as Dataverse
        # does: of several writers holding the same ETag (or creating the same row), in this
        # process or another sharing the state file, exactly one wins; the rest get 412.
        with self._tx():
            row = self._find(table, key)
            if if_none is not None:
                if row is not None:
                    raise ODataError(
                        412, DUPLICATE, "A record with matching key values already exists."
                    )
                return self._create(request, table, key)
            if if_match is not None:
                if row is None:
                    raise self._missing(table, key)
                if if_match.strip() != "*" and not etag_matches(if_match, self._etag(row)):
                    raise ODataError(
                        412,
                        VERSION_MISMATCH,
                        "The version of the existing record doesn't match the RowVersion "
                        "property provided.",
                    )
            if row is None:  # plain PATCH is an upsert
                return self._create(request, table, key)
            return self._update(request, table, row, key)

    def _update(
        self, request: Request, table: Table, row: dict[str, Any], key: Key | None = None
    ) -> Response:
        options = query_options(request, {"$select"})
        select = self._select(table, options)
        body = self._body(request)
        with self._tx():  # inside _patch's: `row` was read in the same transaction
            values = self._payload(table, body, creating=False)
            if values.get(table.id, row[table.id]) != row[table.id]:
                raise bad_request(
                    "Entity Id must be the same as the value set in property bag.",
                    code="0x80040203",
                )
            values.pop(table.id, None)
            self._check_alternate_key(table, row[table.id], values)
            row = self._write_update(table, row, values)
        headers = {
            "OData-EntityId": self._entity_url(table, row[table.id], key),
            "ETag": self._etag(row),
        }
        if prefer(request).get("return") == "representation":
            body = {"@odata.context": self._context(table, select, single=True)}
            body.update(self._serialize(table, row, select))
            headers["Preference-Applied"] = "return=representation"
            return _json(200, body, headers)
        return Response(204, b"", headers)

    def _write_update(
        self, table: Table, row: Mapping[str, Any], values: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Apply `values`, bump version and modifiedon, audit; returns the new row."""
        now = self._now()
        old = {n: row.get(n) for n, v in values.items() if row.get(n) != v}
        new = {n: values[n] for n in old}
        changes = {**values, "modifiedon": now, "versionnumber": self._next_version()}
        self._store(table, row[table.id], changes)
        old_audit = {n: v for n, v in old.items() if n not in _SYSTEM_COLUMNS}
        new_audit = {n: v for n, v in new.items() if n not in _SYSTEM_COLUMNS}
        if new_audit:
            self._audit(table, row[table.id], 2, old_audit, new_audit, now)
            self._raise_event("Update", table, {**row, **changes}, new_audit)
        return {**row, **changes}

    def _check_alternate_key(self, table: Table, row_id: str, values: Mapping[str, Any]) -> None:
        column = self.schema.subscription.provider_subscription_id
        if not self.alternate_key or table.logical != self.schema.subscription.table:
            return
        value = values.get(column)
        if value is None:
            return
        if any(other != row_id for other in self._ids_where(table, column, value, nocase=True)):
            schema_name = table.column(column).schema_name
            raise ODataError(
                412,
                DUPLICATE,
                f"A record that has the attribute values {schema_name} already exists. The "
                f"entity key {schema_name}Key requires that this set of attributes contains "
                "unique values. Select unique values and try again.",
            )

    def _delete(self, request: Request, table: Table, key: Key) -> Response:
        query_options(request, set())
        if table.read_only:
            raise _method_not_allowed("DELETE", f"'{table.logical}' records")
        if_match = request.headers.get("If-Match")
        with self._tx():  # the precondition and the delete: one transaction
            row = self._require(table, key)
            if (
                if_match is not None
                and if_match.strip() != "*"
                and not etag_matches(if_match, self._etag(row))
            ):
                raise ODataError(
                    412,
                    VERSION_MISMATCH,
                    "The version of the existing record doesn't match the RowVersion property "
                    "provided.",
                )
            row_id = row[table.id]
            self._touch()
            sql = f'DELETE FROM "{table.sql}" WHERE "{table.id}" = ?'  # noqa: S608 - identifiers
            self._db.execute(sql, (row_id,))
            for other in self.tables.values():  # cascade "Remove Link", as custom lookups do
                for column in other.columns:
                    if column.kind is Kind.LOOKUP and column.target == table.logical:
                        for linked_id in self._ids_where(other, column.name, row_id):
                            linked = self._load(other, linked_id)
                            if linked is not None:
                                self._write_update(other, linked, {column.name: None})
            self._audit(table, row_id, 3, {}, {}, self._now())
        return Response(204, b"", {})

    def _reference(self, request: Request, table: Table, key: Key, nav: str) -> Response:
        column = table.by_nav.get(nav)
        if column is None:
            raise _not_found_segment(nav)
        if table.read_only:
            raise _method_not_allowed(request.method, f"'{table.logical}' records")
        query_options(request, set())
        with self._tx():  # the record, the bound record and the write: one transaction
            row = self._require(table, key)
            if request.method == "DELETE":
                value: str | None = None
            elif request.method == "PUT":
                body = self._body(request)
                target = body.get("@odata.id")
                if set(body) != {"@odata.id"} or not isinstance(target, str):
                    raise bad_request('The body of a $ref request must be {"@odata.id": "<uri>"}.')
                value = self._bind(column, "@odata.id", target)
            else:
                raise _method_not_allowed(request.method, f"the '{nav}' reference")
            self._write_update(table, row, {column.name: value})
        return Response(204, b"", {})

    # ------------------------------------------------------------ $batch

    def _batch(self, request: Request) -> Response:
        parts = parse_batch(request.headers.get("Content-Type"), request.body)
        continue_on_error = "odata.continue-on-error" in prefer(request)
        answers: list[AnswerPart] = []
        status = 200
        for part in parts:
            if isinstance(part, ChangeSet):
                answer, failed = self._changeset(part)
            else:
                response = self._batch_operation(part, {}, in_changeset=False)
                answer = Answer(response, part.content_id)
                failed = response if response.status >= 400 else None
            answers.append(answer)
            if failed is not None and not continue_on_error:
                status = failed.status
                break
        content_type, body = render_batch(answers)
        headers = {"Content-Type": content_type, "OData-Version": "4.0"}
        if continue_on_error:
            headers["Preference-Applied"] = "odata.continue-on-error"
        return Response(status, body, headers)

    def _changeset(self, changeset: ChangeSet) -> tuple[AnswerPart, Response | None]:
        """All or nothing: one write transaction for every operation of the change set (each
        operation's precondition checked inside it); on the first failure, roll back and answer
        that failure alone."""
        savepoint = self._begin()
        ids: dict[str, str] = {}
        answers: list[Answer] = []
        try:
            for op in changeset.operations:
                if op.content_id is not None and op.content_id in ids:
                    response = error_response(
                        bad_request(f"The Content-ID '{op.content_id}' is used twice.")
                    )
                else:
                    response = self._batch_operation(op, ids, in_changeset=True)
                if response.status >= 400:
                    self._rollback(savepoint)
                    return Answer(response, op.content_id), response
                answers.append(Answer(response, op.content_id))
                entity = response.headers.get("OData-EntityId")
                if op.content_id is not None and entity:
                    ids[op.content_id] = entity
        except BaseException:
            self._rollback(savepoint)
            raise
        self._release(savepoint)
        return ChangeSetAnswer(tuple(answers)), None

    def _batch_operation(
        self, op: Operation, ids: Mapping[str, str], *, in_changeset: bool
    ) -> Response:
        try:
            if in_changeset and op.method == "GET":
                raise bad_request("GET requests are not allowed in a change set.")
            url = op.url
            if url.startswith("$"):
                ref, sep, rest = url[1:].partition("/")
                if ref not in ids:
                    raise bad_request(
                        f"Content-ID Reference: '${ref}' does not exist in the batch context."
                    )
                url = ids[ref] + (sep + rest if sep else "")
            parts = urlsplit(url)
            path = unquote(parts.path)
            if not parts.scheme and not path.startswith("/"):
                path = f"{API}/{path}"  # relative to the service root
            body = resolve_content_ids(op.body, ids)
            inner = Request(op.method, path, parts.query, op.headers, body)
            faulted = self.part_fault(inner) if self.part_fault is not None else None
            response = faulted or self._respond(inner, batched=True)
        except ODataError as exc:
            response = error_response(exc)
        if op.method == "POST" and response.status == 204 and "OData-EntityId" in response.headers:
            response.headers["Location"] = response.headers["OData-EntityId"]
        response.headers.pop("x-ms-service-request-id", None)
        return response

    # ------------------------------------------------------------ metadata

    def _metadata(self, request: Request, segments: Sequence[Segment]) -> Response:
        if request.method != "GET":
            raise unsupported(f"{request.method} on EntityDefinitions (changing metadata)")
        head = segments[0]
        if head.args is None:
            if len(segments) > 1:
                raise bad_request("Bad Request - Error in query syntax.")
            docs = [self._entity_doc(t) for t in self.tables.values()]
            return self._metadata_collection(request, "EntityDefinitions", "EntityMetadata", docs)
        table = self._entity_by_key(head.args)
        if len(segments) == 1:
            return self._metadata_single(
                request, "EntityDefinitions", "EntityMetadata", self._entity_doc(table)
            )
        part = segments[1]
        base = f"EntityDefinitions(LogicalName='{table.logical}')"
        if part.name == "Attributes":
            return self._attributes(request, table, segments[1:], base)
        if len(segments) != 2 or part.args is not None:
            raise unsupported(f"'{'/'.join(s.name for s in segments)}' in metadata queries")
        if part.name == "ManyToOneRelationships":
            docs = [r for r in self._relationships() if r["ReferencingEntity"] == table.logical]
            return self._metadata_collection(
                request, f"{base}/{part.name}", "OneToManyRelationshipMetadata", docs
            )
        if part.name == "OneToManyRelationships":
            docs = [r for r in self._relationships() if r["ReferencedEntity"] == table.logical]
            return self._metadata_collection(
                request, f"{base}/{part.name}", "OneToManyRelationshipMetadata", docs
            )
        if part.name == "Keys":
            docs = []
            if self.alternate_key and table.logical == self.schema.subscription.table:
                column = table.column(self.schema.subscription.provider_subscription_id)
                docs.append(alternate_key_metadata(table, column))
            return self._metadata_collection(request, f"{base}/Keys", "EntityKeyMetadata", docs)
        raise _not_found_segment(part.name)

    def _entity_by_key(self, args: str) -> Table:
        text = args.strip()
        if _GUID.fullmatch(text):
            for table in self.tables.values():
                if table.metadata_id == text.lower():
                    return table
            raise ODataError(404, NOT_FOUND, f"Could not find entity with MetadataId = {text}.")
        pairs = split_args(text)
        name = string_literal(pairs[0][1]) if len(pairs) == 1 else None
        if len(pairs) != 1 or pairs[0][0] != "LogicalName" or name is None:
            raise bad_request(
                "Address a table definition as EntityDefinitions(LogicalName='<name>') or "
                "EntityDefinitions(<MetadataId>)."
            )
        found = self.tables.get(name)
        if found is None:
            raise ODataError(404, NOT_FOUND, f"Entity '{name}' was not found in the MetadataCache.")
        return found

    def _entity_doc(self, table: Table) -> dict[str, Any]:
        has_notes = self.notes_enabled and table.logical == self.schema.subscription.table
        return entity_metadata(table, audited=self._is_audited(table), has_notes=has_notes)

    def _relationships(self) -> list[dict[str, Any]]:
        """Every relationship; the notes one (annotation.objectid) only with notes on."""
        return [
            r
            for r in relationships(self.tables)
            if self.notes_enabled or r["ReferencingEntity"] != ANNOTATION_TABLE
        ]

    def _is_audited(self, table: Table, column: Column | None = None) -> bool:
        if not self.audit_enabled or table.logical != self._setting.logical:
            return False
        return column is None or column.name not in _SYSTEM_COLUMNS

    def _attributes(
        self, request: Request, table: Table, segments: Sequence[Segment], base: str
    ) -> Response:
        docs = [
            attribute_metadata(table, c, audited=self._is_audited(table, c)) for c in table.columns
        ]
        expand = query_options(request, {"$select", "$filter", "$expand"}).get("$expand")
        if expand is not None:
            if not re.fullmatch(r"OptionSet(\(\$select=[A-Za-z,]+\))?", expand):
                raise unsupported(f"$expand={expand} on Attributes (only OptionSet)")
            for doc, column in zip(docs, table.columns, strict=True):
                options = option_set(column)
                if options is not None:
                    doc["OptionSet"] = options
        context = f"{base}/Attributes"
        rest = list(segments[1:])
        if rest and rest[0].name.startswith("Microsoft.Dynamics.CRM."):
            cast = rest.pop(0).name
            docs = [d for d in docs if d["@odata.type"] == f"#{cast}"]
            context += f"/{cast}"
        first = segments[0]
        if first.args is not None:
            pairs = split_args(first.args)
            name = string_literal(pairs[0][1]) if len(pairs) == 1 else None
            if len(pairs) != 1 or pairs[0][0] != "LogicalName" or name is None:
                raise bad_request(
                    "Address a column definition as Attributes(LogicalName='<name>')."
                )
            found = [d for d in docs if d["LogicalName"] == name]
            if not found:
                raise ODataError(
                    404,
                    NO_ATTRIBUTE,
                    f"'{table.logical}' entity doesn't contain attribute with Name = '{name}' "
                    "and NameMapping = 'Logical'.",
                )
            if rest:
                raise unsupported("paths below one attribute definition")
            return self._metadata_single(request, context, "AttributeMetadata", found[0])
        if rest:
            raise unsupported(f"'{'/'.join(s.name for s in segments)}' in metadata queries")
        return self._metadata_collection(request, context, "AttributeMetadata", docs)

    def _metadata_select(
        self, request: Request, type_name: str, docs: Sequence[dict[str, Any]]
    ) -> tuple[list[str] | None, Node | None]:
        resolve = metadata_resolver(type_name, docs, self._metadata_samples.get(type_name, ()))
        allowed = {"$select", "$filter"}
        if type_name == "AttributeMetadata":
            allowed.add("$expand")  # OptionSet, checked by _attributes
        options = query_options(request, allowed)
        select = None
        if "$select" in options:
            select = [p.name for p in parse_select(options["$select"], resolve)]
        node = None
        if "$filter" in options:
            node = parse_filter(options["$filter"], resolve, aliases=aliases(request))
        return select, node

    @cached_property
    def _metadata_samples(self) -> dict[str, list[dict[str, Any]]]:
        """One document of each metadata type, so that an empty answer still knows its type's
        properties (e.g. a cast to PicklistAttributeMetadata with no picklists)."""
        table = self.tables[self.schema.subscription.table]
        column = table.column(self.schema.subscription.provider_subscription_id)
        return {
            "EntityMetadata": [entity_metadata(table, audited=False)],
            "AttributeMetadata": [attribute_metadata(table, column, audited=False)],
            "OneToManyRelationshipMetadata": relationships(self.tables)[:1],
            "EntityKeyMetadata": [alternate_key_metadata(table, column)],
        }

    def _metadata_collection(
        self, request: Request, context: str, type_name: str, docs: Sequence[dict[str, Any]]
    ) -> Response:
        select, node = self._metadata_select(request, type_name, docs)
        value = [pick(d, select) for d in docs if matches(node, d)]
        suffix = f"({','.join(select)})" if select else ""
        body = {"@odata.context": f"{self.api_url}/$metadata#{context}{suffix}", "value": value}
        return _json(200, body)

    def _metadata_single(
        self, request: Request, context: str, type_name: str, doc: dict[str, Any]
    ) -> Response:
        select, node = self._metadata_select(request, type_name, [doc])
        if node is not None:
            raise bad_request("$filter applies to collections only.")
        suffix = f"({','.join(select)})" if select else ""
        body = {"@odata.context": f"{self.api_url}/$metadata#{context}{suffix}/$entity"}
        body.update(pick(doc, select))
        return _json(200, body)

    # ------------------------------------------------------------ audit

    def _audit(
        self,
        table: Table,
        row_id: str,
        operation: int,
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        when: datetime,
    ) -> None:
        """Record an audit row when the table is audited (the Admin Hub setting table)."""
        if not self._is_audited(table):
            return
        names = [n for n in dict.fromkeys([*old, *new]) if n not in _SYSTEM_COLUMNS]
        columns = [table.column(n) for n in names]
        change = {
            "old": {c.prop: to_json(c, old[c.name]) for c in columns if c.name in old},
            "new": {c.prop: to_json(c, new[c.name]) for c in columns if c.name in new},
        }
        audit = self.tables[AUDIT_TABLE]
        row = {
            "auditid": str(uuid.uuid4()),
            "createdon": when.astimezone(UTC).replace(microsecond=0),
            "operation": operation,
            "action": operation,  # Create, Update, Delete: action and operation share values
            "attributemask": ",".join(str(c.number) for c in columns) or None,
            "objecttypecode": table.logical,
            "objectid": row_id,
            "userid": SANDBOX_USER_ID,
            "transactionid": str(uuid.uuid4()),
            "changedata": json.dumps(change),
        }
        self._insert(audit, row)

    def _audit_rows(self, table: Table, row_id: str) -> list[dict[str, Any]]:
        audit = self.tables[AUDIT_TABLE]
        sql, names = self._select_sql(audit)
        raws = self._db.execute(
            f"{sql} WHERE objecttypecode = ? AND objectid = ? ORDER BY createdon DESC, rowid DESC",
            (table.logical, row_id),
        ).fetchall()
        return [self._typed(audit, raw, names) for raw in raws]

    def _detail(
        self, table: Table, audit_row: Mapping[str, Any], only: str | None
    ) -> dict[str, Any]:
        change = json.loads(audit_row.get("changedata") or "{}")
        odata_type = f"#{table.odata_type}"

        def values(side: str) -> dict[str, Any]:
            out: dict[str, Any] = {"@odata.type": odata_type}
            for prop, value in change.get(side, {}).items():
                if (only is None or prop == only) and value is not None:
                    out[prop] = value
            return out

        detail: dict[str, Any] = {
            "@odata.type": "#Microsoft.Dynamics.CRM.AttributeAuditDetail",
            "InvalidNewValueAttributes": [],
            "LocLabelLanguageCode": 0,
            "DeletedAttributes": {"Count": 0, "Keys": [], "Values": []},
            "OldValue": values("old"),
            "NewValue": values("new"),
        }
        if self._audit_record:
            audit = self.tables[AUDIT_TABLE]
            detail["AuditRecord"] = {
                "@odata.type": f"#{audit.odata_type}",
                **self._serialize(audit, audit_row, None),
            }
        return detail

    def _attribute_history(self, request: Request, segments: Sequence[Segment]) -> Response:
        head = segments[0]
        if request.method != "GET":
            raise _method_not_allowed(request.method, "the RetrieveAttributeChangeHistory function")
        if len(segments) != 1 or head.args is None:
            raise bad_request("Bad Request - Error in query syntax.")
        values = aliases(request)
        params: dict[str, Any] = {}
        for name, raw in split_args(head.args):
            if raw.startswith("@"):
                if raw not in values:
                    raise bad_request(f"The parameter alias '{raw}' has no value.")
                raw = values[raw]
            params[name] = raw
        unknown = set(params) - {"Target", "AttributeLogicalName", "PagingInfo"}
        if unknown or not {"Target", "AttributeLogicalName"} <= set(params):
            raise bad_request(
                "RetrieveAttributeChangeHistory takes Target, AttributeLogicalName and, "
                "optionally, PagingInfo."
            )
        target = lenient_json(params["Target"])
        if not isinstance(target, dict) or not isinstance(target.get("@odata.id"), str):
            raise bad_request("The Target parameter must be {'@odata.id': '<set>(<id>)'}.")
        table, key = self._resolve_entity_url(target["@odata.id"], "Target")
        attribute = string_literal(params["AttributeLogicalName"])
        if attribute is None:
            raise bad_request("AttributeLogicalName must be a string literal such as 'name'.")
        column = table.by_name.get(attribute)
        if column is None:
            raise ODataError(
                400,
                NO_ATTRIBUTE,
                f"'{table.logical}' entity doesn't contain attribute with Name = '{attribute}' "
                "and NameMapping = 'Logical'.",
            )
        row = self._require(table, key)
        paging = lenient_json(params["PagingInfo"]) if "PagingInfo" in params else {}
        if not isinstance(paging, dict):
            raise bad_request('PagingInfo must be an object such as {"PageNumber": 1, "Count": 5}.')
        changes = [
            a
            for a in self._audit_rows(table, row[table.id])
            if a["operation"] == 2 and column.prop in _changed(a)
        ]
        page, more, cookie = self._history_page(changes, paging)
        body = {
            "@odata.context": f"{self.api_url}/$metadata#Microsoft.Dynamics.CRM."
            "RetrieveAttributeChangeHistoryResponse",
            "AuditDetailCollection": {
                "MoreRecords": more,
                "PagingCookie": cookie,
                "TotalRecordCount": len(changes) if paging.get("ReturnTotalRecordCount") else -1,
                "AuditDetails": [self._detail(table, a, column.prop) for a in page],
            },
        }
        return _json(200, body)

    def _history_page(
        self, changes: Sequence[Mapping[str, Any]], paging: Mapping[str, Any]
    ) -> tuple[Sequence[Mapping[str, Any]], bool, str]:
        """One page of a change history (newest first), whether more follow, and the cookie for
        the next page ("" on the last, as in Microsoft's example). A page holds `Count` changes,
        at most `audit_page_size` (the service's page without a Count: Microsoft documents no
        default, and a client must follow `MoreRecords` anyway). The next page is found from the
        `PagingCookie` of the one before, which names its first and last change as the classic
        QueryExpression cookies do; a cookie this emulator did not write (or none) leaves
        `PageNumber` alone to say where, as paging without a cookie does.
        https://learn.microsoft.com/power-apps/developer/data-platform/auditing/retrieve-audit-data#retrieveattributechangehistory-message"""
        number = _paging_number(paging, "PageNumber", 1)
        size = min(_paging_number(paging, "Count", self._audit_page_size), self._audit_page_size)
        start = (number - 1) * size
        cookie = paging.get("PagingCookie")
        found = _HISTORY_COOKIE.search(cookie) if isinstance(cookie, str) else None
        if found is not None and int(found.group(1)) == number - 1:
            ids = [str(a["auditid"]).lower() for a in changes]
            if found.group(2).lower() in ids:
                start = ids.index(found.group(2).lower()) + 1
        page = changes[start : start + size]
        more = len(changes) > start + size
        if not more or not page:
            return page, more, ""
        first, last = page[0]["auditid"], page[-1]["auditid"]
        cookie = (
            f'<cookie page="{number}"><auditid last="{{{last}}}" first="{{{first}}}" /></cookie>'
        )
        return page, more, cookie

    def _audit_details(self, request: Request, key: Key) -> Response:
        if request.method != "GET":
            raise _method_not_allowed(request.method, "RetrieveAuditDetails")
        audit = self.tables[AUDIT_TABLE]
        row = self._require(audit, key)
        table = self.tables.get(str(row["objecttypecode"]))
        if table is None:
            raise ODataError(404, NOT_FOUND, f"audit With Id = {key.describe()} Does Not Exist")
        body = {
            "@odata.context": f"{self.api_url}/$metadata#Microsoft.Dynamics.CRM."
            "RetrieveAuditDetailsResponse",
            "AuditDetail": self._detail(table, row, None),
        }
        return _json(200, body)

    # ------------------------------------------------------------ notes and privileges

    def _check_note(self, table: Table, body: Mapping[str, Any]) -> None:
        """A note's create as Dataverse checks it: the Regarding binding exists only when the
        subscription table has notes; the user needs prvCreateNote, prvAppendNote and the
        table's AppendTo privilege."""
        column = table.column(NOTE_LOOKUP)
        bound = any(k.partition("@")[0] == column.nav for k in body)
        if bound and not self.notes_enabled:
            raise bad_request(
                f"An undeclared property '{column.nav}' which only has property annotations in "
                "the payload but no property value was found in the payload."
            )
        needed = [privilege_name(table, "Create")]
        if bound:
            target = self.tables[str(column.target)]
            needed += [privilege_name(table, "Append"), privilege_name(target, "AppendTo")]
        for name in needed:
            if name in self.missing_privileges:
                raise ODataError(
                    403,
                    MISSING_PRIVILEGE,
                    f"Principal user (Id={SANDBOX_USER_ID}, type=8, roleCount=1) is missing "
                    f"{name} privilege (Id={metadata_id('privilege', name)}) on "
                    f"OTC={table.type_code} for entity '{table.logical}'.",
                )

    def _user_function(self, request: Request, segments: Sequence[Segment]) -> Response:
        """`systemusers(<id>)/Microsoft.Dynamics.CRM.RetrieveUserPrivilegeByPrivilegeName(
        PrivilegeName='...')`: the sandbox user holds every privilege (Global depth) but the
        scenario's missing ones.
        https://learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/retrieveuserprivilegebyprivilegename"""
        function = "Microsoft.Dynamics.CRM.RetrieveUserPrivilegeByPrivilegeName"
        if len(segments) != 2 or segments[1].name != function or segments[0].args is None:
            raise unsupported("systemusers: only RetrieveUserPrivilegeByPrivilegeName")
        if request.method != "GET":
            raise _method_not_allowed(request.method, function)
        user = segments[0].args.strip().lower()
        if user != SANDBOX_USER_ID:
            raise ODataError(404, NOT_FOUND, f"systemuser With Id = {user} Does Not Exist")
        pairs = split_args(segments[1].args or "")
        raw = pairs[0][1] if len(pairs) == 1 and pairs[0][0] == "PrivilegeName" else None
        if raw is not None and raw.startswith("@"):
            raw = aliases(request).get(raw)
        name = string_literal(raw) if raw is not None else None
        if name is None:
            raise bad_request(f"{function} takes PrivilegeName='<name>'.")
        held = (
            []
            if name in self.missing_privileges
            else [
                {
                    "BusinessUnitId": SANDBOX_BUSINESS_UNIT_ID,
                    "Depth": "Global",
                    "PrivilegeId": metadata_id("privilege", name),
                    "PrivilegeName": name,
                }
            ]
        )
        context = f"{self.api_url}/$metadata#Microsoft.Dynamics.CRM.{function[23:]}Response"
        return _json(200, {"@odata.context": context, "RolePrivileges": held})

    def _who_am_i(self, request: Request) -> Response:
        if request.method != "GET":
            raise _method_not_allowed(request.method, "WhoAmI")
        return _json(
            200,
            {
                "@odata.context": f"{self.api_url}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": SANDBOX_BUSINESS_UNIT_ID,
                "UserId": SANDBOX_USER_ID,
                "OrganizationId": SANDBOX_ORGANIZATION_ID,
            },
        )

    # ------------------------------------------------------------ race helpers

    def _race_targets(self, request: Request) -> list[tuple[Table, Key, str]]:
        """(table, key, method) of each row the request (or each operation of a batch) writes."""
        path = request.path
        if path.rstrip("/") == f"{API}/$batch":
            targets: list[tuple[Table, Key, str]] = []
            for part in parse_batch(request.headers.get("Content-Type"), request.body):
                ops = part.operations if isinstance(part, ChangeSet) else (part,)
                for op in ops:
                    if op.method in ("PATCH", "DELETE", "PUT") and not op.url.startswith("$"):
                        found = self._addressed(unquote(urlsplit(op.url).path))
                        if found is not None:
                            targets.append((*found, op.method))
            return targets
        found = self._addressed(path)
        return [(*found, request.method)] if found is not None else []

    def _addressed(self, path: str) -> tuple[Table, Key] | None:
        if path.startswith(API + "/"):
            path = path[len(API) + 1 :]
        segments = split_segments(path.lstrip("/")) if path.strip("/") else []
        if not segments or segments[0].args is None:
            return None
        table = self._sets.get(segments[0].name)
        if table is None or table.read_only:
            return None
        return table, self._parse_key(table, segments[0].args)

    def _race_column(self, table: Table, name: str) -> Column:
        column = table.by_prop.get(name) or table.by_name.get(name)
        if column is None:
            raise bad_request(f"race: '{table.logical}' has no column '{name}'")
        return column


# ---------------------------------------------------------------- helpers


def _attribute_resolver(table: Table) -> Resolver:
    """The attribute a query function's `PropertyName` names: its logical name, lookups
    included (`work365_account`); the read-side `_x_value` property is refused as a real org
    refuses it (400, 0x80041103). Messages as Dataverse words them, e.g. in
    https://github.com/microsoft/PowerPlatform-DataverseServiceClient/issues/299 ; see
    https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/use-web-api-functions#query-functions"""

    def resolve(name: str) -> Property:
        column = table.by_name.get(name)
        if column is None:
            raise bad_request(
                f"'{table.logical}' entity doesn't contain attribute with Name = '{name}' and "
                "NameMapping = 'Logical'.",
                code=NO_ATTRIBUTE,
            )
        return Property(name, column.name, column.edm)

    return resolve


_HISTORY_COOKIE = re.compile(r'^<cookie page="(\d+)"><auditid last="\{([0-9A-Fa-f-]{36})\}"')


def _paging_number(paging: Mapping[str, Any], name: str, default: int) -> int:
    """A PagingInfo number (Edm.Int32): absent or 0 means `default`; else a positive int."""
    value = paging.get(name)
    if value is None or value == 0:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_request(f"PagingInfo.{name} must be a positive integer, not {value!r}.")
    return value


def _changed(audit_row: Mapping[str, Any]) -> dict[str, Any]:
    """The new values an audit row records, by Web API property."""
    change = json.loads(audit_row.get("changedata") or "{}")
    new = change.get("new", {})
    return new if isinstance(new, dict) else {}


def _key_text(edm: EdmType, value: Any) -> str | None:
    """A paging-cookie value: text that `odata.parse_value` turns back into `value`."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
