"""The run summary: the stable JSON contract of CLI --json, the HTTP response and the logs.

Also the words every output of a run uses for it (the CLI table, the Teams card, the log line):
`run_kind`, `count_label`, `counts_sentence`, `action_words`. A dry run speaks in the conditional
("6 would be assigned"), a live run in the past ("6 assigned"), from this one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from work365_fn.rules.association import Decision
from work365_fn.rules.fixes import Namer
from work365_fn.rules.model import AssociationSetting, ProviderAccount
from work365_fn.rules.reasons import (
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
        """What goes to the logs: everything but the per-subscription list (32 KB limit)."""
        full = self.to_json()
        full.pop("subscriptions")
        return full


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
    """The `setting` object of the run summary, the report and the diagnosis."""
    return {
        "associateDefaultBillingContract": bool(setting and setting.enabled),
        "since": format_timestamp(setting.since) if setting and setting.since else None,
        "sinceSource": setting.since_source if setting else None,
    }


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
    "run_kind",
    "run_sentence",
    "setting_json",
    "sorted_decisions",
]
