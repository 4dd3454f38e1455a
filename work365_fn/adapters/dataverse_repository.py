"""Work 365 tables in Dataverse, read in bulk and written conditionally, as model objects."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from work365_fn.adapters.dataverse import (
    AuditPage,
    DataverseClient,
    formatted_value,
    odata_guid,
    odata_in,
    odata_string,
    row_address,
)
from work365_fn.adapters.dataverse_metadata import SubscriptionBindings
from work365_fn.adapters.odata_batch import BatchOperation, BatchPart, BatchResult, ChangeSet
from work365_fn.adapters.schema import Schema
from work365_fn.errors import ApiError, ConflictError, InvalidResponseError, NotFoundError
from work365_fn.rules.model import (
    AssociationSetting,
    BillingContract,
    PcSubscription,
    ProviderAccount,
    SubscriptionRecord,
    maybe_id,
    norm_id,
)
from work365_fn.rules.timestamps import format_timestamp, parse_timestamp

log = logging.getLogger(__name__)

# Records created in create mode without an alternate key get uuid5(NAMESPACE, provider
# subscription id in lower case): a rerun (or a crash and rerun) addresses the same row, and
# If-None-Match: * turns a second create into a 412 instead of a duplicate. Never change it.
RECORD_NAMESPACE = uuid.UUID("6f1c2d52-3a5e-4c8e-9f1b-365b1110c0de")

# The audit history of the setting is read in pages (AUDIT_PAGE_SIZE rows each, see
# adapters/dataverse.py), at most this many pages of RetrieveAttributeChangeHistory and as many
# of the `audits` table: hundreds of changes. Past that the run warns, naming this bound.
AUDIT_MAX_PAGES = 10

# The Note table (annotation): its entity set and the columns a note is written with; lengths as
# its reference gives them (subject 500 characters, notetext 100,000).
NOTES_SET = "annotations"
NOTE_SUBJECT = "subject"
NOTE_TEXT = "notetext"
NOTE_SUBJECT_MAX = 500
NOTE_TEXT_MAX = 100_000

# Values per `Microsoft.Dynamics.CRM.In` query of a scoped read: 100 GUIDs keep the URL near
# 4.5 KB, far below Dataverse's URL limit.
IN_CHUNK = 100


def deterministic_record_id(provider_subscription_id: str) -> str:
    return str(uuid.uuid5(RECORD_NAMESPACE, provider_subscription_id.lower()))


def lookup(name: str) -> str:
    """The read-side property of a lookup attribute, for `$select` and `$filter` comparisons.
    Query functions (`odata_in`) take the attribute's logical name itself."""
    return f"_{name}_value"


