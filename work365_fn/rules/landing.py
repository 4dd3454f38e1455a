"""Landing rules: which of an Account's active contracts a new subscription lands on, by what
Partner Center says about it (billing model, product, term, trial, add-on).

Pure: `parse_landing_rules` checks a parsed JSON document (the composition root reads the file
or the inline text of WORK365_LANDING_RULES_FILE through `safe_json`) into a frozen
`LandingRules`; `evaluate` walks the rules in order for one subscription and returns the first
rule's verdict, with why each rule before it did not decide (what diagnose shows). Without a
rules file none of this runs: the default-contract rule decides, exactly as before.

The fields of `when` are the documented fields of Partner Center's subscription resource
(https://learn.microsoft.com/partner-center/developer/subscription-resources).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from work365_fn.rules.model import BillingContract, PcSubscription, is_guid
from work365_fn.rules.reasons import Reason

SETTING = "WORK365_LANDING_RULES_FILE"
AZURE_PLAN_PRODUCT = "DZH318Z0BPS6"  # the NCE Azure plan (offerId DZH318Z0BPS6:0001:...)

BILLING_TYPES = ("none", "usage", "license", "benefit")
TERM_DURATIONS = ("P1M", "P1Y", "P3Y")
# Members of Partner Center's BillingCycleType, compared case-insensitively.
BILLING_CYCLES = ("unknown", "monthly", "annual", "none", "onetime", "triennial")
WHEN_FIELDS = (
    "billingType",
    "product",
    "offerId",
    "productType",
    "termDuration",
    "billingCycle",
    "isTrial",
    "isAddOn",
    "customerIds",
)
RULE_FIELDS = ("name", "when", "contract", "action")
TOP_FIELDS = ("rules", "description")
PARENT = "parent"
LEAVE = "leave"
_PRODUCT = re.compile(r"[A-Za-z0-9]+(:[A-Za-z0-9]+)?")
_LOGICAL_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")

Scalar = str | int | float | bool


class LandingRulesError(ValueError):
    """The rules document is not valid: the message names the rule (number, counted from 1,
    and name) and the field."""


@dataclass(frozen=True)
class When:
    """The conditions of one rule; None = not given. All given ones must hold."""

    billing_type: str | None = None  # lower-case
    product: tuple[str, ...] | None = None  # upper-case `product` or `product`, `sku`
    offer_id: str | None = None  # lower-case
    product_type: str | None = None  # lower-case
    term_duration: str | None = None  # upper-case
    billing_cycle: str | None = None  # lower-case
    is_trial: bool | None = None
    is_add_on: bool | None = None
    customer_ids: frozenset[str] | None = None  # lower-case GUIDs


@dataclass(frozen=True)
class ContractSelector:
    """Select among an Account's active contracts those whose `column` equals `equals`."""

    column: str
    equals: Scalar


@dataclass(frozen=True)
class LandingRule:
    number: int  # 1-based position in the file
    name: str
    when: When
    contract: ContractSelector | None = None
    parent: bool = False  # "contract": "parent"
    leave: bool = False  # "action": "leave"

    @property
    def label(self) -> str:
        return f"rule {self.number} '{self.name}'"


