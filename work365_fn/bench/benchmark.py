"""`python -m work365_fn bench`: a full and an incremental run against a generated sandbox.

The scenario is generated in memory from a fixed seed: N customers, each with one Provider
Account -> Account -> one active default Billing Contract, and M subscriptions that all have a
Dataverse record. A fraction F of the records are new and unassigned (the writes); of the rest,
half already carry a contract and half predate the cutoff. After the full run, 1% of the
customers (at least one) get a new order and, from the provider sync, its record; then an
incremental run.

Each run happens in a fresh child process (spawned, so it shares no memory with the sandbox or
the generator), whose peak RSS (`resource.getrusage`) is the run's. Requests are the sandbox's
counts. `minimalRequests` is the formula in docs/performance.md ("Benchmark"), computed from the
scenario alone; `ratio` is requests / minimal.
"""

from __future__ import annotations

import json
import math
import random
import resource
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from work365_fn.adapters.dataverse_repository import IN_CHUNK
from work365_fn.rules.timestamps import format_timestamp

PAGE = 5000  # Dataverse rows per page (the sandbox's and Dataverse's maximum)
PC_PAGE = 500  # Partner Center customers (and activity records) per page
TOKEN_REQUESTS = 3  # MSAL's authority discovery, then one token per resource
CUTOFF_REQUESTS = 3  # audit history of the setting column, its audit row, that row's details
METADATA_REQUESTS = 3  # navigation properties and keys, once per worker when there are writes


@dataclass(frozen=True)
class BenchConfig:
    customers: int
    subscriptions_per_customer: int
    new_fraction: float = 0.1
    latency_ms: int = 0
    batch_size: int = 100
    seed: int = 365

    def __post_init__(self) -> None:
        if self.customers < 1 or self.subscriptions_per_customer < 1:
            raise ValueError("--customers and --subscriptions-per-customer must be at least 1")
        if not 0 <= self.new_fraction <= 1:
            raise ValueError("--new-fraction must be from 0 to 1")
        if not 1 <= self.batch_size <= 1000:
            raise ValueError("--batch-size must be from 1 to 1000")
        if self.latency_ms < 0:
            raise ValueError("--latency-ms must be 0 or more")

    @property
    def changed_customers(self) -> int:
        return max(1, round(self.customers / 100))


@dataclass(frozen=True)
class Generated:
    raw: dict[str, Any]
    writes: int  # new unassigned records
    records: int
    customer_ids: list[str]
    account_ids: list[str]


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate(config: BenchConfig, now: datetime) -> Generated:
    """The scenario (raw JSON form), deterministic for a seed (dates relative to `now`)."""
    rng = random.Random(config.seed)  # noqa: S311 - reproducible test data, not secrets
    cutoff = now - timedelta(days=60)
    rows = _Rows(config, rng, now)
    for c in range(config.customers):
        rows.add_customer(c)
    raw = {
        "description": f"bench: {config.customers} x {config.subscriptions_per_customer}",
        "settings": {
            "associateDefaultBillingContract": True,
            "enabledOn": format_timestamp(cutoff),
        },
        "accounts": rows.accounts,
        "providerAccounts": rows.pas,
        "billingContracts": rows.contracts,
        "subscriptions": rows.records,
        "partnerCenter": {"customers": rows.customers},
    }
    return Generated(raw, rows.writes, len(rows.records), rows.customer_ids, rows.account_ids)


