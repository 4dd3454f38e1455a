"""One bulk, read-only pass over the tenant: the sync's Dataverse reads plus the Partner Center
listing, kept whole (customers with their names, every Is Default contract, Account names) for
the report and backfill. No per-subscription queries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from work365_fn.composition import Services
from work365_fn.operations.sync import RunLog, fetch_subscriptions
from work365_fn.rules import World
from work365_fn.rules.model import (
    AssociationSetting,
    BillingContract,
    Customer,
    PcSubscription,
    ProviderAccount,
    SubscriptionRecord,
)

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """What one pass read. `references` holds the non-empty billing reference values per record
    id, when they were asked for."""

    run_id: str
    setting: AssociationSetting
    warnings: list[str]
    provider_accounts: list[ProviderAccount]
    contracts: list[BillingContract]  # every contract flagged Is Default, active or not
    records: list[SubscriptionRecord]
    customers: list[Customer]
    subscriptions: list[PcSubscription]
    account_names: dict[str, str] = field(default_factory=dict)
    references: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: list[dict[str, object]] = field(default_factory=list)
    skipped_customers: list[dict[str, str]] = field(default_factory=list)

    def world(self, *, create_missing: bool = False) -> World:
        return World(
            setting=self.setting,
            subscriptions=self.subscriptions,
            records=self.records,
            provider_accounts=self.provider_accounts,
            contracts=self.contracts,
            create_missing=create_missing,
        )


def read_tenant(
    services: Services,
    run_id: str,
    *,
    customer_ids: Sequence[str] = (),
    references: bool = False,
    names: bool = False,
    deadline: float | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> Snapshot:
    """Read everything once. Dataverse failures raise (nothing can be said without it); a
    customer whose subscriptions cannot be read is listed in `errors` and the pass goes on.
    After `deadline` (monotonic seconds) no new customer is read: it goes to skipped."""
    rlog = RunLog(log, {"run_id": run_id})
    repo = services.repository()
    setting, warnings = repo.read_setting(services.settings.associate_since)
    provider_accounts = repo.provider_accounts()
    contracts = repo.default_contracts()
    refs: dict[str, dict[str, str]] = {}
    if references:
        columns = services.schema.subscription.billing_references
        records = []
        for record, values in repo.subscription_rows(columns):
            records.append(record)
            present = {c: str(v) for c, v in values.items() if v not in (None, "")}
            if present:
                refs[record.id] = present
    else:
        records = repo.subscription_records()
    rlog.info(
        "dataverse: %d provider accounts, %d default contracts, %d subscription records",
        len(provider_accounts),
        len(contracts),
        len(records),
    )
    snapshot = Snapshot(
        run_id=run_id,
        setting=setting,
        warnings=warnings,
        provider_accounts=provider_accounts,
        contracts=contracts,
        records=records,
        customers=[],
        subscriptions=[],
        references=refs,
    )
    _read_partner_center(services, snapshot, customer_ids, deadline, monotonic, rlog)
    if names:
        wanted = {pa.account_id for pa in provider_accounts if pa.account_id}
        wanted |= {c.account_id for c in contracts if c.account_id}
        wanted |= {r.account_id for r in records if r.account_id}
        snapshot.account_names = repo.account_names(sorted(a for a in wanted if a))
    return snapshot


def _read_partner_center(
    services: Services,
    snapshot: Snapshot,
    customer_ids: Sequence[str],
    deadline: float | None,
    monotonic: Callable[[], float],
    rlog: RunLog,
) -> None:
    pc = services.partner_center(snapshot.run_id)
    if customer_ids:
        customers = [Customer(id=c.lower()) for c in customer_ids]
    else:
        customers = list(pc.iter_customers())
    snapshot.customers = customers
    rlog.info("partner center: %d customers", len(customers))
    subscriptions, errors, skipped = fetch_subscriptions(
        pc, customers, services.settings.concurrency, deadline, monotonic, rlog
    )
    snapshot.subscriptions.extend(subscriptions)
    snapshot.errors.extend(errors)
    snapshot.skipped_customers.extend(skipped)
