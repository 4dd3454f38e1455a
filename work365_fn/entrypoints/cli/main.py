"""`python -m work365_fn <command>`: the same services as the Functions app, from a shell.

Exit codes: 0 done, 1 done with failures, 2 usage or configuration error, 130 interrupted
(Ctrl-C), 141 stdout closed early (`| head`). Every error a user can cause is one line on
stderr, never a traceback (docs/cli.md#exit-codes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from work365_fn.adapters.dataverse_metadata import SchemaCheck
from work365_fn.adapters.schema_discovery import Status
from work365_fn.adapters.storage import LeaseTakenError
from work365_fn.composition import Services
from work365_fn.entrypoints.cli import operations as ops_cli
from work365_fn.entrypoints.cli import paths, table
from work365_fn.entrypoints.cli import undo as undo_cli
from work365_fn.errors import ApiError, ConfigError, MissingSettingError
from work365_fn.logs import install as install_logging
from work365_fn.logs import log_summary
from work365_fn.operations.backfill import JournalNotFoundError
from work365_fn.operations.incremental import MODES
from work365_fn.operations.sync import SyncRequest, scoped_ids
from work365_fn.rules.model import is_guid
from work365_fn.settings import Settings, read_local_settings

log = logging.getLogger("work365_fn.entrypoints.cli.main")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as `cat` or `yes` exit when the reader goes away
_PORT = re.compile(r"[0-9]{1,5}")


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (what is wrong, where the help is), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"usage error: {message} (see: {self.prog} --help)\n")


class _CommandParser(_Parser):
    """A command's parser: takes -v/-q after the command's name too (`sync -q`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # SUPPRESS: given before the command only, the main parser's value stays.
        _log_options(self, default=argparse.SUPPRESS)


def _log_options(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="debug logging on stderr"
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="only warnings on stderr"
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m work365_fn",
        description=(
            "Associate new CSP subscriptions with their Account's default Billing Contract."
        ),
    )
    _log_options(parser, default=False)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="command", parser_class=_CommandParser
    )
    _add_sync(sub)
    _add_check_schema(sub)
    ops_cli.add_parsers(sub, _sandbox_options)
    undo_cli.add_parser(sub, _sandbox_options)
    _add_bench(sub)
    _add_sandbox(sub)
    return parser


def _builtin_scenarios() -> str:
    """The built-in scenarios' names, from the sandbox itself (never a list kept here); the
    sandbox is not deployed, so a CLI without it says so."""
    try:
        from work365_fn.sandbox.scenario import builtin_names
    except ImportError:
        return "none here: the sandbox is not installed"
    return ", ".join(builtin_names())


def _sandbox_options(p: argparse.ArgumentParser) -> None:
    """--sandbox, --scenario, --state: for every command that can run on the local sandbox."""
    p.add_argument(
        "--sandbox",
        action="store_true",
        help="run against the built-in local sandbox (no Azure account needed)",
    )
    p.add_argument(
        "--scenario",
        help="sandbox seed data: a scenario JSON file, or a built-in name "
        f"({_builtin_scenarios()})",
    )
    p.add_argument(
        "--state",
        help="sandbox SQLite file kept between runs (created from the scenario if missing)",
    )
    p.add_argument(
        "--settings",
        metavar="FILE",
        help="read the Values of this local.settings.json (the file `func start` uses) where "
        "the environment leaves a setting unset",
    )
    p.add_argument(
        "--landing-rules",
        metavar="FILE",
        help="landing rules file (overrides WORK365_LANDING_RULES_FILE; with --sandbox the "
        "scenario's own rules apply when neither is given): docs/landing-rules.md",
    )


def _add_sync(sub: Any) -> None:
    p_sync = sub.add_parser("sync", help="run the association (the timer's job)")
    p_sync.add_argument("--dry-run", action="store_true", help="plan only, write nothing")
    p_sync.add_argument(
        "--customer", action="append", default=[], metavar="ID", help="only this customer (repeat)"
    )
    p_sync.add_argument("--json", action="store_true", help="print the run summary JSON")
    p_sync.add_argument(
        "--ids", action="store_true", help="show the ids beside the names in the table"
    )
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
    p_bench.add_argument("--customers", type=int, metavar="N")
    p_bench.add_argument("--subscriptions-per-customer", type=int, metavar="M")
    p_bench.add_argument(
        "--new-fraction", type=float, default=0.1, metavar="F", help="new unassigned (0.1)"
    )
    p_bench.add_argument("--latency-ms", type=int, default=0, metavar="L", help="per request")
    p_bench.add_argument("--batch-size", type=int, default=100, metavar="B", help="(100)")
    p_bench.add_argument("--seed", type=int, default=365, help="scenario generator seed")
    p_bench.add_argument("--json", action="store_true", help="print the results as JSON")
    p_bench.add_argument(
        "--events", type=int, metavar="E", help="instead: E webhook events (docs/performance.md)"
    )
    p_bench.add_argument("--rate", type=float, default=10.0, metavar="R", help="events/s (10)")
    p_bench.add_argument("--workers", type=int, default=16, metavar="W", help="deliveries (16)")
    p_bench.add_argument(
        "--throttle", action="store_true", help="sandbox service-protection limits on, scaled"
    )


