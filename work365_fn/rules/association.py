"""The rules of DESIGN.md, as pure functions: one decision per Partner Center subscription.

No I/O, no clock, no logging: `plan(world)` depends only on what was read. The named steps
(`is_existing`, `resolve_account`, `active_defaults`, `landing_contract`) are what diagnose and the
report call to explain a decision: no other module re-codes a rule.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from work365_fn.rules.landing import LandingRules, Outcome, Verdict, evaluate
from work365_fn.rules.model import (
    AssociationSetting,
    BillingContract,
    PcSubscription,
    ProviderAccount,
    SubscriptionRecord,
)
from work365_fn.rules.reasons import LANDS, Action, Reason

# A subscription whose customer is not known (`customer_id` ""): what POST /api/records and the
# Dataverse webhook decide for a record when its Account and Provider Accounts name no single
# Partner Center customer. Never guessed: the next timer run, which lists Partner Center, decides.
UNRESOLVED_MESSAGE = (
    "the record's customer could not be found from Dataverse (its Account has no Provider "
    "Account with one customer id): the next timer run decides it"
)


@dataclass(frozen=True, slots=True)
class Decision:
    subscription: PcSubscription
    record: SubscriptionRecord | None
    reason: Reason
    action: Action
    account_id: str | None = None
    contract_id: str | None = None  # the contract the subscription ends up on (or would)
    message: str = ""
    duplicates: tuple[str, ...] = ()  # ERROR: the records that share the subscription id


def _low(value: str | None) -> str | None:
    if not value:
        return None
    # Ids read from the APIs are lower-case already: keep the string, not a copy per decision.
    return value if value.islower() else value.lower()


@dataclass(frozen=True)
class World:
    """A frozen snapshot of what was read, indexed once by lower-cased GUIDs."""

    setting: AssociationSetting
    subscriptions: Sequence[PcSubscription]
    records: Sequence[SubscriptionRecord] = ()
    provider_accounts: Sequence[ProviderAccount] = ()
    contracts: Sequence[BillingContract] = ()
    create_missing: bool = False
    # WORK365_LANDING_RULES_FILE, parsed; None: no rules, the default-contract rule alone.
    landing: LandingRules | None = None
    records_by_sub: dict[str, list[SubscriptionRecord]] = field(
        init=False, repr=False, compare=False
    )
    pas_by_customer: dict[str, list[ProviderAccount]] = field(init=False, repr=False, compare=False)
    defaults_by_account: dict[str, list[BillingContract]] = field(
        init=False, repr=False, compare=False
    )
    # Only with landing rules: every active contract per Account, and the subscriptions by id
    # (a rule's "parent").
    active_by_account: dict[str, list[BillingContract]] = field(
        init=False, repr=False, compare=False
    )
    subscriptions_by_id: dict[str, PcSubscription] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        records: dict[str, list[SubscriptionRecord]] = defaultdict(list)
        for r in self.records:
            key = _low(r.provider_subscription_id)
            if key:
                records[key].append(r)
        object.__setattr__(self, "records_by_sub", dict(records))
        object.__setattr__(self, "pas_by_customer", by_customer(self.provider_accounts))
        object.__setattr__(self, "defaults_by_account", active_defaults(self.contracts))
        active: dict[str, list[BillingContract]] = defaultdict(list)
        subs: dict[str, PcSubscription] = {}
        if self.landing is not None:
            for c in self.contracts:
                if c.active and (account := _low(c.account_id)):
                    active[account].append(c)
            subs = {s.id.lower(): s for s in self.subscriptions}
        object.__setattr__(self, "active_by_account", dict(active))
        object.__setattr__(self, "subscriptions_by_id", subs)


# ---- the named rules ---------------------------------------------------------------------------


def by_customer(provider_accounts: Iterable[ProviderAccount]) -> dict[str, list[ProviderAccount]]:
    """Provider Accounts per lower-cased customer tenant id (those without one are left out)."""
    out: dict[str, list[ProviderAccount]] = defaultdict(list)
    for pa in provider_accounts:
        key = _low(pa.customer_id)
        if key:
            out[key].append(pa)
    return dict(out)


def is_eligible(contract: BillingContract) -> bool:
    """A contract a subscription may land on: active and Is Default = Yes."""
    return contract.is_default and contract.active


def active_defaults(contracts: Iterable[BillingContract]) -> dict[str, list[BillingContract]]:
    """The eligible contracts per lower-cased Account id."""
    out: dict[str, list[BillingContract]] = defaultdict(list)
    for c in contracts:
        account = _low(c.account_id)
        if account and is_eligible(c):
            out[account].append(c)
    return dict(out)


def is_existing(record: SubscriptionRecord, since: datetime | None) -> bool:
    """Created before the cutoff. Without a cutoff nothing can be called new or old: the
    setting-off rule (no setting row) then decides."""
    if since is None or record.created_on is None:
        return since is not None  # a record without createdon is never treated as new
    return record.created_on < since


@dataclass(frozen=True, slots=True)
class AccountResolution:
    """Rule 3: the Account a customer's Provider Accounts map it to. `problem` is None when
    they name exactly one Account (`account_id`)."""

    customer_id: str
    provider_accounts: tuple[ProviderAccount, ...]
    account_id: str | None
    problem: Reason | None  # UNMAPPED_CUSTOMER or AMBIGUOUS_PROVIDER_ACCOUNT
    message: str = ""

    @property
    def without_account(self) -> tuple[ProviderAccount, ...]:
        return tuple(pa for pa in self.provider_accounts if not pa.account_id)

    @property
    def accounts(self) -> list[str]:
        """Every Account the Provider Accounts name, sorted."""
        return sorted({a for pa in self.provider_accounts if (a := _low(pa.account_id))})


def resolve_account(
    customer_id: str, provider_accounts: Sequence[ProviderAccount]
) -> AccountResolution:
    """The Provider Accounts of one customer (as `by_customer` gives them) -> its Account.
    Several Provider Accounts agree only when all name the same Account (one without an
    Account disagrees with one that has an Account)."""
    customer = customer_id.lower()
    pas = tuple(provider_accounts)
    mapped = {_low(pa.account_id) for pa in pas}
    if not pas or mapped == {None}:
        why = (
            f"no Provider Account has customer id {customer}"
            if not pas
            else "Provider Account " + _names(pas) + " has no Account"
        )
        return AccountResolution(customer, pas, None, Reason.UNMAPPED_CUSTOMER, why)
    if len(mapped) > 1:
        why = f"Provider Accounts {_names(pas)} map customer {customer} to different Accounts"
        return AccountResolution(customer, pas, None, Reason.AMBIGUOUS_PROVIDER_ACCOUNT, why)
    return AccountResolution(customer, pas, next(iter(mapped)), None)


def landing_contract(
    defaults: Sequence[BillingContract],
) -> tuple[Reason, BillingContract | None, str]:
    """Rule 4, over an Account's eligible contracts: (reason, the contract or None, message)."""
    if not defaults:
        return Reason.NO_DEFAULT_CONTRACT, None, ""
    if len(defaults) > 1:
        return Reason.MULTIPLE_DEFAULT_CONTRACTS, None, "active defaults: " + _names(defaults)
    return Reason.DEFAULT_CONTRACT, defaults[0], ""


