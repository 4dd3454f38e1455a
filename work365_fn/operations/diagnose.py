"""Diagnose one Partner Center customer or one subscription, in Work 365's troubleshooting order:

0. `partner-center`, only when Partner Center does not list the customer or the subscription (or
   has no reseller relationship with the customer): said first, since nothing else can help then;
1. the Admin Hub setting and the cutoff in force (and, for a subscription, its record and age);
2. the Account's contracts, with Is Default and state;
3. the Provider Account -> Account mapping (missing; a Provider Account without Account; several
   Provider Accounts mapping the customer to different Accounts; a subscription record under
   another Account);
4. multiple active defaults;
5. `credentials`, when the expiry of a client secret or certificate is known: fails from 7
   days before it expires (rules/expiry.py).

Each check: `{"check", "ok", "records": [{"table", "id", "name"}], "fix", "detail"}` (and
`"skipped": true` when an earlier finding decides). Every check is an explanation of a rule of
`work365_fn.rules` (`resolve_account`, `active_defaults`, `landing_contract`, `is_existing`), and
the subscriptions' reasons come from `plan` itself: no rule is re-implemented here, so a check
never says ok while a later one fails for the same Account. Read-only, with targeted queries:
nothing is read for other customers, except when a subscription's customer is unknown (then
Partner Center customers are searched for it).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from work365_fn.adapters.dataverse_repository import Repository
from work365_fn.adapters.partner_center import PartnerCenterClient, is_no_relationship
from work365_fn.errors import ApiError, AuthError, NotFoundError, error_json
from work365_fn.logs import run_context, submit_in_context
from work365_fn.operations.sync import RunLog
from work365_fn.rules import (
    AccountResolution,
    Decision,
    Reason,
    World,
    active_defaults,
    by_customer,
    is_eligible,
    is_existing,
    landing_contract,
    landing_trail,
    plan,
    resolve_account,
)
from work365_fn.rules import fixes as sentences
from work365_fn.rules.expiry import (
    FAIL_DAYS,
    CredentialExpiry,
    expiry_failures,
    expiry_fixes,
)
from work365_fn.rules.fixes import Namer, label
from work365_fn.rules.landing import LandingRules, Verdict, verdict_json
from work365_fn.rules.model import (
    AssociationSetting,
    BillingContract,
    Customer,
    PcSubscription,
    ProviderAccount,
    SubscriptionRecord,
    norm_id,
)
from work365_fn.rules.summary import decision_json, setting_json
from work365_fn.rules.timestamps import format_timestamp

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

PARTNER_CENTER = "partner-center"


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


@dataclass(frozen=True)
class RecordTables:
    """The Dataverse table names the checks' record references carry."""

    setting: str
    subscription: str
    billing_contract: str
    provider_account: str


@dataclass(frozen=True)
class DiagnoseDeps:
    repository: Repository
    partner_center: Callable[[str], PartnerCenterClient]  # correlation id -> client
    tables: RecordTables
    associate_since: datetime | None
    create_missing: bool
    concurrency: int = 8  # Partner Center calls in flight when searching customers
    monotonic: Callable[[], float] = time.monotonic  # the time budget of that search
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # is the cutoff in the future?
    landing: LandingRules | None = None  # WORK365_LANDING_RULES_FILE: shown per subscription
    # The credentials whose expiry is known: the `credentials` check (rules/expiry.py).
    credential_expiries: tuple[CredentialExpiry, ...] = ()


@dataclass
class DiagnosisCheck:
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


def skipped(check: str, detail: str) -> DiagnosisCheck:
    return DiagnosisCheck(check, True, [], "", detail, skipped=True)


def record_ref(table: str, record_id: str | None, name: str, **extra: Any) -> dict[str, Any]:
    return {"table": table, "id": (record_id or "").lower() or None, "name": name, **extra}


def failed_checks(diagnosis: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in diagnosis["checks"] if not c["ok"]]


# ---- the run -------------------------------------------------------------------------------


