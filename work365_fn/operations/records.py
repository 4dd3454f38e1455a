"""Some subscription records decided alone: `POST /api/records` and the Dataverse webhook.

For each record: read it, find its Partner Center customer from the Provider Accounts of its
Account (never guessed: when they name no single customer the record's reason is
`unresolved-customer`, and the next timer run decides it), read that customer's Provider
Accounts, that one subscription in Partner Center, the records that carry its id and the
contracts of the Accounts involved; then decide with the rules (`rules.decide`, the same call
as the sync's plan) and write with the sync's writer (`If-Match`, notes, the undo journal).

Per record: 5 Dataverse reads (the record, the Provider Accounts of its Account, those of its
customer, the records of its subscription id, the contracts) and 1 Partner Center read; the
writes of one request go in one `$batch`; per request, one read of the app storage (the
customers' names the last full run kept). The setting and cutoff are read through `setting`,
which the composition root caches per worker (docs/events.md).

A record that does not exist, or is not a provider subscription (no provider subscription id),
is a 404 item of `errors`: never a 500. A subscription Partner Center does not know under the
customer found is `unresolved-customer` too (with a warning naming both). A throttled or failing
upstream stops the request: the items left say so and `needs_retry` tells the webhook handler to
answer 503, so that Dataverse tries again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from work365_fn.adapters.dataverse_metadata import SubscriptionBindings
from work365_fn.adapters.dataverse_repository import Repository
from work365_fn.adapters.partner_center import PartnerCenterClient
from work365_fn.adapters.storage import RunStore
from work365_fn.errors import (
    ApiError,
    AuthError,
    NotFoundError,
    ThrottledError,
    Work365Error,
    error_json,
)
from work365_fn.logs import RunLog, run_context
from work365_fn.operations.customer_names import load_customer_names
from work365_fn.operations.inputs import BadRequest, boolean, guid, guid_list
from work365_fn.operations.undo import write_decisions
from work365_fn.operations.writer import (
    DEADLINE_MESSAGE,
    refuse_without_notes,
)
from work365_fn.rules import Action, Decision, World, decide
from work365_fn.rules.fixes import Namer
from work365_fn.rules.landing import LandingRules
from work365_fn.rules.model import (
    AssociationSetting,
    BillingContract,
    PcSubscription,
    ProviderAccount,
    SubscriptionRecord,
)
from work365_fn.rules.names import account_names_read, contract_names_read, unnamed
from work365_fn.rules.summary import RunSummary, accounts_to_name, counts_sentence, run_kind

log = logging.getLogger(__name__)

MODE = "records"
MAX_RECORD_IDS = 100
# Statuses after which the same request may succeed later: no answer, throttled, unavailable.
RETRYABLE = frozenset({0, 429, 500, 502, 503, 504})
NOT_STARTED = "not read: an upstream service failed on an earlier record; send it again"

SettingReader = Callable[[], tuple[AssociationSetting, list[str]]]


@dataclass(frozen=True)
class RecordsRequest:
    record_ids: tuple[str, ...]
    dry_run: bool = False
    budget_seconds: float | None = None  # no new record is read after this long

    FIELDS = ("recordIds", "dryRun")

    @classmethod
    def from_payload(
        cls, payload: Mapping[str, Any], record_id: str | None = None
    ) -> RecordsRequest:
        """`{"recordIds": [...], "dryRun": false}`, or the one id of the route
        (`POST /api/records/{recordId}`, whose body may carry `dryRun` only)."""
        allowed = ("dryRun",) if record_id is not None else cls.FIELDS
        unknown = sorted(set(payload) - set(allowed))
        if unknown:
            raise BadRequest(unknown[0], f"unknown field '{unknown[0]}'")
        dry_run = boolean(payload, "dryRun")
        if record_id is not None:
            return cls((guid(record_id, "recordId"),), dry_run)
        ids = guid_list(payload, "recordIds", MAX_RECORD_IDS)
        if not ids:
            raise BadRequest("recordIds", f"give 'recordIds': 1 to {MAX_RECORD_IDS} record ids")
        return cls(ids, dry_run)


@dataclass(frozen=True)
class RecordsDeps:
    repository: Repository
    partner_center: Callable[[str], PartnerCenterClient]  # correlation id -> client
    bindings: Callable[[], SubscriptionBindings]  # cached per worker by the caller
    setting: SettingReader  # the setting and cutoff (cached per worker by the caller)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    batch_size: int = 100
    max_attempts: int = 5
    landing: LandingRules | None = None
    write_notes: bool = False
    run_store: RunStore | None = None  # the undo journal; None: no journal


@dataclass
class RecordsOutcome:
    summary: RunSummary
    retry_after: float | None = None  # the longest Retry-After an upstream asked for

    @property
    def needs_retry(self) -> bool:
        """An upstream failure that a later try may not meet (throttled, unavailable), or a
        write the deadline stopped (a 200 would lose the event until the timer run)."""
        summary = self.summary
        return (
            summary.fatal
            or any(e.get("status") in RETRYABLE for e in summary.errors)
            or any(d.message == DEADLINE_MESSAGE for d in summary.decisions)
        )


class SettingCache:
    """The setting and cutoff read at most once per `seconds` per worker: each event would
    otherwise read them (1 to 3 requests). A change of the setting reaches the events within
    `seconds`; the timer run reads it afresh every time."""

    def __init__(
        self, read: SettingReader, seconds: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._read = read
        self._seconds = seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._value: tuple[AssociationSetting, list[str]] | None = None
        self._until = float("-inf")

    def __call__(self) -> tuple[AssociationSetting, list[str]]:
        with self._lock:
            if self._value is None or self._monotonic() >= self._until:
                self._value = self._read()
                self._until = self._monotonic() + self._seconds
            setting, warnings = self._value
            return setting, list(warnings)


@dataclass
class _Read:
    """What was read for the records of one request: the rules' input."""

    subscriptions: list[PcSubscription] = field(default_factory=list)
    records: dict[str, SubscriptionRecord] = field(default_factory=dict)
    provider_accounts: dict[str, ProviderAccount] = field(default_factory=dict)
    contracts: dict[str, BillingContract] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class _NotFound(Exception):
    def __init__(self, item: dict[str, object]) -> None:
        self.item = item
        super().__init__(str(item["message"]))


