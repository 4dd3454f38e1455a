"""Propose a schema map from an organisation's metadata (`check-schema --propose`).

Pure matching over the metadata documents the Web API serves, no I/O (the reads are in
`dataverse_metadata.propose_schema`). Each name of the map is found from the map's own name
first, then by what it is:

- a table by logical name, else by the table whose logical name (publisher prefix dropped) or
  display label is, or contains, the role's words (`subscription`, `billingcontract`, ...);
- a table's entity set, primary id and primary name from its definition;
- a lookup by the table it points to: the `ManyToOneRelationships` of the table whose
  `ReferencedEntity` is the target table (whatever the lookup is called, e.g. a contract's
  Account lookup named `work365_customer`); several lookups to one table are a choice;
- a column by attribute type, then logical name and display label against the role's words
  (an exact word ranks above a word contained); the provider subscription id also ranks up when
  an active alternate key holds exactly that column.

Every name gets a `Finding`: `kept` (the map's name exists), `found` (another name, the only
one that fits), `chosen` (several fit: the best ranked is proposed, all are listed) or
`missing` (none fits: the map's name is kept, and flagged).

Documents read (Microsoft Learn):
- EntityMetadata (`LogicalName`, `EntitySetName`, `PrimaryIdAttribute`, `PrimaryNameAttribute`,
  `DisplayName`): https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query-metadata-web-api
- AttributeMetadata (`LogicalName`, `AttributeType`, `DisplayName` as a Label:
  `UserLocalizedLabel.Label`, else `LocalizedLabels[].Label`):
  https://learn.microsoft.com/power-apps/developer/data-platform/webapi/retrieve-metadata-name-metadataid
- OneToManyRelationshipMetadata (`ReferencedEntity`, `ReferencingAttribute`,
  `ReferencingEntityNavigationPropertyName`):
  https://learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/onetomanyrelationshipmetadata
- EntityKeyMetadata (`KeyAttributes`, `EntityKeyIndexStatus`):
  https://learn.microsoft.com/power-apps/developer/data-platform/define-alternate-keys-entity
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from work365_fn.adapters.schema import Schema

Doc = Mapping[str, Any]


class Status(enum.StrEnum):
    KEPT = "kept"
    FOUND = "found"
    CHOSEN = "chosen"
    MISSING = "missing"


@dataclass(frozen=True)
class Finding:
    key: str  # the schema file's key, e.g. "billingContract.account"
    value: str  # the name proposed
    configured: str  # the name the map had
    status: Status
    why: str
    candidates: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "value": self.value,
            "configured": self.configured,
            "status": self.status.value,
            "why": self.why,
            "candidates": list(self.candidates),
        }


@dataclass(frozen=True)
class OrgMetadata:
    """What `propose` reads: every table's definition, and the parts of the tables it uses."""

    entities: Sequence[Doc]
    attributes: Mapping[str, Sequence[Doc]] = field(default_factory=dict)  # by table
    many_to_one: Mapping[str, Sequence[Doc]] = field(default_factory=dict)
    keys: Mapping[str, Sequence[Doc]] = field(default_factory=dict)


@dataclass(frozen=True)
class Proposal:
    schema: Schema
    findings: tuple[Finding, ...]
    alternate_key: tuple[str, ...] | None  # the subscription table's single-column key, if any

    @property
    def ok(self) -> bool:
        """Every name found without a choice."""
        return all(f.status in (Status.KEPT, Status.FOUND) for f in self.findings)

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "schema": self.schema.to_json(),
            "findings": [f.to_json() for f in self.findings],
            "alternateKey": list(self.alternate_key) if self.alternate_key else None,
        }