class _Rows:
    """The generated rows, drawn from `rng` in a fixed order (so a seed gives one scenario):
    per customer its ids, then per subscription its id, whether it is new, its record's id."""

    def __init__(self, config: BenchConfig, rng: random.Random, now: datetime) -> None:
        self.config = config
        self.rng = rng
        self.new_on, self.old_on = now - timedelta(days=30), now - timedelta(days=400)
        self.accounts: list[dict[str, Any]] = []
        self.pas: list[dict[str, Any]] = []
        self.contracts: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.customers: list[dict[str, Any]] = []
        self.customer_ids: list[str] = []
        self.account_ids: list[str] = []
        self.writes = 0

    def add_customer(self, c: int) -> None:
        """Customer `c`: its Provider Account -> Account -> default contract, its subscriptions."""
        rng = self.rng
        customer, account = _guid(rng), _guid(rng)
        self.customer_ids.append(customer)
        self.account_ids.append(account)
        self.accounts.append({"id": account, "name": f"Customer {c}"})
        self.pas.append(
            {"id": _guid(rng), "customerId": customer, "accountId": account, "name": f"PA {c}"}
        )
        contract = _guid(rng)
        self.contracts.append(
            {"id": contract, "accountId": account, "name": f"Default {c}", "isDefault": True}
        )
        subs = [
            self._add_subscription(c, s, account, contract)
            for s in range(self.config.subscriptions_per_customer)
        ]
        self.customers.append(
            {"id": customer, "companyName": f"Customer {c}", "subscriptions": subs}
        )

    def _add_subscription(self, c: int, s: int, account: str, contract: str) -> dict[str, Any]:
        """Subscription `s` of customer `c`: adds its Dataverse record, returns its Partner
        Center form. New ones (the writes) are unassigned; of the rest, even ones are assigned."""
        rng = self.rng
        sub_id = _guid(rng)
        new = rng.random() < self.config.new_fraction
        created = self.new_on if new else self.old_on
        self.writes += new
        assigned = not new and s % 2 == 0
        self.records.append(
            {
                "id": _guid(rng),
                "providerSubscriptionId": sub_id,
                "accountId": account,
                "billingContractId": contract if assigned else None,
                "createdOn": format_timestamp(self.new_on if new or assigned else self.old_on),
                "name": f"E3 {c}-{s}",
            }
        )
        return {
            "id": sub_id,
            "offerId": "CFQ7TTC0LFLX",
            "offerName": "Microsoft 365 E3",
            "friendlyName": f"E3 {c}-{s}",
            "quantity": 1 + s,
            "status": "active",
            "billingType": "license",
            "creationDate": format_timestamp(created - timedelta(hours=1)),
        }


def _pages(rows: int, size: int) -> int:
    return max(1, math.ceil(rows / size))


def minimal_full(config: BenchConfig, generated: Generated) -> int:
    """tokens + customer pages + one subscriptions call per customer + setting and cutoff +
    one paged query each for provider accounts, default contracts and records + metadata (when
    writing) + ceil(writes / batch size). The Account and contract names come with the reads
    (formatted values): no request of their own."""
    n = config.customers
    writes = generated.writes
    return (
        TOKEN_REQUESTS
        + _pages(n, PC_PAGE)
        + n
        + 1
        + CUTOFF_REQUESTS
        + _pages(n, PAGE)  # provider accounts
        + _pages(n, PAGE)  # default contracts
        + _pages(generated.records, PAGE)
        + (METADATA_REQUESTS if writes else 0)
        + math.ceil(writes / config.batch_size)
    )


def minimal_incremental(config: BenchConfig) -> int:
    """tokens + activity-log pages + one subscriptions call per changed customer + setting and
    cutoff + the new-unassigned-records query + provider accounts of those records' Accounts
    and of the changed customers (In chunks) + the default contracts of their Accounts (one In
    query up to 100 Accounts, else all pages) + the changed customers' records (In chunks) +
    metadata + ceil(writes / batch size). The names come with the reads (Accounts, contracts)
    and from the customer names the last full run kept (customers)."""
    k = config.changed_customers
    subs = k * (config.subscriptions_per_customer + 1)
    return (
        TOKEN_REQUESTS
        + _pages(k, PC_PAGE)
        + k
        + 1
        + CUTOFF_REQUESTS
        + _pages(k, PAGE)  # new unassigned records
        + math.ceil(k / IN_CHUNK)  # provider accounts of their Accounts
        + math.ceil(k / IN_CHUNK)  # provider accounts of the changed customers
        # default contracts: of the changed customers' Accounts in one In query when they fit
        + (1 if k <= IN_CHUNK else _pages(config.customers, PAGE))
        + math.ceil(subs / IN_CHUNK)  # their records
        + METADATA_REQUESTS
        + math.ceil(k / config.batch_size)
    )