class Repository:
    def __init__(self, client: DataverseClient, schema: Schema) -> None:
        self._client = client
        self.schema = schema

    # ---- setting and cutoff ---------------------------------------------------------------

    def read_setting(self, override: datetime | None) -> tuple[AssociationSetting, list[str]]:
        t = self.schema.setting
        warnings: list[str] = []
        rows = list(
            self._client.iter_rows(
                t.entity_set,
                select=[t.id, t.associate_default, "modifiedon"],
                orderby="modifiedon desc",
            )
        )
        if not rows:
            warnings.append(
                f"no Admin Hub setting row in {t.table}: Associate Default Billing Contract is "
                "treated as No"
            )
            source = "setting" if override else None
            return AssociationSetting(False, override, source), warnings
        if len(rows) > 1:
            warnings.append(
                f"{len(rows)} Admin Hub setting rows in {t.table}: using the most recently "
                "modified one"
            )
        row = rows[0]
        enabled = row.get(t.associate_default) is True
        row_id = maybe_id(row.get(t.id))
        if override is not None:
            return AssociationSetting(enabled, override, "setting", row_id), warnings
        since = self._audit_cutoff(row_id, warnings) if row_id else None
        if since is not None:
            return AssociationSetting(enabled, since, "audit", row_id), warnings
        modified = parse_timestamp(str(row.get("modifiedon") or ""))
        if modified is None:
            warnings.append("the Admin Hub setting row has no modifiedon: no cutoff is known")
            return AssociationSetting(enabled, None, None, row_id), warnings
        warnings.append(
            "cutoff taken from the Admin Hub setting row's modifiedon: editing that row moves "
            "the cutoff. Turn on auditing for the column or set WORK365_ASSOCIATE_SINCE."
        )
        return AssociationSetting(enabled, modified, "modifiedon", row_id), warnings

    def _audit_cutoff(self, row_id: str, warnings: list[str]) -> datetime | None:
        """The latest change of the setting column to Yes in its audit history, or None.

        RetrieveAttributeChangeHistory lists the column's changes, page after page, in an order
        Microsoft does not document. When they carry their `AuditRecord` (Microsoft says the Web
        API leaves it out; live orgs are reported to send it) the latest dated change to Yes is
        the answer. When they do not, or when the pages were cut at AUDIT_MAX_PAGES, the
        `audits` table, read newest first, says when: see `_audit_table_cutoff`."""
        t = self.schema.setting
        column = t.associate_default
        try:
            details, complete = _first_pages(
                self._client.attribute_change_history(t.entity_set, row_id, column)
            )
            latest, undated = _latest_enabling(details, column)
            if complete and (latest is not None or not undated):
                return latest
            if not complete:
                warnings.append(
                    f"the audit history of {column} is longer than {self._bound()}: the date "
                    "of its latest change to Yes is looked up in the setting row's audit table"
                )
            latest, complete = self._audit_table_cutoff(row_id)
        except ApiError as exc:
            warnings.append(
                f"could not read the audit history of {column} "
                f"({exc.status} {exc.code}); falling back to modifiedon"
            )
            return None
        if latest is None:
            rows = AUDIT_MAX_PAGES * self._client.audit_page_size
            where = "the audit rows of the setting row"
            if not complete:
                where = f"the newest {rows} audit rows of the setting row ({self._bound()})"
            warnings.append(
                f"the latest change of {column} to Yes is not in {where}; falling back to "
                "modifiedon"
            )
        return latest

    def _bound(self) -> str:
        return f"AUDIT_MAX_PAGES={AUDIT_MAX_PAGES} pages of {self._client.audit_page_size} rows"

    def _audit_table_cutoff(self, row_id: str) -> tuple[datetime | None, bool]:
        """Microsoft documents that the Web API answers RetrieveAttributeChangeHistory without
        `AuditRecord`, so without dates. The date is then that of the newest `audits` row of the
        setting row whose details set the column to Yes: the rows come newest first (documented
        `$orderby`), so the first such row is the latest change, however many pages down it is.
        Returns that date (None if not found) and whether every row was read.
        https://learn.microsoft.com/power-apps/developer/data-platform/auditing/retrieve-audit-data#audit-table"""
        t = self.schema.setting
        for number, page in enumerate(self._client.audit_rows(t.table, row_id), 1):
            for row in page.items:
                audit_id = _guid_or_none(row.get("auditid"))
                when = parse_timestamp(str(row.get("createdon") or ""))
                if audit_id is None or when is None:
                    continue
                new = self._client.audit_detail(audit_id).get("NewValue")
                if isinstance(new, dict) and new.get(t.associate_default) is True:
                    return when, True
            if page.more and number >= AUDIT_MAX_PAGES:
                log.warning("audit table of the setting row cut at AUDIT_MAX_PAGES=%d", number)
                return None, False
        return None, True

    # ---- bulk reads --------------------------------------------------------------------------

    def provider_accounts(self, filter: str | None = None) -> list[ProviderAccount]:
        """Every Provider Account, or those matching an OData `filter` built with the
        dataverse.py literal helpers."""
        t = self.schema.provider_account
        out = []
        for row in self._client.iter_rows(
            t.entity_set,
            select=[t.id, t.name, t.customer_id, lookup(t.account)],
            filter=filter,
            formatted=True,  # the Account's name, without another request
        ):
            customer = row.get(t.customer_id)
            out.append(
                ProviderAccount(
                    id=_required_id(row, t.id, t.table),
                    customer_id=_guid_or_none(customer),
                    account_id=maybe_id(row.get(lookup(t.account))),
                    name=str(row.get(t.name) or ""),
                    account_name=formatted_value(row, lookup(t.account)),
                )
            )
        return out

    def default_contracts(
        self, landing_columns: Sequence[str] | None = None
    ) -> list[BillingContract]:
        """Every contract flagged Is Default, active or not (plan() ignores inactive ones; the
        report lists them). With landing rules (`landing_columns`, maybe empty): every active
        contract too, with the values of those columns."""
        return self.contracts(self._landing_filter(landing_columns), landing_columns or ())

    def _landing_filter(self, landing_columns: Sequence[str] | None) -> str:
        t = self.schema.billing_contract
        if landing_columns is None:
            return f"{t.is_default} eq true"
        return f"({t.is_default} eq true or {t.state} eq {t.active_state})"

    def contracts(
        self, filter: str | None = None, columns: Sequence[str] = ()
    ) -> list[BillingContract]:
        """Billing contracts matching an OData `filter` (all of them without one), with the raw
        values of the extra `columns` (the landing rules' selectors)."""
        t = self.schema.billing_contract
        base = [t.id, t.name, t.is_default, t.state, lookup(t.account)]
        out = []
        for row in self._client.iter_rows(
            t.entity_set,
            select=base + [c for c in columns if c not in base],
            filter=filter,
            formatted=True,  # the Account's name, without another request
        ):
            out.append(
                BillingContract(
                    id=_required_id(row, t.id, t.table),
                    account_id=maybe_id(row.get(lookup(t.account))),
                    is_default=row.get(t.is_default) is True,
                    active=row.get(t.state) == t.active_state,
                    name=str(row.get(t.name) or ""),
                    columns=tuple((c, row.get(c)) for c in columns),
                    account_name=formatted_value(row, lookup(t.account)),
                )
            )
        return out

    def _record_select(self) -> list[str]:
        t = self.schema.subscription
        return [
            t.id,
            t.name,
            t.provider_subscription_id,
            lookup(t.account),
            lookup(t.billing_contract),
            "createdon",
        ]

    def _record(self, row: dict[str, Any]) -> SubscriptionRecord:
        t = self.schema.subscription
        return SubscriptionRecord(
            id=_required_id(row, t.id, t.table),
            provider_subscription_id=_guid_or_none(row.get(t.provider_subscription_id)),
            account_id=maybe_id(row.get(lookup(t.account))),
            billing_contract_id=maybe_id(row.get(lookup(t.billing_contract))),
            created_on=parse_timestamp(str(row.get("createdon") or "")),
            etag=str(row["@odata.etag"]) if row.get("@odata.etag") else None,
            name=str(row.get(t.name) or ""),
            account_name=formatted_value(row, lookup(t.account)),
            billing_contract_name=formatted_value(row, lookup(t.billing_contract)),
        )

    def subscription_records(self) -> list[SubscriptionRecord]:
        t = self.schema.subscription
        return [
            self._record(row)
            for row in self._client.iter_rows(
                t.entity_set,
                select=self._record_select(),
                filter=f"{t.provider_subscription_id} ne null",
                formatted=True,  # the Account's and the contract's names
            )
        ]

    def subscription_rows(
        self, columns: Sequence[str] = (), filter: str | None = None
    ) -> list[tuple[SubscriptionRecord, dict[str, Any]]]:
        """Records with a provider subscription id (and matching `filter`), each with the raw
        values of the extra `columns` (e.g. the billing reference columns, for backfill)."""
        t = self.schema.subscription
        where = f"{t.provider_subscription_id} ne null" + (f" and ({filter})" if filter else "")
        select = self._record_select() + [c for c in columns if c not in self._record_select()]
        return [
            (self._record(row), {c: row.get(c) for c in columns})
            for row in self._client.iter_rows(
                t.entity_set, select=select, filter=where, formatted=True
            )
        ]

    def record_row(
        self, address: str, columns: Sequence[str] = ()
    ) -> tuple[SubscriptionRecord, dict[str, Any]]:
        """Re-read one record with the raw values of `columns` (NotFoundError when gone)."""
        t = self.schema.subscription
        select = self._record_select() + [c for c in columns if c not in self._record_select()]
        row = self._client.get_row(t.entity_set, address, select=select)
        return self._record(row), {c: row.get(c) for c in columns}

    def account_names(self, account_ids: Sequence[str]) -> dict[str, str]:
        """Names of the given Accounts (lower-case id -> name), read with `In` in chunks of
        IN_CHUNK ids; ids that no longer exist are absent."""
        t = self.schema.account
        out: dict[str, str] = {}
        for chunk in _chunks(sorted({norm_id(a) for a in account_ids}), IN_CHUNK):
            for row in self._client.iter_rows(
                t.entity_set, select=[t.id, t.name], filter=odata_in(t.id, chunk)
            ):
                account_id = _guid_or_none(row.get(t.id))
                if account_id:
                    out[account_id] = str(row.get(t.name) or "")
        return out

    # ---- scoped reads (a run over some customers: scoped or incremental) --------------------

    def records_for_subscriptions(
        self, subscription_ids: Sequence[str]
    ) -> list[SubscriptionRecord]:
        """Records whose provider subscription id is one of `subscription_ids`, read with
        `Microsoft.Dynamics.CRM.In` in chunks of IN_CHUNK ids."""
        return [record for record, _ in self.rows_for_subscriptions(subscription_ids)]

    def rows_for_subscriptions(
        self, subscription_ids: Sequence[str], columns: Sequence[str] = ()
    ) -> list[tuple[SubscriptionRecord, dict[str, Any]]]:
        """`records_for_subscriptions`, each with the raw values of the extra `columns`."""
        t = self.schema.subscription
        select = self._record_select() + [c for c in columns if c not in self._record_select()]
        out: list[tuple[SubscriptionRecord, dict[str, Any]]] = []
        for chunk in _chunks(sorted({s.lower() for s in subscription_ids}), IN_CHUNK):
            out.extend(
                (self._record(row), {c: row.get(c) for c in columns})
                for row in self._client.iter_rows(
                    t.entity_set,
                    select=select,
                    filter=odata_in(t.provider_subscription_id, chunk),
                    formatted=True,
                )
            )
        return out

    def provider_accounts_of_customers(self, customer_ids: Sequence[str]) -> list[ProviderAccount]:
        """Provider Accounts whose customer id is one of `customer_ids` (In, in chunks)."""
        column = self.schema.provider_account.customer_id
        out: list[ProviderAccount] = []
        for chunk in _chunks(sorted({c.lower() for c in customer_ids}), IN_CHUNK):
            out.extend(self.provider_accounts(odata_in(column, chunk)))
        return out

    def default_contracts_of_accounts(
        self, account_ids: Sequence[str], landing_columns: Sequence[str] | None = None
    ) -> list[BillingContract]:
        """The default contracts of some Accounts: one `In` query when they fit in one
        (IN_CHUNK ids), else every default contract, so never more requests than that; a batch
        of a fanned-out run reads its own Accounts' contracts, not the tenant's. With landing
        rules: their active contracts too (`default_contracts`)."""
        ids = sorted({norm_id(a) for a in account_ids})
        if not ids:
            return []
        if len(ids) > IN_CHUNK:
            return self.default_contracts(landing_columns)
        t = self.schema.billing_contract
        return self.contracts(
            f"{self._landing_filter(landing_columns)} and {odata_in(t.account, ids)}",
            landing_columns or (),
        )

    def provider_accounts_of_accounts(self, account_ids: Sequence[str]) -> list[ProviderAccount]:
        """Provider Accounts under one of `account_ids` (In on the lookup, in chunks)."""
        column = self.schema.provider_account.account
        out: list[ProviderAccount] = []
        for chunk in _chunks(sorted({norm_id(a) for a in account_ids}), IN_CHUNK):
            out.extend(self.provider_accounts(odata_in(column, chunk)))
        return out

    def unassigned_records_since(self, since: datetime) -> list[SubscriptionRecord]:
        """Records with a provider subscription id and no Billing Contract, created at or after
        `since` (what an incremental run must not miss: a record made hours after its order)."""
        t = self.schema.subscription
        flt = (
            f"{t.provider_subscription_id} ne null and {lookup(t.billing_contract)} eq null"
            f" and createdon ge {format_timestamp(since)}"
        )
        return [
            self._record(row)
            for row in self._client.iter_rows(
                t.entity_set, select=self._record_select(), filter=flt
            )
        ]

    def batch(self, operations: Sequence[BatchPart]) -> list[BatchResult]:
        """Send write operations (built by `assign_operation` / `create_operation`, each alone
        or in a change set with its note) as one `$batch`: one result per part answered, in
        order."""
        return self._client.batch(operations)

    def clear_operation(self, record_id: str, navigation: str, *, etag: str) -> BatchOperation:
        """`clear_contract` as one operation of a batch (PATCH `<nav>@odata.bind: null`,
        If-Match), e.g. beside the note of an undo in `write_with_note`."""
        if not navigation.replace("_", "").isalnum():
            raise ValueError(f"not a navigation property name: {navigation[:80]!r}")
        return self._client.update_operation(
            self.schema.subscription.entity_set,
            record_id,
            {f"{navigation}@odata.bind": None},
            etag=etag,
        )

    def write_with_note(self, write: BatchOperation, note: BatchOperation) -> str | None:
        """One write and its note (`note_operation`) as one `$batch` change set: both happen
        or neither. Returns the record's new ETag when Dataverse sends one; ConflictError on a
        412 (the record changed: no note either), NotFoundError on a 404, ApiError otherwise."""
        results = self._client.batch([ChangeSet((write, note))])
        if not results:
            raise InvalidResponseError("dataverse", 200, "invalid-batch", "no answer to the write")
        result = results[0]
        if result.ok:
            return result.etag
        code, message = result.error()
        kind = {412: ConflictError, 404: NotFoundError}.get(result.status, ApiError)
        raise kind("dataverse", result.status, code, f"{message} (write and note rolled back)")

    def clear_contract(self, record_id: str, navigation: str, *, etag: str) -> None:
        """Clear a subscription record's Billing Contract lookup if the record is unchanged
        since read (If-Match; ConflictError on 412): what undo does."""
        t = self.schema.subscription
        self._client.clear_lookup(t.entity_set, record_id, navigation, etag=etag)

    def record(self, address: str) -> SubscriptionRecord:
        """Re-read one record by id or key address (NotFoundError when gone)."""
        t = self.schema.subscription
        return self._record(
            self._client.get_row(t.entity_set, address, select=self._record_select())
        )

    # ---- writes -----------------------------------------------------------------------------

    def assign(
        self, record: SubscriptionRecord, contract_id: str, bindings: SubscriptionBindings
    ) -> str | None:
        """Bind the contract only if the record is unchanged since read (ConflictError: 412).
        Returns the record's new ETag when Dataverse sends one."""
        op = self.assign_operation(record, contract_id, bindings)
        assert record.etag is not None and op.body is not None
        return self._client.update(
            self.schema.subscription.entity_set, record.id, dict(op.body), etag=record.etag
        )

    def assign_operation(
        self, record: SubscriptionRecord, contract_id: str, bindings: SubscriptionBindings
    ) -> BatchOperation:
        """`assign` as one operation of a `$batch` (PATCH with If-Match)."""
        if not record.etag:
            raise InvalidResponseError(
                "dataverse", 200, "no-etag", f"record {record.id} was read without an ETag"
            )
        body: dict[str, Any] = {
            f"{bindings.billing_contract_nav}@odata.bind": (
                f"/{self.schema.billing_contract.entity_set}({odata_guid(contract_id)})"
            )
        }
        return self._client.update_operation(
            self.schema.subscription.entity_set, record.id, body, etag=record.etag
        )

    def note_operation(
        self, record_address: str, subject: str, text: str, bindings: SubscriptionBindings
    ) -> BatchOperation:
        """A note (`annotation`) on one subscription record, as an operation of the `$batch`
        change set that writes the record: `POST annotations` with
        `<objectid_<table>>@odata.bind` to the record's id or alternate key. Not to
        `$<Content-ID>`: Microsoft documents that reference for rows created by POST, not for
        upserts through a key (and this service's writes are PATCHes).
        https://learn.microsoft.com/power-apps/developer/data-platform/use-alternate-key-reference-record
        https://learn.microsoft.com/power-apps/developer/data-platform/reference/entities/annotation"""
        if bindings.note_nav is None:
            raise ValueError("notes are off: the bindings carry no note navigation property")
        body: dict[str, Any] = {
            NOTE_SUBJECT: subject[:NOTE_SUBJECT_MAX],
            NOTE_TEXT: text[:NOTE_TEXT_MAX],
            f"{bindings.note_nav}@odata.bind": (
                f"/{self.schema.subscription.entity_set}({row_address(record_address)})"
            ),
        }
        return self._client.create_operation(NOTES_SET, body)

    def notes_of(self, record_id: str) -> list[dict[str, Any]]:
        """The notes on one record (subject, notetext, createdon), oldest first."""
        return list(
            self._client.iter_rows(
                NOTES_SET,
                select=["annotationid", NOTE_SUBJECT, NOTE_TEXT, "createdon"],
                filter=f"_objectid_value eq {odata_guid(record_id)}",
                orderby="createdon asc",
            )
        )

    def create_address(self, sub: PcSubscription, bindings: SubscriptionBindings) -> str:
        t = self.schema.subscription
        if bindings.alternate_key:
            return f"{t.provider_subscription_id}={odata_string(sub.id.lower())}"
        return deterministic_record_id(sub.id)

    def create(
        self,
        sub: PcSubscription,
        account_id: str | None,
        contract_id: str | None,
        bindings: SubscriptionBindings,
    ) -> str:
        """Create-only (If-None-Match: *) at a deterministic address; ConflictError when the
        record exists already. Returns the new record id: the address itself, or (alternate key)
        the id in the created row that Dataverse is asked to return, else re-read by key."""
        t = self.schema.subscription
        address = self.create_address(sub, bindings)
        body = self._create_body(sub, account_id, contract_id, bindings)
        if not bindings.alternate_key:
            self._client.create_only(t.entity_set, address, body)
            return address
        row = self._client.create_only_returning(t.entity_set, address, body, select=[t.id])
        created = _guid_or_none(row.get(t.id)) if row is not None else None
        return created or self.record(address).id

    def create_operation(
        self,
        sub: PcSubscription,
        account_id: str | None,
        contract_id: str | None,
        bindings: SubscriptionBindings,
    ) -> BatchOperation:
        """`create` as one operation of a `$batch` (PATCH with If-None-Match: *)."""
        return self._client.create_only_operation(
            self.schema.subscription.entity_set,
            self.create_address(sub, bindings),
            self._create_body(sub, account_id, contract_id, bindings),
        )

    def _create_body(
        self,
        sub: PcSubscription,
        account_id: str | None,
        contract_id: str | None,
        bindings: SubscriptionBindings,
    ) -> dict[str, Any]:
        t = self.schema.subscription
        body: dict[str, Any] = {t.name: sub.display_name[:100]}
        if not bindings.alternate_key:
            # Through the key, Dataverse copies the key values from the URL, and Microsoft
            # says not to repeat them in the body (the body's would win on a mismatch).
            # https://learn.microsoft.com/en-us/power-apps/developer/data-platform/use-upsert-insert-update-record#guidance-for-composing-requests
            body[t.provider_subscription_id] = sub.id.lower()
        if account_id:
            body[f"{bindings.account_nav}@odata.bind"] = (
                f"/{self.schema.account.entity_set}({odata_guid(account_id)})"
            )
        if contract_id:
            body[f"{bindings.billing_contract_nav}@odata.bind"] = (
                f"/{self.schema.billing_contract.entity_set}({odata_guid(contract_id)})"
            )
        return body

    def created_record_id(
        self, address: str, body: str, bindings: SubscriptionBindings
    ) -> str | None:
        """The id of a record created at `address`: the address itself (an id), or (alternate
        key) the id in the answer's `body` when it carries the row. None when it does not (a
        204): its OData-EntityId names the key, not the id, so re-read it with
        `created_record_ids`."""
        if not bindings.alternate_key:
            return address
        try:
            row = json.loads(body) if body.strip() else None
        except (ValueError, RecursionError):  # deep nesting too
            return None
        return (
            _guid_or_none(row.get(self.schema.subscription.id)) if isinstance(row, dict) else None
        )

    def created_record_ids(self, subscription_ids: Sequence[str]) -> dict[str, str]:
        """Re-read records just created through the alternate key (`In` on the key column,
        IN_CHUNK ids a query): lower-case provider subscription id -> record id."""
        return {
            record.provider_subscription_id: record.id
            for record in self.records_for_subscriptions(subscription_ids)
            if record.provider_subscription_id is not None
        }

    # ---- typed questions of one diagnosis ---------------------------------------------------

    def contracts_of_accounts(
        self, account_ids: Sequence[str], columns: Sequence[str] = ()
    ) -> list[BillingContract]:
        """Every contract of some Accounts, active or not, default or not (In on the lookup, in
        chunks of IN_CHUNK ids): what diagnose shows of an Account; with the values of the
        landing rules' `columns`."""
        column = self.schema.billing_contract.account
        out: list[BillingContract] = []
        for chunk in _chunks(sorted({norm_id(a) for a in account_ids}), IN_CHUNK):
            out.extend(self.contracts(odata_in(column, chunk), columns))
        return out