# The words each role is recognised by, after the map's own name (normalised: lower case,
# letters and digits only, publisher prefix dropped from logical names).
TABLE_WORDS = {
    "subscription": ("subscription",),
    "billingContract": ("billingcontract", "contract"),
    "providerAccount": ("provideraccount",),
    "setting": ("adminhubsetting", "setting"),
    "account": ("account",),
}
LOOKUP_WORDS = {
    "subscription.account": ("account", "customer"),
    "subscription.billingContract": ("billingcontract", "contract"),
    "billingContract.account": ("account", "customer"),
    "providerAccount.account": ("account", "customer"),
}
_TEXT = ("String", "Memo")
_PLAIN = ("String", "Memo", "Integer", "BigInt", "Decimal", "Double", "Money", "Picklist")
# key -> (attribute types accepted, words)
COLUMN_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "subscription.providerSubscriptionId": (_TEXT, ("providersubscriptionid", "subscriptionid")),
    "billingContract.isDefault": (("Boolean",), ("isdefault", "default")),
    "billingContract.state": (("State",), ("statecode", "status")),
    "providerAccount.customerId": (_TEXT, ("customertenantid", "tenantid", "customerid")),
    "setting.associateDefault": (
        ("Boolean",),
        ("associatedefaultbillingcontract", "associatedefault", "defaultbillingcontract"),
    ),
}
REFERENCE_WORDS = {"lastlclid": ("lcl", "licensechangelog"), "lastinvoicenumber": ("invoice",)}

_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def normalise(text: str) -> str:
    return _NOT_ALNUM.sub("", text.lower())


def stem(logical: str) -> str:
    """A logical name without its publisher prefix (`work365_isdefault` -> `isdefault`)."""
    prefix, sep, rest = logical.partition("_")
    return normalise(rest if sep and prefix and rest else logical)


def label(doc: Doc) -> str:
    """DisplayName.UserLocalizedLabel.Label, else the first LocalizedLabels label, else ''."""
    display = doc.get("DisplayName")
    if not isinstance(display, Mapping):
        return ""
    user = display.get("UserLocalizedLabel")
    if isinstance(user, Mapping) and user.get("Label"):
        return str(user["Label"])
    for localized in display.get("LocalizedLabels") or []:
        if isinstance(localized, Mapping) and localized.get("Label"):
            return str(localized["Label"])
    return ""


def _name(doc: Doc, key: str = "LogicalName") -> str:
    return str(doc.get(key) or "")


def score(doc: Doc, words: Sequence[str]) -> int:
    """2: the name (prefix dropped) or the display label IS one of the words; 1: contains one;
    0: neither."""
    names = {stem(_name(doc)), normalise(_name(doc)), normalise(label(doc))} - {""}
    if any(w in names for w in words):
        return 2
    if any(w in n for w in words for n in names):
        return 1
    return 0


def _words(configured: str, *more: Sequence[str]) -> tuple[str, ...]:
    out = [stem(configured)]
    for group in more:
        out += [w for w in group if w not in out]
    return tuple(out)


def rank(
    docs: Sequence[Doc], words: Sequence[str], boost: frozenset[str] = frozenset()
) -> list[tuple[int, str]]:
    """(score, logical name) of each doc, best first; `boost` names rank two higher."""
    scored = {(score(d, words) + (2 if _name(d).lower() in boost else 0), _name(d)) for d in docs}
    return sorted(scored, key=lambda pair: (-pair[0], pair[1]))


def pick(
    key: str, configured: str, ranked: Sequence[tuple[int, str]], what: str, *, strict: bool
) -> Finding:
    """A finding from candidates ranked best first. One candidate: found. Several: found when
    one ranks alone at the top (not `strict`), else chosen. None: missing, the map's name kept."""
    if not ranked:
        return Finding(
            key, configured, configured, Status.MISSING, f"no {what}: the map's name kept"
        )
    names = tuple(n for _, n in ranked)
    if len(names) == 1:
        return Finding(key, names[0], configured, Status.FOUND, f"the only {what}", names)
    alone = ranked[0][0] > ranked[1][0]
    if alone and not strict:
        return Finding(key, names[0], configured, Status.FOUND, f"the best named {what}", names)
    return Finding(
        key, names[0], configured, Status.CHOSEN, f"{len(names)} candidates, each a {what}", names
    )


# ---------------------------------------------------------------- tables

_SECTIONS = {
    "subscription": "subscription",
    "billingContract": "billing_contract",
    "providerAccount": "provider_account",
    "setting": "setting",
    "account": "account",
}