def run_diagnose(
    deps: DiagnoseDeps,
    request: DiagnoseRequest,
    run_id: str | None = None,
    *,
    budget_seconds: float | None = None,
) -> dict[str, Any]:
    """The diagnosis as JSON. Upstream failures are in `errors` and make `ok` false."""
    run_id = run_id or str(uuid.uuid4())
    rlog = RunLog(log, {"run_id": run_id})
    deadline = deps.monotonic() + budget_seconds if budget_seconds else None
    rlog.info("diagnose customer %s subscription %s", request.customer_id, request.subscription_id)
    diagnosis = _Diagnosis(deps, request, run_id, rlog, deadline)
    with run_context(run_id):
        try:
            diagnosis.run()
        except (ApiError, AuthError) as exc:
            rlog.error("diagnose failed: %s", exc)
            diagnosis.errors.append(error_json(exc, diagnosis.customer_id))
            diagnosis.fatal = True
    return diagnosis.to_json()


@dataclass(frozen=True)
class Findings:
    """What one diagnosis read, and the rules' answers over it: the input of every check."""

    tables: RecordTables
    setting: AssociationSetting
    now: datetime  # when the diagnosis started: a cutoff after it fails the setting check
    create_missing: bool
    subscription_id: str | None
    customer_id: str | None  # None: the subscription's customer is unknown
    customer_name: str
    customer_listed: bool  # False: Partner Center answered 404 for the customer
    records: Sequence[SubscriptionRecord]
    resolution: AccountResolution | None  # None without a customer
    contracts: Sequence[BillingContract]  # every contract of the Accounts the mapping names
    account_names: Mapping[str, str]
    # Why Partner Center cannot serve the customer (unknown, no reseller relationship): said
    # first by `partner-center`, so no later check advises mapping it. "" when it can.
    unreachable: str = ""
    defaults: Mapping[str, list[BillingContract]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", active_defaults(self.contracts))

    @property
    def accounts(self) -> list[str]:
        """Every Account the customer's Provider Accounts name (lower case, sorted)."""
        return self.resolution.accounts if self.resolution else []

    @property
    def provider_accounts(self) -> tuple[ProviderAccount, ...]:
        return self.resolution.provider_accounts if self.resolution else ()

    def account_name(self, account_id: str | None) -> str:
        return label(self.account_names.get((account_id or "").lower(), ""), account_id)

    def contracts_of(self, account_id: str) -> list[BillingContract]:
        return [c for c in self.contracts if (c.account_id or "").lower() == account_id]

    def defaults_of(self, account_id: str) -> list[BillingContract]:
        return self.defaults.get(account_id, [])

    def landing(self, account_id: str) -> Reason:
        """Rule 4 for one Account: DEFAULT_CONTRACT, NO_DEFAULT_CONTRACT or MULTIPLE_..."""
        return landing_contract(self.defaults_of(account_id))[0]


class _Diagnosis:
    """Reads what one diagnosis needs. Only the calling thread changes its state."""

    def __init__(
        self,
        deps: DiagnoseDeps,
        request: DiagnoseRequest,
        run_id: str,
        rlog: RunLog,
        deadline: float | None,
    ) -> None:
        self.deps = deps
        self.repo = deps.repository
        self.run_id = run_id
        self.rlog = rlog
        self.deadline = deadline
        self.started = deps.clock()
        self.customer_id = request.customer_id.lower() if request.customer_id else None
        self.subscription_id = request.subscription_id.lower() if request.subscription_id else None
        self.customer: Customer | None = None
        self.customer_listed = True
        self.unreachable = ""
        self.setting: AssociationSetting | None = None
        self.partner_center_checks: list[DiagnosisCheck] = []
        self.checks: list[DiagnosisCheck] = []
        self.decisions: list[Decision] = []
        self.fixes: dict[str, str] = {}
        self.namer: Namer | None = None
        self.trails: dict[str, tuple[Verdict, ...] | None] = {}
        self.errors: list[dict[str, object]] = []
        self.warnings: list[str] = []
        self.fatal = False

    def run(self) -> None:
        setting, warnings = self.repo.read_setting(self.deps.associate_since)
        self.setting = setting
        self.warnings.extend(warnings)
        pc = self.deps.partner_center(self.run_id)
        if self.subscription_id:
            subs, records = self._read_subscription(pc, self.subscription_id)
        else:
            assert self.customer_id is not None
            subs = self._customer_subscriptions(pc, self.customer_id)
            records = self.repo.records_for_subscriptions([s.id for s in subs])
        findings = self._read_mapping(setting, records)
        world = World(
            setting=setting,
            subscriptions=subs,
            records=records,
            provider_accounts=findings.provider_accounts,
            contracts=findings.contracts,
            create_missing=self.deps.create_missing,
            landing=self.deps.landing,
        )
        self.decisions = plan(world)
        self.trails = {d.subscription.id: landing_trail(world, d) for d in self.decisions}
        namer = Namer(
            provider_accounts=findings.provider_accounts,
            contracts=findings.contracts,
            account_names=findings.account_names,
            since=setting.since,
            all_contracts=True,
            customer_names=(
                {self.customer.id: self.customer.company_name} if self.customer else None
            ),
        )
        self.fixes = {d.subscription.id: namer.todo(d) for d in self.decisions}
        self.namer = namer
        # Partner Center first: when it does not list the customer, nothing below can help.
        self.checks = self.partner_center_checks + checks_of(findings)

    # ---- reads ---------------------------------------------------------------------------

    def _read_mapping(
        self, setting: AssociationSetting, records: Sequence[SubscriptionRecord]
    ) -> Findings:
        """The customer's Provider Accounts, the Accounts they name, and those Accounts'
        contracts and names."""
        resolution: AccountResolution | None = None
        if self.customer_id:
            pas = self.repo.provider_accounts_of_customers([self.customer_id])
            resolution = resolve_account(
                self.customer_id, by_customer(pas).get(self.customer_id, [])
            )
        accounts = resolution.accounts if resolution else []
        columns = self.deps.landing.columns if self.deps.landing else ()
        contracts = self.repo.contracts_of_accounts(accounts, columns) if accounts else []
        named = set(accounts) | {r.account_id.lower() for r in records if r.account_id}
        return Findings(
            tables=self.deps.tables,
            setting=setting,
            now=self.started,
            create_missing=self.deps.create_missing,
            subscription_id=self.subscription_id,
            customer_id=self.customer_id,
            customer_name=self.customer.company_name if self.customer else "",
            customer_listed=self.customer_listed,
            unreachable=self.unreachable,
            records=records,
            resolution=resolution,
            contracts=contracts,
            account_names=self.repo.account_names(sorted(named)) if named else {},
        )

    def _customer_subscriptions(
        self, pc: PartnerCenterClient, customer_id: str
    ) -> list[PcSubscription]:
        try:
            self.customer = pc.customer(customer_id)
            return pc.subscriptions(customer_id)
        except NotFoundError:
            self.customer_listed = False
            self.unreachable = f"Partner Center has no customer {customer_id}"
            self._partner_center_check(
                self.unreachable,
                "Check the customer tenant id: it must be a customer of this partner tenant.",
            )
        except ApiError as exc:
            if not is_no_relationship(exc):
                raise
            self.errors.append(error_json(exc, customer_id))
            self.unreachable = f"no reseller relationship with customer {customer_id} (403 20002)"
            self._partner_center_check(
                self.unreachable,
                "Re-establish the reseller relationship in Partner Center, or remove the "
                "customer's Provider Account.",
            )
        return []

    def _read_subscription(
        self, pc: PartnerCenterClient, subscription_id: str
    ) -> tuple[list[PcSubscription], list[SubscriptionRecord]]:
        """The subscription's records, and the subscription as Partner Center lists it: under
        the given customer, else under the customers mapped to the record's Account, else under
        every customer."""
        records = self.repo.records_for_subscriptions([subscription_id])
        if self.customer_id:
            subs = self._customer_subscriptions(pc, self.customer_id)
            found = [s for s in subs if s.id.lower() == subscription_id]
            if not found and not self.partner_center_checks:
                self._not_in_partner_center(f"customer {self.customer_id}")
            return found, records
        hit = self._search(pc, subscription_id, records)
        if hit is None:
            self._not_in_partner_center("any customer")
            return [], records
        sub, customer = hit
        self.customer_id = sub.customer_id.lower()
        self.customer = customer or pc.customer(self.customer_id)
        return [sub], records

    def _search(
        self, pc: PartnerCenterClient, subscription_id: str, records: Sequence[SubscriptionRecord]
    ) -> tuple[PcSubscription, Customer | None] | None:
        accounts = sorted({r.account_id.lower() for r in records if r.account_id})
        pas = self.repo.provider_accounts_of_accounts(accounts) if accounts else []
        candidates = sorted({pa.customer_id for pa in pas if pa.customer_id})
        for customer_id in candidates:
            found = subscription_under(pc, customer_id, subscription_id)
            if found is not None:
                return found, None
        return self._scan_customers(pc, subscription_id, set(candidates))

    def _scan_customers(
        self, pc: PartnerCenterClient, subscription_id: str, tried: set[str]
    ) -> tuple[PcSubscription, Customer] | None:
        """Every other Partner Center customer, `concurrency` at a time, until the budget runs
        out. The workers only return what they found."""
        customers = [c for c in pc.iter_customers() if c.id.lower() not in tried]
        self.rlog.info(
            "searching %d customers for subscription %s", len(customers), subscription_id
        )
        workers = max(1, self.deps.concurrency)
        step = workers * 4
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(customers), step):
                if self.deadline is not None and self.deps.monotonic() >= self.deadline:
                    self.warnings.append(
                        f"searched {start} of {len(customers)} customers before the time budget "
                        "ran out: pass the customer id with the subscription id"
                    )
                    return None
                chunk = customers[start : start + step]
                futures = [
                    submit_in_context(pool, subscription_under, pc, c.id, subscription_id)
                    for c in chunk
                ]
                for customer, future in zip(chunk, futures, strict=True):
                    found = future.result()
                    if found is not None:
                        return found, customer
        return None

    def _not_in_partner_center(self, where: str) -> None:
        self._partner_center_check(
            f"Partner Center does not list subscription {self.subscription_id} under {where}",
            "Check the subscription id (and the customer id): only subscriptions Partner Center "
            "lists are associated.",
        )

    def _partner_center_check(self, detail: str, fix: str) -> None:
        refs = []
        if self.customer_id:
            name = self.customer.company_name if self.customer else ""  # "" when not listed
            refs.append(record_ref("partnerCenter.customer", self.customer_id, name))
        self.partner_center_checks.append(DiagnosisCheck(PARTNER_CENTER, False, refs, fix, detail))

    # ---- output --------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        subscriptions = []
        for d in sorted(self.decisions, key=lambda d: d.subscription.id):
            row = decision_json(d, self.namer)
            row["subscriptionName"] = d.subscription.display_name
            row["recordName"] = d.record.name if d.record else ""
            row.setdefault("message", "")
            row["fix"] = self.fixes.get(d.subscription.id, "")
            if self.deps.landing is not None:  # which rule decided, why the others did not
                trail = self.trails.get(d.subscription.id)
                row["landingRules"] = [verdict_json(v) for v in trail or ()]
            subscriptions.append(row)
        checks = (self.checks or self.partner_center_checks) + credentials_checks(
            self.deps.credential_expiries, self.started
        )
        ok = not self.fatal and all(c.ok for c in checks)
        status = "failed" if self.fatal else "partial" if self.errors else "succeeded"
        return {
            "schemaVersion": SCHEMA_VERSION,
            "runId": self.run_id,
            "status": status,
            "ok": ok,
            "customerId": self.customer_id,
            "customerName": self.customer.company_name if self.customer else "",
            "subscriptionId": self.subscription_id,
            "setting": setting_json(self.setting),
            "checks": [c.to_json() for c in checks],
            "subscriptions": subscriptions,
            "errors": self.errors,
            "warnings": self.warnings,
        }


