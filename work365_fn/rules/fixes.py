"""The one-sentence fixes that diagnose, report and backfill print, and the names they use.

Pure: every function takes what was read and returns text. The sentences name the records an
admin has to open, in the order Work 365 support works through them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from work365_fn.rules.association import Decision
from work365_fn.rules.model import AssociationSetting, BillingContract, ProviderAccount
from work365_fn.rules.reasons import ON_A_CONTRACT, Reason
from work365_fn.rules.timestamps import format_timestamp

SETTING_NAME = "Associate Default Billing Contract"


def quoted(names: Iterable[str]) -> str:
    """'A', 'B' (sorted, de-duplicated)."""
    return ", ".join(f"'{n}'" for n in sorted(set(names)))


def label(name: str, record_id: str | None) -> str:
    """A record's name, or its id when it has none."""
    return name or (record_id or "").lower() or "(unknown)"


def setting_fix() -> str:
    return f"Set {SETTING_NAME} to Yes in the Work 365 Admin Hub."


def unresolved_customer_fix(record_name: str) -> str:
    return (
        f"Set the Account of subscription record '{record_name}', and give that Account a "
        "Provider Account with the customer's tenant id; meanwhile the next timer run decides it."
    )


def missing_provider_account_fix(customer_id: str, customer_name: str = "") -> str:
    who = f" (Partner Center customer '{customer_name}')" if customer_name else ""
    return (
        f"Create a Provider Account with customer tenant id {customer_id.lower()}{who} and set "
        "its Account."
    )


def provider_account_without_account_fix(pas: Sequence[ProviderAccount]) -> str:
    return f"Set the Account lookup on Provider Account {quoted(label(p.name, p.id) for p in pas)}."


def ambiguous_fix(pas: Sequence[ProviderAccount], account_names: Mapping[str, str]) -> str:
    accounts = quoted(
        label(account_names.get(p.account_id or "", ""), p.account_id) for p in pas if p.account_id
    )
    return (
        f"Point Provider Accounts {quoted(label(p.name, p.id) for p in pas)} at one Account "
        f"(they map to {accounts}), or delete the wrong one."
    )


def mismatch_fix(record_name: str, record_account: str, mapped_account: str) -> str:
    return (
        f"Move subscription record '{record_name}' from Account '{record_account}' to "
        f"'{mapped_account}', or correct the Provider Account's Account."
    )


def no_default_fix(
    account_name: str,
    inactive_defaults: Sequence[BillingContract] = (),
    other_contracts: Sequence[BillingContract] | None = None,
) -> str:
    """`other_contracts`: every contract of the Account when known (diagnose reads them all),
    None when only the defaults were read (the bulk pass)."""
    active = [c for c in other_contracts or () if c.active and not c.is_default]
    if other_contracts is None:
        text = f"Set Is Default = Yes on one active Billing Contract of '{account_name}'"
    elif active:
        text = (
            f"Set Is Default = Yes on one active Billing Contract of '{account_name}' (one of "
            f"{quoted(label(c.name, c.id) for c in active)})"
        )
    else:
        text = f"Create an active Billing Contract for '{account_name}' with Is Default = Yes"
    if inactive_defaults:
        text += (
            f", or reactivate its inactive default "
            f"{quoted(label(c.name, c.id) for c in inactive_defaults)}"
        )
    return text + "."


def multiple_defaults_fix(defaults: Sequence[BillingContract]) -> str:
    which = "one" if len(defaults) <= 2 else "all but one"
    names = ", ".join(sorted(label(c.name, c.id) for c in defaults))
    return f"Clear Is Default on {which} of: {names}, so that exactly one stays the default."


def inactive_default_fix(contract: BillingContract) -> str:
    return (
        f"Clear Is Default on inactive contract '{label(contract.name, contract.id)}' "
        "(or reactivate it): an inactive default never counts."
    )


def not_synced_fix() -> str:
    return (
        "Wait for the provider sync to create the subscription record, or turn on create mode "
        "(WORK365_CREATE_MISSING=true)."
    )


def existing_fix(since: datetime | None) -> str:
    when = format_timestamp(since) if since else "the cutoff"
    return (
        f"The record was created before {when}, so it is never assigned automatically: assign "
        "it by hand or with `python -m work365_fn backfill --apply`."
    )


