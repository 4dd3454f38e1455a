"""Partner Center REST client: customers (continuation paging) and subscriptions per customer."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

import requests

from work365_fn.adapters.transport import Transport
from work365_fn.errors import ApiError, InvalidResponseError
from work365_fn.rules.model import Customer, PcSubscription, is_guid

log = logging.getLogger(__name__)

SERVICE = "partnerCenter"
NO_RELATIONSHIP = "20002"


def parse_error(response: requests.Response) -> tuple[str, str]:
    """Partner Center errors are `{code, description, data, source}`
    (https://learn.microsoft.com/partner-center/developer/error-codes), except its throttling
    answer, documented as `{"statusCode": 429, "message": "Rate limit is exceeded. Try again in
    N seconds."}` with Retry-After
    (https://learn.microsoft.com/partner-center/developer/api-throttling-guidance): both read."""
    try:
        body = response.json()
    except (ValueError, RecursionError):  # deep nesting too
        return str(response.status_code), (response.reason or "no error body")
    if isinstance(body, dict):
        code = (
            body.get("code")
            or body.get("errorCode")
            or body.get("statusCode")
            or response.status_code
        )
        description = body.get("description") or body.get("message") or response.reason or ""
        return str(code), str(description)[:500]
    return str(response.status_code), response.reason or ""


class PartnerCenterClient:
    def __init__(
        self,
        base_url: str,
        transport: Transport,
        correlation_id: str,
        *,
        page_size: int = 500,
    ) -> None:
        self._base = base_url.rstrip("/") + "/v1"
        self._transport = transport
        self._correlation_id = correlation_id
        self._page_size = page_size

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "MS-RequestId": str(uuid.uuid4()),  # one per logical call, reused by its retries
            "MS-CorrelationId": self._correlation_id,
        }
        headers.update(extra or {})
        return headers

    def iter_customers(self) -> Iterator[Customer]:
        """Every customer, page by page. The next request is built from the continuation token:
        `links.next.uri` is relative and its form varies."""
        for item in self._pages(f"{self._base}/customers?size={self._page_size}", "customers"):
            customer = _customer(item)
            if customer is not None:
                yield customer

    def first_customers(self, size: int = 1) -> list[Customer]:
        """`GET /v1/customers?size=N`, the first page only: the health check's cheap read (a
        token, the reseller's API access, one small answer)."""
        body = self._transport.send_json(
            "GET", f"{self._base}/customers?size={size}", headers=self._headers()
        )
        return [c for c in map(_customer, _items(body, "customers")) if c is not None]

    def audit_records(self, first_day: date, last_day: date) -> Iterator[dict[str, Any]]:
        """The activity log of whole days, `last_day` included (at most 30 days, at most 90
        days back), page by page like the customers. The REST reference types startDate and
        endDate as dates in yyyy-mm-dd form (its example sends a date-time, whose time part is
        not explained), and the throttling page reads one day as startDate=endDate: so days
        only, and the caller trims the records by operationDate.
        https://learn.microsoft.com/partner-center/developer/get-a-record-of-partner-center-activity-by-user
        """
        query = f"startDate={_day(first_day)}&endDate={_day(last_day)}&size={self._page_size}"
        yield from self._pages(f"{self._base}/auditrecords?{query}", "auditrecords")

    def _pages(self, url: str, what: str) -> Iterator[dict[str, Any]]:
        """Items of a seek-paged collection: the next page is the same URL with
        `seekOperation=Next` and the continuation token in the MS-ContinuationToken header."""
        first = url
        headers = self._headers()
        seen_tokens: set[str] = set()
        page = 0
        while True:
            body = self._transport.send_json("GET", url, headers=headers)
            page += 1
            items = _items(body, what)
            log.info("partner center: %s page %d with %d items", what, page, len(items))
            yield from items
            token = _continuation_token(body, what)
            if token is None:
                return
            if token in seen_tokens:
                raise InvalidResponseError(
                    SERVICE, 200, "paging-loop", f"{what} paging returned a token already used"
                )
            seen_tokens.add(token)
            url = f"{first}&seekOperation=Next"
            headers = self._headers({"MS-ContinuationToken": token})

    def customer(self, customer_id: str) -> Customer:
        body = self._transport.send_json(
            "GET", f"{self._base}/customers/{quote(customer_id)}", headers=self._headers()
        )
        customer = _customer(body) if isinstance(body, dict) else None
        if customer is None:
            raise InvalidResponseError(SERVICE, 200, "invalid-customer", "customer has no id")
        return customer

    def subscriptions(self, customer_id: str) -> list[PcSubscription]:
        """All subscriptions of one customer (the API does not page this call)."""
        body = self._transport.send_json(
            "GET",
            f"{self._base}/customers/{quote(customer_id)}/subscriptions",
            headers=self._headers(),
        )
        out = []
        customer = customer_id.lower()  # one string shared by the customer's subscriptions
        for item in _items(body, "subscriptions"):
            sub = parse_subscription(item, customer)
            if sub is not None:
                out.append(sub)
        return out

    def subscription(self, customer_id: str, subscription_id: str) -> PcSubscription:
        """One subscription of one customer: `GET /v1/customers/{customer}/subscriptions/{id}`
        (NotFoundError when Partner Center has no such subscription for that customer).
        https://learn.microsoft.com/partner-center/developer/get-a-subscription-by-id"""
        body = self._transport.send_json(
            "GET",
            f"{self._base}/customers/{quote(customer_id)}/subscriptions/{quote(subscription_id)}",
            headers=self._headers(),
        )
        sub = parse_subscription(body, customer_id.lower()) if isinstance(body, dict) else None
        if sub is None:
            raise InvalidResponseError(
                SERVICE, 200, "invalid-subscription", "subscription has no GUID id"
            )
        return sub


def _day(value: date) -> str:
    """yyyy-mm-dd. A datetime (a date subclass) gives its UTC day: no time reaches the query."""
    if isinstance(value, datetime):
        value = value.astimezone(UTC).date()
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"


def is_no_relationship(exc: ApiError) -> bool:
    return exc.status == 403 and exc.code == NO_RELATIONSHIP


def _items(body: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise InvalidResponseError(SERVICE, 200, "invalid-collection", f"{what}: no 'items' list")
    return [item for item in body["items"] if isinstance(item, dict)]


def _continuation_token(body: dict[str, Any], what: str = "customers") -> str | None:
    links = body.get("links")
    nxt = links.get("next") if isinstance(links, dict) else None
    if not isinstance(nxt, dict):
        return None
    for header in nxt.get("headers") or []:
        if isinstance(header, dict) and str(header.get("key", "")).lower() == (
            "ms-continuationtoken"
        ):
            value = header.get("value")
            if value:
                return str(value)
    token = body.get("continuationToken")
    if token:
        return str(token)
    raise InvalidResponseError(
        SERVICE, 200, "invalid-paging", f"{what} page has links.next but no continuation token"
    )


def _customer(item: dict[str, Any]) -> Customer | None:
    raw_id = item.get("id")
    if not isinstance(raw_id, str) or not is_guid(raw_id):
        log.warning("partner center: skipping a customer without a GUID id")
        return None
    profile = item.get("companyProfile")
    name = profile.get("companyName", "") if isinstance(profile, dict) else ""
    return Customer(id=raw_id.lower(), company_name=str(name or ""))


# Item fields kept in PcSubscription.raw: the documented ones the model has no field for. The
# rest of the item (links, attributes, ...) is dropped: a tenant's subscriptions are all held in
# memory during a run, and a whole item costs ten times these.
RAW_FIELDS = ("commitmentEndDate", "termDuration", "billingCycle")


def _text(value: object) -> str:
    """Offer ids, names, enums: few distinct values among many subscriptions, stored once."""
    return sys.intern(str(value or ""))


def parse_subscription(item: dict[str, Any], customer_id: str) -> PcSubscription | None:
    """One item of `GET /v1/customers/{id}/subscriptions` as the model holds it (None, with a
    warning, for an item without a GUID id)."""
    raw_id = item.get("id")
    if not isinstance(raw_id, str) or not is_guid(raw_id):
        log.warning("partner center: skipping a subscription without a GUID id")
        return None
    quantity = item.get("quantity", 0)
    return PcSubscription(
        id=raw_id.lower(),
        customer_id=customer_id,
        offer_id=_text(item.get("offerId")),
        offer_name=_text(item.get("offerName")),
        friendly_name=str(item.get("friendlyName") or ""),
        quantity=quantity if isinstance(quantity, int) else 0,
        status=_text(item.get("status")),
        billing_type=_text(item.get("billingType")),
        creation_date=str(item["creationDate"]) if item.get("creationDate") else None,
        raw={key: _text(item[key]) for key in RAW_FIELDS if item.get(key) is not None},
        product_type=_product_type(item.get("productType")),
        term_duration=_text(item.get("termDuration")),
        billing_cycle=_text(item.get("billingCycle")),
        is_trial=item.get("isTrial") is True,
        parent_subscription_id=_parent(item.get("parentSubscriptionId")),
    )


def _product_type(value: object) -> str:
    """`productType` is an ItemType object (`{"id": "OnlineServicesNCE", "displayName": ...}`);
    landing rules match its id."""
    return _text(value.get("id")) if isinstance(value, dict) else ""


def _parent(value: object) -> str | None:
    """`parentSubscriptionId`, documented on the subscription resource as "the parent
    subscription identifier" and set on the order line item of an add-on
    (https://learn.microsoft.com/partner-center/developer/purchase-an-add-on-to-a-subscription).
    Anything but a GUID is no parent."""
    return value.lower() if isinstance(value, str) and is_guid(value) else None