def match_table(entities: Sequence[Doc], key: str, configured: str) -> tuple[Finding, Doc | None]:
    """The table of a role: the map's logical name if the org has it, else by name and label."""
    by_name = {_name(e).lower(): e for e in entities if _name(e)}
    doc = by_name.get(configured.lower())
    if doc is not None:
        return Finding(f"{key}.table", configured, configured, Status.KEPT, "present"), doc
    ranked = [(s, n) for s, n in rank(entities, _words(configured, TABLE_WORDS[key])) if s > 0]
    finding = pick(f"{key}.table", configured, ranked, "table named like it", strict=False)
    if finding.status is Status.MISSING:
        return finding, None
    return finding, by_name[finding.value.lower()]


def table_names(entities: Sequence[Doc], schema: Schema) -> dict[str, str]:
    """Role -> the logical name of the table the proposal uses, for the roles the org has."""
    out = {}
    for key, attr in _SECTIONS.items():
        finding, doc = match_table(entities, key, getattr(schema, attr).table)
        if doc is not None:
            out[key] = finding.value
    return out


def _definition_findings(key: str, table: Any, doc: Doc | None) -> list[Finding]:
    """entitySet, id (and name) of a table, from its definition."""
    parts = [("entitySet", "entity_set", "EntitySetName"), ("id", "id", "PrimaryIdAttribute")]
    if hasattr(table, "name"):
        parts.append(("name", "name", "PrimaryNameAttribute"))
    out = []
    for json_key, attr, meta in parts:
        configured = str(getattr(table, attr))
        value = _name(doc, meta) if doc is not None else ""
        if not value:
            why = "no such table" if doc is None else f"its definition has no {meta}"
            status, value = Status.MISSING, configured
        elif value == configured:
            why, status = "present", Status.KEPT
        else:
            why, status = f"the table's {meta}", Status.FOUND
        out.append(Finding(f"{key}.{json_key}", value, configured, status, why))
    return out


# ---------------------------------------------------------------- columns and lookups


def match_column(
    attributes: Sequence[Doc],
    key: str,
    configured: str,
    types: Sequence[str],
    words: Sequence[str],
    boost: frozenset[str] = frozenset(),
) -> Finding:
    """A column of one of `types`: the map's name if present, else by name and display label."""
    fitting = [a for a in attributes if str(a.get("AttributeType", "")) in types]
    if configured.lower() in {_name(a).lower() for a in fitting}:
        return Finding(key, configured, configured, Status.KEPT, "present")
    what = f"{'/'.join(types[:2])} column named like it"
    ranked = [(s, n) for s, n in rank(fitting, _words(configured, words), boost) if s > 0]
    finding = pick(key, configured, ranked, what, strict=False)
    other = [a for a in attributes if _name(a).lower() == configured.lower()]
    if finding.status is Status.MISSING and other:
        kind = other[0].get("AttributeType")
        return replace(finding, why=f"{configured} is a {kind} column, not {'/'.join(types)}")
    return finding


def match_lookup(
    relationships: Sequence[Doc],
    attributes: Sequence[Doc],
    key: str,
    configured: str,
    referenced: str,
    words: Sequence[str],
) -> Finding:
    """A lookup by the table it points to: the ManyToOne relationships of the table whose
    ReferencedEntity is `referenced`. Several lookups to that table are always a choice."""
    names = sorted(
        {
            _name(r, "ReferencingAttribute")
            for r in relationships
            if _name(r, "ReferencedEntity").lower() == referenced.lower()
            and _name(r, "ReferencingAttribute")
        }
    )
    if configured.lower() in {n.lower() for n in names}:
        return Finding(key, configured, configured, Status.KEPT, f"a lookup to {referenced}")
    labelled = {_name(a).lower(): a for a in attributes}
    docs = [labelled.get(n.lower(), {"LogicalName": n}) for n in names]
    ranked = rank(docs, _words(configured, words))
    return pick(key, configured, ranked, f"lookup to {referenced}", strict=True)


def active_single_keys(keys: Sequence[Doc]) -> frozenset[str]:
    """Columns that alone make an active alternate key."""
    out = set()
    for key in keys:
        attrs = [str(a).lower() for a in key.get("KeyAttributes") or []]
        if len(attrs) == 1 and str(key.get("EntityKeyIndexStatus", "Active")) == "Active":
            out.add(attrs[0])
    return frozenset(out)


