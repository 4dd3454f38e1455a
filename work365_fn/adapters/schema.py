"""Dataverse logical names the service touches, with documented defaults.

Every name can be overridden with a JSON file named by WORK365_SCHEMA_FILE, shaped like
`Schema.to_json()` (partial files are fine: only the keys given replace the defaults), e.g.

    {"subscription": {"table": "new_cspsubscription", "entitySet": "new_cspsubscriptions"},
     "billingContract": {"isDefault": "new_isdefaultcontract"}}

Navigation property names used in `@odata.bind` are NOT part of the map: they are read from the
organisation's metadata (ManyToOneRelationships), because they are case-sensitive schema names.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from work365_fn import safe_json
from work365_fn.errors import SchemaError


@dataclass(frozen=True)
class SubscriptionTable:
    table: str = "work365_subscription"
    entity_set: str = "work365_subscriptions"
    id: str = "work365_subscriptionid"
    name: str = "work365_name"
    provider_subscription_id: str = "work365_providersubscriptionid"
    account: str = "work365_account"  # lookup -> account
    billing_contract: str = "work365_billingcontract"  # lookup -> work365_billingcontract
    # Columns that show the record is already billed (License Change Log / invoice references).
    # backfill never touches a record where any of them is set.
    billing_references: tuple[str, ...] = ("work365_lastlclid", "work365_lastinvoicenumber")


@dataclass(frozen=True)
class BillingContractTable:
    table: str = "work365_billingcontract"
    entity_set: str = "work365_billingcontracts"
    id: str = "work365_billingcontractid"
    name: str = "work365_name"
    account: str = "work365_account"  # lookup -> account
    is_default: str = "work365_isdefault"  # Two Options (boolean)
    state: str = "statecode"  # 0 = Active
    active_state: int = 0


@dataclass(frozen=True)
class ProviderAccountTable:
    table: str = "work365_provideraccount"
    entity_set: str = "work365_provideraccounts"
    id: str = "work365_provideraccountid"
    name: str = "work365_name"
    customer_id: str = "work365_customertenantid"  # Partner Center customer (tenant) id, text
    account: str = "work365_account"  # lookup -> account


@dataclass(frozen=True)
class SettingTable:
    """The Admin Hub setting row holding "Associate Default Billing Contract"."""

    table: str = "work365_adminhubsetting"
    entity_set: str = "work365_adminhubsettings"
    id: str = "work365_adminhubsettingid"
    associate_default: str = "work365_associatedefaultbillingcontract"  # boolean


@dataclass(frozen=True)
class AccountTable:
    table: str = "account"
    entity_set: str = "accounts"
    id: str = "accountid"
    name: str = "name"


_T = TypeVar("_T")

_JSON_KEYS = {
    "subscription": "subscription",
    "billingContract": "billing_contract",
    "providerAccount": "provider_account",
    "setting": "setting",
    "account": "account",
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _override(section: str, base: _T, raw: object) -> _T:
    if not isinstance(raw, dict):
        raise SchemaError(f"schema file: '{section}' must be an object")
    known = {_camel(f.name): f for f in fields(base)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        spec = known.get(key)
        if spec is None:
            allowed = ", ".join(sorted(known))
            raise SchemaError(f"schema file: unknown key '{section}.{key}' (known: {allowed})")
        current = getattr(base, spec.name)
        if isinstance(current, tuple):
            if not isinstance(value, list) or not all(
                isinstance(v, str) and _is_name(v) for v in value
            ):
                raise SchemaError(
                    f"schema file: '{section}.{key}' must be a list of Dataverse logical names "
                    "(letters, digits, underscore)"
                )
            changes[spec.name] = tuple(value)
        elif isinstance(current, int):
            if not isinstance(value, int) or isinstance(value, bool):
                raise SchemaError(f"schema file: '{section}.{key}' must be an integer")
            changes[spec.name] = value
        else:
            if not isinstance(value, str) or not _is_name(value):
                raise SchemaError(
                    f"schema file: '{section}.{key}' must be a Dataverse logical name "
                    "(letters, digits, underscore)"
                )
            changes[spec.name] = value
    return replace(base, **changes)  # type: ignore[type-var]


def _is_name(value: str) -> bool:
    return bool(value) and all(c.isalnum() or c == "_" for c in value) and value.isascii()


@dataclass(frozen=True)
class Schema:
    subscription: SubscriptionTable = SubscriptionTable()
    billing_contract: BillingContractTable = BillingContractTable()
    provider_account: ProviderAccountTable = ProviderAccountTable()
    setting: SettingTable = SettingTable()
    account: AccountTable = AccountTable()

    @classmethod
    def from_json(cls, raw: object) -> Schema:
        if not isinstance(raw, dict):
            raise SchemaError("schema file: the top level must be a JSON object")
        schema = cls()
        for key, value in raw.items():
            attr = _JSON_KEYS.get(key)
            if attr is None:
                raise SchemaError(
                    f"schema file: unknown section '{key}' (known: {', '.join(_JSON_KEYS)})"
                )
            schema = replace(schema, **{attr: _override(key, getattr(schema, attr), value)})
        return schema

    @classmethod
    def load(cls, path: str | None) -> Schema:
        """The default map, or the defaults overridden by the JSON at `path`: the path of a file,
        or the map itself inline when the setting starts with "{" (Flex Consumption's app
        content is read-only: a setting is where an operator can change it)."""
        if not path or not path.strip():
            return cls()
        data: str | bytes
        if path.strip().startswith("{"):
            data, what = path.strip(), "WORK365_SCHEMA_FILE (inline JSON)"
        else:
            what = f"WORK365_SCHEMA_FILE: {path}"
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise SchemaError(
                    f"WORK365_SCHEMA_FILE: cannot read {path}: {exc.strerror or exc}"
                ) from None
        try:
            raw = safe_json.loads(data, what)
        except safe_json.JsonInputError as exc:
            raise SchemaError(str(exc)) from None
        return cls.from_json(raw)

    def to_json(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for key, attr in _JSON_KEYS.items():
            table = getattr(self, attr)
            out[key] = {
                _camel(f.name): (
                    list(getattr(table, f.name))
                    if isinstance(getattr(table, f.name), tuple)
                    else getattr(table, f.name)
                )
                for f in fields(table)
            }
        return out

    def lookups(self) -> list[tuple[str, str, str]]:
        """(table, lookup attribute, referenced table) of every lookup read or bound."""
        return [
            (self.subscription.table, self.subscription.account, self.account.table),
            (
                self.subscription.table,
                self.subscription.billing_contract,
                self.billing_contract.table,
            ),
            (self.billing_contract.table, self.billing_contract.account, self.account.table),
            (self.provider_account.table, self.provider_account.account, self.account.table),
        ]
