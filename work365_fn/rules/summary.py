"""The run summary: the stable JSON contract of CLI --json, the HTTP response and the logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from work365_fn.rules.association import Decision
from work365_fn.rules.model import AssociationSetting
from work365_fn.rules.reasons import ON_A_CONTRACT, Action, Reason, count_groups, count_reasons
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

    def to_json(self) -> dict[str, Any]:
        ordered = sorted_decisions(self.decisions)
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
            "subscriptions": [decision_json(d) for d in ordered],
            "skippedCustomers": list(self.skipped_customers),
            "errors": list(self.errors),
            "warnings": list(self.warnings),
        }

    def log_line(self) -> dict[str, Any]:
        """What goes to the logs: everything but the per-subscription list (32 KB limit)."""
        full = self.to_json()
        full.pop("subscriptions")
        return full


def decision_json(d: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {
        "customerId": d.subscription.customer_id.lower(),
        "subscriptionId": d.subscription.id.lower(),
        "recordId": d.record.id.lower() if d.record else None,
        "accountId": d.account_id,
        "action": d.action.value,
        "billingContractId": d.contract_id if d.reason in ON_A_CONTRACT else None,
        "reason": d.reason.value,
    }
    if d.message:
        out["message"] = d.message
    return out


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


__all__ = ["Action", "RunSummary", "decision_json", "setting_json", "sorted_decisions"]
