"""The run summary: the stable JSON contract of CLI --json, the HTTP response and the logs.

Also the words every output of a run uses for it (the CLI table, the Teams card, the log line):
`run_kind`, `count_label`, `counts_sentence`, `action_words`. A dry run speaks in the conditional
("6 would be assigned"), a live run in the past ("6 assigned"), from this one place.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from work365_fn.rules.association import Decision
from work365_fn.rules.fixes import Namer
from work365_fn.rules.model import AssociationSetting, ProviderAccount
from work365_fn.rules.reasons import (
    LISTED,
    ON_A_CONTRACT,
    Action,
    Group,
    Reason,
    count_groups,
    count_reasons,
)
from work365_fn.rules.timestamps import format_timestamp

SCHEMA_VERSION = 1


@dataclass
class RunSummary:
    run_id: str
    started_at: datetime
    mode: str = "full"
    dry_run: bool = False
    finished_at: datetime | None = None
    setting: AssociationSetting | None = None
    customers: int = 0
    decisions: list[Decision] = field(default_factory=list)
    created: int = 0
    skipped_customers: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, object]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fatal: bool = False  # the run could not read what it needs: status "failed"
    # The names of what the run read, and the fix sentences; None: no names known (ids only).
    namer: Namer | None = field(default=None, repr=False, compare=False)
    # HTTP requests the run sent per service (logs.py counts them): log dimensions only, never
    # in the summary's JSON.
    requests: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def status(self) -> str:
        if self.fatal:
            return "failed"
        if self.errors or any(d.reason is Reason.ERROR for d in self.decisions):
            return "partial"
        return "succeeded"

    def counts(self) -> dict[str, int]:
        return {
            "customers": self.customers,
            **count_groups(d.reason for d in self.decisions),
            "created": self.created,
        }

    def by_reason(self) -> dict[str, int]:
        return count_reasons(d.reason for d in self.decisions)

    def names(self) -> Namer:
        """`namer`, or one that knows no names (its fixes name records by id)."""
        if self.namer is not None:
            return self.namer
        since = self.setting.since if self.setting else None
        return Namer(provider_accounts=(), contracts=(), account_names={}, since=since)

    def to_json(self) -> dict[str, Any]:
        ordered = sorted_decisions(self.decisions)
        namer = self.names()
        return {
            "schemaVersion": SCHEMA_VERSION,
            "runId": self.run_id,
            "mode": self.mode,
            "dryRun": self.dry_run,
            "status": self.status,
            "startedAt": format_timestamp(self.started_at),
            "finishedAt": format_timestamp(self.finished_at or self.started_at),
            "setting": setting_json(self.setting),
            "counts": self.counts(),
            "byReason": self.by_reason(),
            "subscriptions": [decision_json(d, namer) for d in ordered],
            "skippedCustomers": list(self.skipped_customers),
            "errors": list(self.errors),
            "warnings": list(self.warnings),
        }

    def log_line(self) -> dict[str, Any]:
        """What goes to the logs (`log_record`): the counts, and capped lists of the rows that
        need someone (unassigned, failed), the errors and the skipped customers."""
        return log_record(self.to_json())


def decision_json(d: Decision, namer: Namer | None = None) -> dict[str, Any]:
    """One `subscriptions` item. The names are null where the run did not read them (a scoped
    run does not list Partner Center customers, so it has no customer names); `fix` is null for
    a subscription on a contract (nothing to do)."""
    namer = namer or Namer(provider_accounts=(), contracts=(), account_names={}, since=None)
    sub = d.subscription
    contract_id = d.contract_id if d.reason in ON_A_CONTRACT else None
    out: dict[str, Any] = {
        "customerId": sub.customer_id.lower() or None,  # None: unresolved-customer
        "customerName": namer.customer_names.get(sub.customer_id.lower()) or None,
        "subscriptionId": sub.id.lower(),
        "subscriptionName": sub.friendly_name or sub.offer_name or None,
        "offerId": sub.offer_id or None,
        "recordId": d.record.id.lower() if d.record else None,
        "accountId": d.account_id,
        "accountName": namer.account_names.get((d.account_id or "").lower()) or None,
        "action": d.action.value,
        "billingContractId": contract_id,
        "billingContractName": namer.contract_names.get((contract_id or "").lower()) or None,
        "reason": d.reason.value,
    }
    if d.message:
        out["message"] = d.message
    out["fix"] = namer.todo(d) or None
    return out


def accounts_to_name(
    decisions: Iterable[Decision], provider_accounts: Sequence[ProviderAccount]
) -> list[str]:
    """The Accounts the summary and its fix sentences name (lower case, sorted): each
    subscription's resolved Account, its record's Account (account-mismatch), and the Accounts
    of its customer's Provider Accounts (ambiguous-provider-account)."""
    customers: set[str] = set()
    wanted: set[str] = set()
    for d in decisions:
        if d.account_id:
            wanted.add(d.account_id.lower())
        if d.reason is Reason.ACCOUNT_MISMATCH and d.record and d.record.account_id:
            wanted.add(d.record.account_id.lower())
        if d.reason is Reason.AMBIGUOUS_PROVIDER_ACCOUNT:
            customers.add(d.subscription.customer_id.lower())
    for pa in provider_accounts:
        if pa.account_id and (pa.customer_id or "").lower() in customers:
            wanted.add(pa.account_id.lower())
    return sorted(wanted)


