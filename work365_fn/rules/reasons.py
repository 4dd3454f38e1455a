"""The reasons of DESIGN.md's table, the actions, and the groups every output counts them in.

The one place that says which reason counts where: the run summary's `counts`, the report, the
notification and the fan-out aggregate all call `group_of` / `count_groups` / `LISTED`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Reason(enum.StrEnum):
    """Each Partner Center subscription gets exactly one, the first that applies, in this order."""

    NOT_SYNCED = "not-synced"
    ALREADY_ASSIGNED = "already-assigned"
    EXISTING_SUBSCRIPTION = "existing-subscription"
    SETTING_OFF = "setting-off"
    # Only when a record is decided alone (POST /api/records, the Dataverse webhook): its
    # customer could not be found from Dataverse (the record's Account and its Provider
    # Accounts); never guessed, the next timer run decides it.
    UNRESOLVED_CUSTOMER = "unresolved-customer"
    UNMAPPED_CUSTOMER = "unmapped-customer"
    AMBIGUOUS_PROVIDER_ACCOUNT = "ambiguous-provider-account"
    ACCOUNT_MISMATCH = "account-mismatch"
    # Landing rules (rules/landing.py; only with WORK365_LANDING_RULES_FILE): the first rule
    # whose `when` matches decides, before the default-contract rule.
    LANDING_RULE = "landing-rule"
    NO_LANDING_CONTRACT = "no-landing-contract"
    MULTIPLE_LANDING_CONTRACTS = "multiple-landing-contracts"
    EXCLUDED_BY_RULE = "excluded-by-rule"
    NO_DEFAULT_CONTRACT = "no-default-contract"
    MULTIPLE_DEFAULT_CONTRACTS = "multiple-default-contracts"
    DEFAULT_CONTRACT = "default-contract"
    ERROR = "error"


class Action(enum.StrEnum):
    ASSIGN = "assign"
    CREATE = "create"
    NONE = "none"


class Group(enum.StrEnum):
    """The run summary's four subscription counts; they sum to `subscriptions`."""

    ASSIGNED = "assigned"
    UNASSIGNED = "unassigned"
    UNCHANGED = "unchanged"
    FAILED = "failed"


GROUP_OF: dict[Reason, Group] = {
    Reason.NOT_SYNCED: Group.UNCHANGED,
    Reason.ALREADY_ASSIGNED: Group.UNCHANGED,
    Reason.EXISTING_SUBSCRIPTION: Group.UNCHANGED,
    Reason.SETTING_OFF: Group.UNASSIGNED,
    Reason.UNRESOLVED_CUSTOMER: Group.UNASSIGNED,
    Reason.UNMAPPED_CUSTOMER: Group.UNASSIGNED,
    Reason.AMBIGUOUS_PROVIDER_ACCOUNT: Group.UNASSIGNED,
    Reason.ACCOUNT_MISMATCH: Group.UNASSIGNED,
    Reason.LANDING_RULE: Group.ASSIGNED,
    Reason.NO_LANDING_CONTRACT: Group.UNASSIGNED,
    Reason.MULTIPLE_LANDING_CONTRACTS: Group.UNASSIGNED,
    Reason.EXCLUDED_BY_RULE: Group.UNASSIGNED,
    Reason.NO_DEFAULT_CONTRACT: Group.UNASSIGNED,
    Reason.MULTIPLE_DEFAULT_CONTRACTS: Group.UNASSIGNED,
    Reason.DEFAULT_CONTRACT: Group.ASSIGNED,
    Reason.ERROR: Group.FAILED,
}


def group_of(reason: Reason) -> Group:
    return GROUP_OF[reason]


def reasons_in(*groups: Group) -> frozenset[Reason]:
    return frozenset(r for r in Reason if GROUP_OF[r] in groups)


UNCHANGED = reasons_in(Group.UNCHANGED)
UNASSIGNED = reasons_in(Group.UNASSIGNED)
# What the report, the notification and the fan-out aggregate list one by one: the subscriptions
# an admin has to act on (left unassigned, or failed).
LISTED = reasons_in(Group.UNASSIGNED, Group.FAILED)
# The summary's `billingContractId` is set for these: the contract the subscription is on.
ON_A_CONTRACT = frozenset({Reason.DEFAULT_CONTRACT, Reason.LANDING_RULE, Reason.ALREADY_ASSIGNED})
# A new subscription lands on a contract (assign, or create with the contract bound).
LANDS = frozenset({Reason.DEFAULT_CONTRACT, Reason.LANDING_RULE})


def count_groups(reasons: Iterable[Reason | str]) -> dict[str, int]:
    """`subscriptions` and the four group counts, every key present."""
    counts = dict.fromkeys(["subscriptions", *(g.value for g in Group)], 0)
    for reason in reasons:
        counts["subscriptions"] += 1
        counts[GROUP_OF[Reason(reason)].value] += 1
    return counts


def count_reasons(reasons: Iterable[Reason | str]) -> dict[str, int]:
    """`byReason`: every reason, zeros included, in the table's order."""
    counts = {reason.value: 0 for reason in Reason}
    for reason in reasons:
        counts[Reason(reason).value] += 1
    return counts
