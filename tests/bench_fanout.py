"""Memory of a fanned-out run: peak RSS of one batch's worker vs the tenant's size.

    python -m tests.bench_fanout --customers 1000 4000 10000 [--subscriptions-per-customer 10]
        [--batch-size 50] [--in-process] [--json]

For each tenant size it generates the `bench` scenario (work365_fn/bench.py, fixed seed), starts
the sandbox, splits the customers into batches as the timer does and runs them through the real
queue handler's work (`jobs.run_job`, the bytes of each job message) in fresh processes:

- `batch worker`: every batch but the last, one after another, in one process: its peak RSS is
  what one queue-function instance needs for a batch, whatever the tenant;
- `last batch + aggregate`: the last batch, which then aggregates every batch document into the
  run's summary (streamed through a temporary file);
- `in-process` (with --in-process): the same tenant synced in one process (a fresh sandbox),
  for comparison.

Client-side rate limits are off (the sandbox does not enforce any): this measures memory, not
the API budget. Peak RSS is each process's VmHWM (/proc/self/status), interpreter and imports
included (`baseline`: right after the services are built).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from typing import Any

NO_LIMITS = {
    "WORK365_PC_MAX_REQUESTS_PER_MINUTE": "0",
    "WORK365_DATAVERSE_MAX_REQUESTS_PER_5MIN": "0",
}


def _peak_mb() -> float:
    """This process's peak RSS: VmHWM, the high-water mark of its own address space. Not
    `getrusage().ru_maxrss`: Linux folds the parent's RSS at fork into a child's ru_maxrss
    across exec, so a child of a big parent would report the parent's size."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _child(job: dict[str, Any]) -> dict[str, Any]:
    """In a fresh interpreter: build the services, then run the messages or a full sync."""
    import logging

    from work365_fn.composition import Services
    from work365_fn.operations.jobs import run_job
    from work365_fn.operations.sync import SyncRequest
    from work365_fn.settings import Settings

    logging.basicConfig(level=logging.WARNING)
    services = Services.build(Settings.from_env({}, overrides=job["env"]))
    baseline = _peak_mb()
    started = time.perf_counter()
    if job["mode"] == "in-process":
        summary = services.sync(SyncRequest(mode="full"))
        status = summary.status
    else:
        for text in job["messages"]:
            run_job(services.job_deps(), text.encode("utf-8"))
        status = "done"
    return {
        "baselineRssMb": baseline,
        "peakRssMb": _peak_mb(),
        "wallSeconds": round(time.perf_counter() - started, 2),
        "status": status,
    }


def _run_child(job: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench_fanout", "--child"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {job['mode']} child failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def measure(customers: int, per_customer: int, batch_size: int, in_process: bool) -> dict[str, Any]:
    from work365_fn.adapters.storage import FileRunStore
    from work365_fn.bench.benchmark import BenchConfig, generate
    from work365_fn.operations.fanout import split
    from work365_fn.operations.run_documents import CustomerBatch as Batch
    from work365_fn.operations.run_documents import JobMessage
    from work365_fn.sandbox import Sandbox
    from work365_fn.sandbox.scenario import parse_scenario

    gen = generate(BenchConfig(customers, per_customer), datetime.now(UTC))
    ids = sorted(c.lower() for c in gen.customer_ids)
    batches = split(ids, batch_size)
    run_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    messages = [
        json.dumps(
            JobMessage(
                run_id, "sync", {"dryRun": False, "mode": "full"}, now, Batch(i, len(batches), b)
            ).to_json()
        )
        for i, b in enumerate(batches)
    ]
    out: dict[str, Any] = {
        "customers": customers,
        "subscriptions": gen.records,
        "batchSize": batch_size,
        "batches": len(batches),
    }
    with tempfile.TemporaryDirectory() as state_dir:
        store = FileRunStore(state_dir)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        store.put(
            run_id,
            "state",
            {
                "runId": run_id,
                "kind": "sync",
                "status": "running",
                "createdAt": stamp,
                "startedAt": stamp,
                "finishedAt": None,
                "request": {"dryRun": False, "customerIds": [], "mode": "full"},
                "error": None,
                "fanout": {"batches": len(batches), "batchSize": batch_size},
            },
        )
        with Sandbox.start(parse_scenario(gen.raw, origin="bench-fanout")) as box:
            env = {**box.env, **NO_LIMITS, "WORK365_STATE_DIR": state_dir}
            worker = _run_child({"mode": "batches", "env": env, "messages": messages[:-1]})
            last = _run_child({"mode": "batches", "env": env, "messages": messages[-1:]})
        result = store.get(run_id, "result")
        assert result is not None, "the last batch did not aggregate the run"
        out["fanoutStatus"] = result["status"]
        out["counts"] = result["counts"]
        out["batchWorker"] = {
            **worker,
            "secondsPerBatch": round(worker["wallSeconds"] / max(1, len(batches) - 1), 3),
        }
        out["lastBatchAndAggregate"] = last
    if in_process:
        with (
            tempfile.TemporaryDirectory() as state_dir,
            Sandbox.start(parse_scenario(gen.raw, origin="bench-fanout")) as box,
        ):
            env = {**box.env, **NO_LIMITS, "WORK365_STATE_DIR": state_dir}
            out["inProcess"] = _run_child({"mode": "in-process", "env": env})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench_fanout", description=__doc__)
    parser.add_argument("--customers", type=int, nargs="+", default=[1000, 4000, 10000])
    parser.add_argument("--subscriptions-per-customer", type=int, default=10)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[50])
    parser.add_argument("--in-process", action="store_true", help="also a one-process full sync")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.load(sys.stdin))))
        return 0
    rows = []
    for size in args.batch_size:
        for n in args.customers:
            row = measure(n, args.subscriptions_per_customer, size, args.in_process)
            rows.append(row)
            print(_line(row), file=sys.stderr if args.json else sys.stdout, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def _line(row: dict[str, Any]) -> str:
    worker, last = row["batchWorker"], row["lastBatchAndAggregate"]
    text = (
        f"{row['customers']:>6} customers x {row['subscriptions'] // row['customers']} "
        f"({row['subscriptions']} subs), batch {row['batchSize']} ({row['batches']} batches): "
        f"batch worker peak {worker['peakRssMb']:.0f} MB (baseline {worker['baselineRssMb']:.0f}, "
        f"{worker['secondsPerBatch']:.2f} s/batch); last batch + aggregate peak "
        f"{last['peakRssMb']:.0f} MB ({last['wallSeconds']:.1f} s)"
    )
    if "inProcess" in row:
        text += f"; in-process peak {row['inProcess']['peakRssMb']:.0f} MB"
    return text + f"; status {row['fanoutStatus']}"


if __name__ == "__main__":
    raise SystemExit(main())
