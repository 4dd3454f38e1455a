"""Diagnose one Partner Center customer or one subscription, in Work 365's troubleshooting order:

1. the Admin Hub setting and the cutoff in force (and, for a subscription, its record and age);
2. the Account's contracts, with Is Default and state;
3. the Provider Account -> Account mapping (missing; a Provider Account without Account; several
   Provider Accounts mapping the customer to different Accounts; a subscription record under
   another Account);
4. multiple active defaults.

Each check: `{"check", "ok", "records": [{"table", "id", "name"}], "fix", "detail"}`. The
subscriptions' reasons come from `association.decide` itself (the rules are never re-implemented
here). Read-only, with targeted queries: nothing is read for other customers, except when a
subscription's customer is unknown (then Partner Center customers are searched for it).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from work365_fn.adapters.dataverse import odata_guid, odata_string
from work365_fn.adapters.dataverse_repository import lookup
from work365_fn.adapters.partner_center import PartnerCenterClient, is_no_relationship
from work365_fn.composition import Services
from work365_fn.errors import ApiError, AuthError, NotFoundError, error_json
from work365_fn.operations.sync import RunLog
from work365_fn.rules import Decision, World, decide, fixes
from work365_fn.rules.fixes import Namer, label
from work365_fn.rules.model import (
    AssociationSetting,
    BillingContract,
    Customer,
    PcSubscription,
    ProviderAccount,
    SubscriptionRecord,
    norm_id,
)
from work365_fn.rules.summary import decision_json
from work365_fn.rules.timestamps import format_timestamp

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class DiagnoseRequest:
    customer_id: str | None = None
    subscription_id: str | None = None

    def __post_init__(self) -> None:
        if not self.customer_id and not self.subscription_id:
            raise ValueError("give a customer id or a subscription id")
        for value in (self.customer_id, self.subscription_id):
            if value:
                norm_id(value)  # ValueError on anything that is not a GUID


@dataclass
class Check:
    check: str
    ok: bool
    records: list[dict[str, Any]] = field(default_factory=list)
    fix: str = ""
    detail: str = ""
    skipped: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "check": self.check,
            "ok": self.ok,
            "records": self.records,
            "fix": self.fix if not self.ok else "",
            "detail": self.detail,
        }
        if self.skipped:
            out["skipped"] = True
        return out


def record_ref(table: str, record_id: str | None, name: str, **extra: Any) -> dict[str, Any]:
    return {"table": table, "id": (record_id or "").lower() or None, "name": name, **extra}


def run_diagnose(
    services: Services,
    request: DiagnoseRequest,
    run_id: str | None = None,
    *,
    budget_seconds: float | None = None,
    monotonic: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """The diagnosis as JSON. Upstream failures are in `errors` and make `ok` false."""
    run_id = run_id or str(uuid.uuid4())
    rlog = RunLog(log, {"run_id": run_id})
    monotonic = monotonic or services.monotonic  # the services' clock unless one is given
    deadline = monotonic() + budget_seconds if budget_seconds else None
    rlog.info("diagnose customer %s subscription %s", request.customer_id, request.subscription_id)
    diagnosis = _Diagnosis(services, request, run_id, rlog, deadline, monotonic)
    try:
        diagnosis.run()
    except (ApiError, AuthError) as exc:
        rlog.error("diagnose failed: %s", exc)
        diagnosis.errors.append(error_json(exc, diagnosis.customer_id))
        diagnosis.fatal = True
    return diagnosis.to_json()


class _Diagnosis:
    def __init__(
        self,
        services: Services,
        request: DiagnoseRequest,
        run_id: str,
        rlog: RunLog,
        deadline: float | None,
        monotonic: Callable[[], float],
    ) -> None:
        self.services = services
        self.schema = services.schema
        self.repo = services.repository()
        self.request = request
        self.run_id = run_id
        self.rlog = rlog
        self.deadline = deadline
        self.monotonic = monotonic
        self.customer_id = request.customer_id.lower() if request.customer_id else None
        self.subscription_id = request.subscription_id.lower() if request.subscription_id else None
        self.customer: Customer | None = None
        self.setting: AssociationSetting | None = None
        self.checks: list[Check] = []
        self.decisions: list[Decision] = []
        self.fixes: dict[str, str] = {}
        self.errors: list[dict[str, object]] = []
        self.warnings: list[str] = []
        self.fatal = False

    # ---- reads ---------------------------------------------------------------------------

    def run(self) -> None:
        setting, warnings = self.repo.read_setting(self.services.settings.associate_since)
        self.setting = setting
        self.warnings.extend(warnings)
        pc = self.services.partner_center(self.run_id)

        records: list[SubscriptionRecord] = []
        if self.subscription_id:
            records = [
                r
                for r, _ in self.repo.subscription_rows(
                    filter=(
                        f"{self.schema.subscription.provider_subscription_id} eq "
                        f"{odata_string(self.subscription_id)}"
                    )
                )
            ]
            subs = self._find_subscription(pc, records)
            if subs and self.customer is None and self.customer_id:
                self.customer = pc.customer(self.customer_id)
        else:
            assert self.customer_id is not None
            subs = self._customer_subscriptions(pc, self.customer_id)
            records = self.repo.records_for_subscriptions([s.id for s in subs])

        pas: list[ProviderAccount] = []
        if self.customer_id:
            t = self.schema.provider_account
            pas = self.repo.provider_accounts(
                f"{t.customer_id} eq {odata_string(self.customer_id)}"
            )
        mapped = sorted({pa.account_id.lower() for pa in pas if pa.account_id})
        contracts = self._contracts_of(mapped)
        accounts = set(mapped) | {r.account_id.lower() for r in records if r.account_id}
        names = self.repo.account_names(sorted(accounts)) if accounts else {}

        world = World(
            setting=setting,
            subscriptions=subs,
            records=records,
            provider_accounts=pas,
            contracts=contracts,
            create_missing=self.services.settings.create_missing,
        )
        self.decisions = [decide(world, s) for s in subs]
        namer = Namer(
            provider_accounts=pas,
            contracts=contracts,
            account_names=names,
            since=setting.since,
            all_contracts=True,
            customer_names=(
                {self.customer.id: self.customer.company_name} if self.customer else None
            ),
        )
        self.fixes = {d.subscription.id: namer.todo(d) for d in self.decisions}
        self._checks(setting, records, pas, mapped, contracts, names)

    def _customer_subscriptions(
        self, pc: PartnerCenterClient, customer_id: str
    ) -> list[PcSubscription]:
        try:
            self.customer = pc.customer(customer_id)
            return pc.subscriptions(customer_id)
        except NotFoundError:
            self._partner_center_check(
                False,
                f"Partner Center has no customer {customer_id}",
                "Check the customer tenant id: it must be a customer of this partner tenant.",
            )
        except ApiError as exc:
            if not is_no_relationship(exc):
                raise
            self.errors.append(error_json(exc, customer_id))
            self._partner_center_check(
                False,
                f"no reseller relationship with customer {customer_id} (403 20002)",
                "Re-establish the reseller relationship in Partner Center, or remove the "
                "customer's Provider Account.",
            )
        return []

    def _find_subscription(
        self, pc: PartnerCenterClient, records: Sequence[SubscriptionRecord]
    ) -> list[PcSubscription]:
        """The Partner Center subscription, looked for under the given customer, else under the
        customers mapped to the record's Account, else under every customer."""
        assert self.subscription_id is not None
        tried: set[str] = set()
        candidates: list[str] = []
        if self.customer_id:
            candidates = [self.customer_id]
        else:
            accounts = sorted({r.account_id.lower() for r in records if r.account_id})
            if accounts:
                pas = self.repo.provider_accounts_of_accounts(accounts)
                candidates = sorted({pa.customer_id for pa in pas if pa.customer_id})
        for customer_id in candidates:
            tried.add(customer_id)
            found = self._subscription_of(pc, customer_id)
            if found is not None:
                return [found]
        if self.customer_id:
            return self._not_in_partner_center(f"customer {self.customer_id}")
        scanned = self._scan_customers(pc, tried)
        if scanned is not None:
            return [scanned]
        return self._not_in_partner_center("any customer")

    def _subscription_of(self, pc: PartnerCenterClient, customer_id: str) -> PcSubscription | None:
        try:
            subs = pc.subscriptions(customer_id)
        except ApiError as exc:
            if exc.status in (403, 404):
                return None
            raise
        for sub in subs:
            if sub.id.lower() == self.subscription_id:
                self.customer_id = sub.customer_id.lower()
                return sub
        return None

    def _scan_customers(self, pc: PartnerCenterClient, tried: set[str]) -> PcSubscription | None:
        customers = [c for c in pc.iter_customers() if c.id.lower() not in tried]
        self.rlog.info(
            "searching %d customers for subscription %s", len(customers), self.subscription_id
        )
        step = max(1, self.services.settings.concurrency) * 4
        with ThreadPoolExecutor(max_workers=max(1, self.services.settings.concurrency)) as pool:
            for start in range(0, len(customers), step):
                if self.deadline is not None and self.monotonic() >= self.deadline:
                    self.warnings.append(
                        f"searched {start} of {len(customers)} customers before the time budget "
                        "ran out: pass the customer id with the subscription id"
                    )
                    return None
                chunk = customers[start : start + step]
                for found in pool.map(lambda c: self._subscription_of(pc, c.id), chunk):
                    if found is not None:
                        self.customer = next(
                            (c for c in chunk if c.id.lower() == found.customer_id.lower()), None
                        )
                        return found
        return None

    def _not_in_partner_center(self, where: str) -> list[PcSubscription]:
        self._partner_center_check(
            False,
            f"Partner Center lists subscription {self.subscription_id} under {where}",
            "Check the subscription id (and the customer id): only subscriptions Partner Center "
            "lists are associated.",
        )
        return []

    def _partner_center_check(self, ok: bool, detail: str, fix: str) -> None:
        refs = []
        if self.customer_id:
            refs.append(record_ref("partnerCenter.customer", self.customer_id, ""))
        self.checks.append(Check("partner-center", ok, refs, fix, detail))

    def _contracts_of(self, accounts: Sequence[str]) -> list[BillingContract]:
        if not accounts:
            return []
        t = self.schema.billing_contract
        flt = " or ".join(f"{lookup(t.account)} eq {odata_guid(a)}" for a in accounts)
        return self.repo.contracts(flt)

    # ---- checks --------------------------------------------------------------------------

    def _checks(
        self,
        setting: AssociationSetting,
        records: Sequence[SubscriptionRecord],
        pas: Sequence[ProviderAccount],
        mapped: Sequence[str],
        contracts: Sequence[BillingContract],
        names: dict[str, str],
    ) -> None:
        s = self.schema
        pc_checks = [c for c in self.checks if c.check == "partner-center"]
        checks: list[Check] = []

        # (1) the setting and the cutoff in force
        since = format_timestamp(setting.since) if setting.since else "none"
        checks.append(
            Check(
                "setting",
                setting.enabled,
                [record_ref(s.setting.table, setting.row_id, fixes.SETTING_NAME)],
                fixes.setting_fix(),
                f"{fixes.SETTING_NAME} = {'Yes' if setting.enabled else 'No'}; cutoff {since} "
                f"(from {setting.since_source or 'nowhere'})",
            )
        )
        if self.subscription_id:
            checks.extend(self._record_checks(records))

        def account_name(account_id: str) -> str:
            return label(names.get(account_id, ""), account_id)

        # (2) the Account's contracts, Is Default and state
        by_account: dict[str, list[BillingContract]] = {a: [] for a in mapped}
        for c in contracts:
            if c.account_id and c.account_id.lower() in by_account:
                by_account[c.account_id.lower()].append(c)
        contract_refs = [
            record_ref(
                s.billing_contract.table,
                c.id,
                c.name,
                accountId=(c.account_id or "").lower() or None,
                isDefault=c.is_default,
                active=c.active,
            )
            for c in sorted(contracts, key=lambda c: (c.account_id or "", c.id))
        ]
        missing = [
            a for a, cs in by_account.items() if not any(c.is_default and c.active for c in cs)
        ]
        if not mapped:
            checks.append(
                Check(
                    "contracts",
                    True,
                    [],
                    "",
                    "not checked: the customer maps to no Account (see the Provider Account "
                    "checks)",
                    skipped=True,
                )
            )
        else:
            checks.append(
                Check(
                    "contracts",
                    not missing,
                    contract_refs,
                    " ".join(
                        fixes.no_default_fix(
                            account_name(a),
                            [c for c in by_account[a] if c.is_default and not c.active],
                            by_account[a],
                        )
                        for a in missing
                    ),
                    "; ".join(
                        f"'{account_name(a)}': {len(by_account[a])} contracts, "
                        f"{sum(c.is_default and c.active for c in by_account[a])} active default"
                        for a in mapped
                    ),
                )
            )

        # (3) the Provider Account -> Account mapping
        customer = self.customer_id or ""
        pa_refs = [
            record_ref(
                s.provider_account.table,
                pa.id,
                pa.name,
                accountId=(pa.account_id or "").lower() or None,
            )
            for pa in sorted(pas, key=lambda p: p.id)
        ]
        if not customer:
            checks.append(
                Check(
                    "provider-account",
                    False,
                    [],
                    "Pass the customer id with the subscription id.",
                    "the subscription's Partner Center customer is unknown",
                )
            )
        else:
            checks.append(
                Check(
                    "provider-account",
                    bool(pas),
                    pa_refs,
                    fixes.missing_provider_account_fix(
                        customer, self.customer.company_name if self.customer else ""
                    ),
                    f"{len(pas)} Provider Account(s) with customer tenant id {customer}",
                )
            )
        without = [pa for pa in pas if not pa.account_id]
        checks.append(
            Check(
                "provider-account-account",
                not without,
                [r for r in pa_refs if r["accountId"] is None],
                fixes.provider_account_without_account_fix(without) if without else "",
                (
                    f"{len(without)} of {len(pas)} Provider Account(s) have no Account"
                    if pas
                    else "no Provider Account to check"
                ),
                skipped=not pas,
            )
        )
        checks.append(
            Check(
                "provider-accounts-agree",
                len(mapped) <= 1 and not (without and mapped),
                pa_refs if len(pas) > 1 else [],
                fixes.ambiguous_fix(pas, names),
                (
                    f"{len(pas)} Provider Accounts map the customer to "
                    f"{', '.join(repr(account_name(a)) for a in mapped) or 'no Account'}"
                    if len(pas) > 1
                    else "one Provider Account at most"
                ),
                skipped=len(pas) < 2,
            )
        )
        if len(mapped) == 1:
            account = mapped[0]
            wrong = [r for r in records if r.account_id and r.account_id.lower() != account]
            checks.append(
                Check(
                    "subscription-account",
                    not wrong,
                    [
                        record_ref(
                            s.subscription.table,
                            r.id,
                            r.name,
                            accountId=(r.account_id or "").lower() or None,
                        )
                        for r in wrong
                    ],
                    (
                        fixes.mismatch_fix(
                            label(wrong[0].name, wrong[0].id),
                            account_name((wrong[0].account_id or "").lower()),
                            account_name(account),
                        )
                        if len(wrong) == 1
                        else f"Move subscription records "
                        f"{fixes.quoted(label(r.name, r.id) for r in wrong)} to Account "
                        f"'{account_name(account)}', or correct the Provider Account's Account."
                    ),
                    f"{len(records)} subscription record(s), {len(wrong)} under another Account "
                    f"than '{account_name(account)}'",
                )
            )
        else:
            checks.append(
                Check(
                    "subscription-account",
                    True,
                    [],
                    "",
                    "not checked: the customer maps to no single Account",
                    skipped=True,
                )
            )

        # (4) multiple defaults
        several = {
            a: [c for c in cs if c.is_default and c.active]
            for a, cs in by_account.items()
            if sum(c.is_default and c.active for c in cs) > 1
        }
        checks.append(
            Check(
                "multiple-defaults",
                not several,
                [
                    record_ref(s.billing_contract.table, c.id, c.name, accountId=a)
                    for a, cs in sorted(several.items())
                    for c in sorted(cs, key=lambda c: c.id)
                ],
                " ".join(fixes.multiple_defaults_fix(cs) for _, cs in sorted(several.items())),
                (
                    "; ".join(
                        f"'{account_name(a)}' has {len(cs)} active defaults"
                        for a, cs in sorted(several.items())
                    )
                    or "no Account has more than one active default"
                ),
                skipped=not mapped,
            )
        )
        self.checks = checks + pc_checks

    def _record_checks(self, records: Sequence[SubscriptionRecord]) -> list[Check]:
        """For one subscription: its Dataverse record exists once, has no contract yet, and was
        created on or after the cutoff."""
        s = self.schema.subscription
        setting = self.setting
        assert setting is not None
        refs = [
            record_ref(
                s.table,
                r.id,
                r.name,
                billingContractId=(r.billing_contract_id or "").lower() or None,
                createdOn=format_timestamp(r.created_on) if r.created_on else None,
            )
            for r in records
        ]
        if len(records) > 1:
            return [
                Check(
                    "subscription-record",
                    False,
                    refs,
                    "Merge or deactivate the duplicate subscription records.",
                    f"{len(records)} records carry provider subscription id {self.subscription_id}",
                )
            ]
        if not records:
            return [
                Check(
                    "subscription-record",
                    self.services.settings.create_missing,
                    [],
                    fixes.not_synced_fix(),
                    "no Dataverse record carries this provider subscription id"
                    + (
                        " (create mode will create it)"
                        if self.services.settings.create_missing
                        else ""
                    ),
                )
            ]
        record = records[0]
        checks = [
            Check(
                "subscription-record",
                True,
                refs,
                "",
                f"record '{label(record.name, record.id)}'"
                + (
                    f" already has Billing Contract {record.billing_contract_id.lower()}"
                    if record.billing_contract_id
                    else " has no Billing Contract yet"
                ),
            )
        ]
        if not record.billing_contract_id:
            old = bool(
                setting.since and (record.created_on is None or record.created_on < setting.since)
            )
            created = format_timestamp(record.created_on) if record.created_on else "unknown"
            checks.append(
                Check(
                    "subscription-is-new",
                    not old,
                    refs,
                    fixes.existing_fix(setting.since),
                    f"record created {created}, cutoff "
                    f"{format_timestamp(setting.since) if setting.since else 'none'}",
                )
            )
        return checks

    # ---- output --------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        setting = self.setting
        subscriptions = []
        for d in sorted(self.decisions, key=lambda d: d.subscription.id):
            row = decision_json(d)
            row["subscriptionName"] = d.subscription.display_name
            row["recordName"] = d.record.name if d.record else ""
            row.setdefault("message", "")
            row["fix"] = self.fixes.get(d.subscription.id, "")
            subscriptions.append(row)
        ok = not self.fatal and all(c.ok for c in self.checks)
        status = "failed" if self.fatal else "partial" if self.errors else "succeeded"
        return {
            "schemaVersion": SCHEMA_VERSION,
            "runId": self.run_id,
            "status": status,
            "ok": ok,
            "customerId": self.customer_id,
            "customerName": self.customer.company_name if self.customer else "",
            "subscriptionId": self.subscription_id,
            "setting": {
                "associateDefaultBillingContract": bool(setting and setting.enabled),
                "since": format_timestamp(setting.since) if setting and setting.since else None,
                "sinceSource": setting.since_source if setting else None,
            },
            "checks": [c.to_json() for c in self.checks],
            "subscriptions": subscriptions,
            "errors": self.errors,
            "warnings": self.warnings,
        }


def failed_checks(diagnosis: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in diagnosis["checks"] if not c["ok"]]


__all__ = ["DiagnoseRequest", "failed_checks", "run_diagnose"]