def subscription_under(
    pc: PartnerCenterClient, customer_id: str, subscription_id: str
) -> PcSubscription | None:
    """The subscription when Partner Center lists it under this customer (None when the customer
    is unknown or out of reach). Safe in a worker thread: it changes nothing."""
    try:
        subs = pc.subscriptions(customer_id)
    except ApiError as exc:
        if exc.status in (403, 404):
            return None
        raise
    return next((s for s in subs if s.id.lower() == subscription_id), None)


# ---- the checks: one function each, in the troubleshooting order ---------------------------


def checks_of(f: Findings) -> list[DiagnosisCheck]:
    """Every check but `partner-center`, in order (the record checks for a subscription only)."""
    return [
        setting_check(f),
        *(record_checks(f) if f.subscription_id else []),
        contracts_check(f),
        provider_account_check(f),
        provider_account_account_check(f),
        provider_accounts_agree_check(f),
        subscription_account_check(f),
        multiple_defaults_check(f),
    ]


def setting_check(f: Findings) -> DiagnosisCheck:
    """(1) Associate Default Billing Contract, and the cutoff in force with its source: the
    check fails when the setting is No or when the cutoff is in the future."""
    setting = f.setting
    late = sentences.cutoff_warnings(setting, f.now)
    fixes = ([] if setting.enabled else [sentences.setting_fix()]) + late
    return DiagnosisCheck(
        "setting",
        setting.enabled and not late,
        [record_ref(f.tables.setting, setting.row_id, sentences.SETTING_NAME)],
        " ".join(fixes),
        f"{sentences.SETTING_NAME} = {'Yes' if setting.enabled else 'No'}; cutoff "
        f"{_when(setting.since, 'none')} (from {setting.since_source or 'nowhere'})"
        + ("; it is in the future, so no subscription is assigned" if late else ""),
    )


