"""Helpers of the chaos runs (tests/integration/test_chaos.py): a Dataverse emulator that keeps a
journal of every row change and who made it, a session that tags, cuts and kills a run's
requests, the chaos world, the rules' expectation computed from the emulator's rows, and the
write ledger that holds every run to what it reported.

Who wrote what: each run's session sends `X-Chaos-Run: <label>` (and `X-Chaos-Request: <n>` on
its Dataverse writes); the emulator compares the rows before and after every write request it
serves and journals each change under that label, a person's edits (no label) under `person`, and
the changes of a `race` fault under `race`. Nothing here parses the service's own output to
decide what happened: the journal is the ground truth, the summaries are held to it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from tests.integration.conftest import OLD, ScenarioBuilder, gid
from tests.integration.reliability import Killed, is_dataverse_write
from work365_fn.adapters.schema import Schema
from work365_fn.adapters.transport import build_session
from work365_fn.rules import World, plan
from work365_fn.rules.association import Decision, resolve_account
from work365_fn.rules.model import (
    AssociationSetting,
    BillingContract,
    PcSubscription,
    ProviderAccount,
    SubscriptionRecord,
)
from work365_fn.rules.timestamps import parse_timestamp
from work365_fn.sandbox.core import Request, Response, TokenIssuer
from work365_fn.sandbox.dataverse import DataverseEmulator
from work365_fn.sandbox.runner import DataverseLike
from work365_fn.sandbox.scenario import Scenario

RUN_HEADER = "X-Chaos-Run"
REQUEST_HEADER = "X-Chaos-Request"
PERSON = "person"
RACE = "race"
S = Schema()
SUBS = S.subscription.entity_set
CONTRACTS = S.billing_contract.entity_set
# Every table the service can see: it may write subscription rows only.
OBSERVED = {
    SUBS: S.subscription.id,
    CONTRACTS: S.billing_contract.id,
    S.provider_account.entity_set: S.provider_account.id,
    S.setting.entity_set: S.setting.id,
    S.account.entity_set: S.account.id,
}


# --- the emulator's clock and journal --------------------------------------------------------


class StepClock:
    """The Dataverse emulator's clock: moved by the walk, one minute a step, so that which
    records are new (created on or after the cutoff) does not depend on how fast a run is."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, minutes: int = 1) -> datetime:
        with self._lock:
            self.now += timedelta(minutes=minutes)
            return self.now


@dataclass(frozen=True)
class Record:
    """A subscription row as the journal keeps it."""

    id: str
    sub: str | None
    account: str | None
    contract: str | None
    name: str
    created_on: datetime | None
    etag: str

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Record:
        t = S.subscription
        return cls(
            id=str(row[t.id]).lower(),
            sub=_low(row.get(t.provider_subscription_id)),
            account=_low(row.get(f"_{t.account}_value")),
            contract=_low(row.get(f"_{t.billing_contract}_value")),
            name=str(row.get(t.name) or ""),
            created_on=parse_timestamp(str(row.get("createdon") or "")),
            etag=str(row.get("@odata.etag") or ""),
        )


@dataclass(frozen=True)
class Change:
    """One row changed by one request (or one race): before is None for a new row."""

    seq: int
    source: str  # a run's label, PERSON or RACE
    request: int | None  # the run's write request number (X-Chaos-Request)
    entity_set: str
    row_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    same_sub_before: int = 0  # records of the same subscription before the change

    @property
    def record_before(self) -> Record | None:
        return None if self.before is None else Record.of(self.before)

    @property
    def record_after(self) -> Record | None:
        return None if self.after is None else Record.of(self.after)


