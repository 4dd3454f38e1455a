"""The tenant report: what an admin works down to zero. Read-only, one bulk pass.

Counts first, then the lists: subscriptions the next sync would leave unassigned (with their
reason and fix), Accounts with a Provider Account and no active default contract, Accounts with
several active defaults, inactive default contracts, Provider Accounts without an Account,
Partner Center customers without a Provider Account, customers whose Provider Accounts map
to different Accounts, and Accounts a landing rule cannot serve (no contract, or several).

Every list is what a rule of `work365_fn.rules` returns (`plan`, `LISTED`, `resolve_account`,
`landing_contract`, `landing_outcome`, `is_eligible`): nothing here decides a rule again.
"""

from __future__ import annotations

import csv
import io
import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from work365_fn.errors import ApiError, AuthError, error_json
from work365_fn.logs import RunLog
from work365_fn.operations.reader import ReaderDeps, ReadOptions, Snapshot, read_tenant
from work365_fn.rules import (
    LISTED,
    AccountResolution,
    Decision,
    Reason,
    World,
    count_groups,
    count_reasons,
    fixes,
    is_eligible,
    landing_contract,
    landing_outcome,
    plan,
    resolve_account,
)
from work365_fn.rules.fixes import Namer, label
from work365_fn.rules.landing import Verdict
from work365_fn.rules.model import BillingContract, ProviderAccount
from work365_fn.rules.names import contract_names_read
from work365_fn.rules.summary import decision_json, setting_json, sorted_decisions
from work365_fn.rules.timestamps import format_timestamp

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

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
    "accountsLandingRulesCannotServe",
)

Item = dict[str, Any]