def record_checks(f: Findings) -> list[DiagnosisCheck]:
    """(1, a subscription) its Dataverse record exists once, has no contract yet, and is new."""
    records = f.records
    if len(records) == 1 and not records[0].billing_contract_id:
        return [subscription_record_check(f), subscription_is_new_check(f, records[0])]
    return [subscription_record_check(f)]


def subscription_record_check(f: Findings) -> DiagnosisCheck:
    records = f.records
    refs = _record_refs(f, records)
    if len(records) > 1:
        return DiagnosisCheck(
            "subscription-record",
            False,
            refs,
            "Merge or deactivate the duplicate subscription records.",
            f"{len(records)} records carry provider subscription id {f.subscription_id}",
        )
    if not records:
        return DiagnosisCheck(
            "subscription-record",
            f.create_missing,
            [],
            sentences.not_synced_fix(),
            "no Dataverse record carries this provider subscription id"
            + (" (create mode will create it)" if f.create_missing else ""),
        )
    record = records[0]
    contract = record.billing_contract_id
    return DiagnosisCheck(
        "subscription-record",
        True,
        refs,
        "",
        f"record '{label(record.name, record.id)}'"
        + (
            f" already has Billing Contract {contract.lower()}"
            if contract
            else " has no Billing Contract yet"
        ),
    )