class ObservedDataverse(DataverseEmulator):
    """The Dataverse emulator, journaling every row change with its source. Only public
    methods are wrapped (handle, race, rows); requests are already served one at a time by the
    emulator, so snapshotting around each write changes no interleaving that matters."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.journal: list[Change] = []
        self._observe = threading.Lock()

    def handle(self, request: Request) -> Response:
        if request.method.upper() in ("GET", "HEAD", "OPTIONS"):
            return super().handle(request)
        with self._observe:
            before = self._snapshot()
            response = super().handle(request)
            number = request.headers.get(REQUEST_HEADER)
            self._journal(
                before, request.headers.get(RUN_HEADER) or PERSON, int(number) if number else None
            )
        return response

    def race(self, request: Request, changes: dict[str, object]) -> None:
        with self._observe:
            before = self._snapshot()
            super().race(request, changes)
            self._journal(before, RACE, None)

    def _snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {
            entity_set: {str(row[key]).lower(): row for row in self.rows(entity_set)}
            for entity_set, key in OBSERVED.items()
        }

    def _journal(
        self, before: dict[str, dict[str, dict[str, Any]]], source: str, request: int | None
    ) -> None:
        after = self._snapshot()
        for entity_set, rows in after.items():
            old_rows = before[entity_set]
            for row_id in sorted(set(rows) | set(old_rows)):
                old, new = old_rows.get(row_id), rows.get(row_id)
                if old == new:
                    continue
                same = 0
                if entity_set == SUBS and new is not None:
                    sub = Record.of(new).sub
                    same = sum(1 for r in old_rows.values() if sub and Record.of(r).sub == sub)
                    same -= 1 if old is not None and Record.of(old).sub == sub else 0
                self.journal.append(
                    Change(len(self.journal), source, request, entity_set, row_id, old, new, same)
                )


def observed_dataverse(
    clock: StepClock, made: list[ObservedDataverse], db_paths: list[str]
) -> Callable[[str, str, TokenIssuer, Schema, bool], DataverseLike]:
    """A `dataverse_factory` for Sandbox.start: the observed emulator on `clock`; the emulator
    and the state file's path are handed back through `made` and `db_paths`."""

    def make(
        db_path: str, base_url: str, tokens: TokenIssuer, schema: Schema, alternate_key: bool
    ) -> DataverseLike:
        emulator = ObservedDataverse(
            db_path, base_url, tokens, schema=schema, alternate_key=alternate_key, clock=clock
        )
        made.append(emulator)
        db_paths.append(db_path)
        return emulator

    return make


def set_relationship(db_path: str, customer_id: str, relationship: bool) -> None:
    """Partner Center answers 403 code 20002 for a customer without a reseller relationship:
    the sandbox keeps that flag in its state file (a scenario's `relationship`), changed here
    between runs since the emulator has no call for it."""
    with sqlite3.connect(db_path, timeout=30) as db:
        db.execute(
            "UPDATE pc_customers SET relationship = ? WHERE id_key = ?",
            (int(relationship), customer_id.lower()),
        )
    db.close()


# --- the session of one run ---------------------------------------------------------------------

# How an answer gets lost once the write landed: a reset, a read timeout, a body cut off.
LOST_ANSWERS: tuple[type[requests.RequestException], ...] = (
    requests.ConnectionError,
    requests.ReadTimeout,
    requests.exceptions.ChunkedEncodingError,
)