# ---- the decision ------------------------------------------------------------------------------


def plan(world: World) -> list[Decision]:
    """One decision per Partner Center subscription: the reason table of DESIGN.md, in order."""
    return [decide(world, sub) for sub in world.subscriptions]


def decide(world: World, sub: PcSubscription) -> Decision:
    return _decide(world, sub, frozenset())


def _decide(world: World, sub: PcSubscription, seen: frozenset[str]) -> Decision:
    matches = world.records_by_sub.get(sub.id.lower(), [])
    if len(matches) > 1:
        ids = tuple(sorted(r.id.lower() for r in matches))
        return Decision(
            sub,
            None,
            Reason.ERROR,
            Action.NONE,
            message=(
                f"{len(matches)} Dataverse records carry provider subscription id "
                f"{sub.id.lower()} ({', '.join(ids)}): merge or deactivate the duplicates"
            ),
            duplicates=ids,
        )
    record = matches[0] if matches else None
    return _decide_for_record(world, sub, record, seen)


def decide_for_record(
    world: World, sub: PcSubscription, record: SubscriptionRecord | None
) -> Decision:
    """The rules for one subscription and the record found for it (also used after a re-read)."""
    return _decide_for_record(world, sub, record, frozenset())


def _decide_for_record(
    world: World, sub: PcSubscription, record: SubscriptionRecord | None, seen: frozenset[str]
) -> Decision:
    if record is None and not world.create_missing:
        return Decision(sub, None, Reason.NOT_SYNCED, Action.NONE)
    if record is not None and record.billing_contract_id:
        return Decision(
            sub,
            record,
            Reason.ALREADY_ASSIGNED,
            Action.NONE,
            account_id=_low(record.account_id),
            contract_id=_low(record.billing_contract_id),
        )
    if record is not None and is_existing(record, world.setting.since):
        return Decision(
            sub,
            record,
            Reason.EXISTING_SUBSCRIPTION,
            Action.NONE,
            account_id=_low(record.account_id),
        )
    return _decide_new(world, sub, record, seen)


