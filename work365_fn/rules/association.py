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

from work365_fn.rules.model import (
    AssociationSetting,
    BillingContract,
    PcSubscription,
    ProviderAccount,
    SubscriptionRecord,
)
from work365_fn.rules.reasons import Action, Reason


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
    records_by_sub: dict[str, list[SubscriptionRecord]] = field(
        init=False, repr=False, compare=False
    )
    pas_by_customer: dict[str, list[ProviderAccount]] = field(init=False, repr=False, compare=False)
    defaults_by_account: dict[str, list[BillingContract]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        records: dict[str, list[SubscriptionRecord]] = defaultdict(list)
        for r in self.records:
            key = _low(r.provider_subscription_id)
            if key:
                records[key].append(r)
        object.__setattr__(self, "records_by_sub", dict(records))
        object.__setattr__(self, "pas_by_customer", by_customer(self.provider_accounts))
        object.__setattr__(self, "defaults_by_account", active_defaults(self.contracts))


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
    return decide_for_record(world, sub, record)


def decide_for_record(
    world: World, sub: PcSubscription, record: SubscriptionRecord | None
) -> Decision:
    """The rules for one subscription and the record found for it (also used after a re-read)."""
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
    return _decide_new(world, sub, record)


def _decide_new(world: World, sub: PcSubscription, record: SubscriptionRecord | None) -> Decision:
    """A new subscription: left alone (or created without a contract) unless every remaining
    rule holds."""
    idle = Action.CREATE if record is None else Action.NONE
    record_account = _low(record.account_id) if record is not None else None

    def leave(reason: Reason, account: str | None, message: str = "") -> Decision:
        return Decision(sub, record, reason, idle, account_id=account, message=message)

    if not world.setting.enabled:
        return leave(Reason.SETTING_OFF, record_account)
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


def _names(items: Iterable[ProviderAccount | BillingContract]) -> str:
    return ", ".join(sorted(f"'{i.name or i.id.lower()}'" for i in items))