# ---------------------------------------------------------------- the whole map

# Lookup key -> the role of the table it points to.
LOOKUP_TARGETS = {
    "subscription.account": "account",
    "subscription.billingContract": "billingContract",
    "billingContract.account": "account",
    "providerAccount.account": "account",
}


@dataclass(frozen=True)
class _Org:
    metadata: OrgMetadata
    tables: Mapping[str, str]  # role -> proposed logical name (roles the org has)
    configured: Mapping[str, str]  # role -> the map's logical name

    def part(self, part: Mapping[str, Sequence[Doc]], role: str) -> Sequence[Doc]:
        return part.get(self.tables.get(role, ""), ())


def _field_finding(org: _Org, section: str, field_key: str, configured: str) -> Finding | None:
    key = f"{section}.{field_key}"
    meta = org.metadata
    if section not in org.tables:
        if key in LOOKUP_TARGETS or key in COLUMN_WORDS:
            why = "its table is missing: the map's name kept"
            return Finding(key, configured, configured, Status.MISSING, why)
        return None
    attributes = org.part(meta.attributes, section)
    if key in LOOKUP_TARGETS:
        target = LOOKUP_TARGETS[key]
        referenced = org.tables.get(target) or org.configured[target]
        relationships = org.part(meta.many_to_one, section)
        return match_lookup(
            relationships, attributes, key, configured, referenced, LOOKUP_WORDS[key]
        )
    if key in COLUMN_WORDS:
        types, words = COLUMN_WORDS[key]
        boost: frozenset[str] = frozenset()
        if key == "subscription.providerSubscriptionId":
            boost = active_single_keys(org.part(meta.keys, section))
        return match_column(attributes, key, configured, types, words, boost)
    return None


def _reference_findings(org: _Org, configured: Sequence[str]) -> list[Finding]:
    out = []
    for i, ref in enumerate(configured):
        key = f"subscription.billingReferences[{i}]"
        if "subscription" not in org.tables:
            why = "its table is missing: the map's name kept"
            out.append(Finding(key, ref, ref, Status.MISSING, why))
            continue
        attributes = org.part(org.metadata.attributes, "subscription")
        words = REFERENCE_WORDS.get(stem(ref), ())
        out.append(match_column(attributes, key, ref, _PLAIN, words))
    return out


def propose(metadata: OrgMetadata, schema: Schema) -> Proposal:
    """The map `schema` (the defaults, or WORK365_SCHEMA_FILE) checked and completed from the
    org's metadata, name by name."""
    current = schema.to_json()
    proposed: dict[str, dict[str, object]] = {k: dict(v) for k, v in current.items()}
    findings: list[Finding] = []
    configured = {key: getattr(schema, attr).table for key, attr in _SECTIONS.items()}
    org = _Org(metadata, table_names(metadata.entities, schema), configured)
    for section, attr in _SECTIONS.items():
        table = getattr(schema, attr)
        found, doc = match_table(metadata.entities, section, table.table)
        section_findings = [found, *_definition_findings(section, table, doc)]
        for field_key, value in current[section].items():
            if isinstance(value, list):
                section_findings += _reference_findings(org, [str(v) for v in value])
                continue
            finding = _field_finding(org, section, field_key, str(value))
            if finding is not None:
                section_findings.append(finding)
        findings += section_findings
    for finding in findings:
        _apply(proposed, finding)
    key_columns = active_single_keys(org.part(metadata.keys, "subscription"))
    provider_id = str(proposed["subscription"]["providerSubscriptionId"]).lower()
    alternate_key = (provider_id,) if provider_id in key_columns else None
    return Proposal(Schema.from_json(proposed), tuple(findings), alternate_key)


def _apply(proposed: dict[str, dict[str, object]], finding: Finding) -> None:
    section, _, field_key = finding.key.partition(".")
    name, _, index = field_key.partition("[")
    if index:
        values = list(proposed[section][name])  # type: ignore[call-overload]
        values[int(index.rstrip("]"))] = finding.value
        proposed[section][name] = values
    else:
        proposed[section][name] = finding.value
