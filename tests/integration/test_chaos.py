"""Chaos runs (issue 12): a bounded, seeded random walk over the sandbox.

Each step is one of: a sync run (full, incremental, auto, scoped, dry run; create mode on or off)
under random faults from the sandbox's catalogue (429 with Retry-After and Dataverse's codes, 503,
500, dropped connections, malformed JSON, 401 refusals, every token expiring mid-run, 412 races
with a person, a write whose answer is lost after it landed, Partner Center 403 code 20002); a run
killed mid-way (before or after its nth write landed) or cut by its deadline; two or three runs at
once on one Dataverse (threads; with or without a shared state folder); a person's edit between
runs (a contract set on a record, a record's Account changed, an order and its record added); the
setting toggled (the cutoff moves); a contract's Is Default moved, doubled or removed.

Checked after every run, against the emulator's journal of who changed which row (chaos.py):
its writes are creates or assignments of unassigned, new records, to the one active default of
the customer's Account, none while the setting was off (create mode aside: no contract); its
summary reports each write it made as made, each write whose answer it lost as `already-assigned`
(or `error` when the replays ran out: DESIGN's known limit, accounted one by one), and nothing it
did not write; every decision it reports is what `work365_fn.rules.plan` gives on the emulator's
rows as they were when it read them; no customer is reported in part or left out unexplained.

After the faults stop and one clean run: the final state is what the rules give on the final
data (nothing left to write; a dry run agrees); no record was moved off a contract, a person's
contracts are all in place; no duplicate record; across all runs no write is reported by two.

The seed and every step (with each run's summary) are printed on failure; replay one with
`CHAOS_SEEDS=1117 CHAOS_STEPS=40 pytest tests/integration/test_chaos.py` (`CHAOS_VERBOSE=1 ... -s`
prints the walk when it passes too). Threads make a replay close, not identical: the invariants
hold for any interleaving. Nothing sleeps: retries' waits are recorded, the run deadline runs on
a fake clock, the emulator's clock moves a minute a step.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.chaos import (
    CONTRACTS,
    OBSERVED,
    SUBS,
    Change,
    ChaosSession,
    Ledger,
    ObservedDataverse,
    Record,
    RunOutcome,
    StepClock,
    chaos_world,
    expected,
    landable,
    mapped_accounts,
    observed_dataverse,
    rules_world,
    set_relationship,
    step_states,
)
from tests.integration.conftest import ScenarioBuilder, gid
from tests.integration.reliability import FakeClock, Killed, final_state, rows_by_subscription, run
from work365_fn.composition import Services
from work365_fn.operations.sync import SyncRequest
from work365_fn.rules.reasons import Action, Reason
from work365_fn.rules.timestamps import parse_timestamp
from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.dataverse import SETTING_ROW_ID
from work365_fn.settings import Settings

# Four walks of 40 steps (about 10 s in all). Between them these seeds meet every fault of the
# catalogue, races, lost answers of assignments and creates, kills after a write landed, a
# keyed create whose id could not be read back, the modifiedon fallback and `error` decisions.
SEEDS = [int(s) for s in os.environ.get("CHAOS_SEEDS", "1090,1092,1117,1119").split(",")]
STEPS = int(os.environ.get("CHAOS_STEPS", "40"))
SETTING_COLUMN = "work365_associatedefaultbillingcontract"
# Records read by provider subscription id (scoped reads, and the read-back of keyed creates).
BY_KEY = r"work365_subscriptions\?.*Microsoft\.Dynamics\.CRM\.In"

ACTIONS = {
    "run": 28,
    "kill": 12,
    "concurrent": 16,
    "person-contract": 7,
    "person-account": 5,
    "new-order": 14,
    "add-record": 7,
    "toggle-setting": 4,
    "move-default": 8,
}
RUN_KINDS = {
    "full": 30,
    "incremental": 18,
    "auto": 7,
    "scoped": 20,
    "dry-full": 15,
    "dry-scoped": 10,
}
# Where a fault strikes (the calls of the fault matrix, plus the keyed record reads), weighted.
TARGETS: dict[str, tuple[int, dict[str, str]]] = {
    "token": (1, {"service": "token", "path": "oauth2/v2.0/token"}),
    "customers": (2, {"service": "partnerCenter", "path": "/v1/customers$"}),
    "subscriptions": (3, {"service": "partnerCenter", "path": "/subscriptions$"}),
    "activity-log": (1, {"service": "partnerCenter", "path": "/v1/auditrecords"}),
    "setting": (1, {"service": "dataverse", "path": "work365_adminhubsettings"}),
    "audit-history": (1, {"service": "dataverse", "path": "RetrieveAttributeChangeHistory"}),
    "provider-accounts": (2, {"service": "dataverse", "path": "work365_provideraccounts"}),
    "contracts": (2, {"service": "dataverse", "path": "work365_billingcontracts"}),
    "records": (3, {"service": "dataverse", "method": "GET", "path": "work365_subscriptions"}),
    "records-by-key": (2, {"service": "dataverse", "method": "GET", "path": BY_KEY}),
    "metadata": (1, {"service": "dataverse", "path": "EntityDefinitions"}),
    "batch": (6, {"service": "dataverse", "method": "POST", "path": r"\$batch"}),
}
FAULT_KINDS = ["429", "503", "500", "drop", "malformed-json", "401"]
REPEATS = {"times1": 60, "times2": 25, "every2": 10, "every1": 5}


@dataclass
class RunSpec:
    kind: str  # full | incremental | auto | scoped | dry-full | dry-scoped
    create: bool
    batch: int
    concurrency: int
    customers: tuple[str, ...] = ()
    lose: tuple[int, ...] = ()  # write requests whose answer is lost after they landed
    expire_after: int | None = None  # every token expires after this many requests
    kill: tuple[int, str] | None = None  # (n, "before"|"after"): the process dies at write n
    budget: float | None = None  # seconds: a run cut by its deadline (fake clock)
    host: str = "cloud"  # "laptop": its own state folder (watermark)

    @property
    def dry(self) -> bool:
        return self.kind.startswith("dry")

    def describe(self) -> str:
        parts = [self.kind, f"create={'on' if self.create else 'off'}", f"batch={self.batch}"]
        parts.append(f"threads={1 if self.budget else self.concurrency}")
        if self.customers:
            parts.append("customers=" + ",".join(c[-2:] for c in self.customers))
        if self.lose:
            parts.append(f"lose-answer-of-write={list(self.lose)}")
        if self.expire_after:
            parts.append(f"tokens-expire-after-request={self.expire_after}")
        if self.kill:
            parts.append(f"killed-{self.kill[1]}-write={self.kill[0]}")
        if self.budget:
            parts.append(f"deadline={self.budget:g}s")
        if self.host != "cloud":
            parts.append(self.host)
        return " ".join(parts)


@dataclass
class Stats:
    steps: Counter[str] = field(default_factory=Counter)
    runs: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)  # rules that fired, by kind


class Walk:
    """One seed's walk: its sandbox, its model of the world, its ledger."""

    def __init__(self, seed: int, tmp_path: Path) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.alternate_key = self.rng.random() < 0.34
        scenario, self.model = chaos_world(self.alternate_key)
        anchor = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
        self.clock = StepClock(anchor)
        made: list[ObservedDataverse] = []
        paths: list[str] = []
        self.box = Sandbox.start(
            scenario, dataverse_factory=observed_dataverse(self.clock, made, paths)
        )
        self.dv, self.db_path = made[0], paths[0]
        self.sleeps: list[float] = []
        self.person = Services.build(
            Settings.from_env({}, overrides=self.box.env), sleep=self.sleeps.append
        )
        self.laptop = str(tmp_path / "laptop")
        self.ledger = Ledger()
        self.steps: list[str] = [
            f"seed {seed}: alternate key {'on' if self.alternate_key else 'off'}"
        ]
        self.stats = Stats()
        self.mapped: dict[str, str | None] = {}

    def close(self) -> None:
        self.box.stop()

    # --- the walk ---------------------------------------------------------------------------

    def walk(self, steps: int) -> None:
        for n in range(1, steps + 1):
            self.clock.advance()
            action = self.rng.choices(list(ACTIONS), list(ACTIONS.values()))[0]
            self.stats.steps[action] += 1
            getattr(self, "do_" + action.replace("-", "_"))(n)

    def note(self, n: int, text: str) -> None:
        self.steps.append(f"{n:02d} {text}")

    def customers(self) -> list[str]:
        return sorted(self.model.customer_account)

    def run_spec(self, kinds: dict[str, int] = RUN_KINDS) -> RunSpec:
        rng = self.rng
        kind = rng.choices(list(kinds), list(kinds.values()))[0]
        spec = RunSpec(kind, rng.random() < 0.5, rng.randint(1, 3), rng.choice([1, 4]))
        if kind.endswith("scoped"):
            spec.customers = tuple(sorted(rng.sample(self.customers(), rng.randint(1, 3))))
        if rng.random() < 0.3:
            spec.lose = (rng.choice([1, 1, 2]),)
        if rng.random() < 0.15:
            spec.expire_after = rng.randint(2, 14)
        return spec

    def fault_rule(self, allow_race: bool) -> dict[str, Any]:
        rng = self.rng
        target = rng.choices(list(TARGETS), [w for w, _ in TARGETS.values()])[0]
        if target == "batch" and allow_race and rng.random() < 0.4:
            return self.race_rule()
        rule: dict[str, Any] = {**TARGETS[target][1], "kind": rng.choice(FAULT_KINDS)}
        if rule["kind"] == "429":
            rule["retryAfter"] = rng.choice([1, 2, 5])
            if rule["service"] == "dataverse" and rng.random() < 0.4:
                rule["code"] = rng.choice(["0x80072321", "0x80072326"])
        if rule["kind"] == "503" and rng.random() < 0.5:
            rule["retryAfter"] = 1
        repeat = rng.choices(list(REPEATS), list(REPEATS.values()))[0]
        rule["times" if repeat.startswith("times") else "every"] = int(repeat[-1])
        return rule

    def race_rule(self) -> dict[str, Any]:
        """A person changes the rows a `$batch` addresses just before it lands (412s). Only
        when no run of the step is in create mode: on a create-only PATCH the sandbox's race
        creates the row with just these columns (no provider subscription id), a row no person
        or provider sync would make."""
        rng = self.rng
        account = rng.choice(self.model.accounts)
        change: dict[str, object] = rng.choice(
            [
                {"_work365_billingcontract_value": self.model.person_contract[account]},
                {"_work365_account_value": account},
                {"work365_name": "renamed by a billing admin"},
            ]
        )
        batch = TARGETS["batch"][1]
        return {**batch, "kind": "race", "set": change, "times": rng.choice([1, 2])}

    def step_faults(self, specs: list[RunSpec]) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
        allow_race = not any(s.create for s in specs)  # see race_rule
        rules = [self.fault_rule(allow_race) for _ in range(self.rng.choice([0, 1, 1, 2, 3]))]
        if allow_race and self.rng.random() < 0.3:
            rules.append(self.race_rule())
        lost_customer = ()
        if self.rng.random() < 0.2:  # Partner Center 403 code 20002 for one customer
            lost_customer = (self.rng.choice(self.customers()),)
        return rules, lost_customer

    # --- steps ------------------------------------------------------------------------------

    def do_run(self, n: int) -> None:
        spec = self.run_spec()
        self.execute(n, [spec], *self.step_faults([spec]))

    def do_kill(self, n: int) -> None:
        spec = self.run_spec({"full": 50, "incremental": 20, "scoped": 30})
        spec.lose = ()
        if self.rng.random() < 0.3:
            spec.budget = self.rng.choice([50.0, 180.0, 450.0])
        else:
            spec.kill = (self.rng.randint(1, 3), self.rng.choice(["before", "after"]))
        self.execute(n, [spec], *self.step_faults([spec]))

    def do_concurrent(self, n: int) -> None:
        specs = [self.run_spec() for _ in range(3 if self.rng.random() < 0.25 else 2)]
        for spec in specs:
            spec.host = self.rng.choice(["cloud", "laptop"])
            if not spec.dry and self.rng.random() < 0.2:
                spec.kill = (self.rng.randint(1, 3), self.rng.choice(["before", "after"]))
        self.execute(n, specs, *self.step_faults(specs))

    def do_person_contract(self, n: int) -> None:
        sub = self.rng.choice([*sorted(self.model.pc_subs), gid("sub", 90)])
        account = self.rng.choice(self.model.accounts)
        contract = self.model.person_contract[account]
        records = self.records_of(sub)
        self.note(n, f"a person sets contract {contract[-2:]} on the record of sub {sub[-3:]}")
        if not records:
            self.steps[-1] += " (no record: nothing to do)"
            return
        nav = self.person.bindings().billing_contract_nav
        body = {f"{nav}@odata.bind": f"/{CONTRACTS}({contract})"}
        self.person.dataverse.update(SUBS, records[0].id, body, etag="*")

    def do_person_account(self, n: int) -> None:
        sub = self.rng.choice(sorted(self.model.pc_subs))
        account = self.rng.choice([*self.model.accounts, None])
        records = self.records_of(sub)
        shown = account[-2:] if account else "none"
        self.note(n, f"a person sets Account {shown} on the record of sub {sub[-3:]}")
        if not records:
            self.steps[-1] += " (no record: nothing to do)"
            return
        nav = self.person.bindings().account_nav
        value = f"/accounts({account})" if account else None
        self.person.dataverse.update(SUBS, records[0].id, {f"{nav}@odata.bind": value}, etag="*")

    def do_new_order(self, n: int) -> None:
        """Orders in Partner Center (one to three), most with their record made by the
        provider sync (now: new), some naming another Account than the customer's."""
        customer = self.rng.choice(self.customers())
        for _ in range(self.rng.randint(1, 3)):
            number = self.model.next_n
            self.model.next_n += 1
            sub = gid("sub", number)
            with_record = self.rng.random() < 0.7
            account = self.model.customer_account[customer]
            if with_record and self.rng.random() < 0.2:
                account = self.rng.choice(self.model.accounts)  # the provider sync chose another
            shown = f"Account {account[-2:] if account else 'none'}"
            record = f", its record ({shown})" if with_record else ""
            self.note(n, f"an order: sub {sub[-3:]} for customer {customer[-2:]}{record}")
            self.box.partner_center.add_subscription(
                customer,
                {"id": sub, "offerId": "CFQ7TTC0LFLX", "offerName": "Microsoft 365 E3",
                 "friendlyName": "E3", "quantity": 1, "status": "active",
                 "billingType": "license"},
            )  # fmt: skip
            self.model.pc_subs[sub] = customer
            if with_record:
                self.add_record(number, sub, account)
            else:
                self.model.unrecorded.append(sub)

    def do_add_record(self, n: int) -> None:
        """The provider sync catches up: a record for an order that had none (unless this
        service created one meanwhile, in create mode)."""
        if not self.model.unrecorded:
            self.note(n, "the provider sync has no order to catch up on")
            return
        sub = self.model.unrecorded.pop(self.rng.randrange(len(self.model.unrecorded)))
        account = self.model.customer_account[self.model.pc_subs[sub]]
        number = self.model.next_n
        self.model.next_n += 1
        self.note(n, f"the provider sync adds a record for sub {sub[-3:]}")
        if self.records_of(sub):
            self.steps[-1] += " (one exists: created by a run in create mode)"
            return
        self.add_record(number, sub, account)

    def do_toggle_setting(self, n: int) -> None:
        value = not self.model.setting_on
        self.note(n, f"the setting turned {'on' if value else 'off'}")
        self.person.dataverse.update(
            "work365_adminhubsettings", SETTING_ROW_ID, {SETTING_COLUMN: value}, etag="*"
        )
        self.model.setting_on = value
        if value:
            self.model.cutoff = self.clock()

    def do_move_default(self, n: int) -> None:
        account = self.rng.choice([a for a in self.model.accounts if self.model.assignable[a]])
        contracts = self.model.assignable[account]
        variant = self.rng.choice(["move", "add", "remove"])
        current = self.model.defaults[account]
        target = self.rng.choice(contracts)
        new = {"move": {target}, "add": current | {target}, "remove": set()}[variant]
        self.note(
            n,
            f"Is Default {variant}: Account {account[-2:]} defaults "
            f"{sorted(c[-2:] for c in current)} -> {sorted(c[-2:] for c in new)}",
        )
        for contract in contracts:
            if (contract in new) != (contract in current):
                self.person.dataverse.update(
                    CONTRACTS, contract, {"work365_isdefault": contract in new}, etag="*"
                )
        self.model.defaults[account] = new

    # --- helpers ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        return {entity_set: self.dv.rows(entity_set) for entity_set in OBSERVED}

    def records_of(self, sub: str) -> list[Record]:
        return [r for r in (Record.of(row) for row in self.dv.rows(SUBS)) if r.sub == sub]

    def add_record(self, number: int, sub: str, account: str | None) -> None:
        body: dict[str, Any] = {
            "work365_providersubscriptionid": sub,
            "work365_name": f"Record {number}",
        }
        if account:
            body[f"{self.person.bindings().account_nav}@odata.bind"] = f"/accounts({account})"
        self.person.dataverse.create_only(SUBS, gid("rec", number), body)

    def execute(
        self, n: int, specs: list[RunSpec], rules: list[dict[str, Any]], cut: tuple[str, ...]
    ) -> list[RunOutcome]:
        what = " | ".join(s.describe() for s in specs)
        faults = [_rule_text(r) for r in rules] + [f"20002 for customer {c[-2:]}" for c in cut]
        self.note(n, f"{'concurrent: ' if len(specs) > 1 else ''}{what} faults={faults}")
        start = len(self.dv.journal)
        can_land = landable(self.dv.rows)
        self.mapped = mapped_accounts(self.dv.rows, self.model)
        pre = self.snapshot()
        for rule in rules:
            self.box.faults.add(rule)
        for customer in cut:
            set_relationship(self.db_path, customer, False)
        try:
            if len(specs) == 1:
                outcomes = [self.one_run(n, specs[0], f"s{n}", None, can_land)]
            else:
                outcomes = self.in_threads(n, specs, can_land)
        finally:
            for rule, fired in zip(rules, self.box.faults.fired(), strict=True):
                self.stats.faults[rule["kind"]] += fired
            self.box.faults.clear()
            for customer in cut:
                set_relationship(self.db_path, customer, True)
        self.stats.faults["20002"] += sum(
            1
            for o in outcomes
            if o.summary
            for e in o.summary["errors"]
            if str(e.get("code")) == "20002"
        )
        for o in outcomes:
            self.stats.faults["lost answer"] += len(o.session.lost & o.session.lose)
            self.stats.faults["tokens expired"] += int(o.session.expired)
            self.stats.runs["killed" if o.outcome == "killed" else o.outcome] += 1
            self.steps[-1] += f"\n      -> {o.line()}"
        journal = self.dv.journal[start:]
        states = step_states(pre, journal)
        assert _comparable(states[-1]) == _comparable(self.snapshot()), (
            "the journal missed a change"
        )
        subs_of: dict[str, set[str]] = {}
        for sub, customer in self.model.pc_subs.items():
            subs_of.setdefault(customer, set()).add(sub)
        for o, spec in zip(outcomes, specs, strict=True):
            self.ledger.check_run(o, journal)
            self.ledger.check_decisions(o, self.model, states, spec.create, subs_of)
        return outcomes

    def in_threads(
        self, n: int, specs: list[RunSpec], can_land: dict[str, str]
    ) -> list[RunOutcome]:
        barrier = threading.Barrier(len(specs))
        results: list[RunOutcome | None] = [None] * len(specs)
        errors: list[BaseException] = []

        def target(i: int) -> None:
            try:
                label = f"s{n}{'abc'[i]}"
                results[i] = self.one_run(n, specs[i], label, barrier, can_land)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=target, args=(i,)) for i in range(len(specs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        if errors:
            raise errors[0]
        assert all(r is not None for r in results), "a concurrent run did not finish"
        return [r for r in results if r is not None]

    def one_run(
        self,
        n: int,
        spec: RunSpec,
        label: str,
        barrier: threading.Barrier | None,
        can_land: dict[str, str],
    ) -> RunOutcome:
        clock = FakeClock() if spec.budget else None
        session = ChaosSession(
            label,
            lose=spec.lose,
            kill=spec.kill,
            expire=self.box.expire_tokens,
            expire_after=spec.expire_after,
            barrier=barrier,
            clock=clock,
        )
        settings = {
            "WORK365_CREATE_MISSING": "true" if spec.create else "false",
            "WORK365_BATCH_SIZE": str(spec.batch),
            "WORK365_CONCURRENCY": "1" if spec.budget else str(spec.concurrency),
            "WORK365_MAX_ATTEMPTS": "3",
        }
        if spec.host == "laptop":
            settings["WORK365_STATE_DIR"] = self.laptop
        request = SyncRequest(
            dry_run=spec.dry,
            customer_ids=spec.customers,
            budget_seconds=spec.budget,
            mode=spec.kind if spec.kind in ("incremental", "auto") else "full",
        )
        summary: dict[str, Any] | None = None
        try:
            services = Services.build(
                Settings.from_env({}, overrides={**self.box.env, **settings}),
                session=session,
                sleep=self.sleeps.append,
                **({"monotonic": clock} if clock is not None else {}),
            )
            summary = services.sync(request).to_json()
        except Killed:
            pass
        finally:
            if barrier is not None:
                barrier.abort()  # the other run does not wait for a write this one will not make
        return RunOutcome(
            step=n,
            label=label,
            describe=spec.describe(),
            dry=spec.dry,
            setting_on=self.model.setting_on,
            cutoff=self.model.cutoff,
            landable=can_land,
            accounts=self.mapped,
            session=session,
            summary=summary,
            outcome="killed" if summary is None else str(summary["status"]),
            customers=spec.customers,
        )

    # --- the end ----------------------------------------------------------------------------

    def finish(self) -> None:
        """Faults stop; one clean run; then every invariant."""
        n = len(self.steps)
        create = self.rng.random() < 0.5
        want = expected(rules_world(self.dv.rows, self.model, create))
        spec = RunSpec("full", create, 2, 4)
        [clean] = self.execute(n, [spec], [], ())
        assert clean.summary is not None and clean.outcome == "succeeded", clean.line()
        since = parse_timestamp(str(clean.summary["setting"]["since"]))
        assert (since, clean.summary["setting"]["sinceSource"]) == (self.model.cutoff, "audit")
        got = {r["subscriptionId"]: r for r in clean.summary["subscriptions"]}
        assert set(got) == set(want), "the clean run decided other subscriptions than the rules"
        for sub, d in want.items():
            decided = (d.reason.value, d.action.value, d.contract_id)
            row = got[sub]
            assert (row["reason"], row["action"], row["billingContractId"]) == decided, (sub, row)
        # The final state is the rules' answer on the final data: nothing left to write.
        after = expected(rules_world(self.dv.rows, self.model, create))
        pending = [d for d in after.values() if d.action is not Action.NONE]
        assert not pending, ("writes left after the clean run", pending)
        for sub, d in want.items():
            if d.reason is Reason.DEFAULT_CONTRACT:
                assert after[sub].reason is Reason.ALREADY_ASSIGNED, (sub, after[sub])
                assert after[sub].contract_id == d.contract_id, (sub, after[sub])
            else:
                assert after[sub].reason is d.reason, (sub, after[sub], d)
        [dry] = self.execute(n + 1, [RunSpec("dry-full", create, 2, 4)], [], ())
        assert dry.summary is not None
        dry_reasons = {r["subscriptionId"]: r["reason"] for r in dry.summary["subscriptions"]}
        assert dry_reasons == {s: d.reason.value for s, d in after.items()}
        self.ledger.check_walk(self.dv.journal, self.dv.rows(SUBS))

    def report(self) -> str:
        ledger = "\n".join(run.line() for run in self.ledger.runs)
        return (
            f"chaos seed {self.seed} (replay: CHAOS_SEEDS={self.seed} CHAOS_STEPS={STEPS})\n"
            "steps:\n" + "\n".join(self.steps) + "\nledger:\n" + ledger
        )


def _comparable(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    return {k: sorted(repr(sorted(r.items())) for r in v) for k, v in rows.items()}


def _rule_text(rule: dict[str, Any]) -> str:
    where = f"{rule.get('method', '')} {rule['path']}".strip()
    extra = "".join(
        f" {k}={rule[k]}" for k in ("retryAfter", "code", "set", "times", "every") if k in rule
    )
    return f"{rule['service']} {where} {rule['kind']}{extra}"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_random_walk_of_faults_kills_races_and_edits_ends_in_the_rules_state(
    seed: int, tmp_path: Path
) -> None:
    started = time.monotonic()
    walk = Walk(seed, tmp_path)
    try:
        walk.walk(STEPS)
        walk.finish()
    except BaseException as exc:
        raise AssertionError(f"{exc!r}\n{walk.report()}") from exc
    finally:
        walk.close()
    print(
        f"\nchaos seed {seed}: {STEPS} steps in {time.monotonic() - started:.1f} s, "
        f"{len(walk.ledger.runs)} runs {dict(walk.stats.runs)}, steps {dict(walk.stats.steps)}, "
        f"faults fired {dict(walk.stats.faults)}, ledger {walk.ledger.count}, "
        f"sleeps recorded {len(walk.sleeps)} ({sum(walk.sleeps):.0f} s not slept)"
    )
    if os.environ.get("CHAOS_VERBOSE"):
        print(walk.report())
    # Not a vacuous walk: decisions were checked, writes were made, faults fired.
    assert walk.ledger.count.get("decisions checked against the rules", 0) > 0
    assert any(e.source.startswith("s") for e in walk.dv.journal), "no run wrote anything"
    assert sum(walk.stats.faults.values()) > 0


# --- what the chaos found -------------------------------------------------------------------------


def test_a_create_whose_id_cannot_be_read_back_is_still_reported_by_the_run_that_made_it(
    tmp_path: Path,
) -> None:
    """With the alternate key a created record's id is read back after the `$batch` (its 204
    carries the key, not the id). When that read fails the create has landed all the same, and
    its answer came back: the run that made it reports it (create, its contract, `created`
    counted, no id), with the failed read in `errors`. It used to say `error` with no contract
    and count nothing, and the next run said `already-assigned`: a write no run reported."""
    w = ScenarioBuilder()
    account = w.account(1)
    sub = w.pc_subscription(1, w.customer(1, account_id=account))
    settings = {"WORK365_CREATE_MISSING": "true", "WORK365_MAX_ATTEMPTS": "2"}
    with Sandbox.start(w.scenario(alternateKey=True)) as box:
        box.faults.add({"service": "dataverse", "method": "GET", "path": BY_KEY, "kind": "503",
                        "every": 1})  # fmt: skip
        first = run(box, str(tmp_path), **settings)
        [record] = final_state(box)
        box.faults.clear()
        second = run(box, str(tmp_path), **settings)

    assert record[1:4] == (sub, account, gid("con", 10))  # created, on the default contract
    row = rows_by_subscription(first)[sub]
    assert (row["action"], row["reason"], row["billingContractId"], row["recordId"]) == (
        "create",
        "default-contract",
        gid("con", 10),
        None,
    )
    assert "reading back its id failed" in row["message"]
    data = first.to_json()
    assert (data["status"], data["counts"]["created"], data["counts"]["assigned"]) == (
        "partial",
        1,
        1,
    )
    assert [(e["service"], e["status"]) for e in data["errors"]] == [("dataverse", 503)]
    # Reported once: the next run finds it done.
    again = rows_by_subscription(second)[sub]
    assert (again["reason"], again["recordId"]) == ("already-assigned", record[0])
    assert second.created == 0


def test_a_lost_answer_is_reported_already_assigned_by_its_run_and_claimed_by_none(
    tmp_path: Path,
) -> None:
    """The one write the rules let go unreported as made, accounted exactly: its run says
    `already-assigned` (the replay met a 412 and the re-read found it done), the next run too,
    and the ledger sees one landed write, zero claims, one lost answer."""
    walk = Walk(1, tmp_path)
    try:
        sub = gid("sub", 1)
        spec = RunSpec("full", create=False, batch=1, concurrency=1, lose=(1,))
        [lost] = walk.execute(1, [spec], [], ())
        [again] = walk.execute(2, [RunSpec("full", False, 1, 1)], [], ())
        walk.ledger.check_walk(walk.dv.journal, walk.dv.rows(SUBS))
    finally:
        walk.close()
    assert lost.session.lost == {1}
    assert lost.summary is not None and again.summary is not None
    first = {r["subscriptionId"]: r for r in lost.summary["subscriptions"]}[sub]
    assert (first["reason"], first["action"], first["billingContractId"]) == (
        "already-assigned",
        "none",
        gid("con", 10),
    )
    second = {r["subscriptionId"]: r for r in again.summary["subscriptions"]}[sub]
    assert second["reason"] == "already-assigned"
    assert walk.ledger.count["lost answers (assignment) reported already-assigned"] == 1
    assert walk.ledger.count["double reports"] == 0


# --- the ledger is not vacuous: it refuses what it must -------------------------------------------


def _row(sub: str, contract: str | None, n: int) -> dict[str, Any]:
    return {
        "@odata.etag": f'W/"{n}"',
        "work365_subscriptionid": gid("rec", 1),
        "work365_name": "Record 1",
        "work365_providersubscriptionid": sub,
        "_work365_account_value": gid("acc", 1),
        "_work365_billingcontract_value": contract,
        "createdon": "2026-03-01T09:00:00Z",
    }


def _assign(source: str, seq: int = 0, request: int | None = 1) -> Change:
    sub = gid("sub", 1)
    before, after = _row(sub, None, 1), _row(sub, gid("con", 10), 2)
    return Change(seq, source, request, SUBS, gid("rec", 1), before, after)


def _outcome(label: str, action: str, reason: str, lost: tuple[int, ...] = ()) -> RunOutcome:
    session = ChaosSession(label)
    session.lost = set(lost)
    row = {"customerId": gid("cus", 1), "subscriptionId": gid("sub", 1),
           "recordId": gid("rec", 1), "accountId": gid("acc", 1), "action": action,
           "billingContractId": gid("con", 10), "reason": reason}  # fmt: skip
    assigned = int(reason == "default-contract")
    summary = {
        "subscriptions": [row],
        "counts": {"subscriptions": 1, "assigned": assigned, "unassigned": 0,
                   "unchanged": 1 - assigned, "failed": 0, "created": 0},
        "byReason": {reason: 1},
        "errors": [],
    }  # fmt: skip
    return RunOutcome(
        step=1, label=label, describe="fabricated", dry=False, setting_on=True,
        cutoff=datetime(2026, 1, 1, tzinfo=UTC), landable={gid("acc", 1): gid("con", 10)},
        accounts={gid("sub", 1): gid("acc", 1)}, session=session, summary=summary,
        outcome="succeeded",
    )  # fmt: skip


def test_the_ledger_refuses_a_write_claimed_by_a_run_that_did_not_make_it() -> None:
    ledger = Ledger()
    journal = [_assign("a")]
    ledger.check_run(_outcome("a", "assign", "default-contract"), journal)
    with pytest.raises(AssertionError, match="did not happen"):
        ledger.check_run(_outcome("b", "assign", "default-contract"), journal)


def test_the_ledger_refuses_a_write_claimed_by_two_runs_across_the_walk() -> None:
    ledger = Ledger()
    ledger.runs = [_outcome("a", "assign", "default-contract"),
                   _outcome("b", "assign", "default-contract")]  # fmt: skip
    with pytest.raises(AssertionError, match="more than one run"):
        ledger.check_walk([_assign("a")], [_row(gid("sub", 1), gid("con", 10), 2)])


def test_the_ledger_refuses_a_lost_write_reported_as_made_or_a_made_one_as_lost() -> None:
    with pytest.raises(AssertionError, match="lost"):
        Ledger().check_run(_outcome("a", "assign", "default-contract", (1,)), [_assign("a")])
    with pytest.raises(AssertionError):
        Ledger().check_run(_outcome("a", "none", "already-assigned"), [_assign("a")])
    ledger = Ledger()  # what the rules allow: lost, and said already-assigned
    ledger.check_run(_outcome("a", "none", "already-assigned", (1,)), [_assign("a")])
    assert ledger.count == {"lost answers (assignment) reported already-assigned": 1}


def test_the_ledger_refuses_a_record_moved_off_a_persons_contract() -> None:
    sub = gid("sub", 1)
    theirs = Change(0, "person", None, SUBS, gid("rec", 1), _row(sub, None, 1),
                    _row(sub, gid("con", 19), 2))  # fmt: skip
    ours = Change(1, "a", 1, SUBS, gid("rec", 1), _row(sub, gid("con", 19), 2),
                  _row(sub, gid("con", 10), 3))  # fmt: skip
    with pytest.raises(AssertionError, match="moved"):
        Ledger().check_run(_outcome("a", "assign", "default-contract"), [ours])
    ledger = Ledger()
    with pytest.raises(AssertionError, match="person's contract"):
        ledger.check_walk([theirs], [_row(sub, gid("con", 10), 3)])
