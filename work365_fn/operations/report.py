"""The tenant report: what an admin works down to zero. Read-only, one bulk pass.

Counts first, then the lists: subscriptions the next sync would leave unassigned (with their
reason and fix), Accounts with a Provider Account and no active default contract, Accounts with
several active defaults, inactive default contracts, Provider Accounts without an Account,
Partner Center customers without a Provider Account, and customers whose Provider Accounts map
to different Accounts.
"""

from __future__ import annotations

import csv
import io
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from work365_fn.composition import Services
from work365_fn.errors import ApiError, AuthError, error_json
from work365_fn.operations.reader import Snapshot, read_tenant
from work365_fn.operations.sync import RunLog
from work365_fn.rules import UNASSIGNED, Reason, fixes, plan
from work365_fn.rules.fixes import Namer, label
from work365_fn.rules.summary import decision_json
from work365_fn.rules.timestamps import format_timestamp

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# Reasons listed as "left unassigned" (the sync's unassigned ones, plus not-synced and error).
LISTED_REASONS = frozenset(UNASSIGNED | {Reason.NOT_SYNCED, Reason.ERROR})

CSV_COLUMNS = (
    "kind",
    "customerId",
    "subscriptionId",
    "accountId",
    "recordId",
    "name",
    "reason",
    "fix",
)

LISTS = (
    "unassignedSubscriptions",
    "accountsWithoutDefault",
    "accountsWithSeveralDefaults",
    "inactiveDefaultContracts",
    "unmappedProviderAccounts",
    "customersWithoutProviderAccount",
    "customersWithSeveralAccounts",
)


