"""The rules of DESIGN.md, as a pure function: one decision per Partner Center subscription.

No I/O, no clock, no logging: `plan(world)` depends only on what was read.
"""

from __future__ import annotations

import enum
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


class Reason(enum.StrEnum):
    NOT_SYNCED = "not-synced"
    ALREADY_ASSIGNED = "already-assigned"
    EXISTING_SUBSCRIPTION = "existing-subscription"
    SETTING_OFF = "setting-off"
    UNMAPPED_CUSTOMER = "unmapped-customer"
    AMBIGUOUS_PROVIDER_ACCOUNT = "ambiguous-provider-account"
    ACCOUNT_MISMATCH = "account-mismatch"
    NO_DEFAULT_CONTRACT = "no-default-contract"
    MULTIPLE_DEFAULT_CONTRACTS = "multiple-default-contracts"
    DEFAULT_CONTRACT = "default-contract"
    ERROR = "error"


class Action(enum.StrEnum):
    ASSIGN = "assign"
    CREATE = "create"
    NONE = "none"


UNCHANGED = frozenset({Reason.NOT_SYNCED, Reason.ALREADY_ASSIGNED, Reason.EXISTING_SUBSCRIPTION})
UNASSIGNED = frozenset(
    {
        Reason.SETTING_OFF,
        Reason.UNMAPPED_CUSTOMER,
        Reason.AMBIGUOUS_PROVIDER_ACCOUNT,
        Reason.ACCOUNT_MISMATCH,
        Reason.NO_DEFAULT_CONTRACT,
        Reason.MULTIPLE_DEFAULT_CONTRACTS,
    }
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
        pas: dict[str, list[ProviderAccount]] = defaultdict(list)
        for pa in self.provider_accounts:
            key = _low(pa.customer_id)
            if key:
                pas[key].append(pa)
        defaults: dict[str, list[BillingContract]] = defaultdict(list)
        for c in self.contracts:
            account = _low(c.account_id)
            if c.is_default and c.active and account:
                defaults[account].append(c)
        object.__setattr__(self, "records_by_sub", dict(records))
        object.__setattr__(self, "pas_by_customer", dict(pas))
        object.__setattr__(self, "defaults_by_account", dict(defaults))


def plan(world: World) -> list[Decision]:
    """One decision per Partner Center subscription: the reason table of DESIGN.md, in order."""
    return [decide(world, sub) for sub in world.subscriptions]


def decide(world: World, sub: PcSubscription) -> Decision:
    matches = world.records_by_sub.get(sub.id.lower(), [])
    if len(matches) > 1:
        ids = ", ".join(sorted(r.id.lower() for r in matches))
        return Decision(
            sub,
            None,
            Reason.ERROR,
            Action.NONE,
            message=(
                f"{len(matches)} Dataverse records carry provider subscription id "
                f"{sub.id.lower()} ({ids}): merge or deactivate the duplicates"
            ),
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
    if record is not None and _is_existing(record, world.setting.since):
        return Decision(
            sub,
            record,
            Reason.EXISTING_SUBSCRIPTION,
            Action.NONE,
            account_id=_low(record.account_id),
        )

    # From here on the subscription is new: left alone (or created without a contract) unless
    # every remaining rule holds.
    idle = Action.CREATE if record is None else Action.NONE
    record_account = _low(record.account_id) if record is not None else None

    def leave(reason: Reason, account: str | None, message: str = "") -> Decision:
        return Decision(sub, record, reason, idle, account_id=account, message=message)

    if not world.setting.enabled:
        return leave(Reason.SETTING_OFF, record_account)

    pas = world.pas_by_customer.get(sub.customer_id.lower(), [])
    mapped = {_low(pa.account_id) for pa in pas}
    if not pas or mapped == {None}:
        why = (
            f"no Provider Account has customer id {sub.customer_id.lower()}"
            if not pas
            else "Provider Account " + _names(pas) + " has no Account"
        )
        return leave(Reason.UNMAPPED_CUSTOMER, record_account, why)
    if len(mapped) > 1:
        return leave(
            Reason.AMBIGUOUS_PROVIDER_ACCOUNT,
            record_account,
            f"Provider Accounts {_names(pas)} map customer {sub.customer_id.lower()} "
            "to different Accounts",
        )
    account = next(iter(mapped))
    assert account is not None  # mapped == {None} was handled above
    if record_account is not None and record_account != account:
        return leave(
            Reason.ACCOUNT_MISMATCH,
            account,
            f"the subscription record is under Account {record_account}, the Provider Account "
            f"maps to {account}",
        )
    defaults = world.defaults_by_account.get(account, [])
    if not defaults:
        return leave(Reason.NO_DEFAULT_CONTRACT, account)
    if len(defaults) > 1:
        return leave(
            Reason.MULTIPLE_DEFAULT_CONTRACTS,
            account,
            "active defaults: " + _names(defaults),
        )
    contract = defaults[0]
    return Decision(
        sub,
        record,
        Reason.DEFAULT_CONTRACT,
        Action.ASSIGN if record is not None else Action.CREATE,
        account_id=account,
        contract_id=contract.id.lower(),
    )


def _is_existing(record: SubscriptionRecord, since: datetime | None) -> bool:
    """Created before the cutoff. Without a cutoff nothing can be called new or old: the
    setting-off rule (no setting row) then decides."""
    if since is None or record.created_on is None:
        return since is not None  # a record without createdon is never treated as new
    return record.created_on < since


def _names(items: Iterable[ProviderAccount | BillingContract]) -> str:
    return ", ".join(sorted(f"'{i.name or i.id.lower()}'" for i in items))