class ChaosSession(requests.Session):
    """One run's HTTP session. Tags every request with the run's label; and on the way:

    - `lose`: the answers of these Dataverse write requests (1-based) are lost after the write
      landed: once the server has answered, the connection resets, the read times out or the
      body is cut off (LOST_ANSWERS);
    - `kill=(n, "before"|"after")`: the process dies (Killed, a BaseException) before the nth
      write is sent, or once it has landed; every later request, in every thread, dies too;
    - `expire_after`: after that many requests every token issued so far expires (real 401s);
    - `barrier`: the first write waits for the other run's first write (concurrent runs);
    - `clock`/`seconds_per_customer`: each Partner Center subscriptions call costs fake time
      (a run cut by its deadline).
    """

    def __init__(
        self,
        label: str,
        *,
        lose: Iterable[int] = (),
        kill: tuple[int, str] | None = None,
        expire: Callable[[], None] | None = None,
        expire_after: int | None = None,
        barrier: threading.Barrier | None = None,
        clock: Any = None,
        seconds_per_customer: float = 100.0,
    ) -> None:
        super().__init__()
        for prefix, adapter in build_session().adapters.items():
            self.mount(prefix, adapter)
        self.label = label
        self.lose = set(lose)
        self.kill = kill
        self.expire = expire
        self.expire_after = expire_after
        self.barrier = barrier
        self.clock = clock
        self.seconds_per_customer = seconds_per_customer
        self.requests_sent = 0
        self.writes = 0
        self.lost: set[int] = set()  # write requests that landed, their answer lost
        self.dead = False
        self.expired = False
        self._met = False
        self._lock = threading.Lock()

    def request(  # type: ignore[override]
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        m = method.decode() if isinstance(method, bytes) else method
        u = url.decode() if isinstance(url, bytes) else url
        write = is_dataverse_write(m, u)
        number = 0
        with self._lock:
            if self.dead:
                raise Killed("the process is gone")
            self.requests_sent += 1
            if (
                self.expire is not None
                and self.expire_after is not None
                and self.requests_sent == self.expire_after
            ):
                self.expired = True
                self.expire()
            if write:
                self.writes += 1
                number = self.writes
                if self.kill == (number, "before"):
                    self.dead = True
                    raise Killed(f"{self.label}: killed before write {number}")
            meet = write and not self._met and self.barrier is not None
            self._met = self._met or meet
        if meet and self.barrier is not None:
            # Broken when another run ended (or wrote nothing): go on alone.
            with contextlib.suppress(threading.BrokenBarrierError):
                self.barrier.wait(timeout=20)
        headers = dict(kwargs.pop("headers", None) or {})
        headers[RUN_HEADER] = self.label
        if write:
            headers[REQUEST_HEADER] = str(number)
        response = super().request(method, url, *args, headers=headers, **kwargs)
        if self.clock is not None and u.split("?")[0].endswith("/subscriptions"):
            self.clock.advance(self.seconds_per_customer)
        if write:
            with self._lock:
                if self.kill == (number, "after"):
                    self.dead = True
                    self.lost.add(number)
                    raise Killed(f"{self.label}: killed after write {number} landed")
                if number in self.lose:
                    self.lost.add(number)
                    how = LOST_ANSWERS[(number + len(self.label)) % len(LOST_ANSWERS)]
                    raise how(f"chaos: the answer to write {number} was lost after it landed")
        return response


# --- the world --------------------------------------------------------------------------------


@dataclass
class Model:
    """What the walk knows of the world it drives (not of what the runs did)."""

    accounts: list[str]
    assignable: dict[str, list[str]]  # account -> its contracts that may be made default
    person_contract: dict[str, str]  # account -> the contract a person picks (never default)
    customer_account: dict[str, str | None]  # customer -> the Account its orders' records name
    pc_subs: dict[str, str]  # Partner Center subscription -> customer
    setting_on: bool
    cutoff: datetime
    defaults: dict[str, set[str]] = field(default_factory=dict)  # account -> Is Default = Yes
    unrecorded: list[str] = field(default_factory=list)  # orders without a record (so far)
    next_n: int = 100
    relationship_off: set[str] = field(default_factory=set)


def chaos_world(alternate_key: bool) -> tuple[Scenario, Model]:
    """Every reason at once: four Accounts (one default, one default, none, two), a customer
    unmapped, one ambiguous, one without a Provider Account; new, old, assigned, mismatched and
    not-synced subscriptions; each Account with a contract only a person uses."""
    w = ScenarioBuilder()
    a1, a2 = w.account(1), w.account(2)  # defaults con 10, con 20
    a3 = w.account(3, default_contracts=0)
    a4 = w.account(4, default_contracts=2)  # con 40, con 41
    assignable = {a1: [gid("con", 10)], a2: [gid("con", 20)], a3: [], a4: [gid("con", 40)]}
    assignable[a4].append(gid("con", 41))
    for account, n in ((a1, 11), (a2, 21), (a3, 30), (a3, 31)):
        assignable[account].append(w.contract(n, account, default=False))
    person = {
        a: w.contract(n, a, default=False) for a, n in ((a1, 19), (a2, 29), (a3, 39), (a4, 49))
    }
    c1, c2 = w.customer(1, account_id=a1), w.customer(2, account_id=a2)
    c3, c4 = w.customer(3, account_id=a3), w.customer(4, account_id=a4)
    c5 = w.customer(5, account_id=None)  # a Provider Account without an Account
    c6 = w.customer(6, account_id=a1)
    w.raw["providerAccounts"].append(  # ... and another one naming another Account
        {"id": gid("pa", 60), "customerId": c6, "accountId": a2, "name": "PA 60"}
    )
    c7 = w.customer_without_provider_account(7)
    c8 = w.customer(8, account_id=a1)
    w.new_subscription(1, c1, account_id=a1)
    w.new_subscription(2, c1)  # a record without an Account
    w.new_subscription(3, c1, account_id=a1, created_on=OLD)  # before the cutoff
    w.new_subscription(4, c1, account_id=a1, contract_id=gid("con", 10))  # already assigned
    w.pc_subscription(5, c1)  # not synced
    w.new_subscription(6, c1, account_id=a2)  # account mismatch
    w.new_subscription(7, c2, account_id=a2)
    w.pc_subscription(8, c2)
    w.new_subscription(9, c3, account_id=a3)
    w.pc_subscription(10, c3)
    w.new_subscription(11, c4, account_id=a4)
    w.new_subscription(12, c5)
    w.new_subscription(13, c6)
    w.new_subscription(14, c7)
    w.new_subscription(15, c8, account_id=a1)
    w.pc_subscription(16, c8)
    w.record(90, gid("sub", 90), account_id=a1)  # a record Partner Center does not list
    pc_subs = {
        s["id"]: c["id"] for c in w.raw["partnerCenter"]["customers"] for s in c["subscriptions"]
    }
    model = Model(
        accounts=[a1, a2, a3, a4],
        assignable=assignable,
        person_contract=person,
        customer_account={c1: a1, c2: a2, c3: a3, c4: a4, c5: None, c6: a1, c7: None, c8: a1},
        pc_subs=pc_subs,
        setting_on=True,
        cutoff=datetime(2026, 1, 1, tzinfo=UTC),  # the scenario's enabledOn
        defaults={a1: {gid("con", 10)}, a2: {gid("con", 20)}, a3: set(), a4: set(assignable[a4])},
        unrecorded=[gid("sub", n) for n in (5, 8, 10, 16)],
    )
    return w.scenario(alternateKey=alternate_key), model


# --- what the rules give on the emulator's rows ------------------------------------------------


def rules_world(
    box_rows: Callable[[str], list[dict[str, Any]]], model: Model, create: bool
) -> World:
    """The rules' input built from the emulator's rows (not from anything the service read),
    the walk's own cutoff, and the Partner Center subscriptions of customers it can read."""
    t, c, p = S.subscription, S.billing_contract, S.provider_account
    records = [
        SubscriptionRecord(
            id=r.id,
            provider_subscription_id=r.sub,
            account_id=r.account,
            billing_contract_id=r.contract,
            created_on=r.created_on,
            etag=r.etag,
            name=r.name,
        )
        for r in (Record.of(row) for row in box_rows(t.entity_set))
    ]
    contracts = [
        BillingContract(
            id=str(row[c.id]).lower(),
            account_id=_low(row.get(f"_{c.account}_value")),
            is_default=bool(row.get(c.is_default)),
            active=row.get(c.state) == c.active_state,
        )
        for row in box_rows(c.entity_set)
    ]
    pas = [
        ProviderAccount(
            id=str(row[p.id]).lower(),
            customer_id=_low(row.get(p.customer_id)),
            account_id=_low(row.get(f"_{p.account}_value")),
        )
        for row in box_rows(p.entity_set)
    ]
    subs = [
        PcSubscription(id=sub, customer_id=customer)
        for sub, customer in sorted(model.pc_subs.items())
        if customer not in model.relationship_off
    ]
    setting = AssociationSetting(model.setting_on, model.cutoff, "audit")
    return World(setting, subs, records, pas, contracts, create_missing=create)


def step_states(
    before: Mapping[str, list[dict[str, Any]]], changes: Iterable[Change]
) -> list[dict[str, list[dict[str, Any]]]]:
    """The emulator's rows when a step began, then after each row change of the step."""
    states = [dict(before)]
    for e in changes:
        rows = {k: list(v) for k, v in states[-1].items()}
        key = OBSERVED[e.entity_set]
        table = [r for r in rows[e.entity_set] if str(r[key]).lower() != e.row_id]
        rows[e.entity_set] = table + ([e.after] if e.after is not None else [])
        states.append(rows)
    return states


def expected(world: World) -> dict[str, Decision]:
    return {d.subscription.id: d for d in plan(world)}


def landable(box_rows: Callable[[str], list[dict[str, Any]]]) -> dict[str, str]:
    """Account -> its one active default contract (Accounts with zero or several left out)."""
    c = S.billing_contract
    defaults: dict[str, list[str]] = {}
    for row in box_rows(c.entity_set):
        if row.get(c.is_default) and row.get(c.state) == c.active_state:
            account = _low(row.get(f"_{c.account}_value"))
            if account:
                defaults.setdefault(account, []).append(str(row[c.id]).lower())
    return {a: ids[0] for a, ids in defaults.items() if len(ids) == 1}


def mapped_accounts(
    box_rows: Callable[[str], list[dict[str, Any]]], model: Model
) -> dict[str, str | None]:
    """Subscription -> the Account its customer's Provider Accounts name (rule 3), else None."""
    world = rules_world(box_rows, model, create=False)
    out: dict[str, str | None] = {}
    for sub, customer in model.pc_subs.items():
        found = resolve_account(customer, world.pas_by_customer.get(customer.lower(), []))
        out[sub] = found.account_id if found.problem is None else None
    return out


def _low(value: object) -> str | None:
    return str(value).lower() if value else None


# --- the write ledger ---------------------------------------------------------------------------

ANSWER_LOST = "lost"  # a write whose answer its run never saw (connection reset, or killed after)


@dataclass
class RunOutcome:
    """One run of the walk: what it was told, what the world was when it ran, what it said."""

    step: int
    label: str
    describe: str
    dry: bool
    setting_on: bool
    cutoff: datetime
    landable: dict[str, str]  # Account -> its one active default, when the run ran
    accounts: dict[str, str | None]  # subscription -> the Account its customer maps to
    session: ChaosSession
    summary: dict[str, Any] | None  # None: the run was killed
    outcome: str  # the summary's status, or "killed"
    customers: tuple[str, ...] = ()  # a scoped run's customers

    def line(self) -> str:
        if self.summary is None:
            return f"{self.label}: killed ({self.describe})"
        counts = self.summary["counts"]
        reasons = {k: v for k, v in self.summary["byReason"].items() if v}
        return (
            f"{self.label}: {self.outcome} ({self.describe}) assigned={counts['assigned']} "
            f"created={counts['created']} failed={counts['failed']} "
            f"errors={len(self.summary['errors'])} lost={sorted(self.session.lost)} {reasons}"
        )


class Ledger:
    """Every run's summary, held to the journal of what really happened."""

    def __init__(self) -> None:
        self.runs: list[RunOutcome] = []
        self.count: dict[str, int] = {}

    def add(self, key: str, n: int = 1) -> None:
        self.count[key] = self.count.get(key, 0) + n

    def check_run(self, run: RunOutcome, journal: list[Change]) -> None:
        """The run's own writes (journal entries under its label) against its summary."""
        self.runs.append(run)
        where = f"run {run.label} ({run.describe})"
        mine = [e for e in journal if e.source == run.label]
        assert all(e.entity_set == SUBS for e in mine), (where, "wrote another table", mine)
        if run.dry:
            assert not mine, (where, "a dry run wrote", mine)
        by_sub: dict[str, Change] = {}
        for e in mine:
            after = _written(e, run, where)
            assert after.sub is not None and after.sub not in by_sub, (where, "wrote twice", e)
            by_sub[after.sub] = e
        if run.summary is None:
            self.add("writes of killed runs (no summary)", len(by_sub))
            return
        _check_summary_shape(run.summary, where)
        rows = {r["subscriptionId"]: r for r in run.summary["subscriptions"]}
        for sub, e in by_sub.items():
            self._account(run, rows.get(sub), e, where)
        for sub, row in rows.items():
            if row["action"] != "none" and not run.dry:
                e = by_sub.get(sub)
                assert e is not None, (where, "reports a write that did not happen", row)
                assert e.request not in run.session.lost, (where, "reports a lost write", row)
        if not run.dry:
            made = sum(
                1 for e in by_sub.values() if e.before is None and e.request not in run.session.lost
            )
            assert run.summary["counts"]["created"] == made, (where, "created count", made)

    def check_decisions(
        self,
        run: RunOutcome,
        model: Model,
        rows: list[Mapping[str, list[dict[str, Any]]]],
        create: bool,
        subs_of: Mapping[str, set[str]],
    ) -> None:
        """Each subscription the run reports got what the rules give on the world it read:
        the world when the step began, or, for a record written during the step (by another
        run, a race, or its own write whose answer was lost), the world after one of those
        writes; a decision is per subscription, so no other mix exists. `rows` holds the
        emulator's rows at each of those moments (`step_states`). `error` is always allowed (a
        fault may outlast the retries); what it cost is checked elsewhere. And nothing is
        missing: a customer is reported whole, and a full (or scoped) run reports every
        customer (asked for) but those in `errors` or `skippedCustomers`."""
        if run.summary is None:
            return
        where = f"run {run.label} ({run.describe})"
        found = run.summary["setting"]
        since = parse_timestamp(str(found["since"] or ""))
        if found["since"] is not None:
            assert found["associateDefaultBillingContract"] is model.setting_on, (where, found)
            if found["sinceSource"] != "audit" or since != model.cutoff:
                # Documented fallback: the audit history could not be read (a fault outlasted
                # the retries), so the cutoff is the setting row's modifiedon, never earlier.
                assert found["sinceSource"] == "modifiedon", (where, found, model.cutoff)
                assert since is not None and since >= model.cutoff, (where, found)
                assert any("falling back to modifiedon" in w for w in run.summary["warnings"])
                self.add("runs on the modifiedon fallback cutoff (audit read failed)")
                model = replace(model, cutoff=since)
        states = [expected(rules_world(r.__getitem__, model, create)) for r in rows]
        summary_rows = run.summary["subscriptions"]
        for row in summary_rows:
            if row["reason"] == "error":
                self.add("error decisions (a fault outlasted the retries)")
                continue
            got = (row["reason"], row["action"], row["billingContractId"])
            sub = row["subscriptionId"]
            wants = {_triple(d[sub]) for d in states if sub in d}
            assert got in wants, (where, "not what the rules give", row, sorted(wants, key=str))
            self.add("decisions checked against the rules")
        if run.outcome == "failed":
            assert not summary_rows, (where, "a failed run reports subscriptions")
            return
        unread = {str(e["customerId"]) for e in run.summary["errors"] if e.get("customerId")}
        unread |= {str(c["customerId"]) for c in run.summary["skippedCustomers"]}
        reported: dict[str, set[str]] = {}
        for row in summary_rows:
            reported.setdefault(row["customerId"], set()).add(row["subscriptionId"])
        for customer, subs in reported.items():
            assert subs == subs_of.get(customer, set()), (where, "customer reported in part")
        if run.summary["mode"] == "full":
            asked = set(run.customers) if run.customers else set(subs_of)
            missing = {c for c in asked - unread - set(reported) if subs_of.get(c)}
            assert not missing, (where, "customers missing from the summary", missing)
            assert set(reported) <= asked, (where, "customers it was not asked for")

    def _account(self, run: RunOutcome, row: dict[str, Any] | None, e: Change, where: str) -> None:
        errors = run.summary["errors"] if run.summary else []
        after = e.record_after
        assert after is not None and row is not None, (where, "wrote a subscription it omits", e)
        created = e.before is None
        if e.request not in run.session.lost:  # its answer came back: reported as done
            want = ("create" if created else "assign", after.contract)
            assert (row["action"], row["billingContractId"]) == want, (where, row, e)
            assert (row["reason"] == "default-contract") == (after.contract is not None), row
            if row["recordId"] is None and created:  # created, its id not read back (key)
                assert any(x["customerId"] == row["customerId"] for x in errors), (where, row)
                self.add("creates reported without their id (read-back failed)")
            else:
                assert row["recordId"] == after.id, (where, row, e)
            self.add("writes reported by their run")
            return
        # The write landed, its answer was lost: the replay met a 412 and the re-read found the
        # write done (DESIGN: reported as already-assigned), or the replays ran out (error).
        assert row["action"] == "none", (where, "reported a lost write as made", row, e)
        if after.contract is not None:
            assert row["reason"] in ("already-assigned", "error"), (where, row, e)
            if row["reason"] == "already-assigned":
                assert row["billingContractId"] == after.contract, (where, row, e)
        else:  # a create without a contract: the record is found, still without one
            assert row["reason"] not in ("default-contract", "already-assigned"), (where, row)
        kind = "create" if created else "assignment"
        self.add(f"lost answers ({kind}) reported {row['reason']}")

    def check_walk(self, journal: list[Change], final_rows: list[dict[str, Any]]) -> None:
        """Across all runs: each record assigned at most once, each write reported by at most
        one run, no duplicate record, every contract a person set still in place."""
        labels = {r.label for r in self.runs}
        assigned: dict[str, int] = {}
        inserted: dict[str, int] = {}
        person: dict[str, str] = {}
        for e in journal:
            if e.entity_set != SUBS:
                continue
            before, after = e.record_before, e.record_after
            assert after is not None
            if e.source in labels:
                if after.contract is not None and (before is None or before.contract is None):
                    assigned[after.id] = assigned.get(after.id, 0) + 1
                if before is None and after.sub:
                    inserted[after.sub] = inserted.get(after.sub, 0) + 1
            elif after.contract is not None and (
                before is None or before.contract != after.contract
            ):
                person[after.id] = after.contract  # a person's (or a race's) contract
        twice = {k: n for k, n in assigned.items() if n > 1}
        assert not twice, ("records assigned more than once", twice)
        created_twice = {k: n for k, n in inserted.items() if n > 1}
        assert not created_twice, ("subscriptions created more than once", created_twice)
        claims: dict[str, list[str]] = {}
        for run in self.runs:
            if run.summary is None or run.dry:
                continue
            for row in run.summary["subscriptions"]:
                if row["reason"] == "default-contract" and row["action"] != "none":
                    claims.setdefault(row["subscriptionId"], []).append(run.label)
        doubles = {s: who for s, who in claims.items() if len(who) > 1}
        self.add("double reports", len(doubles))
        assert not doubles, ("a write reported by more than one run", doubles)
        per_sub: dict[str, int] = {}
        final = {r.id: r for r in (Record.of(row) for row in final_rows)}
        for r in final.values():
            if r.sub:
                per_sub[r.sub] = per_sub.get(r.sub, 0) + 1
        duplicates = {s: n for s, n in per_sub.items() if n > 1}
        self.add("duplicate records", len(duplicates))
        assert not duplicates, ("duplicate records", duplicates)
        for record_id, contract in person.items():
            if record_id in final:
                got = final[record_id].contract
                assert got == contract, ("moved off a person's contract", record_id, contract, got)
        self.add("contracts set by a person, kept", len(person))


def _triple(d: Decision) -> tuple[str, str, str | None]:
    return (d.reason.value, d.action.value, d.contract_id)


def _written(e: Change, run: RunOutcome, where: str) -> Record:
    """A service write is a create, or an assignment of an unassigned record: nothing else."""
    before, after = e.record_before, e.record_after
    assert after is not None, (where, "deleted a record", e)
    if before is None:
        assert e.same_sub_before == 0, (where, "created a duplicate record", e)
        if not run.setting_on:
            assert after.contract is None, (where, "assigned while the setting was off", e)
    else:
        assert before.contract is None and after.contract is not None, (where, "moved", e)
        same = (before.sub, before.account, before.name, before.created_on)
        assert same == (after.sub, after.account, after.name, after.created_on), (where, e)
        assert run.setting_on, (where, "assigned while the setting was off", e)
        assert before.created_on is not None and before.created_on >= run.cutoff, (
            where,
            "touched a subscription from before the cutoff",
            e,
        )
    if after.contract is not None:  # rule 3 and 4: the customer's Account, its one default
        account = run.accounts.get(after.sub or "")
        assert account is not None and after.account in (None, account), (where, "Account", e)
        assert after.contract == run.landable.get(account), (where, "not the one default", e)
    return after


def _check_summary_shape(summary: dict[str, Any], where: str) -> None:
    rows = summary["subscriptions"]
    assert len({r["subscriptionId"] for r in rows}) == len(rows), (where, "two reasons")
    counts = summary["counts"]
    total = counts["assigned"] + counts["unassigned"] + counts["unchanged"] + counts["failed"]
    assert total == counts["subscriptions"] == len(rows), (where, counts)
    assert sum(summary["byReason"].values()) == len(rows), (where, summary["byReason"])