def subscription_is_new_check(f: Findings, record: SubscriptionRecord) -> DiagnosisCheck:
    """Rule 2 (`is_existing`): created on or after the cutoff."""
    since = f.setting.since
    return DiagnosisCheck(
        "subscription-is-new",
        not is_existing(record, since),
        _record_refs(f, [record]),
        sentences.existing_fix(since),
        f"record created {_when(record.created_on, 'unknown')}, cutoff {_when(since, 'none')}",
    )


def contracts_check(f: Findings) -> DiagnosisCheck:
    """(2) Rule 4 (`landing_contract`) for every Account the mapping names: ok only when each
    has exactly one active default, so never ok beside a failed `multiple-defaults`."""
    accounts = f.accounts
    if not accounts:
        return skipped(
            "contracts",
            "not checked: the customer maps to no Account (see the Provider Account checks)",
        )
    failing = [a for a in accounts if f.landing(a) is not Reason.DEFAULT_CONTRACT]
    return DiagnosisCheck(
        "contracts",
        not failing,
        [
            record_ref(
                f.tables.billing_contract,
                c.id,
                c.name,
                accountId=(c.account_id or "").lower() or None,
                isDefault=c.is_default,
                active=c.active,
            )
            for c in sorted(f.contracts, key=lambda c: (c.account_id or "", c.id))
        ],
        " ".join(_landing_fix(f, a) for a in failing),
        "; ".join(
            f"'{f.account_name(a)}': {_count(len(f.contracts_of(a)), 'contract')}, "
            f"{_count(len(f.defaults_of(a)), 'active default')}"
            for a in accounts
        ),
    )


