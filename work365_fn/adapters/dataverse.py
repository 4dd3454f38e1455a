"""Dataverse Web API client: paged queries, escaped literals, conditional writes, metadata."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from work365_fn.adapters.odata_batch import (
    MAX_OPERATIONS,
    BatchFormatError,
    BatchOperation,
    BatchPart,
    BatchResult,
    ChangeSet,
    boundary_of,
    decode_batch_parts,
    encode_batch,
    operation_count,
)
from work365_fn.adapters.transport import RetryPolicy, Transport, parse_retry_after
from work365_fn.errors import (
    ApiError,
    ConflictError,
    InvalidResponseError,
    NotFoundError,
    ThrottledError,
)
from work365_fn.rules.model import is_guid, norm_id

log = logging.getLogger(__name__)

SERVICE = "dataverse"
API_PATH = "/api/data/v9.2/"
REQUEST_ID_HEADER = "x-ms-service-request-id"

# Rows per page of the audit reads (RetrieveAttributeChangeHistory's PagingInfo.Count, and
# odata.maxpagesize on the `audits` table). Small on purpose: each `audits` row read costs one
# RetrieveAuditDetails call, and the reader stops at the first page that answers it.
AUDIT_PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditPage:
    """One page of an audit read, and whether the service has another after it."""

    items: list[dict[str, Any]]
    more: bool


def parse_error(response: requests.Response) -> tuple[str, str]:
    """Dataverse errors are `{"error": {"code": "0x...", "message": "..."}}`."""
    try:
        body = response.json()
    except (ValueError, RecursionError):  # deep nesting too
        return str(response.status_code), (response.reason or "no error body")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        # Microsoft's documented samples answer `"code": ""`: fall back to the status.
        code = error.get("code") or response.status_code
        return str(code), str(error.get("message") or response.reason or "")[:500]
    return str(response.status_code), response.reason or ""


def odata_string(value: str) -> str:
    """A string literal for $filter or a key segment: single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def odata_guid(value: str) -> str:
    """A validated GUID literal (raises ValueError otherwise): never pasted unchecked."""
    return norm_id(value)


_KEY_ADDRESS = re.compile(r"^[a-z_][a-z0-9_]*='(?:[^']|'')*'$")


def row_address(address: str) -> str:
    """A row address for a URL: a GUID, or `column='escaped value'` built by odata_string."""
    if is_guid(address):
        return address.lower()
    if _KEY_ADDRESS.match(address):
        return quote(address, safe="=',_")
    raise ValueError(f"not a row id or key address: {address[:80]!r}")


def odata_in(column: str, values: Sequence[str]) -> str:
    """`Microsoft.Dynamics.CRM.In` on the column whose LOGICAL name is `column`, lookups included
    (`work365_account`, never the read-side `_work365_account_value`). Query functions map to
    the SDK's ConditionExpression, which names attributes, as in Microsoft's own
    `EqualUserId(PropertyName='ownerid')`; a real org answers the `_x_value` form with 400
    0x80041103 "entity doesn't contain attribute with Name = '_x_value'".
    https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/use-web-api-functions#query-functions
    https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/reference/in"""
    if column.startswith("_") and column.endswith("_value"):
        raise ValueError(
            f"Microsoft.Dynamics.CRM.In takes the column's logical name, not {column!r}"
        )
    listed = ",".join(json.dumps(v) for v in values)
    return (
        f"Microsoft.Dynamics.CRM.In(PropertyName={odata_string(column)},PropertyValues=[{listed}])"
    )


# The annotation of a column's display value; for a lookup `_x_value`, the related row's name.
FORMATTED_VALUE = "OData.Community.Display.V1.FormattedValue"


def formatted_value(row: dict[str, Any], prop: str) -> str:
    """The formatted value of `prop` in a row read with `formatted=True` ("" when absent)."""
    value = row.get(f"{prop}@{FORMATTED_VALUE}")
    return value if isinstance(value, str) else ""


