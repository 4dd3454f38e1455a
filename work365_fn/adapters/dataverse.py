"""Dataverse Web API client: paged queries, escaped literals, conditional writes, metadata."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from work365_fn.adapters.odata_batch import (
    MAX_OPERATIONS,
    BatchFormatError,
    BatchOperation,
    BatchResult,
    boundary_of,
    decode_batch,
    encode_batch,
)
from work365_fn.adapters.transport import Transport, parse_retry_after
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


def parse_error(response: requests.Response) -> tuple[str, str]:
    """Dataverse errors are `{"error": {"code": "0x...", "message": "..."}}`."""
    try:
        body = response.json()
    except ValueError:
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
    listed = ",".join(json.dumps(v) for v in values)
    return (
        f"Microsoft.Dynamics.CRM.In(PropertyName={odata_string(column)},PropertyValues=[{listed}])"
    )


class DataverseClient:
    def __init__(
        self,
        org_url: str,
        transport: Transport,
        *,
        page_size: int = 5000,
    ) -> None:
        self.org_url = org_url.rstrip("/")
        self.api = self.org_url + API_PATH
        self._transport = transport
        self._page_size = page_size

    # ---- reads -----------------------------------------------------------------------------

    def _read_headers(self, *, paged: bool = False) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
        }
        if paged:
            headers["Prefer"] = f"odata.maxpagesize={self._page_size}"
        return headers

    def iter_rows(
        self,
        entity_set: str,
        *,
        select: Sequence[str],
        filter: str | None = None,
        orderby: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every row, following @odata.nextLink verbatim; refuses a link it has already seen."""
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
            body = self._transport.send_json("GET", url, headers=self._read_headers(paged=True))
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
        fails with ConflictError (412) when it exists already; never updates."""
        headers = self._write_headers()
        headers["If-None-Match"] = "*"
        response = self._transport.send(
            "PATCH",
            f"{self.api}{entity_set}({row_address(address)})",
            headers=headers,
            body=json.dumps(body).encode("utf-8"),
            ok=(200, 201, 204),
        )
        return response.headers.get("OData-EntityId")

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
        row exists already)."""
        return BatchOperation(
            "PATCH", f"{self.api}{entity_set}({row_address(address)})", {"If-None-Match": "*"}, body
        )

    def batch(
        self, operations: Sequence[BatchOperation], *, boundary: str | None = None
    ) -> list[BatchResult]:
        """Send `operations` as one `$batch` (no change set, `Prefer: odata.continue-on-error`)
        and return one result per operation answered, in order. Dataverse answers every
        operation; a shorter list means the rest did not run.

        A whole-batch 429 raises ThrottledError at once (with Retry-After and the service code)
        so that the caller can shrink its batches; 5xx and dropped connections are retried by
        the transport like any call (every operation is conditional, so a replay is safe)."""
        if not operations:
            return []
        if len(operations) > MAX_OPERATIONS:
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
            results = decode_batch(content_type, response.content)
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
        url = (
            f"{self.api}EntityDefinitions(LogicalName={odata_string(logical_name)})"
            "?$select=LogicalName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute"
        )
        body = self._transport.send_json("GET", url, headers=self._read_headers())
        if not isinstance(body, dict):
            raise InvalidResponseError(SERVICE, 200, "invalid-metadata", logical_name)
        return body

    def _definition_list(self, logical_name: str, part: str, select: str) -> list[dict[str, Any]]:
        url = (
            f"{self.api}EntityDefinitions(LogicalName={odata_string(logical_name)})/{part}"
            f"?$select={select}"
        )
        body = self._transport.send_json("GET", url, headers=self._read_headers())
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, list):
            raise InvalidResponseError(SERVICE, 200, "invalid-metadata", f"{logical_name}/{part}")
        return [v for v in value if isinstance(v, dict)]

    def attributes(self, logical_name: str) -> list[dict[str, Any]]:
        return self._definition_list(logical_name, "Attributes", "LogicalName,AttributeType")

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
    ) -> list[dict[str, Any]]:
        """Audit details of one column (empty when auditing is off for it)."""
        target = json.dumps({"@odata.id": f"{entity_set}({odata_guid(row_id)})"})
        url = (
            f"{self.api}RetrieveAttributeChangeHistory(Target=@t,AttributeLogicalName=@a)"
            f"?@t={quote(target, safe='')}&@a={quote(odata_string(column), safe='')}"
        )
        body = self._transport.send_json("GET", url, headers=self._read_headers())
        collection = body.get("AuditDetailCollection") if isinstance(body, dict) else None
        details = collection.get("AuditDetails") if isinstance(collection, dict) else None
        if not isinstance(details, list):
            raise InvalidResponseError(
                SERVICE, 200, "invalid-audit", "RetrieveAttributeChangeHistory: no AuditDetails"
            )
        return [d for d in details if isinstance(d, dict)]

    def audit_rows(self, table: str, row_id: str, *, top: int) -> list[dict[str, Any]]:
        """The newest `top` Create and Update rows of the `audits` table for one row."""
        flt = (
            f"_objectid_value eq {odata_guid(row_id)} and objecttypecode eq {odata_string(table)}"
            " and (operation eq 1 or operation eq 2)"
        )
        # No odata.maxpagesize here: with it, Dataverse ignores $top.
        url = (
            f"{self.api}audits?$select=auditid,createdon,operation"
            f"&$filter={quote(flt, safe='')}&$orderby=createdon%20desc&$top={top}"
        )
        body = self._transport.send_json("GET", url, headers=self._read_headers())
        rows = body.get("value") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise InvalidResponseError(SERVICE, 200, "invalid-audit", "audits: no 'value' list")
        return [row for row in rows if isinstance(row, dict)]

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