def run_report(
    services: Services,
    run_id: str | None = None,
    *,
    budget_seconds: float | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    monotonic: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Read the tenant once and build the report. Upstream failures give status `failed`."""
    run_id = run_id or str(uuid.uuid4())
    rlog = RunLog(log, {"run_id": run_id})
    started = clock()
    monotonic = monotonic or services.monotonic  # the services' clock unless one is given
    deadline = monotonic() + budget_seconds if budget_seconds else None
    rlog.info("report started")
    try:
        snapshot = read_tenant(services, run_id, names=True, deadline=deadline, monotonic=monotonic)
    except (ApiError, AuthError) as exc:
        rlog.error("report failed: %s", exc)
        return failed_report(run_id, started, clock(), error_json(exc, None))
    report = build_report(snapshot, started_at=started, finished_at=clock())
    rlog.info("report %s: %s", report["status"], report["counts"])
    return report


def report_job(services: Services, payload: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The async job (jobs registry "report"): the payload is the validated request (empty).
    Customers are read until the run deadline (WORK365_RUN_DEADLINE_SECONDS)."""
    return run_report(services, run_id, budget_seconds=services.settings.run_deadline_seconds)


def failed_report(
    run_id: str, started: datetime, finished: datetime, error: dict[str, object]
) -> dict[str, Any]:
    return {
        "schemaVersion": SCHEMA_VERSION,
        "runId": run_id,
        "status": "failed",
        "startedAt": format_timestamp(started),
        "finishedAt": format_timestamp(finished),
        "setting": {"associateDefaultBillingContract": False, "since": None, "sinceSource": None},
        "counts": {"customers": 0, "subscriptions": 0, "problems": 0} | {name: 0 for name in LISTS},
        "byReason": {reason.value: 0 for reason in Reason},
        **{name: [] for name in LISTS},
        "skippedCustomers": [],
        "errors": [error],
        "warnings": [],
    }


def build_report(
    snapshot: Snapshot, *, started_at: datetime, finished_at: datetime
) -> dict[str, Any]:
    """Pure over what was read: the next sync's plan, and the configuration problems."""
    names = snapshot.account_names
    namer = Namer(
        provider_accounts=snapshot.provider_accounts,
        contracts=snapshot.contracts,
        account_names=names,
        since=snapshot.setting.since,
        customer_names={c.id: c.company_name for c in snapshot.customers},
    )
    decisions = plan(snapshot.world())
    customers = {c.id.lower(): c for c in snapshot.customers}
    by_reason = {reason.value: 0 for reason in Reason}
    for d in decisions:
        by_reason[d.reason.value] += 1

    unassigned = []
    for d in sorted(decisions, key=lambda d: (d.subscription.customer_id, d.subscription.id)):
        if d.reason not in LISTED_REASONS:
            continue
        row = decision_json(d)
        customer = customers.get(d.subscription.customer_id.lower())
        unassigned.append(
            {
                "customerId": row["customerId"],
                "customerName": customer.company_name if customer else "",
                "subscriptionId": row["subscriptionId"],
                "subscriptionName": d.subscription.display_name,
                "recordId": row["recordId"],
                "recordName": d.record.name if d.record else "",
                "accountId": row["accountId"],
                "accountName": namer.account(d.account_id),
                "reason": row["reason"],
                "message": d.message,
                "fix": namer.fix(d),
            }
        )

    def ref(record_id: str, name: str) -> dict[str, str]:
        return {"id": record_id.lower(), "name": name}

    pas_by_account: dict[str, list[Any]] = defaultdict(list)
    pas_by_customer: dict[str, list[Any]] = defaultdict(list)
    for pa in snapshot.provider_accounts:
        if pa.account_id:
            pas_by_account[pa.account_id.lower()].append(pa)
        if pa.customer_id:
            pas_by_customer[pa.customer_id.lower()].append(pa)
    active_defaults: dict[str, list[Any]] = defaultdict(list)
    inactive_defaults: dict[str, list[Any]] = defaultdict(list)
    for c in snapshot.contracts:
        if c.is_default and c.account_id:
            (active_defaults if c.active else inactive_defaults)[c.account_id.lower()].append(c)

    without_default = [
        {
            "accountId": account,
            "accountName": namer.account(account),
            "providerAccounts": [ref(p.id, p.name) for p in sorted(pas, key=lambda p: p.id)],
            "inactiveDefaults": [
                ref(c.id, c.name) for c in sorted(inactive_defaults[account], key=lambda c: c.id)
            ],
            "fix": fixes.no_default_fix(namer.account(account), inactive_defaults[account], None),
        }
        for account, pas in sorted(pas_by_account.items())
        if not active_defaults.get(account)
    ]
    several_defaults = [
        {
            "accountId": account,
            "accountName": namer.account(account),
            "contracts": [ref(c.id, c.name) for c in sorted(defaults, key=lambda c: c.id)],
            "fix": fixes.multiple_defaults_fix(defaults),
        }
        for account, defaults in sorted(active_defaults.items())
        if len(defaults) > 1
    ]
    inactive = [
        {
            "contractId": c.id.lower(),
            "contractName": c.name,
            "accountId": (c.account_id or "").lower() or None,
            "accountName": namer.account(c.account_id),
            "fix": fixes.inactive_default_fix(c),
        }
        for c in sorted(snapshot.contracts, key=lambda c: c.id)
        if c.is_default and not c.active
    ]
    unmapped = [
        {
            "providerAccountId": pa.id.lower(),
            "providerAccountName": pa.name,
            "customerId": (pa.customer_id or "").lower() or None,
            "fix": (
                fixes.provider_account_without_account_fix([pa])
                if pa.customer_id
                else f"Set the customer tenant id (a GUID) on Provider Account "
                f"'{label(pa.name, pa.id)}', and its Account."
            ),
        }
        for pa in sorted(snapshot.provider_accounts, key=lambda p: p.id)
        if not pa.account_id or not pa.customer_id
    ]
    subs_per_customer: dict[str, int] = defaultdict(int)
    for s in snapshot.subscriptions:
        subs_per_customer[s.customer_id.lower()] += 1
    no_pa = [
        {
            "customerId": c.id.lower(),
            "customerName": c.company_name,
            "subscriptions": subs_per_customer.get(c.id.lower(), 0),
            "fix": fixes.missing_provider_account_fix(c.id, c.company_name),
        }
        for c in sorted(snapshot.customers, key=lambda c: c.id)
        if c.id.lower() not in pas_by_customer
    ]
    several_accounts = []
    for customer_id, pas in sorted(pas_by_customer.items()):
        accounts = {(p.account_id or "").lower() for p in pas if p.account_id}
        if len(accounts) > 1:
            customer = customers.get(customer_id)
            several_accounts.append(
                {
                    "customerId": customer_id,
                    "customerName": customer.company_name if customer else "",
                    "providerAccounts": [
                        {
                            "id": p.id.lower(),
                            "name": p.name,
                            "accountId": (p.account_id or "").lower() or None,
                            "accountName": namer.account(p.account_id),
                        }
                        for p in sorted(pas, key=lambda p: p.id)
                    ],
                    "fix": fixes.ambiguous_fix(pas, names),
                }
            )

    lists: dict[str, list[dict[str, Any]]] = {
        "unassignedSubscriptions": unassigned,
        "accountsWithoutDefault": without_default,
        "accountsWithSeveralDefaults": several_defaults,
        "inactiveDefaultContracts": inactive,
        "unmappedProviderAccounts": unmapped,
        "customersWithoutProviderAccount": no_pa,
        "customersWithSeveralAccounts": several_accounts,
    }
    counts: dict[str, int] = {
        "customers": len(snapshot.customers),
        "subscriptions": len(decisions),
        "problems": sum(len(v) for v in lists.values()),
        "backfillCandidates": by_reason[Reason.EXISTING_SUBSCRIPTION.value],
    }
    counts.update({name: len(items) for name, items in lists.items()})
    setting = snapshot.setting
    status = "partial" if snapshot.errors or snapshot.skipped_customers else "succeeded"
    return {
        "schemaVersion": SCHEMA_VERSION,
        "runId": snapshot.run_id,
        "status": status,
        "startedAt": format_timestamp(started_at),
        "finishedAt": format_timestamp(finished_at),
        "setting": {
            "associateDefaultBillingContract": setting.enabled,
            "since": format_timestamp(setting.since) if setting.since else None,
            "sinceSource": setting.since_source,
        },
        "counts": counts,
        "byReason": by_reason,
        **lists,
        "skippedCustomers": list(snapshot.skipped_customers),
        "errors": list(snapshot.errors),
        "warnings": list(snapshot.warnings),
    }


def csv_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per problem, columns CSV_COLUMNS."""
    rows: list[dict[str, Any]] = []
    for s in report["unassignedSubscriptions"]:
        rows.append(
            {
                "kind": "unassigned-subscription",
                "customerId": s["customerId"],
                "subscriptionId": s["subscriptionId"],
                "accountId": s["accountId"],
                "recordId": s["recordId"],
                "name": s["subscriptionName"],
                "reason": s["reason"],
                "fix": s["fix"],
            }
        )
    for a in report["accountsWithoutDefault"]:
        rows.append(
            {
                "kind": "account-without-default",
                "accountId": a["accountId"],
                "recordId": a["accountId"],
                "name": a["accountName"],
                "reason": "no-default-contract",
                "fix": a["fix"],
            }
        )
    for a in report["accountsWithSeveralDefaults"]:
        rows.append(
            {
                "kind": "account-with-several-defaults",
                "accountId": a["accountId"],
                "recordId": a["accountId"],
                "name": a["accountName"],
                "reason": "multiple-default-contracts",
                "fix": a["fix"],
            }
        )
    for c in report["inactiveDefaultContracts"]:
        rows.append(
            {
                "kind": "inactive-default-contract",
                "accountId": c["accountId"],
                "recordId": c["contractId"],
                "name": c["contractName"],
                "reason": "inactive-default",
                "fix": c["fix"],
            }
        )
    for p in report["unmappedProviderAccounts"]:
        rows.append(
            {
                "kind": "unmapped-provider-account",
                "customerId": p["customerId"],
                "recordId": p["providerAccountId"],
                "name": p["providerAccountName"],
                "reason": "unmapped-customer",
                "fix": p["fix"],
            }
        )
    for c in report["customersWithoutProviderAccount"]:
        rows.append(
            {
                "kind": "customer-without-provider-account",
                "customerId": c["customerId"],
                "name": c["customerName"],
                "reason": "unmapped-customer",
                "fix": c["fix"],
            }
        )
    for c in report["customersWithSeveralAccounts"]:
        rows.append(
            {
                "kind": "customer-with-several-accounts",
                "customerId": c["customerId"],
                "name": c["customerName"],
                "reason": "ambiguous-provider-account",
                "fix": c["fix"],
            }
        )
    for e in report["errors"]:
        rows.append(
            {
                "kind": "error",
                "customerId": e.get("customerId"),
                "reason": "error",
                "name": f"{e.get('service')} {e.get('status')} {e.get('code')}",
                "fix": str(e.get("message") or ""),
            }
        )
    return [{k: "" if row.get(k) is None else str(row.get(k)) for k in CSV_COLUMNS} for row in rows]


def to_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(report))
    return out.getvalue()
