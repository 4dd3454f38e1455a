"""Scenario files: the seed data of the sandbox, validated with errors that name the bad field."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from work365_fn import safe_json
from work365_fn.adapters.schema import Schema
from work365_fn.errors import SchemaError
from work365_fn.rules.landing import LandingRulesError, parse_landing_rules
from work365_fn.rules.model import is_guid
from work365_fn.rules.timestamps import parse_timestamp

from .core import ScenarioError as ScenarioError  # noqa: PLC0414 - re-exported (mypy --strict)
from .faults import parse_rules

# Fields of a Partner Center AuditRecord a scenario may give (the emulator fills in the rest).
AUDIT_RECORD_FIELDS = {
    "customerId",
    "customerName",
    "resourceType",
    "operationType",
    "operationDate",
    "operationStatus",
    "userPrincipalName",
    "applicationId",
    "resourceOldValue",
    "resourceNewValue",
    "customizedData",
}


@dataclass(frozen=True)
class ScenarioSetting:
    associate_default_billing_contract: bool
    enabled_on: datetime | None
    audit_enabled: bool = True


@dataclass(frozen=True)
class ScenarioAccount:
    id: str
    name: str


@dataclass(frozen=True)
class ScenarioProviderAccount:
    id: str
    customer_id: str | None
    account_id: str | None
    name: str


@dataclass(frozen=True)
class ScenarioContract:
    id: str
    account_id: str | None
    name: str
    is_default: bool
    active: bool
    # Extra columns of the contract (logical name -> value), e.g. work365_billingtiming: what
    # landing rules select by. The emulator serves them, metadata included.
    columns: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScenarioSubscription:
    id: str
    provider_subscription_id: str | None
    account_id: str | None
    billing_contract_id: str | None
    created_on: datetime | None
    name: str
    billing_references: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ScenarioPcSubscription:
    raw: dict[str, Any]  # the Partner Center item as served (id, offerId, ...)

    @property
    def id(self) -> str:
        return str(self.raw["id"])


@dataclass(frozen=True)
class ScenarioCustomer:
    id: str
    company_name: str
    subscriptions: tuple[ScenarioPcSubscription, ...]
    relationship: bool = True  # False -> 403 code 20002 on its subscriptions


@dataclass(frozen=True)
class ScenarioNotes:
    """`notes`: whether the subscription table has notes (HasNotes), and the privileges the
    application user lacks (e.g. `prvCreateNote`)."""

    has_notes: bool = True
    missing_privileges: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    setting: ScenarioSetting
    accounts: tuple[ScenarioAccount, ...] = ()
    provider_accounts: tuple[ScenarioProviderAccount, ...] = ()
    billing_contracts: tuple[ScenarioContract, ...] = ()
    subscriptions: tuple[ScenarioSubscription, ...] = ()
    customers: tuple[ScenarioCustomer, ...] = ()
    # Partner Center activity-log records beyond those derived from subscriptions' creationDate
    audit_records: tuple[dict[str, Any], ...] = ()
    faults: tuple[dict[str, Any], ...] = ()  # validated by the fault module
    alternate_key: bool = False  # the org has an alternate key on the provider subscription id
    # The org's names, as a WORK365_SCHEMA_FILE (partial) gives them; None: the default map.
    schema: Schema | None = None
    # The scenario's landing rules (WORK365_LANDING_RULES_FILE's document), checked on load;
    # the CLI uses them with --sandbox unless the setting or --landing-rules gives others.
    landing_rules: dict[str, Any] | None = None
    notes: ScenarioNotes = ScenarioNotes()
    origin: str = field(default="<memory>", compare=False)  # file path or built-in:<name>

    def fingerprint(self) -> str:
        """A digest of the seed data, not of where it came from: a state file keeps the one it
        was seeded with, so that a later --scenario can be checked against it."""
        content = asdict(self)
        content.pop("origin")
        text = json.dumps(content, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ScenarioError(f"scenario {path}: cannot read ({exc.strerror or exc})") from None
        return parse_scenario(_json(data, str(path)), origin=str(path))

    @classmethod
    def builtin(cls, name: str) -> Scenario:
        """A scenario shipped in sandbox/scenarios/<name>.json (the names: `builtin_names()`)."""
        ref = resources.files("work365_fn.sandbox").joinpath("scenarios", f"{name}.json")
        try:
            data = ref.read_bytes()
        except (FileNotFoundError, OSError):
            raise ScenarioError(
                f"no built-in scenario named '{name}': the built-in ones are "
                f"{', '.join(builtin_names())} (or give a scenario file's path)"
            ) from None
        return parse_scenario(_json(data, f"built-in:{name}"), origin=f"built-in:{name}")


def builtin_names() -> list[str]:
    """The names `Scenario.builtin` takes (sandbox/scenarios/*.json), sorted."""
    folder = resources.files("work365_fn.sandbox").joinpath("scenarios")
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def _json(data: bytes, origin: str) -> Any:
    try:
        return safe_json.loads(data, f"scenario {origin}")
    except safe_json.JsonInputError as exc:
        raise ScenarioError(str(exc)) from None


class _Fields:
    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, why: str) -> ScenarioError:
        return ScenarioError(f"scenario {self.origin}: '{where}' {why}")

    def obj(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "must be an object")
        return value

    def items(self, value: object, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(where, "must be a list")
        return value

    def guid(
        self, obj: dict[str, Any], key: str, where: str, *, optional: bool = False
    ) -> str | None:
        value = obj.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not is_guid(value):
            raise self.fail(f"{where}.{key}", "must be a GUID" + (" or null" if optional else ""))
        return value.lower()

    def text(self, obj: dict[str, Any], key: str, where: str, default: str = "") -> str:
        value = obj.get(key, default)
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", "must be a string")
        return value

    def boolean(
        self, obj: dict[str, Any], key: str, where: str, default: bool | None = None
    ) -> bool:
        value = obj.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", "must be true or false")
        return value

    def when(self, obj: dict[str, Any], key: str, where: str) -> datetime | None:
        value = obj.get(key)
        if value is None:
            return None
        parsed = parse_timestamp(value) if isinstance(value, str) else None
        if parsed is None:
            raise self.fail(f"{where}.{key}", "must be an ISO-8601 timestamp or null")
        return parsed

    def known(self, obj: dict[str, Any], allowed: set[str], where: str) -> None:
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise self.fail(
                f"{where}.{unknown[0]}", f"is not a known field ({', '.join(sorted(allowed))})"
            )


def parse_scenario(  # noqa: PLR0912, PLR0915 - one check per scenario field, each naming it
    raw: object, origin: str = "<memory>"
) -> Scenario:
    f = _Fields(origin)
    top = f.obj(raw, "$")
    f.known(
        top,
        {
            "settings",
            "accounts",
            "providerAccounts",
            "billingContracts",
            "subscriptions",
            "partnerCenter",
            "faults",
            "alternateKey",
            "schema",
            "description",
            "landingRules",
            "notes",
        },
        "$",
    )
    s = f.obj(top.get("settings", {}), "settings")
    f.known(s, {"associateDefaultBillingContract", "enabledOn", "auditEnabled"}, "settings")
    setting = ScenarioSetting(
        associate_default_billing_contract=f.boolean(
            s, "associateDefaultBillingContract", "settings", False
        ),
        enabled_on=f.when(s, "enabledOn", "settings"),
        audit_enabled=f.boolean(s, "auditEnabled", "settings", True),
    )

    accounts = []
    for i, a in enumerate(f.items(top.get("accounts"), "accounts")):
        w = f"accounts[{i}]"
        a = f.obj(a, w)
        f.known(a, {"id", "name"}, w)
        accounts.append(ScenarioAccount(str(f.guid(a, "id", w)), f.text(a, "name", w)))
    account_ids = {a.id for a in accounts}

    def account_ref(obj: dict[str, Any], where: str) -> str | None:
        value = f.guid(obj, "accountId", where, optional=True)
        if value is not None and value not in account_ids:
            raise f.fail(f"{where}.accountId", f"names no account in 'accounts' ({value})")
        return value

    pas = []
    for i, p in enumerate(f.items(top.get("providerAccounts"), "providerAccounts")):
        w = f"providerAccounts[{i}]"
        p = f.obj(p, w)
        f.known(p, {"id", "customerId", "accountId", "name"}, w)
        pas.append(
            ScenarioProviderAccount(
                id=str(f.guid(p, "id", w)),
                customer_id=f.guid(p, "customerId", w, optional=True),
                account_id=account_ref(p, w),
                name=f.text(p, "name", w),
            )
        )

    contracts = []
    for i, c in enumerate(f.items(top.get("billingContracts"), "billingContracts")):
        w = f"billingContracts[{i}]"
        c = f.obj(c, w)
        f.known(c, {"id", "accountId", "name", "isDefault", "active", "columns"}, w)
        contracts.append(
            ScenarioContract(
                id=str(f.guid(c, "id", w)),
                account_id=account_ref(c, w),
                name=f.text(c, "name", w),
                is_default=f.boolean(c, "isDefault", w, False),
                active=f.boolean(c, "active", w, True),
                columns=_contract_columns(f, c, w),
            )
        )
    contract_ids = {c.id for c in contracts}

    subs = []
    for i, r in enumerate(f.items(top.get("subscriptions"), "subscriptions")):
        w = f"subscriptions[{i}]"
        r = f.obj(r, w)
        f.known(
            r,
            {
                "id",
                "providerSubscriptionId",
                "accountId",
                "billingContractId",
                "createdOn",
                "name",
                "billingReferences",
            },
            w,
        )
        contract = f.guid(r, "billingContractId", w, optional=True)
        if contract is not None and contract not in contract_ids:
            raise f.fail(
                f"{w}.billingContractId", f"names no contract in 'billingContracts' ({contract})"
            )
        refs = f.obj(r.get("billingReferences", {}), f"{w}.billingReferences")
        for key, value in refs.items():
            if not isinstance(value, str):
                raise f.fail(f"{w}.billingReferences.{key}", "must be a string")
        subs.append(
            ScenarioSubscription(
                id=str(f.guid(r, "id", w)),
                provider_subscription_id=f.guid(r, "providerSubscriptionId", w, optional=True),
                account_id=account_ref(r, w),
                billing_contract_id=contract,
                created_on=f.when(r, "createdOn", w),
                name=f.text(r, "name", w),
                billing_references=dict(refs),
            )
        )

    pc = f.obj(top.get("partnerCenter", {}), "partnerCenter")
    f.known(pc, {"customers", "auditRecords"}, "partnerCenter")
    customers = []
    seen_customers: dict[str, str] = {}
    for i, c in enumerate(f.items(pc.get("customers"), "partnerCenter.customers")):
        w = f"partnerCenter.customers[{i}]"
        c = f.obj(c, w)
        f.known(c, {"id", "companyName", "subscriptions", "relationship"}, w)
        pc_subs = []
        for j, s_raw in enumerate(f.items(c.get("subscriptions"), f"{w}.subscriptions")):
            sw = f"{w}.subscriptions[{j}]"
            s_obj = f.obj(s_raw, sw)
            f.guid(s_obj, "id", sw)
            if "quantity" in s_obj and (
                not isinstance(s_obj["quantity"], int) or isinstance(s_obj["quantity"], bool)
            ):
                raise f.fail(f"{sw}.quantity", "must be an integer")
            for key in ("offerId", "offerName", "friendlyName", "status", "billingType"):
                if key in s_obj:
                    f.text(s_obj, key, sw)
            _landing_fields(f, s_obj, sw)
            f.when(s_obj, "creationDate", sw)
            pc_subs.append(ScenarioPcSubscription(raw={**s_obj, "id": s_obj["id"]}))
        key = str(f.guid(c, "id", w))
        if key in seen_customers:
            raise f.fail(f"{w}.id", f"repeats {seen_customers[key]}.id ({key})")
        seen_customers[key] = w
        customers.append(
            ScenarioCustomer(
                # Partner Center's own spelling: the service must compare GUIDs case-insensitively.
                id=str(c["id"]),
                company_name=f.text(c, "companyName", w),
                subscriptions=tuple(pc_subs),
                relationship=f.boolean(c, "relationship", w, True),
            )
        )

    audit_records = []
    for i, a_raw in enumerate(f.items(pc.get("auditRecords"), "partnerCenter.auditRecords")):
        w = f"partnerCenter.auditRecords[{i}]"
        a = f.obj(a_raw, w)
        f.known(a, AUDIT_RECORD_FIELDS, w)
        f.guid(a, "customerId", w)
        if f.when(a, "operationDate", w) is None:
            raise f.fail(f"{w}.operationDate", "must be an ISO-8601 timestamp")
        if not f.text(a, "operationType", w):
            raise f.fail(f"{w}.operationType", "must be a non-empty string like 'create_order'")
        for key in ("customerName", "resourceType", "operationStatus", "userPrincipalName"):
            f.text(a, key, w)
        audit_records.append(dict(a))

    faults_raw = top.get("faults", [])
    if isinstance(faults_raw, dict):  # {} is the empty fault set in the documented example
        faults_raw = faults_raw.get("rules", [])
    faults = tuple(f.obj(x, f"faults[{i}]") for i, x in enumerate(f.items(faults_raw, "faults")))

    parse_rules(faults, f"scenario {origin}")

    alternate_key = top.get("alternateKey", False)
    if not isinstance(alternate_key, bool):
        raise f.fail("alternateKey", "must be true or false")

    return Scenario(
        setting=setting,
        accounts=tuple(accounts),
        provider_accounts=tuple(pas),
        billing_contracts=tuple(contracts),
        subscriptions=tuple(subs),
        customers=tuple(customers),
        audit_records=tuple(audit_records),
        faults=faults,
        alternate_key=alternate_key,
        schema=_parse_schema(f, top.get("schema")),
        landing_rules=_parse_landing_rules(f, top.get("landingRules")),
        notes=_parse_notes(f, top.get("notes", {})),
        origin=origin,
    )


def _parse_notes(f: _Fields, raw: object) -> ScenarioNotes:
    """`notes`: {"hasNotes": true, "missingPrivileges": ["prvCreateNote", ...]}."""
    notes = f.obj(raw, "notes")
    f.known(notes, {"hasNotes", "missingPrivileges"}, "notes")
    missing = []
    for i, name in enumerate(f.items(notes.get("missingPrivileges"), "notes.missingPrivileges")):
        if (
            not isinstance(name, str)
            or not name.startswith("prv")
            or not name.replace("_", "").isalnum()
        ):
            raise f.fail(
                f"notes.missingPrivileges[{i}]", "must be a privilege name like prvCreateNote"
            )
        missing.append(name)
    return ScenarioNotes(f.boolean(notes, "hasNotes", "notes", True), tuple(missing))


_COLUMN_TYPES: dict[type, str] = {bool: "Boolean", int: "Integer", str: "String"}


def _contract_columns(f: _Fields, c: dict[str, Any], where: str) -> dict[str, Any]:
    columns = f.obj(c.get("columns", {}), f"{where}.columns")
    for key, value in columns.items():
        if not is_logical_name(key):
            raise f.fail(f"{where}.columns.{key}", "must be a column's logical name (a-z, 0-9, _)")
        if value is not None and type(value) not in _COLUMN_TYPES:
            raise f.fail(
                f"{where}.columns.{key}", "must be a string, an integer, true/false or null"
            )
    return dict(columns)


def contract_column_kinds(scenario: Scenario) -> dict[str, str]:
    """The extra contract columns of a scenario and their AttributeType (from their values):
    the emulator adds them to the contract table. ScenarioError when two contracts disagree."""
    kinds: dict[str, str] = {}
    for c in scenario.billing_contracts:
        for key, value in c.columns.items():
            kind = _COLUMN_TYPES.get(type(value)) if value is not None else None
            if kind and kinds.setdefault(key, kind) != kind:
                raise ScenarioError(
                    f"scenario: contract column '{key}' holds values of two types "
                    f"({kinds[key]} and {kind})"
                )
    for c in scenario.billing_contracts:
        for key in c.columns:
            kinds.setdefault(key, "String")  # only nulls: a text column
    return kinds


def is_logical_name(value: object) -> bool:
    return (
        isinstance(value, str)
        and bool(value)
        and value[0].isalpha()
        and all(ch.isascii() and (ch.islower() or ch.isdigit() or ch == "_") for ch in value)
    )


def _landing_fields(f: _Fields, s_obj: dict[str, Any], where: str) -> None:
    """The Partner Center fields landing rules match, as documented on the subscription
    resource: isTrial, parentSubscriptionId, billingCycle, termDuration, productType."""
    if "isTrial" in s_obj:
        f.boolean(s_obj, "isTrial", where)
    if s_obj.get("parentSubscriptionId") is not None:
        f.guid(s_obj, "parentSubscriptionId", where)
    for key in ("billingCycle", "termDuration"):
        if s_obj.get(key) is not None:  # null: none (an Azure plan has no term)
            f.text(s_obj, key, where)
    if "productType" in s_obj:
        product_type = f.obj(s_obj["productType"], f"{where}.productType")
        f.text(product_type, "id", f"{where}.productType")
        f.text(product_type, "displayName", f"{where}.productType")


def _parse_landing_rules(f: _Fields, raw: object) -> dict[str, Any] | None:
    """The scenario's `landingRules`, checked as WORK365_LANDING_RULES_FILE would be."""
    if raw is None:
        return None
    try:
        parse_landing_rules(raw)
    except LandingRulesError as exc:
        raise f.fail("landingRules", str(exc)) from None
    assert isinstance(raw, dict)
    return raw


def _parse_schema(f: _Fields, raw: object) -> Schema | None:
    """The scenario's `schema`: the org's names in the WORK365_SCHEMA_FILE format."""
    if raw is None:
        return None
    try:
        return Schema.from_json(raw)
    except SchemaError as exc:
        raise f.fail("schema", str(exc).removeprefix("schema file: ")) from None