def error_fix(duplicates: Sequence[str] = ()) -> str:
    if duplicates:
        return (
            f"Merge or deactivate the duplicate subscription records ({', '.join(duplicates)}), "
            "then run the sync again."
        )
    return "Run the sync again; if it fails again, check the error message and the service."


def already_assigned_fix() -> str:
    return (
        "Nothing to do: the record already has a Billing Contract, which this service never "
        "changes; move it by hand if it is the wrong one."
    )


def assigned_fix() -> str:
    return "Nothing to do: the subscription is on its Account's one active default contract."


RULES_SETTING = "WORK365_LANDING_RULES_FILE"


_RULE_LABEL = re.compile(r"^rule \d+ '.*?'")


def landing_fix(reason: Reason, account_name: str, message: str = "") -> str:
    """The fix of the four landing-rule reasons; `message`: the decision's, which starts with
    the label of the rule that decided ("rule 1 'Azure plan to arrears'")."""
    found = _RULE_LABEL.match(message)
    rule = found.group(0) if found else "the landing rule"
    account = f"'{account_name}'" if account_name else "the Account"
    if reason is Reason.LANDING_RULE:
        return f"Nothing to do: {rule} chose the contract."
    if reason is Reason.NO_LANDING_CONTRACT:
        return (
            f"Give one active Billing Contract of {account} the column value {rule} selects "
            f"(or create one), or change the rule in {RULES_SETTING}."
        )
    if reason is Reason.MULTIPLE_LANDING_CONTRACTS:
        # Never "set Is Default on one of them": the Account may already have its default
        # elsewhere, and a second one would stop every default-contract decision for it.
        return (
            f"Make {rule} pick exactly one contract: change the column value on (or "
            f"deactivate) all but one of the contracts of {account} it picks. If one of them "
            "should be the Account's default contract anyway, move Is Default = Yes to it (off "
            "the current default: an Account has exactly one), never add a second."
        )
    return (
        f"Nothing to fix: {rule} leaves it unassigned on purpose. Assign it by hand if it is "
        f"to be billed now, or change the rule in {RULES_SETTING}."
    )


LANDING_REASONS = frozenset(
    {
        Reason.LANDING_RULE,
        Reason.NO_LANDING_CONTRACT,
        Reason.MULTIPLE_LANDING_CONTRACTS,
        Reason.EXCLUDED_BY_RULE,
    }
)


def billing_references_fix() -> str:
    return (
        "The record already carries billing references (LCL or invoice): assign its contract "
        "by hand after checking the billed periods."
    )


_TURNED_ON = f"the date {SETTING_NAME} was turned on"
_SKEW = (
    "this host's clock and Dataverse's disagree (clock skew): correct the host's clock, or set "
    f"WORK365_ASSOCIATE_SINCE to {_TURNED_ON}."
)
# Where a cutoff comes from (`AssociationSetting.since_source`), and what to do when it is late.
_CUTOFF_ORIGINS = {
    "setting": (
        "WORK365_ASSOCIATE_SINCE",
        f"set WORK365_ASSOCIATE_SINCE to {_TURNED_ON}, or remove it to take the cutoff from "
        "the setting's audit history.",
    ),
    "audit": (f"the audit history of {SETTING_NAME}", _SKEW),
    "modifiedon": ("the Admin Hub setting row's modifiedon", _SKEW),
}


def cutoff_warnings(setting: AssociationSetting | None, now: datetime) -> list[str]:
    """The cutoff in force is after `now` (when the run started): every record was created
    before it, so none is assigned. One sentence naming the cutoff, where it came from and what
    to do; nothing for a cutoff in the past. The sentence does not carry `now`, so the batches of
    one run say it alike."""
    if setting is None or setting.since is None or setting.since <= now:
        return []
    where, todo = _CUTOFF_ORIGINS.get(
        setting.since_source or "", (setting.since_source or "an unknown source", _SKEW)
    )
    return [
        f"the cutoff {format_timestamp(setting.since)} (from {where}) is in the future: every "
        "subscription record was created before it, so none is assigned (existing-subscription) "
        f"until then. To fix: {todo}"
    ]