def _landing_fix(f: Findings, account_id: str) -> str:
    if f.landing(account_id) is Reason.MULTIPLE_DEFAULT_CONTRACTS:
        return sentences.multiple_defaults_fix(f.defaults_of(account_id))
    contracts = f.contracts_of(account_id)
    return sentences.no_default_fix(
        f.account_name(account_id),
        [c for c in contracts if c.is_default and not is_eligible(c)],
        contracts,
    )


def provider_account_check(f: Findings) -> DiagnosisCheck:
    """(3) Rule 3, first step: a Provider Account carries the customer's tenant id."""
    if f.customer_id is None:
        return DiagnosisCheck(
            "provider-account",
            False,
            [],
            "Pass the customer id with the subscription id.",
            "the subscription's Partner Center customer is unknown",
        )
    pas = f.provider_accounts
    if not pas and f.unreachable:
        # Never advise mapping a customer Partner Center cannot serve (partner-center said why).
        return skipped("provider-account", f"not checked: {f.unreachable}")
    return DiagnosisCheck(
        "provider-account",
        bool(pas),
        _provider_account_refs(f, pas),
        sentences.missing_provider_account_fix(f.customer_id, f.customer_name),
        f"{len(pas)} Provider Account(s) with customer tenant id {f.customer_id}",
    )


def provider_account_account_check(f: Findings) -> DiagnosisCheck:
    """(3) every Provider Account of the customer has an Account."""
    pas = f.provider_accounts
    if not pas:
        return skipped("provider-account-account", "no Provider Account to check")
    without = f.resolution.without_account if f.resolution else ()
    return DiagnosisCheck(
        "provider-account-account",
        not without,
        _provider_account_refs(f, without),
        sentences.provider_account_without_account_fix(without) if without else "",
        f"{len(without)} of {len(pas)} Provider Account(s) have no Account",
    )


def provider_accounts_agree_check(f: Findings) -> DiagnosisCheck:
    """(3) several Provider Accounts name one Account (`resolve_account` is not ambiguous)."""
    pas = f.provider_accounts
    if len(pas) < 2:
        return skipped("provider-accounts-agree", "one Provider Account at most")
    assert f.resolution is not None
    return DiagnosisCheck(
        "provider-accounts-agree",
        f.resolution.problem is not Reason.AMBIGUOUS_PROVIDER_ACCOUNT,
        _provider_account_refs(f, pas),
        sentences.ambiguous_fix(pas, f.account_names),
        f"{len(pas)} Provider Accounts map the customer to "
        f"{', '.join(repr(f.account_name(a)) for a in f.accounts) or 'no Account'}",
    )