@dataclass(frozen=True)
class LandingRules:
    rules: tuple[LandingRule, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """The contract columns the rules select by (what the reader must $select)."""
        return tuple(sorted({r.contract.column for r in self.rules if r.contract}))

    def rules_using(self, column: str) -> list[LandingRule]:
        return [r for r in self.rules if r.contract and r.contract.column == column]


# ---- parsing ---------------------------------------------------------------------------------


def parse_landing_rules(raw: object) -> LandingRules:
    """The document `{"rules": [...]}` as typed rules, or LandingRulesError naming the rule and
    the field (unknown field, bad value)."""
    if not isinstance(raw, dict):
        raise LandingRulesError("the top level must be an object with a 'rules' list")
    _known(raw, TOP_FIELDS, "", "the top level")
    items = raw.get("rules")
    if not isinstance(items, list):
        raise LandingRulesError("'rules' must be a list of rules")
    rules = tuple(_rule(item, n) for n, item in enumerate(items, start=1))
    seen: dict[str, int] = {}
    for rule in rules:
        key = rule.name.casefold()
        if key in seen:
            raise LandingRulesError(
                f"{rule.label}: field 'name' repeats the name of rule {seen[key]}"
            )
        seen[key] = rule.number
    return LandingRules(rules)


def _known(obj: Mapping[str, Any], allowed: Sequence[str], prefix: str, where: str) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise LandingRulesError(
            f"{where}: unknown field '{prefix}{unknown[0]}' (known: {', '.join(allowed)})"
        )


def _rule(item: object, number: int) -> LandingRule:
    name = item.get("name") if isinstance(item, dict) else None
    where = f"rule {number}" + (f" '{name}'" if isinstance(name, str) and name.strip() else "")
    if not isinstance(item, dict):
        raise LandingRulesError(f"{where}: must be an object")
    if not isinstance(name, str) or not name.strip():
        raise LandingRulesError(f"{where}: field 'name' must be a non-empty string")
    _known(item, RULE_FIELDS, "", where)
    when_raw = item.get("when", {})
    if not isinstance(when_raw, dict):
        raise LandingRulesError(f"{where}: field 'when' must be an object")
    _known(when_raw, WHEN_FIELDS, "when.", where)
    when = _when(when_raw, where)
    if ("contract" in item) == ("action" in item):
        raise LandingRulesError(
            f"{where}: give exactly one of field 'contract' (a column selector or \"parent\") "
            "and field 'action' (\"leave\")"
        )
    rule = LandingRule(number, name.strip(), when)
    if "action" in item:
        if item["action"] != LEAVE:
            raise LandingRulesError(f"{where}: field 'action' must be \"leave\"")
        return LandingRule(number, rule.name, when, leave=True)
    contract = item["contract"]
    if contract == PARENT:
        return LandingRule(number, rule.name, when, parent=True)
    return LandingRule(number, rule.name, when, contract=_selector(contract, where))


def _selector(raw: object, where: str) -> ContractSelector:
    if not isinstance(raw, dict):
        raise LandingRulesError(
            f"{where}: field 'contract' must be \"parent\" or an object "
            '{"column": <logical name>, "equals": <value>}'
        )
    _known(raw, ("column", "equals"), "contract.", where)
    column = raw.get("column")
    if not isinstance(column, str) or not _LOGICAL_NAME.fullmatch(column):
        raise LandingRulesError(
            f"{where}: field 'contract.column' must be a column's logical name (lower-case "
            "letters, digits, underscore), like work365_billingtiming"
        )
    equals = raw.get("equals")
    if equals is None or not isinstance(equals, str | int | float | bool):
        raise LandingRulesError(
            f"{where}: field 'contract.equals' must be a string, number or true/false (the "
            "column's value as the Web API reads it: a choice column's number)"
        )
    return ContractSelector(column, equals)


def _when(raw: Mapping[str, Any], where: str) -> When:
    def text(key: str, allowed: Sequence[str] | None = None) -> str | None:
        if key not in raw:
            return None
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            raise LandingRulesError(f"{where}: field 'when.{key}' must be a non-empty string")
        if allowed is not None and value.casefold() not in [a.casefold() for a in allowed]:
            raise LandingRulesError(
                f"{where}: field 'when.{key}' must be one of {', '.join(allowed)} "
                f"(not '{value[:40]}')"
            )
        return value.strip()

    def flag(key: str) -> bool | None:
        value = raw.get(key)
        if key in raw and not isinstance(value, bool):
            raise LandingRulesError(f"{where}: field 'when.{key}' must be true or false")
        return value

    product = text("product")
    if product is not None and not _PRODUCT.fullmatch(product):
        raise LandingRulesError(
            f"{where}: field 'when.product' must be a product id or product:sku, like "
            f"{AZURE_PLAN_PRODUCT} or CFQ7TTC0LH18:0001 (without the availability)"
        )
    term = text("termDuration", TERM_DURATIONS)
    return When(
        billing_type=_lower(text("billingType", BILLING_TYPES)),
        product=tuple(product.upper().split(":")) if product else None,
        offer_id=_lower(text("offerId")),
        product_type=_lower(text("productType")),
        term_duration=term.upper() if term else None,
        billing_cycle=_lower(text("billingCycle", BILLING_CYCLES)),
        is_trial=flag("isTrial"),
        is_add_on=flag("isAddOn"),
        customer_ids=_customers(raw, where),
    )


def _lower(value: str | None) -> str | None:
    return value.lower() if value is not None else None


def _customers(raw: Mapping[str, Any], where: str) -> frozenset[str] | None:
    if "customerIds" not in raw:
        return None
    value = raw["customerIds"]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and is_guid(v) for v in value)
    ):
        raise LandingRulesError(
            f"{where}: field 'when.customerIds' must be a non-empty list of customer tenant "
            "ids (GUIDs)"
        )
    return frozenset(v.lower() for v in value)