def peak_rss_mb() -> float:
    """This process's peak resident memory. `resource.getrusage(RUSAGE_SELF).ru_maxrss`, except
    where Linux says better: a process started by fork + exec inherits in ru_maxrss the size of
    the parent it was forked from (here, the sandbox with its generated tenant), while the
    `VmHWM` of /proc/self/status counts this program alone."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(env: dict[str, str], mode: str) -> dict[str, Any]:
    """One run in a fresh interpreter: its wall time, peak RSS and summary counts."""
    import logging

    from work365_fn.composition import Services
    from work365_fn.operations.sync import SyncRequest
    from work365_fn.settings import Settings

    logging.basicConfig(level=logging.WARNING)
    services = Services.build(Settings.from_env(overrides=env))
    started = time.perf_counter()
    summary = services.sync(SyncRequest(mode=mode))
    wall = time.perf_counter() - started
    return {
        "wallSeconds": round(wall, 2),
        "peakRssMb": round(peak_rss_mb(), 1),
        "mode": summary.mode,
        "status": summary.status,
        "counts": summary.counts(),
    }


def _run_child(env: dict[str, str], mode: str) -> dict[str, Any]:
    """`python -m work365_fn.bench.benchmark` in a new process (nothing of this one's memory,
    not even the
    CLI's imports): the connection settings go in on stdin, the result comes back on stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "work365_fn.bench.benchmark"],
        input=json.dumps({"env": env, "mode": mode}),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"the {mode} run failed (exit code {done.returncode}): {tail[0]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@dataclass(frozen=True)
class Limits:
    """What bounds a run's wall time from below: latency, concurrency and request limits."""

    latency_ms: int
    concurrency: int
    pc_per_minute: int  # 0 = no client-side limit
    dataverse_per_5min: int

    @classmethod
    def of(cls, env: dict[str, str], latency_ms: int) -> Limits:
        from work365_fn.settings import Settings

        settings = Settings.from_env(overrides=env)
        return cls(
            latency_ms,
            settings.concurrency,
            int(getattr(settings, "pc_max_requests_per_minute", 0)),
            int(getattr(settings, "dataverse_max_requests_per_5min", 0)),
        )

    def bound(self, requests: dict[str, dict[str, int]]) -> float:
        """Seconds no run can beat: the subscription calls in parallel (`concurrency` at a
        time) or at the rate limit, whichever is slower, plus every other request one after
        another at the latency."""
        latency = self.latency_ms / 1000
        pc = sum(requests.get("partnerCenter", {}).values())
        dv = sum(requests.get("dataverse", {}).values())
        parallel = requests.get("partnerCenter", {}).get("GET subscriptions", 0)
        serial = sum(sum(kinds.values()) for kinds in requests.values()) - parallel
        rate = 0.0
        if self.pc_per_minute and pc > self.pc_per_minute:
            rate = max(rate, (pc - 1) // self.pc_per_minute * 60.0)
        if self.dataverse_per_5min and dv > self.dataverse_per_5min:
            rate = max(rate, (dv - 1) // self.dataverse_per_5min * 300.0)
        fan = math.ceil(parallel / max(1, self.concurrency)) * latency
        return max(rate, fan) + serial * latency


def _result(
    run: dict[str, Any], counts: dict[str, dict[str, int]], minimal: int, limits: Limits
) -> dict[str, Any]:
    requests = {service: dict(sorted(kinds.items())) for service, kinds in counts.items() if kinds}
    total = sum(sum(kinds.values()) for kinds in requests.values())
    bound = limits.bound(requests)
    batches = counts.get("dataverse", {}).get("POST $batch", 0)
    writes = run["counts"]["assigned"] + run["counts"]["created"]
    return {
        "mode": run["mode"],
        "status": run["status"],
        "wallSeconds": run["wallSeconds"],
        "wallBoundSeconds": round(bound, 2),
        "requests": requests,
        "totalRequests": total,
        "minimalRequests": minimal,
        "ratio": round(total / minimal, 3) if minimal else None,
        "writes": writes,
        "writesPerBatch": round(writes / batches, 1) if batches else 0,
        "peakRssMb": run["peakRssMb"],
        "counts": run["counts"],
    }


def _change_customers(box: Any, env: dict[str, str], config: BenchConfig, gen: Generated) -> int:
    """1% of the customers order a subscription; the provider sync creates its record."""
    from work365_fn.composition import Services
    from work365_fn.settings import Settings

    rng = random.Random(config.seed + 1)  # noqa: S311 - reproducible test data
    chosen = rng.sample(range(config.customers), config.changed_customers)
    services = Services.build(Settings.from_env(overrides=env))
    bindings = services.bindings()
    schema = services.schema
    operations = []
    for c in chosen:
        sub = _guid(rng)
        box.partner_center.add_subscription(
            gen.customer_ids[c], {"id": sub, "offerId": "CFQ7TTC0LFLX", "quantity": 1}
        )
        operations.append(
            services.dataverse.create_only_operation(
                schema.subscription.entity_set,
                _guid(rng),
                {
                    schema.subscription.provider_subscription_id: sub,
                    schema.subscription.name: f"new order {c}",
                    f"{bindings.account_nav}@odata.bind": (
                        f"/{schema.account.entity_set}({gen.account_ids[c]})"
                    ),
                },
            )
        )
    for start in range(0, len(operations), 1000):
        results = services.dataverse.batch(operations[start : start + 1000])
        if not all(r.ok for r in results):
            raise RuntimeError("bench: creating the new records failed")
    return len(chosen)


def run_bench(config: BenchConfig) -> dict[str, Any]:
    from work365_fn.sandbox import Sandbox
    from work365_fn.sandbox.scenario import parse_scenario

    prepared = time.perf_counter()
    gen = generate(config, datetime.now(UTC))
    scenario = parse_scenario(gen.raw, origin="bench")
    with Sandbox.start(scenario, latency_ms=config.latency_ms) as box:
        setup = time.perf_counter() - prepared
        env = {**box.env, "WORK365_BATCH_SIZE": str(config.batch_size)}
        limits = Limits.of(env, config.latency_ms)
        box.reset_counts()
        full = _result(_run_child(env, "full"), box.counts(), minimal_full(config, gen), limits)
        changed = _change_customers(box, env, config, gen)
        box.reset_counts()
        incremental = _result(
            _run_child(env, "incremental"), box.counts(), minimal_incremental(config), limits
        )
    pc_full = sum(full["requests"].get("partnerCenter", {}).values())
    pc_incremental = sum(incremental["requests"].get("partnerCenter", {}).values())
    return {
        "scenario": {
            "customers": config.customers,
            "subscriptionsPerCustomer": config.subscriptions_per_customer,
            "subscriptions": gen.records,
            "newFraction": config.new_fraction,
            "newSubscriptions": gen.writes,
            "changedCustomers": changed,
            "batchSize": config.batch_size,
            "latencyMs": config.latency_ms,
            "concurrency": limits.concurrency,
            "partnerCenterRequestsPerMinute": limits.pc_per_minute,
            "dataverseRequestsPer5Min": limits.dataverse_per_5min,
            "seed": config.seed,
            "setupSeconds": round(setup, 1),
        },
        "full": full,
        "incremental": {
            **incremental,
            "partnerCenterShareOfFull": round(pc_incremental / pc_full, 4) if pc_full else None,
        },
    }


def print_report(report: dict[str, Any], out: TextIO) -> None:
    s = report["scenario"]
    print(
        f"bench: {s['customers']} customers x {s['subscriptionsPerCustomer']} subscriptions, "
        f"{s['newSubscriptions']} new, batch size {s['batchSize']}, latency {s['latencyMs']} ms "
        f"(sandbox ready in {s['setupSeconds']} s)",
        file=out,
    )
    header = (
        "run",
        "wall s",
        "bound s",
        "requests",
        "minimal",
        "ratio",
        "writes/batch",
        "peak RSS MB",
    )
    rows = [header]
    for name in ("full", "incremental"):
        r = report[name]
        rows.append(
            (
                name,
                f"{r['wallSeconds']:.2f}",
                f"{r['wallBoundSeconds']:.2f}",
                str(r["totalRequests"]),
                str(r["minimalRequests"]),
                f"{r['ratio']:.3f}",
                str(r["writesPerBatch"]),
                f"{r['peakRssMb']:.0f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)), file=out)
    share = report["incremental"]["partnerCenterShareOfFull"]
    print(f"incremental Partner Center requests: {share:.2%} of the full run's", file=out)
    for name in ("full", "incremental"):
        print(f"{name} requests: {json.dumps(report[name]['requests'])}", file=out)


if __name__ == "__main__":  # the child of _run_child
    request = json.loads(sys.stdin.read())
    sys.stdout.write(json.dumps(_child(request["env"], request["mode"])))