def _decide_new(
    world: World, sub: PcSubscription, record: SubscriptionRecord | None, seen: frozenset[str]
) -> Decision:
    """A new subscription: left alone (or created without a contract) unless every remaining
    rule holds."""
    idle = Action.CREATE if record is None else Action.NONE
    record_account = _low(record.account_id) if record is not None else None

    def leave(reason: Reason, account: str | None, message: str = "") -> Decision:
        return Decision(sub, record, reason, idle, account_id=account, message=message)

    if not world.setting.enabled:
        return leave(Reason.SETTING_OFF, record_account)
    if not sub.customer_id:  # a record decided alone whose customer Dataverse does not name
        return leave(Reason.UNRESOLVED_CUSTOMER, record_account, UNRESOLVED_MESSAGE)
    resolution = resolve_account(
        sub.customer_id, world.pas_by_customer.get(sub.customer_id.lower(), [])
    )
    if resolution.problem is not None:
        return leave(resolution.problem, record_account, resolution.message)
    account = resolution.account_id
    assert account is not None  # no problem: exactly one Account
    if record_account is not None and record_account != account:
        return leave(
            Reason.ACCOUNT_MISMATCH,
            account,
            f"the subscription record is under Account {record_account}, the Provider Account "
            f"maps to {account}",
        )
    if world.landing is not None:
        outcome = landing_outcome(world, sub, account, seen)
        verdict = outcome.verdict
        if verdict is not None and verdict.contract is None:
            assert verdict.reason is not None
            return leave(verdict.reason, account, verdict.why)
        if verdict is not None and verdict.contract is not None:
            return Decision(
                sub,
                record,
                Reason.LANDING_RULE,
                Action.ASSIGN if record is not None else Action.CREATE,
                account_id=account,
                contract_id=verdict.contract.id.lower(),
                message=verdict.why,
            )
    reason, contract, message = landing_contract(world.defaults_by_account.get(account, []))
    if contract is None:
        return leave(reason, account, message)
    return Decision(
        sub,
        record,
        Reason.DEFAULT_CONTRACT,
        Action.ASSIGN if record is not None else Action.CREATE,
        account_id=account,
        contract_id=contract.id.lower(),
    )


def landing_outcome(
    world: World, sub: PcSubscription, account: str, seen: frozenset[str] = frozenset()
) -> Outcome:
    """The landing rules (`world.landing`, which must be set) for a new subscription mapped to
    `account`: the deciding rule's verdict and why each rule before it did not decide."""
    assert world.landing is not None
    active = world.active_by_account.get(account, [])
    parent = parent_contract(world, sub, active, seen)
    return evaluate(world.landing, sub, active, parent)


# The reasons of a new subscription mapped to its Account: the landing step was reached.
_PAST_THE_ACCOUNT = LANDS | {
    Reason.NO_LANDING_CONTRACT,
    Reason.MULTIPLE_LANDING_CONTRACTS,
    Reason.EXCLUDED_BY_RULE,
    Reason.NO_DEFAULT_CONTRACT,
    Reason.MULTIPLE_DEFAULT_CONTRACTS,
}


def landing_trail(world: World, decision: Decision) -> tuple[Verdict, ...] | None:
    """For diagnose: each landing rule's verdict on a decision that reached the rules (which
    rule decided, and why each rule before it did not; every rule when the default decided).
    None without rules, or when the decision stopped before them."""
    if world.landing is None or decision.account_id is None:
        return None
    if decision.reason not in _PAST_THE_ACCOUNT:
        return None
    return landing_outcome(world, decision.subscription, decision.account_id).trail


def parent_contract(
    world: World,
    sub: PcSubscription,
    active: Sequence[BillingContract],
    seen: frozenset[str] = frozenset(),
) -> BillingContract | None:
    """The contract of `sub`'s parent subscription when it is one of `active` (the Account's
    active contracts): the parent record's contract, or, when the parent is new too and this
    plan lands it, the contract it lands on. None otherwise."""
    parent_id = _low(sub.parent_subscription_id)
    if not parent_id:
        return None
    records = world.records_by_sub.get(parent_id, [])
    contract_id: str | None = None
    if len(records) == 1 and records[0].billing_contract_id:
        contract_id = _low(records[0].billing_contract_id)
    elif parent_id not in seen and (parent := world.subscriptions_by_id.get(parent_id)):
        planned = _decide(world, parent, seen | {sub.id.lower()})
        contract_id = planned.contract_id if planned.reason in LANDS else None
    return next((c for c in active if c.id.lower() == contract_id), None)


def _names(items: Iterable[ProviderAccount | BillingContract]) -> str:
    return ", ".join(sorted(f"'{i.name or i.id.lower()}'" for i in items))