# ---- matching --------------------------------------------------------------------------------


def mismatches(when: When, sub: PcSubscription) -> list[str]:
    """Why `when` does not hold for `sub` (empty: it holds). One phrase per failed condition."""
    out: list[str] = []

    def differ(field_name: str, wanted: object, actual: object, shown: object = None) -> None:
        if wanted is not None and wanted != actual:
            out.append(
                f"{field_name} is {shown if shown is not None else actual!r}, not {wanted!r}"
            )

    differ("billingType", when.billing_type, sub.billing_type.lower(), repr(sub.billing_type))
    if when.product is not None:
        parts = tuple(sub.offer_id.upper().split(":"))[: len(when.product)]
        if parts != when.product:
            out.append(f"offerId {sub.offer_id!r} is not of product {':'.join(when.product)!r}")
    differ("offerId", when.offer_id, sub.offer_id.lower(), repr(sub.offer_id))
    differ("productType", when.product_type, sub.product_type.lower(), repr(sub.product_type))
    differ("termDuration", when.term_duration, sub.term_duration.upper(), repr(sub.term_duration))
    differ("billingCycle", when.billing_cycle, sub.billing_cycle.lower(), repr(sub.billing_cycle))
    differ("isTrial", when.is_trial, sub.is_trial)
    differ("isAddOn", when.is_add_on, bool(sub.parent_subscription_id))
    if when.customer_ids is not None and sub.customer_id.lower() not in when.customer_ids:
        out.append(f"customer {sub.customer_id.lower()} is not in customerIds")
    return out


def same_value(actual: object, wanted: Scalar) -> bool:
    """A contract column's value equals a rule's: strings case-insensitively (as Dataverse
    compares them), numbers by value, true/false only with true/false."""
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return isinstance(actual, bool) and isinstance(wanted, bool) and actual is wanted
    if isinstance(wanted, str):
        return isinstance(actual, str) and actual.casefold() == wanted.casefold()
    return isinstance(actual, int | float) and actual == wanted


# What `equals` must be for each column type (AttributeMetadata.AttributeType, the
# AttributeTypeCode names: https://learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/attributetypecode).
# A choice (Picklist), State or Status column reads as its option's number, never its label.
_WHOLE_NUMBER_TYPES = ("Picklist", "State", "Status", "Integer", "BigInt")
_NUMBER_TYPES = ("Decimal", "Double", "Money")
_TEXT_TYPES = ("String", "Memo", "EntityName")
# Lookups read as `_<column>_value`, not by their logical name, so a rule cannot select by one;
# the others hold no single comparable value.
_UNSUPPORTED_TYPES = {
    "Lookup": "a lookup",
    "Customer": "a customer lookup",
    "Owner": "an owner lookup",
    "PartyList": "a party list",
    "DateTime": "a date and time",
    "Virtual": "a virtual column",
}


def value_type_problem(attribute_type: str, equals: Scalar) -> str | None:
    """None when a rule's `equals` can match a column of this AttributeType; else what the
    column needs instead (for the error naming the rule and the field)."""
    is_number = isinstance(equals, int | float) and not isinstance(equals, bool)
    if attribute_type in _WHOLE_NUMBER_TYPES:
        ok = is_number and float(equals).is_integer()
        kind = "a choice" if attribute_type in ("Picklist", "State", "Status") else "a whole number"
        return None if ok else f"{kind} ({attribute_type}) column: give its number, like 2"
    if attribute_type in _NUMBER_TYPES:
        return None if is_number else f"a number ({attribute_type}) column: give a number"
    if attribute_type == "Boolean":
        ok = isinstance(equals, bool)
        return None if ok else "a yes/no (Boolean) column: give true or false"
    if attribute_type in _TEXT_TYPES:
        ok = isinstance(equals, str)
        return None if ok else f"a text ({attribute_type}) column: give a string"
    if attribute_type == "Uniqueidentifier":
        ok = isinstance(equals, str) and is_guid(equals)
        return None if ok else "a unique identifier (Uniqueidentifier) column: give a GUID"
    what = _UNSUPPORTED_TYPES.get(attribute_type, f"a {attribute_type or 'untyped'} column")
    return (
        f"{what} ({attribute_type or 'no AttributeType'}), which a rule cannot select by: "
        "use a choice, yes/no, text or number column"
    )