def _latest_enabling(details: list[dict[str, Any]], column: str) -> tuple[datetime | None, int]:
    """The latest dated change of `column` to true, and how many such changes had no date."""
    latest: datetime | None = None
    undated = 0
    for detail in details:
        new = detail.get("NewValue")
        if not isinstance(new, dict) or new.get(column) is not True:
            continue
        record = detail.get("AuditRecord")
        when = (
            parse_timestamp(str(record.get("createdon") or ""))
            if isinstance(record, dict)
            else None
        )
        if when is None:
            undated += 1
        elif latest is None or when > latest:
            latest = when
    return latest, undated


def _first_pages(pages: Iterator[AuditPage]) -> tuple[list[dict[str, Any]], bool]:
    """The items of the first AUDIT_MAX_PAGES pages, and whether that was all of them."""
    items: list[dict[str, Any]] = []
    for number, page in enumerate(pages, 1):
        items.extend(page.items)
        if not page.more:
            return items, True
        if number >= AUDIT_MAX_PAGES:
            log.warning("audit history cut at AUDIT_MAX_PAGES=%d pages", number)
            return items, False
    return items, True


def _chunks(values: Sequence[str], size: int) -> list[list[str]]:
    return [list(values[i : i + size]) for i in range(0, len(values), size)]


def _guid_or_none(value: object) -> str | None:
    try:
        return maybe_id(value)
    except ValueError:
        return None


def _required_id(row: dict[str, Any], column: str, table: str) -> str:
    try:
        value = maybe_id(row.get(column))
    except ValueError:
        value = None
    if value is None:
        raise InvalidResponseError("dataverse", 200, "invalid-row", f"{table} row without {column}")
    return value