def run_records(
    deps: RecordsDeps, request: RecordsRequest, run_id: str | None = None
) -> RecordsOutcome:
    run_id = run_id or str(uuid.uuid4())
    with run_context(run_id):
        rlog = RunLog(log, {"run_id": run_id})
        outcome = RecordsOutcome(
            RunSummary(run_id=run_id, started_at=deps.clock(), mode=MODE, dry_run=request.dry_run)
        )
        summary = outcome.summary
        rlog.info("records: %d (%s)", len(request.record_ids), run_kind(request.dry_run))
        try:
            _run(deps, request, outcome, rlog)
        except (ApiError, AuthError) as exc:
            summary.fatal = True
            summary.errors.append(error_json(exc, None))
            outcome.retry_after = _retry_after(exc, outcome.retry_after)
            rlog.error("records failed: %s", exc)
        summary.finished_at = deps.clock()
        rlog.info(
            "records %s: %s", summary.status, counts_sentence(summary.counts(), request.dry_run)
        )
        return outcome


def _run(deps: RecordsDeps, request: RecordsRequest, outcome: RecordsOutcome, rlog: RunLog) -> None:
    summary = outcome.summary
    writes_notes = deps.write_notes and not request.dry_run
    if writes_notes and refuse_without_notes(deps.bindings, summary) is not None:
        return
    setting, warnings = deps.setting()
    summary.setting = setting
    summary.warnings.extend(warnings)
    started = deps.monotonic()
    deadline = started + request.budget_seconds if request.budget_seconds else None
    read = _read_all(deps, request.record_ids, outcome, deadline, rlog)
    summary.customers = len({s.customer_id for s in read.subscriptions if s.customer_id})
    summary.warnings.extend(read.warnings)
    world = World(
        setting=setting,
        subscriptions=read.subscriptions,
        records=list(read.records.values()),
        provider_accounts=list(read.provider_accounts.values()),
        contracts=list(read.contracts.values()),
        landing=deps.landing,
    )
    decisions = [decide(world, sub) for sub in read.subscriptions]
    summary.decisions = _write(deps, request, world, decisions, summary, deadline)
    summary.namer = _names(deps, read, summary, rlog)


def _names(deps: RecordsDeps, read: _Read, summary: RunSummary, rlog: RunLog) -> Namer:
    """The names the answer shows, as the sync names them (operations/sync.py `_names`): the
    Account and contract names the Dataverse reads carried (the lookups' formatted values,
    rules/names.py), one `In` query only for an Account no read named, and the customers' names
    from the map the last full run kept (operations/customer_names.py; one storage read, no
    Partner Center call: an event costs at most one)."""
    pas, contracts = list(read.provider_accounts.values()), list(read.contracts.values())
    records = list(read.records.values())
    names = account_names_read(pas, contracts, records)
    missing = unnamed(accounts_to_name(summary.decisions, pas), names)
    customers: dict[str, str] = {}
    try:
        if missing:
            names.update(deps.repository.account_names(missing))
    except (ApiError, AuthError) as exc:
        summary.warnings.append(f"the Account names could not be read ({exc}): ids are shown")
        rlog.warning("account names not read: %s", exc)
    if any(d.subscription.customer_id for d in summary.decisions):
        try:
            customers = load_customer_names(deps.run_store)
        except Work365Error as exc:
            rlog.warning("the stored customer names could not be read: %s", exc)
    return Namer(
        provider_accounts=pas,
        contracts=contracts,
        account_names=names,
        since=summary.setting.since if summary.setting else None,
        customer_names=customers,
    ).with_contract_names(contract_names_read(contracts, records))


