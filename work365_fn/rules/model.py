"""Plain data read from Partner Center and Dataverse. No behaviour, no I/O."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def norm_id(value: str) -> str:
    """A GUID in canonical lower-case form. Raises ValueError on anything that is not a GUID."""
    return str(uuid.UUID(value.strip()))


def maybe_id(value: object) -> str | None:
    """norm_id for optional values read from an API (None, '' -> None)."""
    if value is None or value == "":
        return None
    return norm_id(str(value))


_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_guid(value: str) -> bool:
    """The 8-4-4-4-12 form only. (uuid.UUID also takes bare hex, braces, "urn:" and hyphens
    anywhere: "urn:" + 32 hex digits is 36 characters too.)"""
    return isinstance(value, str) and _GUID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    company_name: str = ""


@dataclass(frozen=True, slots=True)
class PcSubscription:
    """A Partner Center subscription. Enums (status, billingType) stay open strings."""

    id: str
    customer_id: str
    offer_id: str = ""
    offer_name: str = ""
    friendly_name: str = ""
    quantity: int = 0
    status: str = ""
    billing_type: str = ""
    creation_date: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # What landing rules match on (rules/landing.py): productType.id, termDuration (P1M, ...),
    # billingCycle, isTrial, parentSubscriptionId (set on add-ons), as Partner Center gives them.
    product_type: str = ""
    term_duration: str = ""
    billing_cycle: str = ""
    is_trial: bool = False
    parent_subscription_id: str | None = None

    @property
    def display_name(self) -> str:
        return self.friendly_name or self.offer_name or self.offer_id or self.id


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """A work365 subscription row in Dataverse."""

    id: str
    provider_subscription_id: str | None
    account_id: str | None
    billing_contract_id: str | None
    created_on: datetime | None
    etag: str | None = None
    name: str = ""
    # The display names of the two lookups, as the list read's FormattedValue annotations give
    # them ("" when not read): adapters/dataverse_repository.py, rules/names.py.
    account_name: str = field(default="", compare=False)
    billing_contract_name: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class ProviderAccount:
    id: str
    customer_id: str | None
    account_id: str | None
    name: str = ""
    account_name: str = field(default="", compare=False)  # the Account lookup's display name


@dataclass(frozen=True, slots=True)
class BillingContract:
    id: str
    account_id: str | None
    is_default: bool
    active: bool
    name: str = ""
    # The values of the contract columns landing rules select by (read only when a rules file
    # names them): (logical name, value as the Web API reads it) pairs.
    columns: tuple[tuple[str, Any], ...] = ()
    account_name: str = field(default="", compare=False)  # the Account lookup's display name

    def value(self, column: str) -> Any:
        """The value of a contract column read for the landing rules (None when not read)."""
        return next((v for k, v in self.columns if k == column), None)


@dataclass(frozen=True, slots=True)
class AssociationSetting:
    """The Admin Hub setting and the cutoff derived for it."""

    enabled: bool
    since: datetime | None
    since_source: str | None  # "setting" | "audit" | "modifiedon" | None
    row_id: str | None = None
