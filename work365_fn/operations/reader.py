"""The one read of a tenant, for sync, report, backfill and every fan-out batch.

A whole-tenant read is a constant number of paged queries (Dataverse first, then the Partner
Center listing); a scoped read (some customers: scoped or incremental runs, fan-out batches)
reads those customers' subscriptions first, then only their Dataverse rows. Dataverse failures
raise (nothing can be decided without it); a customer whose subscriptions cannot be read goes to
`errors` and the read goes on; after the deadline no new customer is read (`skippedCustomers`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from work365_fn.adapters.dataverse_repository import Repository
from work365_fn.adapters.partner_center import PartnerCenterClient, is_no_relationship
from work365_fn.adapters.transport import failure_fields
from work365_fn.errors import ApiError, AuthError, Work365Error, error_json
from work365_fn.logs import RunLog, submit_in_context
from work365_fn.rules import World
from work365_fn.rules.fixes import cutoff_warnings
from work365_fn.rules.landing import LandingRules
from work365_fn.rules.model import (
    AssociationSetting,
    BillingContract,
    Customer,
    PcSubscription,
    ProviderAccount,
    SubscriptionRecord,
    norm_id,
)
from work365_fn.rules.names import account_names_read, unnamed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReaderDeps:
    """What a read needs: the Dataverse repository, a Partner Center client per run, and the
    cutoff override (WORK365_ASSOCIATE_SINCE)."""

    repository: Repository
    partner_center: Callable[[str], PartnerCenterClient]  # correlation (run) id -> client
    associate_since: datetime | None
    concurrency: int = 8
    monotonic: Callable[[], float] = time.monotonic
    create_missing: bool = False  # WORK365_CREATE_MISSING: decides not-synced subscriptions
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # is the cutoff in the future?
    # WORK365_LANDING_RULES_FILE: with rules, every active contract is read too (with the
    # columns the rules select by), and the rules decide first. None: today's reads exactly.
    landing: LandingRules | None = None

    @property
    def landing_columns(self) -> tuple[str, ...] | None:
        return self.landing.columns if self.landing is not None else None


@dataclass(frozen=True)
class ReadOptions:
    scope: Sequence[str] | None = None  # customer ids; None: every customer
    reference_columns: Sequence[str] = ()  # billing reference columns to keep (backfill)
    names: bool = False  # Account names (report)
    deadline: float | None = None  # monotonic seconds: no new customer after it


@dataclass
class Snapshot:
    """What one read found. `contracts`: every Is Default contract of the Accounts read, active
    or not (the rules ignore inactive ones; the report lists them). `references`: non-empty
    billing reference values per record id, when asked for."""

    run_id: str
    setting: AssociationSetting
    warnings: list[str]
    provider_accounts: list[ProviderAccount] = field(default_factory=list)
    contracts: list[BillingContract] = field(default_factory=list)
    records: list[SubscriptionRecord] = field(default_factory=list)
    customers: list[Customer] = field(default_factory=list)
    subscriptions: list[PcSubscription] = field(default_factory=list)
    account_names: dict[str, str] = field(default_factory=dict)
    references: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: list[dict[str, object]] = field(default_factory=list)
    skipped_customers: list[dict[str, str]] = field(default_factory=list)
    create_missing: bool = False
    landing: LandingRules | None = None  # the rules the read was made for (ReaderDeps.landing)

    def customer_names(self) -> dict[str, str]:
        """Lower-case customer id -> Partner Center company name, where the read knows it (a
        customer listing carries the names; a scoped read gets them from operations/
        customer_names.py)."""
        return {c.id.lower(): c.company_name for c in self.customers if c.company_name}

    def world(self, *, create_missing: bool | None = None) -> World:
        """The rules' input; create mode as the read was told unless given."""
        if create_missing is None:
            create_missing = self.create_missing
        return World(
            setting=self.setting,
            subscriptions=self.subscriptions,
            records=self.records,
            provider_accounts=self.provider_accounts,
            contracts=self.contracts,
            create_missing=create_missing,
            landing=self.landing,
        )


def read_setting(deps: ReaderDeps, rlog: RunLog) -> tuple[AssociationSetting, list[str]]:
    """The Admin Hub setting and the cutoff in force (with the warnings that go with it: one
    more when the cutoff is in the future, `cutoff_warnings`)."""
    setting, warnings = deps.repository.read_setting(deps.associate_since)
    warnings = [*warnings, *cutoff_warnings(setting, deps.clock())]
    rlog.info(
        "setting: associate default billing contract = %s, cutoff %s (%s)",
        setting.enabled,
        setting.since.isoformat() if setting.since else None,
        setting.since_source,
    )
    return setting, warnings


def read_tenant(
    deps: ReaderDeps,
    run_id: str,
    options: ReadOptions = ReadOptions(),
    *,
    setting: tuple[AssociationSetting, list[str]] | None = None,
) -> Snapshot:
    """Read what the rules need (and what `options` asks for besides). `setting`: the setting
    already read by the caller, else it is read first."""
    found, warnings = setting or read_setting(deps, RunLog(log, {"run_id": run_id}))
    snapshot = Snapshot(
        run_id=run_id,
        setting=found,
        warnings=list(warnings),
        create_missing=deps.create_missing,
    )
    fill(deps, snapshot, options)
    return snapshot