def _read_all(
    deps: RecordsDeps,
    record_ids: Sequence[str],
    outcome: RecordsOutcome,
    deadline: float | None,
    rlog: RunLog,
) -> _Read:
    read = _Read()
    pc = deps.partner_center(outcome.summary.run_id)
    for position, record_id in enumerate(record_ids):
        if deadline is not None and deps.monotonic() >= deadline:
            _not_started(outcome, record_ids[position:], "dataverse", 503, "deadline")
            break
        try:
            _read_one(deps, pc, record_id, read)
        except _NotFound as exc:
            rlog.info("record %s: %s", record_id, exc)
            outcome.summary.errors.append(exc.item)
        except (ApiError, AuthError) as exc:
            rlog.error("record %s: %s", record_id, exc)
            item = error_json(exc, None)
            outcome.summary.errors.append(
                {**item, "message": f"record {record_id}: {item['message']}"}
            )
            outcome.retry_after = _retry_after(exc, outcome.retry_after)
            if item["status"] in RETRYABLE:  # the others would meet it too: stop asking
                status = int(str(item["status"]))
                service = str(item["service"])  # the service that failed, not always Dataverse
                left = record_ids[position + 1 :]
                _not_started(outcome, left, service, status, str(item["code"]))
                break
    return read


def _not_started(
    outcome: RecordsOutcome, ids: Sequence[str], service: str, status: int, code: str
) -> None:
    for record_id in ids:
        outcome.summary.errors.append(
            {
                "customerId": None,
                "service": service,
                "status": status,
                "code": code,
                "message": f"record {record_id}: {NOT_STARTED}",
            }
        )


def _read_one(deps: RecordsDeps, pc: PartnerCenterClient, record_id: str, read: _Read) -> None:
    repo = deps.repository
    try:
        record = repo.record(record_id)
    except NotFoundError:
        raise _NotFound(
            _missing(record_id, "record-not-found", "no such subscription record")
        ) from None
    subscription_id = record.provider_subscription_id
    if not subscription_id:
        raise _NotFound(
            _missing(
                record_id,
                "not-a-provider-subscription",
                "the record has no provider subscription id: it is not a provider subscription",
            )
        )
    customer = customer_of(repo, record)
    if customer is None:  # not guessed: the rules say unresolved-customer
        sub = PcSubscription(id=subscription_id, customer_id="")
        _add(read, sub, repo.records_for_subscriptions([subscription_id]), [], [])
        return
    try:
        sub = pc.subscription(customer, subscription_id)
    except NotFoundError:
        # The Account's Provider Accounts name another customer than the subscription's: not
        # guessed either (unresolved-customer); the timer run, which lists Partner Center,
        # decides it.
        read.warnings.append(
            f"record {record_id}: Partner Center has no subscription {subscription_id} for "
            f"customer {customer} (the customer of its Account's Provider Accounts)"
        )
        unknown = PcSubscription(id=subscription_id, customer_id="")
        _add(read, unknown, repo.records_for_subscriptions([subscription_id]), [], [])
        return
    pas = repo.provider_accounts_of_customers([customer])
    ids = [subscription_id]
    if deps.landing is not None and sub.parent_subscription_id:  # a landing rule's parent
        ids.append(sub.parent_subscription_id)
    accounts = sorted({pa.account_id for pa in pas if pa.account_id})
    columns = deps.landing.columns if deps.landing is not None else None
    contracts = repo.default_contracts_of_accounts(accounts, columns) if accounts else []
    _add(read, sub, repo.records_for_subscriptions(ids), pas, contracts)


def customer_of(repo: Repository, record: SubscriptionRecord) -> str | None:
    """The Partner Center customer of a record: the one customer id the Provider Accounts of
    its Account carry. None when it has no Account, or they carry none or several."""
    if not record.account_id:
        return None
    customers = {
        pa.customer_id.lower()
        for pa in repo.provider_accounts_of_accounts([record.account_id])
        if pa.customer_id
    }
    return customers.pop() if len(customers) == 1 else None


def _add(
    read: _Read,
    sub: PcSubscription,
    records: Sequence[SubscriptionRecord],
    pas: Sequence[ProviderAccount],
    contracts: Sequence[BillingContract],
) -> None:
    if all(s.id.lower() != sub.id.lower() for s in read.subscriptions):
        read.subscriptions.append(sub)
    read.records.update((r.id.lower(), r) for r in records)
    read.provider_accounts.update((pa.id.lower(), pa) for pa in pas)
    read.contracts.update((c.id.lower(), c) for c in contracts)


def _missing(record_id: str, code: str, why: str) -> dict[str, object]:
    return {
        "customerId": None,
        "service": "dataverse",
        "status": 404,
        "code": code,
        "message": f"record {record_id}: {why}",
    }


def _retry_after(exc: Exception, current: float | None) -> float | None:
    if isinstance(exc, ThrottledError) and exc.retry_after is not None:
        return max(exc.retry_after, current or 0.0)
    return current


def _write(
    deps: RecordsDeps,
    request: RecordsRequest,
    world: World,
    decisions: list[Decision],
    summary: RunSummary,
    deadline: float | None,
) -> list[Decision]:
    """The sync's writer over these decisions: the same batches, If-Match, notes, journal."""
    rlog = RunLog(log, {"run_id": summary.run_id})
    writes = [d for d in decisions if d.action is not Action.NONE]
    if request.dry_run or not writes:
        return decisions
    return write_decisions(deps, world, decisions, summary, rlog, deadline)
