"""Orchestration: read in bulk -> plan -> write conditionally -> RunSummary."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .association import Action, Decision, Reason, World, decide_for_record, plan
from .errors import ApiError, AuthError, ConflictError, NotFoundError, Work365Error
from .metadata import SubscriptionBindings
from .model import Customer, PcSubscription, norm_id
from .partner_center import PartnerCenterClient, is_no_relationship
from .repository import Repository
from .summary import RunSummary

log = logging.getLogger(__name__)

MAX_WRITE_ATTEMPTS = 2  # a write that meets a 412 is re-read, re-decided and tried once more


@dataclass(frozen=True)
class SyncRequest:
    dry_run: bool = False
    customer_ids: tuple[str, ...] = ()
    budget_seconds: float | None = None  # stop taking new customers after this long


class RunLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the run id (the correlation id sent to Partner Center)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs.setdefault("extra", {}).update(extra)
        return f"[run {extra.get('run_id')}] {msg}", kwargs


@dataclass(frozen=True)
class SyncDeps:
    repository: Repository
    partner_center: Callable[[str], PartnerCenterClient]  # correlation id -> client
    bindings: Callable[[], SubscriptionBindings]  # cached per worker by the caller
    create_missing: bool
    associate_since: datetime | None
    concurrency: int = 8
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    monotonic: Callable[[], float] = time.monotonic


def run_sync(deps: SyncDeps, request: SyncRequest, run_id: str | None = None) -> RunSummary:
    run_id = run_id or str(uuid.uuid4())
    rlog = RunLog(log, {"run_id": run_id})
    started = deps.monotonic()
    deadline = started + request.budget_seconds if request.budget_seconds else None
    summary = RunSummary(run_id=run_id, started_at=deps.clock(), dry_run=request.dry_run)
    rlog.info(
        "sync started (dry run: %s, customers: %s, create mode: %s)",
        request.dry_run,
        ",".join(request.customer_ids) or "all",
        deps.create_missing,
    )
    try:
        _run(deps, request, summary, rlog, deadline)
    except (ApiError, AuthError) as exc:
        summary.fatal = True
        summary.errors.append(_error_json(exc, None))
        rlog.error("sync failed: %s", exc)
    summary.finished_at = deps.clock()
    rlog.info(
        "sync %s in %.1f s: %s",
        summary.status,
        deps.monotonic() - started,
        summary.counts(),
    )
    return summary


def _error_json(exc: Work365Error, customer_id: str | None) -> dict[str, object]:
    if isinstance(exc, ApiError):
        return exc.to_json(customer_id)
    service = getattr(exc, "service", "auth")
    return {
        "customerId": customer_id,
        "service": service,
        "status": 401,
        "code": getattr(exc, "code", "") or "auth",
        "message": str(exc),
    }


def _run(
    deps: SyncDeps,
    request: SyncRequest,
    summary: RunSummary,
    rlog: RunLog,
    deadline: float | None,
) -> None:
    repo = deps.repository
    setting, warnings = repo.read_setting(deps.associate_since)
    summary.setting = setting
    summary.warnings.extend(warnings)
    rlog.info(
        "setting: associate default billing contract = %s, cutoff %s (%s)",
        setting.enabled,
        setting.since.isoformat() if setting.since else None,
        setting.since_source,
    )
    provider_accounts = repo.provider_accounts()
    contracts = repo.default_contracts()
    records = repo.subscription_records()
    rlog.info(
        "dataverse: %d provider accounts, %d default contracts, %d subscription records",
        len(provider_accounts),
        len(contracts),
        len(records),
    )

    subscriptions = _collect_subscriptions(deps, request, summary, rlog, deadline)
    world = World(
        setting=setting,
        subscriptions=subscriptions,
        records=records,
        provider_accounts=provider_accounts,
        contracts=contracts,
        create_missing=deps.create_missing,
    )
    decisions = plan(world)
    writes = [d for d in decisions if d.action is not Action.NONE]
    if request.dry_run or not writes:
        summary.decisions = decisions
        rlog.info("%d writes planned%s", len(writes), " (dry run: none made)" if writes else "")
        return
    bindings = deps.bindings()
    rlog.info("writing %d subscriptions", len(writes))
    final: list[Decision] = []
    for decision in decisions:
        if decision.action is Action.NONE:
            final.append(decision)
            continue
        final.append(_write(repo, world, bindings, decision, summary, rlog))
    summary.decisions = final


def _collect_subscriptions(
    deps: SyncDeps,
    request: SyncRequest,
    summary: RunSummary,
    rlog: RunLog,
    deadline: float | None,
) -> list[PcSubscription]:
    pc = deps.partner_center(summary.run_id)
    if request.customer_ids:
        customers = [Customer(id=norm_id(c)) for c in request.customer_ids]
    else:
        customers = list(pc.iter_customers())
    summary.customers = len(customers)
    rlog.info("partner center: %d customers", len(customers))

    def fetch(customer: Customer) -> tuple[Customer, list[PcSubscription] | None, Exception | None]:
        if deadline is not None and deps.monotonic() >= deadline:
            return customer, None, None
        try:
            return customer, pc.subscriptions(customer.id), None
        except (ApiError, AuthError) as exc:
            return customer, None, exc

    out: list[PcSubscription] = []
    with ThreadPoolExecutor(max_workers=max(1, deps.concurrency)) as pool:
        for customer, subs, exc in pool.map(fetch, customers):
            if exc is not None:
                assert isinstance(exc, Work365Error)
                summary.errors.append(_error_json(exc, customer.id))
                if isinstance(exc, ApiError) and is_no_relationship(exc):
                    rlog.warning(
                        "customer %s: no reseller relationship (403 20002), skipped", customer.id
                    )
                else:
                    rlog.error("customer %s: subscriptions failed: %s", customer.id, exc)
            elif subs is None:
                summary.skipped_customers.append({"customerId": customer.id, "why": "deadline"})
            else:
                out.extend(subs)
    if summary.skipped_customers:
        rlog.warning(
            "run budget reached: %d customers skipped, the next run takes them",
            len(summary.skipped_customers),
        )
    return out


def _write(
    repo: Repository,
    world: World,
    bindings: SubscriptionBindings,
    decision: Decision,
    summary: RunSummary,
    rlog: RunLog,
) -> Decision:
    """Carry out one decision; on a 412 re-read the record, decide again, and retry once."""
    sub = decision.subscription
    for _attempt in range(MAX_WRITE_ATTEMPTS):
        try:
            if decision.action is Action.ASSIGN:
                assert decision.record is not None and decision.contract_id is not None
                repo.assign(decision.record, decision.contract_id, bindings)
                rlog.info(
                    "subscription %s: record %s assigned to contract %s",
                    sub.id,
                    decision.record.id,
                    decision.contract_id,
                )
                return decision
            if decision.action is Action.CREATE:
                contract = (
                    decision.contract_id if decision.reason is Reason.DEFAULT_CONTRACT else None
                )
                record_id = repo.create(sub, decision.account_id, contract, bindings)
                summary.created += 1
                rlog.info("subscription %s: record %s created", sub.id, record_id)
                created = repo_record_stub(decision, record_id)
                return replace(decision, record=created)
            return decision
        except ConflictError:
            rlog.info("subscription %s: changed since read (412); re-reading", sub.id)
            decision = _redecide(repo, world, bindings, decision)
            if decision.action is Action.NONE:
                return decision
        except ApiError as exc:
            summary.errors.append(_error_json(exc, sub.customer_id))
            rlog.error("subscription %s: write failed: %s", sub.id, exc)
            return _failed(decision, str(exc))
    return _failed(decision, "the record kept changing while we wrote; the next run retries it")


def _redecide(
    repo: Repository, world: World, bindings: SubscriptionBindings, decision: Decision
) -> Decision:
    sub = decision.subscription
    address = (
        decision.record.id if decision.record is not None else repo.create_address(sub, bindings)
    )
    try:
        record = repo.record(address)
    except NotFoundError:
        record = None
    return decide_for_record(world, sub, record)


def repo_record_stub(decision: Decision, record_id: str) -> Any:
    from .model import SubscriptionRecord

    return SubscriptionRecord(
        id=record_id,
        provider_subscription_id=decision.subscription.id,
        account_id=decision.account_id,
        billing_contract_id=decision.contract_id,
        created_on=None,
    )


def _failed(decision: Decision, message: str) -> Decision:
    return Decision(
        decision.subscription,
        decision.record,
        Reason.ERROR,
        Action.NONE,
        account_id=decision.account_id,
        message=message,
    )


def scoped_ids(values: Sequence[str]) -> tuple[str, ...]:
    """Customer ids validated as GUIDs, lower-cased, de-duplicated in order (ValueError)."""
    seen: dict[str, None] = {}
    for value in values:
        seen[norm_id(value)] = None
    return tuple(seen)