def _add_sandbox(sub: Any) -> None:
    p_box = sub.add_parser("sandbox", help="the local sandbox")
    box_sub = p_box.add_subparsers(
        dest="sandbox_command", required=True, metavar="command", parser_class=_CommandParser
    )
    p_serve = box_sub.add_parser("serve", help="run the emulators until Ctrl-C")
    p_serve.add_argument("--scenario", help="scenario file or built-in name (default: demo)")
    p_serve.add_argument("--state", help="SQLite file kept between runs")
    p_serve.add_argument(
        "--port", type=_port, default=0, help="loopback port (default: a free one)"
    )


def _port(text: str) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise argparse.ArgumentTypeError("port must be 1-65535 (or 0 for any free port)")
    return int(text)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command. Ctrl-C and a reader that goes away (`| head`) end it with their exit
    code, never a traceback."""
    out = out or sys.stdout
    try:
        code = _main(argv, out)
        out.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
    except BrokenPipeError:
        # The reader had what it wanted: stop quietly. Python's recipe: point stdout at devnull
        # so the flush at exit does not fail again.
        # https://docs.python.org/3/library/signal.html#note-on-sigpipe
        _stdout_to_devnull(out)
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


def _stdout_to_devnull(out: TextIO) -> None:
    try:
        fd = out.fileno()
    except (OSError, ValueError):  # not a file (a test's StringIO): nothing will flush it
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _main(argv: Sequence[str] | None, out: TextIO) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error (or the help)
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    _configure_logging(args.verbose, args.quiet)
    try:
        paths.check(args)  # before anything starts: an output that cannot be written, no read
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
            if args.command == undo_cli.COMMAND:
                return undo_cli.run(services, args, out)
            return _check_schema(services, args, out)
    except LeaseTakenError as exc:
        print(f"sync already running (run {exc.holder or 'unknown'}): not started", file=sys.stderr)
        return EXIT_FAILURES
    except ConfigError as exc:
        print(f"configuration error: {exc}{_how_to_set(exc, args)}", file=sys.stderr)
        return EXIT_USAGE
    except JournalNotFoundError as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _how_to_set(exc: ConfigError, args: argparse.Namespace) -> str:
    """Where missing settings go, said once after the list of them."""
    if not isinstance(exc, MissingSettingError):
        return ""
    file = getattr(args, "settings", None)
    where = f"the Values of {file}" if file else "--settings local.settings.json (its Values)"
    return f" - set them in the environment, or in {where}"


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


def _sandbox_scenario(args: argparse.Namespace) -> Any:
    """The scenario to seed (--scenario, else the built-in demo). An existing --state wins, so a
    --scenario given with it must be the one it was seeded with: another is a usage error,
    never silently ignored."""
    from work365_fn.sandbox.runner import check_reuse

    scenario = _load_scenario(args.scenario)
    if args.scenario is not None and args.state and Path(args.state).exists():
        check_reuse(args.state, scenario)
    return scenario


@contextlib.contextmanager
def _services(args: argparse.Namespace) -> Iterator[Services]:
    file = getattr(args, "settings", None)
    defaults = read_local_settings(file) if file else None  # under the environment
    if not getattr(args, "sandbox", False):
        if getattr(args, "scenario", None) or getattr(args, "state", None):
            raise ConfigError("--scenario and --state only apply with --sandbox")
        yield Services.build(Settings.from_env(overrides=_rules_file(args), defaults=defaults))
        return
    from work365_fn.sandbox import Sandbox

    scenario = _sandbox_scenario(args)
    if scenario.landing_rules:  # the scenario's own rules, under the environment and --settings
        inline = {"WORK365_LANDING_RULES_FILE": json.dumps(scenario.landing_rules)}
        defaults = {**inline, **(defaults or {})}
    with Sandbox.start(scenario, state_path=args.state) as box:
        log.info("sandbox running at %s", box.url)
        overrides = {**box.env, **_rules_file(args)}
        yield Services.build(Settings.from_env(overrides=overrides, defaults=defaults))


def _rules_file(args: argparse.Namespace) -> dict[str, str]:
    """--landing-rules FILE: WORK365_LANDING_RULES_FILE for this command."""
    given = getattr(args, "landing_rules", None)
    return {"WORK365_LANDING_RULES_FILE": given} if given else {}


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
        table.render(summary.to_json(), out, ids=args.ids)
    return EXIT_OK if summary.status == "succeeded" else EXIT_FAILURES


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

    if args.events is not None:
        return _bench_events(args, out)
    if args.customers is None or args.subscriptions_per_customer is None:
        raise ValueError("give --customers and --subscriptions-per-customer (or --events)")
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


def _bench_events(args: argparse.Namespace, out: TextIO) -> int:
    from work365_fn.bench.events import EventsConfig, print_events_report, run_events
    from work365_fn.entrypoints.functions.records import records_http

    config = EventsConfig(
        events=args.events,
        rate=args.rate,
        latency_ms=args.latency_ms,
        workers=args.workers,
        throttle=args.throttle,
        seed=args.seed,
    )
    report = run_events(config, records_http)
    if args.json:
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        print_events_report(report, out)
    counted = report["events"]
    # A failed system job is not lost when the timer run after it assigned the record.
    ok = counted["lost"] == 0 and not report["handlerCrashes"]
    return EXIT_OK if ok else EXIT_FAILURES


def _serve(args: argparse.Namespace, out: TextIO) -> int:
    from work365_fn.sandbox.runner import serve
    from work365_fn.sandbox.server import PortError

    scenario = _sandbox_scenario(args)
    try:
        serve(scenario, port=args.port, state_path=args.state, out=out)
    except PortError as exc:  # busy or not allowed: `port 8443 is in use: ...`
        print(f"usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
