"""Partner Center REST emulator: customers (seek-paged), their subscriptions, and the activity
log (`GET /v1/auditrecords?startDate=..&endDate=..`, seek-paged like the customers; whole days
in yyyy-mm-dd form, endDate included, 90 days back at most, 30 days per request at most, as
Microsoft documents). Each scenario subscription with a `creationDate` has a `create_order`
record on that date; `partnerCenter.auditRecords` adds more.

Rows live in SQLite tables prefixed `pc_` in the sandbox's database file, so a state file keeps
them. Errors are Partner Center-shaped: `{"code", "description", "data", "source"}` (throttling,
in faults.py, has its own documented shape).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from work365_fn.rules.model import is_guid
from work365_fn.rules.timestamps import format_timestamp, parse_timestamp

from .core import Request, Response, TokenIssuer
from .scenario import Scenario

PC_AUDIENCE = "https://api.partnercenter.microsoft.com"
# `size` of a seek-paged collection. "Get a list of customers" documents it as a required int,
# "the number of results to be displayed at one time", with no range (its example asks for 40):
# https://learn.microsoft.com/partner-center/developer/get-a-list-of-customers
# The activity log's REST reference does not list it at all; the throttling page sends size=50.
# No maximum is documented, so none is invented here: any positive 32-bit integer is served
# in pages of that size (a real maximum, if there is one, would show as shorter pages, which
# the client follows by their continuation token anyway). Not a number, or < 1: 400.
MAX_SIZE = 2**31 - 1
# When `size` is omitted (the client always sends it): the service's default is not documented.
DEFAULT_PAGE_SIZE = 500
SOURCE = "PartnerFD"

_CUSTOMERS = re.compile(r"/v1/customers/?")
_CUSTOMER = re.compile(r"/v1/customers/([^/]+)")
_SUBSCRIPTIONS = re.compile(r"/v1/customers/([^/]+)/subscriptions/?")
_SUBSCRIPTION = re.compile(r"/v1/customers/([^/]+)/subscriptions/([^/]+)")
_AUDIT = re.compile(r"/v1/auditrecords/?")
AUDIT_DAYS = 90  # how far back the activity log answers
AUDIT_WINDOW_DAYS = 30  # the most endDate may follow startDate (the documented default window)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_ORDER_NAMESPACE = uuid.UUID("0b6f1f5e-52a4-4f0c-8a36-3d6f0c1e5a77")

_DDL = """
CREATE TABLE IF NOT EXISTS pc_customers (
    position INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    id_key TEXT NOT NULL UNIQUE,
    company_name TEXT NOT NULL,
    domain TEXT NOT NULL,
    relationship INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pc_subscriptions (
    position INTEGER PRIMARY KEY,
    customer_key TEXT NOT NULL,
    id TEXT NOT NULL,
    raw TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS pc_subscriptions_customer ON pc_subscriptions (customer_key);
CREATE TABLE IF NOT EXISTS pc_audit (
    position INTEGER PRIMARY KEY,
    operation_date TEXT NOT NULL,
    raw TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS pc_audit_date ON pc_audit (operation_date, position);
"""


def pc_error(
    status: int, code: int, description: str, headers: dict[str, str] | None = None
) -> Response:
    return Response.json(
        status,
        {"code": code, "description": description, "data": [], "source": SOURCE},
        headers,
    )


def _domain(company_name: str, customer_id: str) -> str:
    stem = "".join(c for c in company_name.lower() if c.isalnum())
    return f"{stem or customer_id[:8]}.onmicrosoft.com"


class PartnerCenterEmulator:
    service = "partnerCenter"

    def __init__(
        self,
        db_path: str,
        tokens: TokenIssuer,
        *,
        audience: str = PC_AUDIENCE,
        partner_id: str = "6b1f4a2c-0d3e-4f5a-9b8c-7d6e5f4a3b2c",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.tokens = tokens
        self._clock = clock
        self.audience = audience
        self.partner_id = partner_id
        self._db = sqlite3.connect(db_path, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._page_key = secrets.token_bytes(32)
        with self._lock:
            self._db.executescript(_DDL)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- seeding -----------------------------------------------------------------------------

    def seed(self, scenario: Scenario) -> None:
        """Replace the pc_ tables' rows with the scenario's Partner Center customers."""
        with self._lock, self._db:
            self._db.execute("DELETE FROM pc_subscriptions")
            self._db.execute("DELETE FROM pc_customers")
            self._db.execute("DELETE FROM pc_audit")
            for raw in scenario.audit_records:
                self._insert_audit(self._audit_record(raw))
            for position, customer in enumerate(scenario.customers):
                self._db.execute(
                    "INSERT INTO pc_customers VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        position,
                        customer.id,
                        customer.id.lower(),
                        customer.company_name,
                        _domain(customer.company_name, customer.id),
                        int(customer.relationship),
                    ),
                )
                for sub in customer.subscriptions:
                    self._db.execute(
                        "INSERT INTO pc_subscriptions (customer_key, id, raw) VALUES (?, ?, ?)",
                        (customer.id.lower(), sub.id, json.dumps(sub.raw)),
                    )
                    order = self._order_record(customer.id, customer.company_name, sub.raw)
                    if order is not None:
                        self._insert_audit(order)

    def add_subscription(
        self, customer_id: str, item: Mapping[str, Any], *, activity: bool = True
    ) -> None:
        """A new subscription for an existing customer, as an order placed now would make it:
        the item (its `creationDate` defaults to now) and, unless `activity` is False, its
        `create_order` activity record."""
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT id, company_name FROM pc_customers WHERE id_key = ?", (customer_id.lower(),)
            ).fetchone()
            if row is None:
                raise KeyError(f"no Partner Center customer {customer_id}")
            raw = {"creationDate": format_timestamp(self._clock()), **item}
            self._db.execute(
                "INSERT INTO pc_subscriptions (customer_key, id, raw) VALUES (?, ?, ?)",
                (customer_id.lower(), str(raw["id"]), json.dumps(raw)),
            )
            order = self._order_record(row["id"], row["company_name"], raw)
            if activity and order is not None:
                self._insert_audit(order)

    def _insert_audit(self, record: dict[str, Any]) -> None:
        when = parse_timestamp(str(record["operationDate"]))
        assert when is not None
        self._db.execute(
            "INSERT INTO pc_audit (operation_date, raw) VALUES (?, ?)",
            (when.isoformat(), json.dumps(record)),
        )

    def _audit_record(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """A full AuditRecord (the documented shape) from a scenario's partial one."""
        return {
            "partnerId": self.partner_id,
            "customerId": raw["customerId"],
            "customerName": raw.get("customerName", ""),
            "userPrincipalName": raw.get("userPrincipalName", "admin@sandbox.onmicrosoft.com"),
            "resourceType": raw.get("resourceType", "subscription"),
            "resourceNewValue": raw.get("resourceNewValue", ""),
            "operationType": raw["operationType"],
            "operationDate": raw["operationDate"],
            "operationStatus": raw.get("operationStatus", "succeeded"),
            "customizedData": raw.get("customizedData", []),
            "attributes": {"objectType": "AuditRecord"},
            **{k: raw[k] for k in ("applicationId", "resourceOldValue") if k in raw},
        }

    def _order_record(
        self, customer_id: str, company_name: str, sub: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The `create_order` record of the order that made `sub` (None without creationDate)."""
        created = sub.get("creationDate")
        if not isinstance(created, str) or parse_timestamp(created) is None:
            return None
        order_id = str(uuid.uuid5(_ORDER_NAMESPACE, str(sub["id"]).lower()))
        line = {
            "LineItemNumber": 0,
            "OfferId": sub.get("offerId", ""),
            "SubscriptionId": sub["id"],
            "FriendlyName": sub.get("friendlyName", ""),
            "Quantity": sub.get("quantity", 1),
        }
        order = {
            "Id": order_id,
            "ReferenceCustomerId": customer_id,
            "LineItems": [line],
            "CreationDate": created,
            "Attributes": {"ObjectType": "Order"},
        }
        return self._audit_record(
            {
                "customerId": customer_id,
                "customerName": company_name,
                "resourceType": "order",
                "resourceNewValue": json.dumps(order),
                "operationType": "create_order",
                "operationDate": created,
                "customizedData": [
                    {"key": "OrderId", "value": order_id},
                    {"key": "SubscriptionId-0", "value": sub["id"]},
                ],
            }
        )

    # --- protocol ----------------------------------------------------------------------------

    def kind(self, request: Request) -> str:
        path = request.path
        if _CUSTOMERS.fullmatch(path):
            return f"{request.method} customers"
        if _AUDIT.fullmatch(path):
            return f"{request.method} auditrecords"
        if _SUBSCRIPTIONS.fullmatch(path):
            return f"{request.method} subscriptions"
        if _SUBSCRIPTION.fullmatch(path):
            return f"{request.method} subscription"
        if _CUSTOMER.fullmatch(path):
            return f"{request.method} customer"
        return f"{request.method} other"

    def handle(self, request: Request) -> Response:
        why = self.tokens.check(request.headers.get("Authorization"), self.audience)
        if why is not None:
            return pc_error(
                401,
                400,
                f"Access denied: {why}. Acquire a token for {self.audience}/.default.",
                {"WWW-Authenticate": "OAuth realm=urn:cpsvc:cpid:sandbox"},
            )
        path = request.path
        if request.method != "GET":
            return pc_error(405, 405, f"The method {request.method} is not allowed on {path}.")
        if _CUSTOMERS.fullmatch(path):
            return self._customers(request)
        if _AUDIT.fullmatch(path):
            return self._audit_records(request)
        match = _SUBSCRIPTIONS.fullmatch(path)
        if match:
            return self._subscriptions(match.group(1))
        match = _SUBSCRIPTION.fullmatch(path)
        if match:
            return self._subscription(match.group(1), match.group(2))
        match = _CUSTOMER.fullmatch(path)
        if match:
            return self._customer(match.group(1))
        return pc_error(404, 1000, f"Not found: the sandbox has no resource at {path}.")

    # --- helpers -----------------------------------------------------------------------------

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())

    def _customer_json(self, row: sqlite3.Row) -> dict[str, Any]:
        cid = row["id"]
        return {
            "id": cid,
            "commerceId": str(hashlib.md5(cid.lower().encode(), usedforsecurity=False).hexdigest()),
            "companyProfile": {
                "tenantId": cid,
                "domain": row["domain"],
                "companyName": row["company_name"],
                "links": {
                    "self": {"uri": f"/customers/{cid}/profile", "method": "GET", "headers": []}
                },
                "attributes": {"objectType": "CustomerCompanyProfile"},
            },
            "relationshipToPartner": "reseller",
            "allowDelegatedAccess": True,
            "links": {"self": {"uri": f"/customers/{cid}", "method": "GET", "headers": []}},
            "attributes": {"objectType": "Customer"},
        }

    def _page_token(self, offset: int) -> str:
        raw = json.dumps({"offset": offset}).encode()
        body = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        sig = hmac.new(self._page_key, body.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{body},{sig}"

    def _read_page_token(self, token: str) -> int | None:
        body, _, sig = token.strip().partition(",")
        expected = hmac.new(self._page_key, body.encode(), hashlib.sha256).hexdigest()[:32]
        if not sig or not hmac.compare_digest(sig, expected):
            return None
        try:
            offset = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["offset"]
        except (ValueError, KeyError, TypeError):
            return None
        return offset if isinstance(offset, int) and offset >= 0 else None

    def _page_size(self, request: Request) -> int | Response:
        raw_size = request.param("size")
        if raw_size is None:
            return DEFAULT_PAGE_SIZE
        if not raw_size.isdigit() or not 1 <= int(raw_size) <= MAX_SIZE:
            return pc_error(400, 800002, "Invalid request input: size must be a positive integer.")
        return int(raw_size)

    def _offset(self, request: Request) -> int | Response:
        """0 for a first page; the continuation token's offset for `seekOperation=Next`."""
        seek = request.param("seekOperation")
        if seek is None:
            return 0
        if seek.lower() != "next":
            return pc_error(
                400, 800002, f"Invalid request input: unsupported seekOperation '{seek}'."
            )
        token = request.headers.get("MS-ContinuationToken")
        if not token:
            return pc_error(
                400,
                800002,
                "Invalid request input: seekOperation=Next needs the MS-ContinuationToken header.",
            )
        read = self._read_page_token(token)
        if read is None:
            return pc_error(400, 800002, "Invalid request input: invalid continuation token.")
        return read

    def _audit_records(self, request: Request) -> Response:
        """The activity log, read the strictest way its documentation allows.
        https://learn.microsoft.com/partner-center/developer/get-a-record-of-partner-center-activity-by-user
        """
        size = self._page_size(request)
        if isinstance(size, Response):
            return size
        offset = self._offset(request)
        if isinstance(offset, Response):
            return offset
        days = self._audit_days(request)
        if isinstance(days, Response):
            return days
        first, last = days
        rows = self._query(
            "SELECT raw FROM pc_audit WHERE operation_date >= ? AND operation_date < ? "
            "ORDER BY operation_date, position LIMIT ? OFFSET ?",
            (
                _midnight(first).isoformat(),
                _midnight(last + timedelta(days=1)).isoformat(),
                size + 1,
                offset,
            ),
        )
        items = [json.loads(r["raw"]) for r in rows[:size]]
        query = f"startDate={first.isoformat()}&endDate={last.isoformat()}&size={size}"
        return self._page(
            f"/auditrecords?{query}", items, more=len(rows) > size, next_at=offset + size
        )

    def _audit_days(self, request: Request) -> tuple[date, date] | Response:
        """startDate..endDate as whole UTC days, endDate included (the throttling page asks for
        one day with startDate=endDate, and its example answers 17 records). Defaults as
        documented: startDate 30 days before today; endDate today or the longest window,
        whichever comes first."""
        now = self._clock()
        today = now.astimezone(UTC).date()
        first = _day_param(request, "startDate", today - timedelta(days=AUDIT_WINDOW_DAYS))
        if isinstance(first, Response):
            return first
        assert first is not None
        # "Requests with a start date greater than 90 days prior to the current date" are
        # refused: taken as strictly as it reads, the start day's midnight against the clock.
        if _midnight(first) < now - timedelta(days=AUDIT_DAYS):
            return pc_error(
                400,
                400,
                f"Invalid request input: startDate can be at most {AUDIT_DAYS} days before the "
                "current date.",
            )
        last = _day_param(request, "endDate", None)
        if isinstance(last, Response):
            return last
        if last is None:
            last = min(today, first + timedelta(days=AUDIT_WINDOW_DAYS))
        if last < first or last - first > timedelta(days=AUDIT_WINDOW_DAYS):
            return pc_error(
                400,
                400,
                "Invalid request input: endDate must follow startDate by at most "
                f"{AUDIT_WINDOW_DAYS} days.",
            )
        return first, last

    def _page(self, uri: str, items: list[Any], *, more: bool, next_at: int) -> Response:
        """A seek-based page as Partner Center answers it: `links.next` (relative uri, the
        continuation token in its headers) and `continuationToken` only when more follow."""
        links: dict[str, Any] = {"self": {"uri": uri, "method": "GET", "headers": []}}
        payload: dict[str, Any] = {"totalCount": len(items), "items": items, "links": links}
        if more:
            token = self._page_token(next_at)
            links["next"] = {
                "uri": f"{uri}&seekOperation=Next",
                "method": "GET",
                "headers": [{"key": "MS-ContinuationToken", "value": token}],
            }
            payload["continuationToken"] = token
        payload["attributes"] = {"objectType": "Collection"}
        return Response.json(200, payload)

    def _customers(self, request: Request) -> Response:
        size = self._page_size(request)
        if isinstance(size, Response):
            return size
        offset = self._offset(request)
        if isinstance(offset, Response):
            return offset
        rows = self._query(
            "SELECT * FROM pc_customers ORDER BY position LIMIT ? OFFSET ?", (size + 1, offset)
        )
        items = [self._customer_json(r) for r in rows[:size]]
        return self._page(
            f"/customers?size={size}", items, more=len(rows) > size, next_at=offset + size
        )

    def _find_customer(self, customer_id: str) -> sqlite3.Row | Response:
        if not is_guid(customer_id):
            return pc_error(
                400,
                800002,
                f"Customer ID {customer_id} should have GUID format "
                "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx).",
            )
        rows = self._query("SELECT * FROM pc_customers WHERE id_key = ?", (customer_id.lower(),))
        if not rows:
            return pc_error(404, 1000, f"Not found: customer {customer_id} does not exist.")
        row = rows[0]
        if not row["relationship"]:
            return pc_error(
                403,
                20002,
                f"The partner ID {self.partner_id} has no commerce relationship with the "
                f"customer ID {row['id']} (no reseller relationship).",
            )
        return row

    def _customer(self, customer_id: str) -> Response:
        found = self._find_customer(customer_id)
        if isinstance(found, Response):
            return found
        return Response.json(200, self._customer_json(found))

    def _subscription_items(self, customer_key: str) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT raw FROM pc_subscriptions WHERE customer_key = ? ORDER BY position",
            (customer_key,),
        )
        items = []
        for r in rows:
            item = json.loads(r["raw"])
            item["attributes"] = {"objectType": "Subscription"}
            items.append(item)
        return items

    def _subscriptions(self, customer_id: str) -> Response:
        found = self._find_customer(customer_id)
        if isinstance(found, Response):
            return found
        items = self._subscription_items(found["id_key"])
        return Response.json(
            200,
            {
                "totalCount": len(items),
                "items": items,
                "links": {
                    "self": {
                        "uri": f"/customers/{found['id']}/subscriptions",
                        "method": "GET",
                        "headers": [],
                    }
                },
                "attributes": {"objectType": "Collection"},
            },
        )

    def _subscription(self, customer_id: str, subscription_id: str) -> Response:
        found = self._find_customer(customer_id)
        if isinstance(found, Response):
            return found
        for item in self._subscription_items(found["id_key"]):
            if str(item.get("id", "")).lower() == subscription_id.lower():
                return Response.json(200, item)
        return pc_error(404, 20003, f"Subscription with ID {subscription_id} not found.")


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _day_param(request: Request, name: str, default: date | None) -> date | Response | None:
    """A day in yyyy-mm-dd form, the form the REST reference gives startDate and endDate. Its own
    request example sends a date-time (`6/1/2017 12:00:00 AM`), but nothing says what the service
    does with the time (honour it, or drop it to the day): the emulator refuses any time part,
    so a client that depended on one fails here rather than in production. (The real service
    plausibly accepts it; being stricter than it is the safe side of fidelity.)"""
    raw = request.param(name)
    if raw is None:
        return default
    value = raw.strip()
    day = None
    if _DAY.fullmatch(value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            day = None
    if day is None:
        return pc_error(
            400,
            400,
            f"Invalid request input: {name} must be a date in yyyy-mm-dd format, like "
            f"2026-11-26 (not '{raw[:40]}').",
        )
    return day