def selected(rule: LandingRule, active: Iterable[BillingContract]) -> list[BillingContract]:
    """The Account's active contracts the rule's selector picks."""
    assert rule.contract is not None
    column, wanted = rule.contract.column, rule.contract.equals
    return [c for c in active if c.active and same_value(c.value(column), wanted)]


# ---- the verdict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What one rule said of one subscription: `decided` when it is the rule that decides
    (`reason`, and `contract` for landing-rule); else `why` it passed."""

    rule: LandingRule
    decided: bool
    why: str
    reason: Reason | None = None
    contract: BillingContract | None = None
    candidates: tuple[BillingContract, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """The first deciding rule's verdict (None: no rule decides, the default rule does), and the
    verdicts of every rule up to it, in order."""

    verdict: Verdict | None
    trail: tuple[Verdict, ...] = field(default=())

    @property
    def message(self) -> str:
        return self.verdict.why if self.verdict else ""


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    """One line of diagnose's `landingRules`: the rule, whether it decided, and why."""
    return {
        "rule": verdict.rule.number,
        "name": verdict.rule.name,
        "decided": verdict.decided,
        "reason": verdict.reason.value if verdict.reason else None,
        "contractId": verdict.contract.id.lower() if verdict.contract else None,
        "why": verdict.why,
    }


def evaluate(
    rules: LandingRules,
    sub: PcSubscription,
    active: Sequence[BillingContract],
    parent_contract: BillingContract | None,
) -> Outcome:
    """Walk the rules in order for a new, mapped subscription. `active`: its Account's active
    contracts; `parent_contract`: the contract its parent subscription is on (or will be), when
    that is one of `active`."""
    trail: list[Verdict] = []
    for rule in rules.rules:
        verdict = _verdict(rule, sub, active, parent_contract)
        trail.append(verdict)
        if verdict.decided:
            return Outcome(verdict, tuple(trail))
    return Outcome(None, tuple(trail))


def _verdict(
    rule: LandingRule,
    sub: PcSubscription,
    active: Sequence[BillingContract],
    parent_contract: BillingContract | None,
) -> Verdict:
    missed = mismatches(rule.when, sub)
    if missed:
        return Verdict(rule, False, "; ".join(missed))
    if rule.leave:
        return Verdict(rule, True, f"{rule.label} leaves it unassigned", Reason.EXCLUDED_BY_RULE)
    if rule.parent:
        if not sub.parent_subscription_id:
            return Verdict(rule, False, "it has no parent subscription")
        if parent_contract is None:
            return Verdict(
                rule,
                False,
                f"its parent subscription {sub.parent_subscription_id.lower()} is on no active "
                "contract of this Account",
            )
        return Verdict(
            rule,
            True,
            f"{rule.label}: the contract of parent subscription "
            f"{sub.parent_subscription_id.lower()}",
            Reason.LANDING_RULE,
            parent_contract,
        )
    return _select(rule, active)


def _select(rule: LandingRule, active: Sequence[BillingContract]) -> Verdict:
    assert rule.contract is not None
    picked = selected(rule, active)
    wanted = f"{rule.contract.column} = {rule.contract.equals!r}"
    if not picked:
        return Verdict(
            rule,
            True,
            f"{rule.label}: no active contract of the Account has {wanted}",
            Reason.NO_LANDING_CONTRACT,
        )
    if len(picked) == 1:
        return Verdict(
            rule,
            True,
            f"{rule.label}: the one contract with {wanted}",
            Reason.LANDING_RULE,
            picked[0],
            tuple(picked),
        )
    defaults = [c for c in picked if c.is_default]
    if len(defaults) == 1:
        return Verdict(
            rule,
            True,
            f"{rule.label}: the default among {len(picked)} contracts with {wanted}",
            Reason.LANDING_RULE,
            defaults[0],
            tuple(picked),
        )
    return Verdict(
        rule,
        True,
        f"{rule.label}: {len(picked)} active contracts have {wanted} and "
        f"{'none' if not defaults else len(defaults)} of them {'is' if not defaults else 'are'} "
        "default: " + ", ".join(sorted(f"'{c.name or c.id.lower()}'" for c in picked)),
        Reason.MULTIPLE_LANDING_CONTRACTS,
        candidates=tuple(picked),
    )