class Namer:
    """Names and fix sentences for decisions, given what was read (any subset of the tenant)."""

    def __init__(
        self,
        *,
        provider_accounts: Sequence[ProviderAccount],
        contracts: Sequence[BillingContract],
        account_names: Mapping[str, str],
        since: datetime | None,
        all_contracts: bool = False,
        customer_names: Mapping[str, str] | None = None,
    ) -> None:
        """`all_contracts`: `contracts` holds every contract of the Accounts involved, not only
        the defaults."""
        self.account_names = dict(account_names)
        self.since = since
        self.all_contracts = all_contracts
        self.customer_names = {k.lower(): v for k, v in (customer_names or {}).items()}
        self.pas_by_customer: dict[str, list[ProviderAccount]] = {}
        for pa in provider_accounts:
            if pa.customer_id:
                self.pas_by_customer.setdefault(pa.customer_id.lower(), []).append(pa)
        self.contracts_by_account: dict[str, list[BillingContract]] = {}
        self.contract_names = {c.id.lower(): c.name for c in contracts if c.name}
        for c in contracts:
            if c.account_id:
                self.contracts_by_account.setdefault(c.account_id.lower(), []).append(c)

    def with_contract_names(self, names: Mapping[str, str]) -> Namer:
        """Also name these contracts (beyond those read: a record's own contract, from its
        lookup's formatted value, rules/names.py); a name already known is kept."""
        for contract_id, name in names.items():
            if name:
                self.contract_names.setdefault(contract_id.lower(), name)
        return self

    def account(self, account_id: str | None) -> str:
        if not account_id:
            return ""
        return label(self.account_names.get(account_id.lower(), ""), account_id)

    def todo(self, decision: Decision) -> str:
        """`fix` when there is something to do, '' for a subscription already on a contract."""
        return "" if decision.reason in ON_A_CONTRACT else self.fix(decision)

    def fix(self, decision: Decision) -> str:
        """What to do so the subscription lands on its default contract: one sentence for every
        reason (for those on a contract, that there is nothing to do)."""
        if decision.reason in LANDING_REASONS:
            return landing_fix(decision.reason, self.account(decision.account_id), decision.message)
        return self._default_rule_fix(decision)

    def _default_rule_fix(self, decision: Decision) -> str:
        reason = decision.reason
        sub = decision.subscription
        pas = self.pas_by_customer.get(sub.customer_id.lower(), [])
        contracts = self.contracts_by_account.get((decision.account_id or "").lower(), [])
        if reason is Reason.NOT_SYNCED:
            return not_synced_fix()
        if reason is Reason.EXISTING_SUBSCRIPTION:
            return existing_fix(self.since)
        if reason is Reason.SETTING_OFF:
            return setting_fix()
        if reason is Reason.UNRESOLVED_CUSTOMER:
            record = decision.record
            return unresolved_customer_fix(label(record.name, record.id) if record else sub.id)
        if reason is Reason.UNMAPPED_CUSTOMER:
            if pas:
                return provider_account_without_account_fix(pas)
            return missing_provider_account_fix(
                sub.customer_id, self.customer_names.get(sub.customer_id.lower(), "")
            )
        if reason is Reason.AMBIGUOUS_PROVIDER_ACCOUNT:
            return ambiguous_fix(pas, self.account_names)
        if reason is Reason.ACCOUNT_MISMATCH:
            record = decision.record
            return mismatch_fix(
                label(record.name, record.id) if record else sub.id,
                self.account(record.account_id if record else None),
                self.account(decision.account_id),
            )
        if reason is Reason.NO_DEFAULT_CONTRACT:
            return no_default_fix(
                self.account(decision.account_id),
                [c for c in contracts if c.is_default and not c.active],
                contracts if self.all_contracts else None,
            )
        if reason is Reason.MULTIPLE_DEFAULT_CONTRACTS:
            return multiple_defaults_fix([c for c in contracts if c.is_default and c.active])
        if reason is Reason.ERROR:
            return error_fix(decision.duplicates)
        if reason is Reason.ALREADY_ASSIGNED:
            return already_assigned_fix()
        return assigned_fix()