def run_report(
    reader: ReaderDeps,
    run_id: str | None = None,
    *,
    budget_seconds: float | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    monotonic: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Read the tenant once and build the report. Upstream failures give status `failed`.
    `monotonic`: the deadline's clock, the reader's unless one is given."""
    run_id = run_id or str(uuid.uuid4())
    rlog = RunLog(log, {"run_id": run_id})
    started = clock()
    if monotonic is not None:  # the deadline's clock is the one the read checks it with
        reader = replace(reader, monotonic=monotonic)
    deadline = reader.monotonic() + budget_seconds if budget_seconds else None
    rlog.info("report started")
    try:
        snapshot = read_tenant(reader, run_id, ReadOptions(names=True, deadline=deadline))
    except (ApiError, AuthError) as exc:
        rlog.error("report failed: %s", exc)
        return failed_report(run_id, started, clock(), error_json(exc, None))
    report = build_report(snapshot, started_at=started, finished_at=clock())
    rlog.info("report %s: %s", report["status"], report["counts"])
    return report


def failed_report(
    run_id: str, started: datetime, finished: datetime, error: dict[str, object]
) -> dict[str, Any]:
    lists: dict[str, list[Item]] = {name: [] for name in LISTS}
    return {
        "schemaVersion": SCHEMA_VERSION,
        "runId": run_id,
        "status": "failed",
        "startedAt": format_timestamp(started),
        "finishedAt": format_timestamp(finished),
        "setting": setting_json(None),
        "counts": report_counts(0, [], lists),
        "byReason": count_reasons([]),
        **lists,
        "skippedCustomers": [],
        "errors": [error],
        "warnings": [],
    }


# ---- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    """What one report is built from: the snapshot, the rules' indexes over it (`world`), the
    next sync's decisions, each customer's Account resolution, and the names to show."""

    snapshot: Snapshot
    world: World
    decisions: list[Decision]
    resolutions: dict[str, AccountResolution]  # lower-cased customer id -> rule 3's answer
    namer: Namer

    @classmethod
    def of(cls, snapshot: Snapshot) -> Tenant:
        world = snapshot.world()
        namer = Namer(
            provider_accounts=snapshot.provider_accounts,
            contracts=snapshot.contracts,
            account_names=snapshot.account_names,
            since=snapshot.setting.since,
            customer_names={c.id: c.company_name for c in snapshot.customers},
        ).with_contract_names(contract_names_read(snapshot.contracts, snapshot.records))
        resolutions = {
            customer: resolve_account(customer, pas)
            for customer, pas in world.pas_by_customer.items()
        }
        return cls(snapshot, world, plan(world), resolutions, namer)

    def customer_name(self, customer_id: str) -> str:
        return self.namer.customer_names.get(customer_id.lower(), "")


def build_report(
    snapshot: Snapshot, *, started_at: datetime, finished_at: datetime
) -> dict[str, Any]:
    """Pure over what was read: the next sync's plan, and the configuration problems."""
    tenant = Tenant.of(snapshot)
    lists: dict[str, list[Item]] = {
        "unassignedSubscriptions": unassigned_subscriptions(tenant),
        "accountsWithoutDefault": accounts_without_default(tenant),
        "accountsWithSeveralDefaults": accounts_with_several_defaults(tenant),
        "inactiveDefaultContracts": inactive_default_contracts(tenant),
        "unmappedProviderAccounts": unmapped_provider_accounts(tenant),
        "customersWithoutProviderAccount": customers_without_provider_account(tenant),
        "customersWithSeveralAccounts": customers_with_several_accounts(tenant),
        "accountsLandingRulesCannotServe": accounts_landing_rules_cannot_serve(tenant),
    }
    reasons = [d.reason for d in tenant.decisions]
    return {
        "schemaVersion": SCHEMA_VERSION,
        "runId": snapshot.run_id,
        "status": "partial" if snapshot.errors or snapshot.skipped_customers else "succeeded",
        "startedAt": format_timestamp(started_at),
        "finishedAt": format_timestamp(finished_at),
        "setting": setting_json(snapshot.setting),
        "counts": report_counts(len(snapshot.customers), reasons, lists),
        "byReason": count_reasons(reasons),
        **lists,
        "skippedCustomers": list(snapshot.skipped_customers),
        "errors": list(snapshot.errors),
        "warnings": list(snapshot.warnings),
    }


def report_counts(
    customers: int, reasons: Sequence[Reason], lists: Mapping[str, list[Item]]
) -> dict[str, int]:
    """`customers`; the sync's `subscriptions` and group counts (`count_groups`, the same
    numbers a sync run over the same read gives); `problems`, the items of all the lists;
    `backfillCandidates`, the existing subscriptions without a contract; one count per list."""
    return {
        "customers": customers,
        **count_groups(reasons),
        "problems": sum(len(items) for items in lists.values()),
        "backfillCandidates": sum(r is Reason.EXISTING_SUBSCRIPTION for r in reasons),
        **{name: len(lists[name]) for name in LISTS},
    }


def _ref(record_id: str, name: str) -> dict[str, str]:
    return {"id": record_id.lower(), "name": name}


def _by_id(items: Sequence[BillingContract] | Sequence[ProviderAccount]) -> list[Any]:
    return sorted(items, key=lambda i: i.id)


def unassigned_subscriptions(tenant: Tenant) -> list[Item]:
    """The subscriptions an admin acts on (`rules.LISTED`), in the summary's order."""
    out = []
    for d in sorted_decisions(tenant.decisions):
        if d.reason not in LISTED:
            continue
        row = decision_json(d)
        out.append(
            {
                "customerId": row["customerId"],
                "customerName": tenant.customer_name(d.subscription.customer_id),
                "subscriptionId": row["subscriptionId"],
                "subscriptionName": d.subscription.display_name,
                "recordId": row["recordId"],
                "recordName": d.record.name if d.record else "",
                "accountId": row["accountId"],
                "accountName": tenant.namer.account(d.account_id),
                "reason": row["reason"],
                "message": d.message,
                "fix": tenant.namer.fix(d),
            }
        )
    return out


def _inactive_defaults(tenant: Tenant) -> dict[str, list[BillingContract]]:
    """Default contracts that never count (not `is_eligible`) per lower-cased Account id."""
    out: dict[str, list[BillingContract]] = defaultdict(list)
    for c in tenant.snapshot.contracts:
        if c.is_default and not is_eligible(c) and c.account_id:
            out[c.account_id.lower()].append(c)
    return out


def accounts_without_default(tenant: Tenant) -> list[Item]:
    """Accounts a Provider Account points at whose subscriptions would land on no contract."""
    pas_by_account: dict[str, list[ProviderAccount]] = defaultdict(list)
    for pa in tenant.snapshot.provider_accounts:
        if pa.account_id:
            pas_by_account[pa.account_id.lower()].append(pa)
    inactive = _inactive_defaults(tenant)
    out = []
    for account, pas in sorted(pas_by_account.items()):
        reason, _, _ = landing_contract(tenant.world.defaults_by_account.get(account, []))
        if reason is not Reason.NO_DEFAULT_CONTRACT:
            continue
        name = tenant.namer.account(account)
        out.append(
            {
                "accountId": account,
                "accountName": name,
                "providerAccounts": [_ref(p.id, p.name) for p in _by_id(pas)],
                "inactiveDefaults": [_ref(c.id, c.name) for c in _by_id(inactive[account])],
                "fix": fixes.no_default_fix(name, inactive[account], None),
            }
        )
    return out


def accounts_with_several_defaults(tenant: Tenant) -> list[Item]:
    return [
        {
            "accountId": account,
            "accountName": tenant.namer.account(account),
            "contracts": [_ref(c.id, c.name) for c in _by_id(defaults)],
            "fix": fixes.multiple_defaults_fix(defaults),
        }
        for account, defaults in sorted(tenant.world.defaults_by_account.items())
        if landing_contract(defaults)[0] is Reason.MULTIPLE_DEFAULT_CONTRACTS
    ]


def inactive_default_contracts(tenant: Tenant) -> list[Item]:
    return [
        {
            "contractId": c.id.lower(),
            "contractName": c.name,
            "accountId": (c.account_id or "").lower() or None,
            "accountName": tenant.namer.account(c.account_id),
            "fix": fixes.inactive_default_fix(c),
        }
        for c in _by_id(tenant.snapshot.contracts)
        if c.is_default and not is_eligible(c)
    ]


def unmapped_provider_accounts(tenant: Tenant) -> list[Item]:
    """Provider Accounts without an Account (as rule 3 finds them), or without a customer id
    (no customer can ever resolve through them)."""
    without_account = [pa for r in tenant.resolutions.values() for pa in r.without_account]
    without_customer = [pa for pa in tenant.snapshot.provider_accounts if not pa.customer_id]
    return [
        {
            "providerAccountId": pa.id.lower(),
            "providerAccountName": pa.name,
            "customerId": (pa.customer_id or "").lower() or None,
            "fix": _unmapped_fix(pa),
        }
        for pa in _by_id(without_account + without_customer)
    ]


def _unmapped_fix(pa: ProviderAccount) -> str:
    if pa.customer_id:
        return fixes.provider_account_without_account_fix([pa])
    return (
        f"Set the customer tenant id (a GUID) on Provider Account '{label(pa.name, pa.id)}', "
        "and its Account."
    )


def customers_without_provider_account(tenant: Tenant) -> list[Item]:
    per_customer = Counter(s.customer_id.lower() for s in tenant.snapshot.subscriptions)
    return [
        {
            "customerId": c.id.lower(),
            "customerName": c.company_name,
            "subscriptions": per_customer[c.id.lower()],
            "fix": fixes.missing_provider_account_fix(c.id, c.company_name),
        }
        for c in sorted(tenant.snapshot.customers, key=lambda c: c.id)
        if c.id.lower() not in tenant.resolutions
    ]


def customers_with_several_accounts(tenant: Tenant) -> list[Item]:
    """Customers rule 3 cannot resolve to one Account (ambiguous-provider-account)."""
    return [
        {
            "customerId": customer,
            "customerName": tenant.customer_name(customer),
            "providerAccounts": [
                {
                    "id": p.id.lower(),
                    "name": p.name,
                    "accountId": (p.account_id or "").lower() or None,
                    "accountName": tenant.namer.account(p.account_id),
                }
                for p in _by_id(resolution.provider_accounts)
            ],
            "fix": fixes.ambiguous_fix(resolution.provider_accounts, tenant.namer.account_names),
        }
        for customer, resolution in sorted(tenant.resolutions.items())
        if resolution.problem is Reason.AMBIGUOUS_PROVIDER_ACCOUNT
    ]


def accounts_landing_rules_cannot_serve(tenant: Tenant) -> list[Item]:
    """Accounts where a landing rule decided a subscription but found no contract, or several
    without one default among them (no-landing-contract, multiple-landing-contracts): one item
    per Account and rule, with the contracts the rule selected. Empty without rules."""
    world = tenant.world
    grouped: dict[tuple[str, int], list[Decision]] = defaultdict(list)
    verdicts: dict[tuple[str, int], Verdict] = {}
    for d in tenant.decisions:
        if d.reason not in _CANNOT_SERVE or d.account_id is None:
            continue
        verdict = landing_outcome(world, d.subscription, d.account_id).verdict
        assert verdict is not None  # these reasons come from a rule
        key = (d.account_id, verdict.rule.number)
        grouped[key].append(d)
        verdicts[key] = verdict
    out = []
    for (account, number), decisions in sorted(grouped.items()):
        verdict = verdicts[(account, number)]
        name = tenant.namer.account(account)
        out.append(
            {
                "accountId": account,
                "accountName": name,
                "rule": verdict.rule.number,
                "ruleName": verdict.rule.name,
                "reason": decisions[0].reason.value,
                "contracts": [_ref(c.id, c.name) for c in _by_id(list(verdict.candidates))],
                "subscriptions": sorted(d.subscription.id.lower() for d in decisions),
                "fix": tenant.namer.fix(decisions[0]),
            }
        )
    return out


_CANNOT_SERVE = frozenset({Reason.NO_LANDING_CONTRACT, Reason.MULTIPLE_LANDING_CONTRACTS})


# ---- CSV -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvKind:
    """How the items of one list become CSV rows: `columns` maps a CSV column to the item's key;
    `reason` is the row's reason when the item has none of its own."""

    list_name: str
    kind: str
    columns: Mapping[str, str]
    reason: str = ""


_ACCOUNT = {"accountId": "accountId", "recordId": "accountId", "name": "accountName"}

CSV_KINDS = (
    CsvKind(
        "unassignedSubscriptions",
        "unassigned-subscription",
        {
            "customerId": "customerId",
            "subscriptionId": "subscriptionId",
            "accountId": "accountId",
            "recordId": "recordId",
            "name": "subscriptionName",
            "reason": "reason",
        },
    ),
    CsvKind(
        "accountsWithoutDefault", "account-without-default", _ACCOUNT, Reason.NO_DEFAULT_CONTRACT
    ),
    CsvKind(
        "accountsWithSeveralDefaults",
        "account-with-several-defaults",
        _ACCOUNT,
        Reason.MULTIPLE_DEFAULT_CONTRACTS,
    ),
    CsvKind(
        "inactiveDefaultContracts",
        "inactive-default-contract",
        {"accountId": "accountId", "recordId": "contractId", "name": "contractName"},
        "inactive-default",
    ),
    CsvKind(
        "unmappedProviderAccounts",
        "unmapped-provider-account",
        {
            "customerId": "customerId",
            "recordId": "providerAccountId",
            "name": "providerAccountName",
        },
        Reason.UNMAPPED_CUSTOMER,
    ),
    CsvKind(
        "customersWithoutProviderAccount",
        "customer-without-provider-account",
        {"customerId": "customerId", "name": "customerName"},
        Reason.UNMAPPED_CUSTOMER,
    ),
    CsvKind(
        "customersWithSeveralAccounts",
        "customer-with-several-accounts",
        {"customerId": "customerId", "name": "customerName"},
        Reason.AMBIGUOUS_PROVIDER_ACCOUNT,
    ),
    CsvKind(
        "accountsLandingRulesCannotServe",
        "account-landing-rule-cannot-serve",
        {**_ACCOUNT, "reason": "reason"},
    ),
)


def csv_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per problem (every list item, then every error), columns CSV_COLUMNS."""
    rows: list[dict[str, Any]] = []
    for kind in CSV_KINDS:
        for item in report[kind.list_name]:
            row = {"kind": kind.kind, "reason": kind.reason, "fix": item["fix"]}
            rows.append(row | {column: item[key] for column, key in kind.columns.items()})
    rows.extend(_error_row(e) for e in report["errors"])
    return [{k: "" if row.get(k) is None else str(row.get(k)) for k in CSV_COLUMNS} for row in rows]


def _error_row(error: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "error",
        "customerId": error.get("customerId"),
        "reason": Reason.ERROR,
        "name": f"{error.get('service')} {error.get('status')} {error.get('code')}",
        "fix": str(error.get("message") or ""),
    }


def to_csv(report: dict[str, Any]) -> str:
    return write_csv(CSV_COLUMNS, csv_rows(report))


# A cell starting with one of these is read as a formula by Excel, LibreOffice Calc and Google
# Sheets. OWASP, "CSV Injection" (https://owasp.org/www-community/attacks/CSV_Injection): make
# sure no cell begins with =, +, -, @, tab (0x09) or carriage return (0x0D), by prefixing it with
# a single quote, and quote every cell. OWASP ASVS 5.0 requirement 1.2.10 (V1 Encoding and
# Sanitization) adds the NUL character and RFC 4180's quoting (sections 2.6 and 2.7).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\0")


def spreadsheet_text(cell: str) -> str:
    """A cell a spreadsheet shows as the text it is, never runs: a leading `'` before a formula
    trigger. Our CSVs hold ids, names, reasons and sentences: no number, so no negative number
    loses its sign; a GUID never starts with a trigger."""
    return f"'{cell}" if cell.startswith(FORMULA_TRIGGERS) else cell


def write_csv(columns: Sequence[str], rows: Iterable[Mapping[str, str]]) -> str:
    """Every CSV this service writes: a header, every field quoted (RFC 4180), every cell
    through `spreadsheet_text`."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow([spreadsheet_text(c) for c in columns])
    writer.writerows([spreadsheet_text(row.get(c, "")) for c in columns] for row in rows)
    return out.getvalue()