# ---- the log record ----------------------------------------------------------------------------

# Application Insights keeps at most 32,768 characters of a trace's message
# (https://learn.microsoft.com/azure/azure-monitor/app/data-model-complete#trace): a longer
# summary would be cut, its JSON would no longer parse, and the run would vanish from the
# workbook and the alerts. The logged JSON stays under LOG_JSON_BUDGET characters (ASCII: the
# JSON escapes every other character), leaving room for the prefix and the sentence.
LOG_JSON_BUDGET = 16_000
LOG_LIST_ITEMS = 20  # rows of each capped list: the first ones, then "and N more" in `notLogged`
LOG_TEXT_CHARS = 300  # longer texts (error messages, names) end in "..."
LOG_ROW_FIELDS = (
    "customerId",
    "customerName",
    "subscriptionId",
    "subscriptionName",
    "accountName",
    "reason",
    "fix",
    "message",
)
# The capped lists of the log record, in the order they give way when the JSON is too long.
LOG_LISTS = ("needsAttention", "skippedCustomers", "errors", "warnings")


def log_record(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The run summary as the logs carry it: everything but `subscriptions`, plus
    `needsAttention`, the unassigned and failed rows (names, reason, fix). Each list keeps its
    first LOG_LIST_ITEMS items, each text LOG_TEXT_CHARS characters; `notLogged` says how many
    items of each list were left out ({} when none), and the lists shrink further until the JSON
    fits LOG_JSON_BUDGET. Takes a summary's JSON with or without `subscriptions` (a record it
    made itself comes back the same)."""
    out = {k: v for k, v in summary.items() if k != "subscriptions"}
    rows = summary.get("subscriptions")
    if isinstance(rows, list):
        listed = [r for r in rows if isinstance(r, dict) and r.get("reason") in _LISTED]
        out["needsAttention"] = [{k: r.get(k) for k in LOG_ROW_FIELDS if k in r} for r in listed]
    out.setdefault("needsAttention", [])
    left_out = dict(out.get("notLogged") or {})
    full = {name: _as_list(out.get(name)) for name in LOG_LISTS}
    keep = dict.fromkeys(LOG_LISTS, LOG_LIST_ITEMS)
    while True:
        for name in LOG_LISTS:
            out[name] = [_short(item) for item in full[name][: keep[name]]]
        out["notLogged"] = {
            name: left_out.get(name, 0) + len(full[name]) - len(out[name])
            for name in LOG_LISTS
            if left_out.get(name, 0) + len(full[name]) - len(out[name])
        }
        if len(json.dumps(out, separators=(",", ":"))) <= LOG_JSON_BUDGET:
            return out
        widest = max(LOG_LISTS, key=lambda n: (len(out[n]) > 0, len(json.dumps(out[n]))))
        if not out[widest]:  # nothing left to drop: the texts are as short as they get
            return out
        keep[widest] = len(out[widest]) // 2


_LISTED = frozenset(r.value for r in LISTED)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _short(item: Any) -> Any:
    """`item` with every text cut to LOG_TEXT_CHARS characters."""
    if isinstance(item, str):
        return item if len(item) <= LOG_TEXT_CHARS else item[: LOG_TEXT_CHARS - 3] + "..."
    if isinstance(item, dict):
        return {k: _short(v) for k, v in item.items()}
    if isinstance(item, list):
        return [_short(v) for v in item]
    return item


# ---- the words of a run ------------------------------------------------------------------------

DRY_RUN = "dry run: nothing written"
LIVE_RUN = "live run"

# count key -> (live run, dry run): what each count of `counts` is called.
_COUNT_WORDS: dict[str, tuple[str, str]] = {
    "customers": ("customers", "customers"),
    "subscriptions": ("subscriptions", "subscriptions"),
    Group.ASSIGNED.value: ("assigned", "would be assigned"),
    Group.UNASSIGNED.value: ("left unassigned", "would be left unassigned"),
    Group.UNCHANGED.value: ("unchanged", "unchanged"),
    Group.FAILED.value: ("failed", "failed"),
    "created": ("created", "would be created"),
}

_ACTION_WORDS: dict[Action, tuple[str, str]] = {
    Action.ASSIGN: ("assigned", "would assign"),
    Action.CREATE: ("created", "would create"),
    Action.NONE: ("no change", "no change"),
}


def run_kind(dry_run: bool) -> str:
    """ "dry run: nothing written" or "live run": never `dry run False`."""
    return DRY_RUN if dry_run else LIVE_RUN


def count_label(key: str, dry_run: bool) -> str:
    """What a count of `counts` is called: "would be assigned" in a dry run, "assigned" live."""
    live, dry = _COUNT_WORDS.get(key, (key, key))
    return dry if dry_run else live


def counts_sentence(counts: Mapping[str, int], dry_run: bool) -> str:
    """ "13 customers, 18 subscriptions: 6 would be assigned, 7 would be left unassigned,
    5 unchanged, 0 failed" (and the records created, when there are any)."""
    groups = [g.value for g in Group] + (["created"] if counts.get("created") else [])
    head = ", ".join(
        f"{counts.get(k, 0)} {count_label(k, dry_run)}" for k in ("customers", "subscriptions")
    )
    return head + ": " + ", ".join(f"{counts.get(k, 0)} {count_label(k, dry_run)}" for k in groups)


