"""`python -m work365_fn <command>`: the same services as the Functions app, from a shell.

Exit codes: 0 done, 1 done with failures, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from work365_fn.adapters.dataverse_metadata import SchemaCheck
from work365_fn.adapters.schema_discovery import Status
from work365_fn.adapters.storage import LeaseTakenError
from work365_fn.composition import Services
from work365_fn.entrypoints.cli import operations as ops_cli
from work365_fn.errors import ApiError, ConfigError
from work365_fn.logs import install as install_logging
from work365_fn.logs import log_summary
from work365_fn.operations.backfill import JournalNotFoundError
from work365_fn.operations.incremental import MODES
from work365_fn.operations.sync import SyncRequest, scoped_ids
from work365_fn.rules.model import is_guid
from work365_fn.rules.summary import RunSummary
from work365_fn.settings import Settings

log = logging.getLogger("work365_fn.entrypoints.cli.main")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m work365_fn",
        description=(
            "Associate new CSP subscriptions with their Account's default Billing Contract."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    _add_sync(sub)
    _add_check_schema(sub)
    ops_cli.add_parsers(sub, _sandbox_options)
    _add_bench(sub)
    _add_sandbox(sub)
    return parser


def _sandbox_options(p: argparse.ArgumentParser) -> None:
    """--sandbox, --scenario, --state: for every command that can run on the local sandbox."""
    p.add_argument(
        "--sandbox",
        action="store_true",
        help="run against the built-in local sandbox (no Azure account needed)",
    )
    p.add_argument(
        "--scenario",
        help="sandbox seed data: a scenario JSON file, or a built-in name (demo, setting-off, "
        "renamed)",
    )
    p.add_argument(
        "--state",
        help="sandbox SQLite file kept between runs (created from the scenario if missing)",
    )


def _add_sync(sub: Any) -> None:
    p_sync = sub.add_parser("sync", help="run the association (the timer's job)")
    p_sync.add_argument("--dry-run", action="store_true", help="plan only, write nothing")
    p_sync.add_argument(
        "--customer", action="append", default=[], metavar="ID", help="only this customer (repeat)"
    )
    p_sync.add_argument("--json", action="store_true", help="print the run summary JSON")
    p_sync.add_argument(
        "--mode",
        choices=MODES,
        default="full",
        help="full (default): every customer; incremental: the customers changed since the "
        "watermark; auto: incremental unless a full run is due (the timer's mode)",
    )
    _sandbox_options(p_sync)


def _add_check_schema(sub: Any) -> None:
    p_check = sub.add_parser("check-schema", help="verify the schema map against the metadata")
    p_check.add_argument("--json", action="store_true", help="print the checks as JSON")
    p_check.add_argument(
        "--propose",
        action="store_true",
        help="find each name in the org's metadata and print a complete WORK365_SCHEMA_FILE "
        "(what had to be chosen, or was not found, on stderr)",
    )
    _sandbox_options(p_check)


def _add_bench(sub: Any) -> None:
    p_bench = sub.add_parser(
        "bench", help="benchmark a full and an incremental run on a generated sandbox"
    )
    p_bench.add_argument("--customers", type=int, required=True, metavar="N")
    p_bench.add_argument("--subscriptions-per-customer", type=int, required=True, metavar="M")
    p_bench.add_argument(
        "--new-fraction", type=float, default=0.1, metavar="F", help="new unassigned (0.1)"
    )
    p_bench.add_argument("--latency-ms", type=int, default=0, metavar="L", help="per request")
    p_bench.add_argument("--batch-size", type=int, default=100, metavar="B", help="(100)")
    p_bench.add_argument("--seed", type=int, default=365, help="scenario generator seed")
    p_bench.add_argument("--json", action="store_true", help="print the results as JSON")


def _add_sandbox(sub: Any) -> None:
    p_box = sub.add_parser("sandbox", help="the local sandbox")
    box_sub = p_box.add_subparsers(dest="sandbox_command", required=True, metavar="command")
    p_serve = box_sub.add_parser("serve", help="run the emulators until Ctrl-C")
    p_serve.add_argument("--scenario", help="scenario file or built-in name (default: demo)")
    p_serve.add_argument("--state", help="SQLite file kept between runs")
    p_serve.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    _configure_logging(args.verbose, args.quiet)
    try:
        if args.command == "sandbox":
            return _serve(args, out)
        if args.command == "bench":
            return _bench(args, out)
        _check_ids(args)  # before anything starts: no settings read, no sandbox, no request
        with _services(args) as services:
            if args.command == "sync":
                return _sync(services, args, out)
            if args.command in ops_cli.COMMANDS:
                return ops_cli.run(services, args, out)
            return _check_schema(services, args, out)
    except LeaseTakenError as exc:
        print(f"sync already running (run {exc.holder or 'unknown'}): not started", file=sys.stderr)
        return EXIT_FAILURES
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JournalNotFoundError as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    install_logging(handler)  # run ids on every line, secrets redacted


def _load_scenario(value: str | None) -> Any:
    from work365_fn.sandbox.scenario import Scenario

    if value is None:
        return Scenario.builtin("demo")
    if Path(value).is_file():
        return Scenario.load(value)
    if "/" not in value and not value.endswith(".json"):
        return Scenario.builtin(value)
    return Scenario.load(value)  # raises a ScenarioError naming the missing file


@contextlib.contextmanager
def _services(args: argparse.Namespace) -> Iterator[Services]:
    if not getattr(args, "sandbox", False):
        if getattr(args, "scenario", None) or getattr(args, "state", None):
            raise ConfigError("--scenario and --state only apply with --sandbox")
        yield Services.build(Settings.from_env())
        return
    from work365_fn.sandbox import Sandbox

    scenario = None if args.state and Path(args.state).exists() else _load_scenario(args.scenario)
    if scenario is None:
        from work365_fn.sandbox.scenario import Scenario

        scenario = Scenario.builtin("demo")  # ignored: the state file wins
    with Sandbox.start(scenario, state_path=args.state) as box:
        log.info("sandbox running at %s", box.url)
        yield Services.build(Settings.from_env(overrides=box.env))


def _check_ids(args: argparse.Namespace) -> None:
    """--customer / --subscription / --undo values are GUIDs (8-4-4-4-12), or a usage error
    naming the option: nothing else may reach a URL or an OData filter."""
    for option in ("customer", "subscription", "undo"):
        given = getattr(args, option, None)
        for value in [given] if isinstance(given, str) else given or []:
            if not is_guid(value.strip()):
                raise ValueError(
                    f"--{option} {value[:80]!r} is not a GUID: give an id like "
                    "00000000-0000-0000-0000-000000000000"
                )


def _sync(services: Services, args: argparse.Namespace, out: TextIO) -> int:
    customers = scoped_ids(args.customer)
    if customers and args.mode != "full":
        raise ValueError("--mode incremental/auto lists the changed customers: drop --customer")
    summary = services.sync(
        SyncRequest(dry_run=args.dry_run, customer_ids=customers, mode=args.mode)
    )
    log_summary(summary)  # the same structured record as the Functions app logs
    if args.json:
        out.write(json.dumps(summary.to_json(), indent=2) + "\n")
    else:
        _print_summary(summary, out)
    return EXIT_OK if summary.status == "succeeded" else EXIT_FAILURES


def _print_summary(summary: RunSummary, out: TextIO) -> None:
    data = summary.to_json()
    print(f"run {data['runId']}  status {data['status']}  dry run {data['dryRun']}", file=out)
    ops_cli.print_setting_and_counts(data, out)
    print(
        "reasons: " + "  ".join(f"{k} {v}" for k, v in data["byReason"].items() if v),
        file=out,
    )
    rows = data["subscriptions"]
    if rows:
        print(file=out)
        header = ("customer", "subscription", "reason", "action", "billing contract")
        table = [header] + [
            (
                r["customerId"],
                r["subscriptionId"],
                r["reason"],
                r["action"],
                r["billingContractId"] or "-",
            )
            for r in rows
        ]
        widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
        for row in table:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)), file=out)
        notes = [r for r in rows if r.get("message")]
        if notes:
            print(file=out)
            for r in notes:
                print(f"{r['subscriptionId']}: {r['message']}", file=out)
    for skipped in data["skippedCustomers"]:
        print(f"skipped customer {skipped['customerId']}: {skipped['why']}", file=out)
    ops_cli.print_problems(data, out)


def _check_schema(services: Services, args: argparse.Namespace, out: TextIO) -> int:
    if args.propose:
        return _propose_schema(services, args, out)
    checks: list[SchemaCheck] = services.check_schema()
    ok = all(c.ok for c in checks)
    if args.json:
        out.write(json.dumps({"ok": ok, "checks": [c.to_json() for c in checks]}, indent=2) + "\n")
    else:
        for c in checks:
            print(f"{'ok ' if c.ok else 'BAD'}  {c.name}: {c.detail}", file=out)
        print("schema ok" if ok else "schema has problems: fix the map or the org", file=out)
    return EXIT_OK if ok else EXIT_FAILURES


def _propose_schema(services: Services, args: argparse.Namespace, out: TextIO) -> int:
    """stdout: the proposed schema file (with --json: it, and every finding); stderr: each name
    that differs from the map, had to be chosen or was not found."""
    try:
        proposal = services.propose_schema()
    except ApiError as exc:
        print(f"cannot read the organisation's metadata: {exc}", file=sys.stderr)
        return EXIT_FAILURES
    document = proposal.to_json() if args.json else proposal.schema.to_json()
    out.write(json.dumps(document, indent=2) + "\n")
    for f in proposal.findings:
        if f.status is Status.KEPT:
            continue
        shown = f.status.value if f.status is Status.FOUND else f.status.value.upper()
        line = f"{shown:8} {f.key}: {f.value}"
        if f.value != f.configured:
            line += f" (the map says {f.configured})"
        line += f": {f.why}"
        if len(f.candidates) > 1:
            line += f" [candidates: {', '.join(f.candidates)}]"
        print(line, file=sys.stderr)
    key = ", ".join(proposal.alternate_key or ()) or "none"
    print(f"alternate key on the provider subscription id: {key}", file=sys.stderr)
    verdict = "every name found" if proposal.ok else "check the names marked CHOSEN or MISSING"
    print(f"schema proposal: {verdict}", file=sys.stderr)
    return EXIT_OK if proposal.ok else EXIT_FAILURES


def _bench(args: argparse.Namespace, out: TextIO) -> int:
    from work365_fn.bench.benchmark import BenchConfig, print_report, run_bench

    config = BenchConfig(
        customers=args.customers,
        subscriptions_per_customer=args.subscriptions_per_customer,
        new_fraction=args.new_fraction,
        latency_ms=args.latency_ms,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    report = run_bench(config)
    if args.json:
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        print_report(report, out)
    ok = report["full"]["status"] == report["incremental"]["status"] == "succeeded"
    return EXIT_OK if ok else EXIT_FAILURES


def _serve(args: argparse.Namespace, out: TextIO) -> int:
    from work365_fn.sandbox.runner import serve

    scenario = _load_scenario(args.scenario)
    serve(scenario, port=args.port, state_path=args.state, out=out)
    return EXIT_OK