def subscription_account_check(f: Findings) -> DiagnosisCheck:
    """(3) the subscription records are under the one Account the customer resolves to."""
    account = f.resolution.account_id if f.resolution else None
    if account is None:
        return skipped(
            "subscription-account", "not checked: the customer maps to no single Account"
        )
    wrong = [r for r in f.records if r.account_id and r.account_id.lower() != account]
    if len(wrong) == 1:
        fix = sentences.mismatch_fix(
            label(wrong[0].name, wrong[0].id),
            f.account_name(wrong[0].account_id),
            f.account_name(account),
        )
    else:
        fix = (
            f"Move subscription records {sentences.quoted(label(r.name, r.id) for r in wrong)} "
            f"to Account '{f.account_name(account)}', or correct the Provider Account's Account."
        )
    return DiagnosisCheck(
        "subscription-account",
        not wrong,
        [
            record_ref(
                f.tables.subscription,
                r.id,
                r.name,
                accountId=(r.account_id or "").lower() or None,
            )
            for r in wrong
        ],
        fix,
        f"{len(f.records)} subscription record(s), {len(wrong)} under another Account than "
        f"'{f.account_name(account)}'",
    )


def multiple_defaults_check(f: Findings) -> DiagnosisCheck:
    """(4) no Account the mapping names has several active defaults (`landing_contract`)."""
    if not f.accounts:  # said why, never "no Account has more than one" (none was checked)
        return skipped(
            "multiple-defaults",
            "not checked: the customer maps to no Account (see the Provider Account checks)",
        )
    several = {
        a: f.defaults_of(a) for a in f.accounts if f.landing(a) is Reason.MULTIPLE_DEFAULT_CONTRACTS
    }
    return DiagnosisCheck(
        "multiple-defaults",
        not several,
        [
            record_ref(f.tables.billing_contract, c.id, c.name, accountId=a)
            for a, cs in several.items()
            for c in sorted(cs, key=lambda c: c.id)
        ],
        " ".join(sentences.multiple_defaults_fix(cs) for cs in several.values()),
        "; ".join(
            f"'{f.account_name(a)}' has {len(cs)} active defaults" for a, cs in several.items()
        )
        or "no Account has more than one active default",
    )


def credentials_checks(expiries: Sequence[CredentialExpiry], now: datetime) -> list[DiagnosisCheck]:
    """(5) the app's credentials, when an expiry is known (none: no check): fails from
    FAIL_DAYS days before a client secret or certificate expires (rules/expiry.py)."""
    if not expiries:
        return []
    failing = expiry_failures(expiries, now)
    return [
        DiagnosisCheck(
            "credentials",
            not failing,
            [],
            "; ".join(expiry_fixes(expiries, now)),  # the fix only: `detail` says the state
            "; ".join(e.state(now) for e in sorted(expiries, key=lambda e: e.expires_at))
            + ("" if failing else f" (fails {FAIL_DAYS} days before)"),
        )
    ]


def _record_refs(f: Findings, records: Iterable[SubscriptionRecord]) -> list[dict[str, Any]]:
    return [
        record_ref(
            f.tables.subscription,
            r.id,
            r.name,
            billingContractId=(r.billing_contract_id or "").lower() or None,
            createdOn=format_timestamp(r.created_on) if r.created_on else None,
        )
        for r in records
    ]


def _provider_account_refs(f: Findings, pas: Iterable[ProviderAccount]) -> list[dict[str, Any]]:
    return [
        record_ref(
            f.tables.provider_account,
            pa.id,
            pa.name,
            accountId=(pa.account_id or "").lower() or None,
        )
        for pa in sorted(pas, key=lambda p: p.id)
    ]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _when(moment: datetime | None, otherwise: str) -> str:
    return format_timestamp(moment) if moment else otherwise


__all__ = [
    "DiagnoseDeps",
    "DiagnoseRequest",
    "DiagnosisCheck",
    "RecordTables",
    "failed_checks",
    "run_diagnose",
]