def action_words(action: str, dry_run: bool) -> str:
    """A row's action: "would assign" in a dry run, "assigned" after a live run's write."""
    live, dry = _ACTION_WORDS.get(Action(action), (action, action))
    return dry if dry_run else live


def run_sentence(summary: Mapping[str, Any]) -> str:
    """One line for a run summary in its JSON form (the log line, the card's headline)."""
    return (
        f"{run_kind(bool(summary.get('dryRun')))}, status {summary.get('status')}: "
        f"{counts_sentence(summary.get('counts') or {}, bool(summary.get('dryRun')))}"
    )


def setting_json(setting: AssociationSetting | None) -> dict[str, Any]:
    """The `setting` object of the run summary, the report and the diagnosis. `read` is false
    when the run stopped before it read the setting (a refused or failed run): then the other
    fields say nothing about the organisation."""
    return {
        "associateDefaultBillingContract": bool(setting and setting.enabled),
        "since": format_timestamp(setting.since) if setting and setting.since else None,
        "sinceSource": setting.since_source if setting else None,
        "read": setting is not None,
    }


def setting_words(setting: Mapping[str, Any]) -> str:
    """The `setting:` line of the CLI's outputs, from a `setting` object: "not read" when the
    run never read it (never "No, cutoff None" for a setting nobody looked at)."""
    if setting.get("read") is False:
        return "setting: not read (the run stopped before reading it)"
    return (
        "setting: Associate Default Billing Contract = "
        f"{'Yes' if setting.get('associateDefaultBillingContract') else 'No'}, cutoff "
        f"{setting.get('since')} (from {setting.get('sinceSource')})"
    )


def sorted_decisions(decisions: list[Decision]) -> list[Decision]:
    """The summary's order: by customer id, then subscription id."""
    return sorted(decisions, key=lambda d: (d.subscription.customer_id, d.subscription.id))


__all__ = [
    "DRY_RUN",
    "LIVE_RUN",
    "Action",
    "RunSummary",
    "accounts_to_name",
    "action_words",
    "count_label",
    "counts_sentence",
    "decision_json",
    "log_record",
    "run_kind",
    "run_sentence",
    "setting_json",
    "setting_words",
    "sorted_decisions",
]