class DataverseClient:
    def __init__(
        self,
        org_url: str,
        transport: Transport,
        *,
        page_size: int = 5000,
        audit_page_size: int = AUDIT_PAGE_SIZE,
    ) -> None:
        self.org_url = org_url.rstrip("/")
        self.api = self.org_url + API_PATH
        self._transport = transport
        self._page_size = page_size
        self.audit_page_size = audit_page_size

    def with_retry(self, retry: RetryPolicy) -> DataverseClient:
        """The same client over `Transport.with_retry`: another retry policy, the same session,
        tokens and rate limiter."""
        return DataverseClient(
            self.org_url,
            self._transport.with_retry(retry),
            page_size=self._page_size,
            audit_page_size=self.audit_page_size,
        )

    def for_probe(self, timeout: tuple[float, float]) -> DataverseClient:
        """The same client over `Transport.for_probe`: one attempt, a short timeout."""
        return DataverseClient(
            self.org_url,
            self._transport.for_probe(timeout),
            page_size=self._page_size,
            audit_page_size=self.audit_page_size,
        )

    # ---- reads -----------------------------------------------------------------------------

    def _read_headers(self, *, paged: bool = False, formatted: bool = False) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
        }
        preferences = [f"odata.maxpagesize={self._page_size}"] if paged else []
        if formatted:
            preferences.append(f'odata.include-annotations="{FORMATTED_VALUE}"')
        if preferences:
            headers["Prefer"] = ",".join(preferences)
        return headers

    def iter_rows(
        self,
        entity_set: str,
        *,
        select: Sequence[str],
        filter: str | None = None,
        orderby: str | None = None,
        formatted: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Every row, following @odata.nextLink verbatim; refuses a link it has already seen.
        `formatted`: ask for the formatted values too (`formatted_value` reads them), which
        for a lookup is the related row's primary name: names without another request.
        https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/select-columns#formatted-values
        Only list reads ask: a conditional GET (If-None-Match) must not include annotations
        (perform-conditional-operations-using-web-api#query-must-not-include-annotations)."""
        params = [f"$select={','.join(select)}"]
        if filter:
            params.append(f"$filter={quote(filter, safe='')}")
        if orderby:
            params.append(f"$orderby={quote(orderby, safe=',')}")
        url: str | None = f"{self.api}{entity_set}?{'&'.join(params)}"
        seen: set[str] = set()
        page = 0
        while url is not None:
            seen.add(url)
            headers = self._read_headers(paged=True, formatted=formatted)
            body = self._transport.send_json("GET", url, headers=headers)
            page += 1
            rows = body.get("value") if isinstance(body, dict) else None
            if not isinstance(rows, list):
                raise InvalidResponseError(
                    SERVICE, 200, "invalid-collection", f"{entity_set}: no 'value' list"
                )
            log.debug("dataverse: %s page %d with %d rows", entity_set, page, len(rows))
            yield from (row for row in rows if isinstance(row, dict))
            nxt = body.get("@odata.nextLink")
            url = None if nxt is None else self._check_link(str(nxt), seen)

    def _check_link(self, link: str, seen: set[str]) -> str:
        if urlsplit(link).netloc != urlsplit(self.org_url).netloc:
            raise InvalidResponseError(
                SERVICE, 200, "invalid-paging", "@odata.nextLink points at another host"
            )
        if link in seen:
            raise InvalidResponseError(
                SERVICE, 200, "paging-loop", "@odata.nextLink repeats a page already read"
            )
        return link

    def get_row(self, entity_set: str, address: str, *, select: Sequence[str]) -> dict[str, Any]:
        """One row by id or alternate key `col='value'` (NotFoundError when absent)."""
        url = f"{self.api}{entity_set}({row_address(address)})?$select={','.join(select)}"
        body = self._transport.send_json("GET", url, headers=self._read_headers())
        if not isinstance(body, dict):
            raise InvalidResponseError(SERVICE, 200, "invalid-row", f"{entity_set}: not an object")
        return body

    # ---- writes ----------------------------------------------------------------------------

    def _write_headers(self) -> dict[str, str]:
        return {
            "Accept": "application/json",
            "Content-Type": "application/json; charset=utf-8",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
        }

    def update(
        self, entity_set: str, row_id: str, body: dict[str, Any], *, etag: str
    ) -> str | None:
        """PATCH only if the row is unchanged since read (If-Match). ConflictError on 412.
        Returns the new ETag when the server sends one."""
        headers = self._write_headers()
        headers["If-Match"] = etag
        response = self._transport.send(
            "PATCH",
            f"{self.api}{entity_set}({odata_guid(row_id)})",
            headers=headers,
            body=json.dumps(body).encode("utf-8"),
            ok=(200, 204),
        )
        return response.headers.get("ETag")

    def create_only(self, entity_set: str, address: str, body: dict[str, Any]) -> str | None:
        """PATCH with If-None-Match: * at `address` (an id, or `key='value'`): creates the row or
        fails with ConflictError (412) when it exists already; never updates. Returns the
        answer's OData-EntityId, which for a key address holds the key, not the id."""
        return self._create_only(entity_set, address, body).headers.get("OData-EntityId")

    def create_only_returning(
        self, entity_set: str, address: str, body: dict[str, Any], *, select: Sequence[str]
    ) -> dict[str, Any] | None:
        """`create_only` asking for the new row's `select` columns (`Prefer:
        return=representation`: 201 with the row). None when the answer has no row (a 204).

        A row addressed by an alternate key comes back with the KEY in OData-EntityId
        (`set(key='value')`), so its id is read from this body instead; Microsoft advises
        selecting only the primary key, as the preference costs a Retrieve.
        https://learn.microsoft.com/en-us/power-apps/developer/data-platform/use-upsert-insert-update-record#use-web-api"""
        response = self._create_only(entity_set, address, body, select=select)
        if not response.content:
            return None
        try:
            row = response.json()
        except (ValueError, RecursionError):  # deep nesting too
            return None
        return row if isinstance(row, dict) else None

    def _create_only(
        self,
        entity_set: str,
        address: str,
        body: dict[str, Any],
        *,
        select: Sequence[str] = (),
    ) -> requests.Response:
        headers = self._write_headers()
        headers["If-None-Match"] = "*"
        url = f"{self.api}{entity_set}({row_address(address)})"
        if select:
            headers["Prefer"] = "return=representation"
            url += f"?$select={','.join(select)}"
        return self._transport.send(
            "PATCH",
            url,
            headers=headers,
            body=json.dumps(body).encode("utf-8"),
            ok=(200, 201, 204),
        )

    def clear_lookup(self, entity_set: str, row_id: str, navigation: str, *, etag: str) -> None:
        """Clear a single-valued lookup only if the row is unchanged since read: the documented
        disassociation `PATCH /<set>(<id>)` with `{"<nav>@odata.bind": null}` and `If-Match`
        (ConflictError on 412). Unlike `DELETE .../<nav>/$ref`, the PATCH honours the ETag."""
        if not navigation.replace("_", "").isalnum():
            raise ValueError(f"not a navigation property name: {navigation[:80]!r}")
        self.update(entity_set, row_id, {f"{navigation}@odata.bind": None}, etag=etag)

    # ---- $batch -----------------------------------------------------------------------------

    def update_operation(
        self, entity_set: str, row_id: str, body: dict[str, Any], *, etag: str
    ) -> BatchOperation:
        """`update` as one operation of a batch: PATCH with If-Match (412 when changed)."""
        return BatchOperation(
            "PATCH", f"{self.api}{entity_set}({odata_guid(row_id)})", {"If-Match": etag}, body
        )

    def create_only_operation(
        self, entity_set: str, address: str, body: dict[str, Any]
    ) -> BatchOperation:
        """`create_only` as one operation of a batch: PATCH with If-None-Match: * (412 when the
        row exists already). No `Prefer: return=representation` here: Microsoft's `$batch` page
        never shows it in a part, and clients report parts failing with it; callers that need
        the id of a row created by key re-read it (`Repository.created_record_ids`)."""
        return BatchOperation(
            "PATCH", f"{self.api}{entity_set}({row_address(address)})", {"If-None-Match": "*"}, body
        )

    def create_operation(self, entity_set: str, body: dict[str, Any]) -> BatchOperation:
        """A plain create (`POST /<set>`) as one operation of a batch."""
        return BatchOperation("POST", f"{self.api}{entity_set}", {}, body)

    def batch(
        self, operations: Sequence[BatchPart], *, boundary: str | None = None
    ) -> list[BatchResult]:
        """Send `operations` (each an operation, or a `ChangeSet` of operations that succeed or
        fail together) as one `$batch` with `Prefer: odata.continue-on-error`, and return one
        result per part answered, in order. Dataverse answers every part; a shorter list means
        the rest did not run.

        A whole-batch 429 raises ThrottledError at once (with Retry-After and the service code)
        so that the caller can shrink its batches; 5xx and dropped connections are retried by
        the transport like any call (every operation is conditional, so a replay is safe)."""
        if not operations:
            return []
        if operation_count(operations) > MAX_OPERATIONS:
            raise ValueError(f"a batch takes at most {MAX_OPERATIONS} operations")
        boundary = boundary or f"batch_{uuid.uuid4()}"
        headers = {
            "Accept": "application/json",
            "Content-Type": f'multipart/mixed; boundary="{boundary}"',
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            "Prefer": "odata.continue-on-error",
        }
        response = self._transport.send(
            "POST",
            f"{self.api}$batch",
            headers=headers,
            body=encode_batch(operations, boundary),
            # Answers carrying per-operation results, and a whole-batch 429 (not retried here).
            ok=(200, 400, 404, 409, 412, 429),
        )
        content_type = response.headers.get("Content-Type")
        if response.status_code == 429 or boundary_of(content_type) is None:
            raise _batch_error(response)
        try:
            results = decode_batch_parts(content_type, response.content)
            if not any(isinstance(p, ChangeSet) for p in operations):
                results = [r for part in results for r in (part.parts or (part,))]
        except BatchFormatError as exc:
            raise InvalidResponseError(
                SERVICE, response.status_code, "invalid-batch", str(exc)
            ) from None
        if len(results) > len(operations):
            raise InvalidResponseError(
                SERVICE,
                response.status_code,
                "invalid-batch",
                f"$batch answered {len(results)} parts for {len(operations)} operations",
            )
        return results

    # ---- metadata and functions ------------------------------------------------------------

    def entity_definition(self, logical_name: str) -> dict[str, Any]:
        return self.entity_properties(
            logical_name,
            ("LogicalName", "EntitySetName", "PrimaryIdAttribute", "PrimaryNameAttribute"),
        )

    def _definition_list(self, logical_name: str, part: str, select: str) -> list[dict[str, Any]]:
        url = (
            f"{self.api}EntityDefinitions(LogicalName={odata_string(logical_name)})/{part}"
            f"?$select={select}"
        )
        return self._metadata_list(url, f"{logical_name}/{part}")

    def entity_definitions(self) -> list[dict[str, Any]]:
        """Every table's names and display label (`check-schema --propose`), in one answer
        (metadata queries are not paged). Shape: EntityMetadata in
        https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query-metadata-web-api
        """
        url = (
            f"{self.api}EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute,"
            "PrimaryNameAttribute,DisplayName"
        )
        return self._metadata_list(url, "EntityDefinitions")

    def _metadata_list(self, url: str, what: str) -> list[dict[str, Any]]:
        """A metadata collection (not paged): its `value` objects, or InvalidResponseError."""
        body = self._transport.send_json("GET", url, headers=self._read_headers())
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, list):
            raise InvalidResponseError(SERVICE, 200, "invalid-metadata", what)
        return [v for v in value if isinstance(v, dict)]

    def entity_properties(self, logical_name: str, properties: Sequence[str]) -> dict[str, Any]:
        """Some EntityMetadata properties of one table (e.g. `HasNotes`, `Privileges`);
        NotFoundError when the table does not exist."""
        url = (
            f"{self.api}EntityDefinitions(LogicalName={odata_string(logical_name)})"
            f"?$select={','.join(properties)}"
        )
        body = self._transport.send_json("GET", url, headers=self._read_headers())
        if not isinstance(body, dict):
            raise InvalidResponseError(SERVICE, 200, "invalid-metadata", logical_name)
        return body

    def who_am_i(self) -> dict[str, Any]:
        """`WhoAmI`: the calling user's `UserId`, `BusinessUnitId` and `OrganizationId`."""
        body = self._transport.send_json("GET", f"{self.api}WhoAmI", headers=self._read_headers())
        if not isinstance(body, dict) or not is_guid(str(body.get("UserId") or "")):
            raise InvalidResponseError(SERVICE, 200, "invalid-whoami", "WhoAmI: no UserId")
        return body

    def user_privileges_named(self, user_id: str, privilege: str) -> list[dict[str, Any]]:
        """The `RolePrivileges` (`PrivilegeName`, `Depth`, ...) a user holds under one privilege
        name, through their roles and teams: the `RetrieveUserPrivilegeByPrivilegeName` function
        bound to `systemusers`. An empty list: the user lacks it.
        https://learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/retrieveuserprivilegebyprivilegename"""
        if not privilege.replace("_", "").isalnum():
            raise ValueError(f"not a privilege name: {privilege[:80]!r}")
        url = (
            f"{self.api}systemusers({odata_guid(user_id)})/Microsoft.Dynamics.CRM."
            f"RetrieveUserPrivilegeByPrivilegeName(PrivilegeName={odata_string(privilege)})"
        )
        body = self._transport.send_json("GET", url, headers=self._read_headers())
        value = body.get("RolePrivileges") if isinstance(body, dict) else None
        if not isinstance(value, list):
            raise InvalidResponseError(
                SERVICE, 200, "invalid-privileges", "RetrieveUserPrivilegeByPrivilegeName"
            )
        return [v for v in value if isinstance(v, dict)]

    def attributes(self, logical_name: str) -> list[dict[str, Any]]:
        return self._definition_list(
            logical_name, "Attributes", "LogicalName,AttributeType,DisplayName"
        )

    def many_to_one(self, logical_name: str) -> list[dict[str, Any]]:
        return self._definition_list(
            logical_name,
            "ManyToOneRelationships",
            "ReferencingAttribute,ReferencedEntity,ReferencingEntityNavigationPropertyName",
        )

    def keys(self, logical_name: str) -> list[dict[str, Any]]:
        return self._definition_list(
            logical_name, "Keys", "LogicalName,KeyAttributes,EntityKeyIndexStatus"
        )

    def attribute_change_history(
        self, entity_set: str, row_id: str, column: str
    ) -> Iterator[AuditPage]:
        """Audit details of one column (none when auditing is off for it), page by page, as
        "Retrieve the history of audited data changes" describes: `PagingInfo` with `PageNumber`
        and `Count`, then for each next page the `PagingCookie` of the one before, while
        `MoreRecords` is true. Lazy: a page is asked for only when the one before is consumed.
        The order of the details is not documented; callers must not depend on it.
        https://learn.microsoft.com/power-apps/developer/data-platform/auditing/retrieve-audit-data#retrieveattributechangehistory-message
        https://learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/paginginfo"""
        target = json.dumps({"@odata.id": f"{entity_set}({odata_guid(row_id)})"})
        base = (
            f"{self.api}RetrieveAttributeChangeHistory(Target=@t,AttributeLogicalName=@a,"
            f"PagingInfo=@p)?@t={quote(target, safe='')}&@a={quote(odata_string(column), safe='')}"
        )
        paging: dict[str, Any] = {"PageNumber": 1, "Count": self.audit_page_size}
        cookies: set[str] = set()
        while True:
            url = f"{base}&@p={quote(json.dumps(paging, separators=(',', ':')), safe='')}"
            body = self._transport.send_json("GET", url, headers=self._read_headers())
            collection = body.get("AuditDetailCollection") if isinstance(body, dict) else None
            details = collection.get("AuditDetails") if isinstance(collection, dict) else None
            if not isinstance(collection, dict) or not isinstance(details, list):
                raise InvalidResponseError(
                    SERVICE, 200, "invalid-audit", "RetrieveAttributeChangeHistory: no AuditDetails"
                )
            more = collection.get("MoreRecords") is True
            yield AuditPage([d for d in details if isinstance(d, dict)], more)
            if not more:
                return
            paging = _next_paging_info(paging, collection.get("PagingCookie"), cookies)

    def audit_rows(self, table: str, row_id: str) -> Iterator[AuditPage]:
        """The Create and Update rows of the `audits` table for one row, newest first, page by
        page (`odata.maxpagesize` of `audit_page_size`, `@odata.nextLink` followed verbatim).
        Lazy, like `attribute_change_history`. No `$top`: with `odata.maxpagesize` Dataverse
        ignores it, and the caller stops reading when it has found what it looks for."""
        flt = (
            f"_objectid_value eq {odata_guid(row_id)} and objecttypecode eq {odata_string(table)}"
            " and (operation eq 1 or operation eq 2)"
        )
        url: str | None = (
            f"{self.api}audits?$select=auditid,createdon,operation"
            f"&$filter={quote(flt, safe='')}&$orderby=createdon%20desc"
        )
        headers = self._read_headers()
        headers["Prefer"] = f"odata.maxpagesize={self.audit_page_size}"
        seen: set[str] = set()
        while url is not None:
            seen.add(url)
            body = self._transport.send_json("GET", url, headers=headers)
            rows = body.get("value") if isinstance(body, dict) else None
            if not isinstance(rows, list):
                raise InvalidResponseError(SERVICE, 200, "invalid-audit", "audits: no 'value' list")
            nxt = body.get("@odata.nextLink")
            yield AuditPage([row for row in rows if isinstance(row, dict)], nxt is not None)
            url = None if nxt is None else self._check_link(str(nxt), seen)

    def audit_detail(self, audit_id: str) -> dict[str, Any]:
        """The AuditDetail (old and new values) of one `audits` row."""
        url = (
            f"{self.api}audits({odata_guid(audit_id)})/Microsoft.Dynamics.CRM.RetrieveAuditDetails"
        )
        body = self._transport.send_json("GET", url, headers=self._read_headers())
        detail = body.get("AuditDetail") if isinstance(body, dict) else None
        if not isinstance(detail, dict):
            raise InvalidResponseError(
                SERVICE, 200, "invalid-audit", "RetrieveAuditDetails: no AuditDetail"
            )
        return detail


def _next_paging_info(paging: dict[str, Any], cookie: object, seen: set[str]) -> dict[str, Any]:
    """The PagingInfo of the page after `paging`: the next PageNumber with the cookie the
    service returned (none given: the page number alone). A cookie seen before means the
    service is serving the same page again: stop rather than loop."""
    nxt: dict[str, Any] = {"PageNumber": paging["PageNumber"] + 1, "Count": paging["Count"]}
    if isinstance(cookie, str) and cookie:
        if cookie in seen:
            raise InvalidResponseError(
                SERVICE, 200, "paging-loop", "RetrieveAttributeChangeHistory repeats a PagingCookie"
            )
        seen.add(cookie)
        nxt["PagingCookie"] = cookie
    return nxt


def _batch_error(response: requests.Response) -> ApiError:
    """The typed error of a `$batch` answered as a whole (429, or a refusal with a JSON body)."""
    code, message = parse_error(response)
    sent = str(response.request.headers.get("Authorization") or "")
    token = sent.split(" ", 1)[1] if " " in sent else ""
    if len(token) >= 8:  # a service (or a proxy) may echo the Authorization header back
        message = message.replace(token, "<redacted>")
    status = response.status_code
    what = f"POST $batch: {message}"
    request_id = response.headers.get(REQUEST_ID_HEADER)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return ThrottledError(SERVICE, status, code, what, request_id, retry_after=retry_after)
    if status == 412:
        return ConflictError(SERVICE, status, code, what, request_id)
    if status == 404:
        return NotFoundError(SERVICE, status, code, what, request_id)
    return ApiError(SERVICE, status, code, what, request_id)
