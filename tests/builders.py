"""Tiny builders for model objects: each test states only what matters to it."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

from work365_fn.rules import Decision, World
from work365_fn.rules.landing import LandingRules
from work365_fn.rules.model import (
    AssociationSetting,
    BillingContract,
    PcSubscription,
    ProviderAccount,
    SubscriptionRecord,
)

CUTOFF = datetime(2026, 1, 1, tzinfo=UTC)
AFTER = datetime(2026, 3, 1, tzinfo=UTC)
BEFORE = datetime(2025, 6, 1, tzinfo=UTC)

CUSTOMER = "11111111-1111-1111-1111-111111111111"
ACCOUNT = "aaaaaaaa-0000-0000-0000-000000000001"
OTHER_ACCOUNT = "aaaaaaaa-0000-0000-0000-000000000002"
SUBSCRIPTION = "55555555-5555-5555-5555-555555555555"

_counter = itertools.count(1)


def new_id() -> str:
    return str(uuid.UUID(int=next(_counter) + (7 << 120)))


def a_setting(enabled: bool = True, since: datetime | None = CUTOFF) -> AssociationSetting:
    return AssociationSetting(enabled=enabled, since=since, since_source="audit" if since else None)


def a_subscription(
    id: str = SUBSCRIPTION, customer_id: str = CUSTOMER, name: str = "Microsoft 365 E3"
) -> PcSubscription:
    return PcSubscription(id=id, customer_id=customer_id, offer_name=name, quantity=1)


def a_record(
    provider_subscription_id: str | None = SUBSCRIPTION,
    account_id: str | None = ACCOUNT,
    contract_id: str | None = None,
    created_on: datetime | None = AFTER,
    id: str | None = None,
) -> SubscriptionRecord:
    return SubscriptionRecord(
        id=id or new_id(),
        provider_subscription_id=provider_subscription_id,
        account_id=account_id,
        billing_contract_id=contract_id,
        created_on=created_on,
        etag='W/"1"',
    )


def a_provider_account(
    customer_id: str | None = CUSTOMER, account_id: str | None = ACCOUNT, name: str = "Contoso PA"
) -> ProviderAccount:
    return ProviderAccount(id=new_id(), customer_id=customer_id, account_id=account_id, name=name)


def a_contract(
    account_id: str | None = ACCOUNT,
    default: bool = True,
    active: bool = True,
    id: str | None = None,
    name: str = "Contoso Licences",
    columns: dict[str, object] | None = None,
) -> BillingContract:
    return BillingContract(
        id=id or new_id(),
        account_id=account_id,
        is_default=default,
        active=active,
        name=name,
        columns=tuple((columns or {}).items()),
    )


_DEFAULT_CONTRACT = a_contract(id="cccccccc-0000-0000-0000-000000000001")


def a_world(
    *,
    setting: AssociationSetting | None = None,
    subscriptions: list[PcSubscription] | None = None,
    records: list[SubscriptionRecord] | None = None,
    provider_accounts: list[ProviderAccount] | None = None,
    contracts: list[BillingContract] | None = None,
    create_missing: bool = False,
    landing: LandingRules | None = None,
) -> World:
    """By default: one new, mapped subscription whose Account has one active default."""
    return World(
        setting=setting or a_setting(),
        subscriptions=subscriptions if subscriptions is not None else [a_subscription()],
        records=records if records is not None else [a_record()],
        provider_accounts=(
            provider_accounts if provider_accounts is not None else [a_provider_account()]
        ),
        contracts=contracts if contracts is not None else [_DEFAULT_CONTRACT],
        create_missing=create_missing,
        landing=landing,
    )


def only(decisions: list[Decision]) -> Decision:
    assert len(decisions) == 1, decisions
    return decisions[0]
