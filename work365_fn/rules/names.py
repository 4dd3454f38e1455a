"""The names a read already carries: pure, no I/O.

The Dataverse list reads ask for the lookups' formatted values (the related row's primary
name), so the Account of every Provider Account, contract and subscription record, and the
Billing Contract of every record, are named without another request. What is not named here
(an Account no read pointed at) is what a caller may still look up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from work365_fn.rules.model import BillingContract, ProviderAccount, SubscriptionRecord


def account_names_read(
    provider_accounts: Iterable[ProviderAccount],
    contracts: Iterable[BillingContract],
    records: Iterable[SubscriptionRecord],
) -> dict[str, str]:
    """Lower-case Account id -> name, from the Account lookups' formatted values."""
    out: dict[str, str] = {}
    pairs = [(p.account_id, p.account_name) for p in provider_accounts]
    pairs += [(c.account_id, c.account_name) for c in contracts]
    pairs += [(r.account_id, r.account_name) for r in records]
    for account_id, name in pairs:
        if account_id and name:
            out.setdefault(account_id.lower(), name)
    return out


def contract_names_read(
    contracts: Iterable[BillingContract], records: Iterable[SubscriptionRecord]
) -> dict[str, str]:
    """Lower-case Billing Contract id -> name: the contracts read, and the contract each record
    points at (its lookup's formatted value), default or not."""
    out = {c.id.lower(): c.name for c in contracts if c.name}
    for r in records:
        if r.billing_contract_id and r.billing_contract_name:
            out.setdefault(r.billing_contract_id.lower(), r.billing_contract_name)
    return out


def unnamed(account_ids: Sequence[str], names: dict[str, str]) -> list[str]:
    """The ids of `account_ids` (lower case, sorted) that `names` does not name."""
    return sorted({a.lower() for a in account_ids if a and a.lower() not in names})