def fill(deps: ReaderDeps, snapshot: Snapshot, options: ReadOptions) -> None:
    """`read_tenant` into a snapshot the caller holds: when a read raises, what was read
    before (a scoped run's Partner Center errors and skipped customers) is still in it."""
    rlog = RunLog(log, {"run_id": snapshot.run_id})
    snapshot.landing = deps.landing
    if options.scope is None:
        _read_dataverse(deps, snapshot, options, None)
        _read_partner_center(deps, snapshot, None, options.deadline, rlog)
    else:
        _read_partner_center(deps, snapshot, options.scope, options.deadline, rlog)
        _read_dataverse(deps, snapshot, options, options.scope)
    rlog.info(
        "dataverse: %d provider accounts, %d default contracts, %d subscription records",
        len(snapshot.provider_accounts),
        len(snapshot.contracts),
        len(snapshot.records),
    )
    if options.names:
        # The reads carried the names (formatted values); only Accounts they left unnamed are
        # looked up (none in a consistent tenant).
        names = account_names_read(snapshot.provider_accounts, snapshot.contracts, snapshot.records)
        names.update(read_account_names(deps, unnamed(_accounts_named(snapshot), names)))
        snapshot.account_names = names


def _read_dataverse(
    deps: ReaderDeps, snapshot: Snapshot, options: ReadOptions, scope: Sequence[str] | None
) -> None:
    repo = deps.repository
    if scope is None:
        snapshot.provider_accounts = repo.provider_accounts()
        snapshot.contracts = repo.default_contracts(deps.landing_columns)
    elif snapshot.subscriptions:
        snapshot.provider_accounts = repo.provider_accounts_of_customers(scope)
        accounts = [pa.account_id for pa in snapshot.provider_accounts if pa.account_id]
        snapshot.contracts = repo.default_contracts_of_accounts(accounts, deps.landing_columns)
    columns = list(options.reference_columns)
    if scope is None and not columns:
        snapshot.records = repo.subscription_records()
        return
    if scope is None:
        rows = repo.subscription_rows(columns)
    else:
        rows = repo.rows_for_subscriptions([s.id for s in snapshot.subscriptions], columns)
    for record, values in rows:
        snapshot.records.append(record)
        present = {c: str(v) for c, v in values.items() if v not in (None, "")}
        if present:
            snapshot.references[record.id] = present


def read_account_names(deps: ReaderDeps, account_ids: Sequence[str]) -> dict[str, str]:
    """The names of these Accounts (lower-case id -> name): the fallback for Accounts no read
    named through a lookup's formatted value. The Account table's id and primary name column
    only, `In` queries of 100 ids (nothing is read for no Account). Raises like any Dataverse
    read."""
    return deps.repository.account_names(account_ids) if account_ids else {}


def _accounts_named(snapshot: Snapshot) -> list[str]:
    wanted = {pa.account_id for pa in snapshot.provider_accounts if pa.account_id}
    wanted |= {c.account_id for c in snapshot.contracts if c.account_id}
    wanted |= {r.account_id for r in snapshot.records if r.account_id}
    return sorted(a for a in wanted if a)


def _read_partner_center(
    deps: ReaderDeps,
    snapshot: Snapshot,
    scope: Sequence[str] | None,
    deadline: float | None,
    rlog: RunLog,
) -> None:
    """Subscriptions of the customers in `scope`, or of every customer (one paged listing)."""
    pc = deps.partner_center(snapshot.run_id)
    if scope is not None:
        customers = [Customer(id=norm_id(c)) for c in scope]
    else:
        customers = list(pc.iter_customers())
    snapshot.customers = customers
    rlog.info("partner center: %d customers", len(customers))
    subscriptions, errors, skipped = fetch_subscriptions(
        pc, customers, deps.concurrency, deadline, deps.monotonic, rlog
    )
    snapshot.subscriptions.extend(subscriptions)
    snapshot.errors.extend(errors)
    snapshot.skipped_customers.extend(skipped)


def fetch_subscriptions(
    pc: PartnerCenterClient,
    customers: Sequence[Customer],
    concurrency: int,
    deadline: float | None,
    monotonic: Callable[[], float],
    rlog: RunLog,
) -> tuple[list[PcSubscription], list[dict[str, object]], list[dict[str, str]]]:
    """Each customer's subscriptions, `concurrency` calls at a time: (subscriptions, `errors`
    items of customers that failed, `skippedCustomers` items of those not started before
    `deadline`). One failing customer never stops the others."""

    def fetch(customer: Customer) -> tuple[Customer, list[PcSubscription] | None, Exception | None]:
        if deadline is not None and monotonic() >= deadline:
            return customer, None, None
        try:
            return customer, pc.subscriptions(customer.id), None
        except (ApiError, AuthError) as exc:
            return customer, None, exc

    out: list[PcSubscription] = []
    errors: list[dict[str, object]] = []
    skipped: list[dict[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        # Each task runs in a copy of this context, so its log lines carry the run's ids.
        futures = [submit_in_context(pool, fetch, customer) for customer in customers]
        for future in futures:
            customer, subs, exc = future.result()
            if exc is not None:
                assert isinstance(exc, Work365Error)
                errors.append(error_json(exc, customer.id))
                _log_customer_failure(rlog, customer, exc)
            elif subs is None:
                skipped.append({"customerId": customer.id, "why": "deadline"})
            else:
                out.extend(subs)
    if skipped:
        rlog.warning(
            "run budget reached: %d customers skipped, the next run takes them", len(skipped)
        )
    return out, errors, skipped


def _log_customer_failure(rlog: RunLog, customer: Customer, exc: Exception) -> None:
    if isinstance(exc, ApiError) and is_no_relationship(exc):
        rlog.warning("customer %s: no reseller relationship (403 20002), skipped", customer.id)
    else:
        rlog.error(
            "customer %s: subscriptions failed: %s", customer.id, exc, extra=failure_fields(exc)
        )
