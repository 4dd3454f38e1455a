"""The operations commands of the CLI: `diagnose`, `report`, `backfill` (main.py dispatches here).

Exit codes: 0 done (diagnose: every check passed), 1 done with failures (diagnose: a check
failed), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from work365_fn.composition import Services
from work365_fn.entrypoints.cli import paths
from work365_fn.operations.backfill import BackfillPlan, BackfillRequest, run_backfill
from work365_fn.operations.diagnose import DiagnoseRequest, run_diagnose
from work365_fn.operations.report import LISTS, run_report, to_csv
from work365_fn.operations.report_page import PageData, new_nonce, render_page
from work365_fn.operations.sync import scoped_ids
from work365_fn.rules.summary import setting_words

EXIT_OK, EXIT_FAILURES = 0, 1
COMMANDS = ("diagnose", "report", "backfill")

SandboxOptions = Callable[[argparse.ArgumentParser], None]


def add_parsers(sub: Any, sandbox_options: SandboxOptions) -> None:
    p = sub.add_parser(
        "diagnose",
        help="check one customer or subscription in Work 365's troubleshooting order",
    )
    p.add_argument("--customer", metavar="ID", help="Partner Center customer (tenant) id")
    p.add_argument(
        "--subscription",
        metavar="ID",
        help="Partner Center subscription id (with --customer: searched under that customer only)",
    )
    p.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    sandbox_options(p)

    p = sub.add_parser("report", help="every problem of the tenant, read-only, in one pass")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the report as JSON")
    fmt.add_argument("--csv", metavar="FILE", help="write one CSV row per problem ('-': stdout)")
    fmt.add_argument(
        "--html", metavar="FILE", help="write the report page, one self-contained HTML file"
    )
    sandbox_options(p)

    p = sub.add_parser(
        "backfill",
        help="assign existing unassigned subscriptions to their Account's default contract",
    )
    p.add_argument(
        "--customer", action="append", default=[], metavar="ID", help="only this customer (repeat)"
    )
    p.add_argument("--apply", action="store_true", help="write (default: a dry run)")
    p.add_argument(
        "--undo", metavar="RUN_ID", help="clear the lookups that backfill run set (with --apply)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    sandbox_options(p)


def run(services: Services, args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "diagnose":
        return _diagnose(services, args, out)
    if args.command == "report":
        return _report(services, args, out)
    return _backfill(services, args, out)


def _dump(document: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(document, indent=2) + "\n")


# ---- diagnose ------------------------------------------------------------------------------


def _diagnose(services: Services, args: argparse.Namespace, out: TextIO) -> int:
    if not args.customer and not args.subscription:
        raise ValueError("diagnose needs --customer ID or --subscription ID")
    result = run_diagnose(
        services.diagnose_deps(), DiagnoseRequest(args.customer, args.subscription)
    )
    if args.json:
        _dump(result, out)
    else:
        print_diagnosis(result, out)
    return EXIT_OK if result["ok"] else EXIT_FAILURES


def print_diagnosis(result: dict[str, Any], out: TextIO) -> None:
    who = result["customerName"] or result["customerId"] or "unknown customer"
    what = f"subscription {result['subscriptionId']} of {who}" if result["subscriptionId"] else who
    print(f"diagnose {what}  (run {result['runId']})", file=out)
    for n, check in enumerate(result["checks"], 1):
        mark = "skip" if check.get("skipped") else "ok  " if check["ok"] else "FAIL"
        print(f"{n:>2}. {mark} {check['check']}: {check['detail']}", file=out)
        for record in check["records"]:
            extra = "".join(
                f" {k}={v}" for k, v in record.items() if k not in ("table", "id", "name")
            )
            name = f" '{record['name']}'" if record.get("name") else ""  # never an empty ''
            print(f"         {record['table']} {record['id']}{name}{extra}", file=out)
        if not check["ok"]:
            print(f"       fix: {check['fix']}", file=out)
    if result["subscriptions"]:
        print(file=out)
        for sub in result["subscriptions"]:
            print(
                f"{sub['subscriptionId']}  {sub['reason']:<27} {sub['subscriptionName']}",
                file=out,
            )
            if sub["message"]:
                print(f"    {sub['message']}", file=out)
            for rule in sub.get("landingRules") or []:  # with WORK365_LANDING_RULES_FILE
                verdict = "DECIDED" if rule["decided"] else "passed "
                line = f"rule {rule['rule']} {verdict} '{rule['name']}': {rule['why']}"
                print(f"    {line}", file=out)
            if sub["fix"]:
                print(f"    fix: {sub['fix']}", file=out)
    print_problems(result, out)
    print("every check passed" if result["ok"] else "some checks failed: see the fixes", file=out)


# ---- report --------------------------------------------------------------------------------

_TITLES = {
    "unassignedSubscriptions": "Subscriptions left unassigned",
    "accountsWithoutDefault": "Accounts with a Provider Account and no active default contract",
    "accountsWithSeveralDefaults": "Accounts with several active default contracts",
    "inactiveDefaultContracts": "Default contracts that are inactive",
    "unmappedProviderAccounts": "Provider Accounts not mapped to an Account",
    "customersWithoutProviderAccount": "Partner Center customers with no Provider Account",
    "customersWithSeveralAccounts": "Customers whose Provider Accounts map to different Accounts",
    "accountsLandingRulesCannotServe": "Accounts a landing rule finds no or several contracts of",
}


def _report(services: Services, args: argparse.Namespace, out: TextIO) -> int:
    report = run_report(services.reader_deps())
    if args.json:
        _dump(report, out)
    elif args.html:
        _write_page(services, report, args.html, out)
    elif args.csv:
        text = to_csv(report)
        if args.csv == paths.STDOUT:
            out.write(text)
        else:
            paths.write_text("--csv", args.csv, text)
            print(
                f"{report['counts']['problems']} problems written to {args.csv} "
                f"(run {report['runId']}, status {report['status']})",
                file=out,
            )
    else:
        print_report(report, out)
    return EXIT_OK if report["status"] == "succeeded" else EXIT_FAILURES


def _write_page(services: Services, report: dict[str, Any], path: str, out: TextIO) -> None:
    """`report --html FILE`: the page of docs/report-page.md (its CSP in a <meta>: no server)."""
    page = render_page(PageData(report, services.recent_runs()), new_nonce())
    if path == paths.STDOUT:
        out.write(page)
        return
    paths.write_text("--html", path, page)
    print(
        f"report page written to {path} (run {report['runId']}, status {report['status']}, "
        f"{report['counts']['unassignedSubscriptions']} unassigned subscriptions listed)",
        file=out,
    )


def _row(item: dict[str, Any]) -> str:
    if "subscriptionId" in item:
        return (
            f"{item['subscriptionId']}  {item['reason']:<27} {item['customerName'] or '-'}: "
            f"{item['subscriptionName']}"
        )
    for key, name in (
        ("contractId", "contractName"),
        ("providerAccountId", "providerAccountName"),
        ("accountId", "accountName"),
        ("customerId", "customerName"),
    ):
        if key in item and name in item:
            return f"{item[key] or '-'}  {item[name]}"
    return json.dumps(item)


def print_setting_and_counts(document: dict[str, Any], out: TextIO) -> None:
    """The `setting:` and `counts:` lines of a run summary or a report."""
    setting = document["setting"]
    print(setting_words(setting), file=out)
    counts = document["counts"]
    print("counts:  " + "  ".join(f"{k} {v}" for k, v in counts.items()), file=out)


def print_report(report: dict[str, Any], out: TextIO) -> None:
    print(f"report {report['runId']}  status {report['status']}", file=out)
    print_setting_and_counts(report, out)
    for name in LISTS:
        items = report[name]
        if not items:
            continue
        print(f"\n{_TITLES[name]} ({len(items)})", file=out)
        for item in items:
            print(f"  {_row(item)}", file=out)
            print(f"      fix: {item['fix']}", file=out)
    print_problems(report, out)
    if not report["counts"]["problems"]:
        print("\nno problems: nothing to fix", file=out)


# ---- backfill ------------------------------------------------------------------------------


def _backfill(services: Services, args: argparse.Namespace, out: TextIO) -> int:
    request = BackfillRequest(
        apply=args.apply, customer_ids=scoped_ids(args.customer), undo=args.undo
    )

    def show_plan(bf: BackfillPlan) -> None:
        if not args.json:
            print_plan(bf, out)

    result = run_backfill(services.backfill_deps(), request, on_plan=show_plan)
    if args.json:
        _dump(result, out)
    else:
        print_backfill(result, out, again=same_data_options(args))
    return EXIT_OK if result["status"] == "succeeded" else EXIT_FAILURES


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)), file=out)


def print_plan(bf: BackfillPlan, out: TextIO) -> None:
    eligible = [i for i in bf.items if i.eligible]
    print(
        f"backfill plan (run {bf.run_id}): {bf.candidates} existing unassigned subscription(s), "
        f"{len(eligible)} to assign"
        + ("" if bf.request.apply else " (dry run: nothing is written; add --apply)"),
        file=out,
    )
    if bf.items:
        rows = [("subscription", "record", "reason", "contract")] + [
            (i.subscription_id, i.record.name or i.record.id, i.reason, i.contract_id or "-")
            for i in bf.items
        ]
        _table(rows, out)


def same_data_options(args: argparse.Namespace) -> str | None:
    """The options that point a later command at the same data, quoted for a shell
    (` --sandbox --state FILE`, ` --settings FILE`); None for a throwaway sandbox (no --state):
    its data is gone when the command ends. --scenario is never repeated: the state holds it."""
    options = []
    if getattr(args, "sandbox", False):
        if not args.state:
            return None
        options += ["--sandbox", "--state", args.state]
    if getattr(args, "settings", None):
        options += ["--settings", args.settings]
    return "".join(f" {shlex.quote(o)}" for o in options)


def print_backfill(result: dict[str, Any], out: TextIO, *, again: str | None = "") -> None:
    """`again`: `same_data_options`, repeated in the undo command it prints."""
    counts = result["counts"]
    if result["kind"] == "undo":
        print(
            f"undo of backfill {result['undoOf']} (run {result['runId']})"
            + ("" if result["apply"] else ": dry run, nothing is cleared; add --apply"),
            file=out,
        )
        if result["items"]:
            rows = [("record", "contract", "result", "note")] + [
                (
                    i["recordName"] or i["recordId"],
                    i["billingContractId"] or "-",
                    i["result"],
                    i["message"],
                )
                for i in result["items"]
            ]
            _table(rows, out)
    elif result["apply"]:
        written = [i for i in result["items"] if i["result"] != "skipped"]
        if written:
            print("results:", file=out)
            _table(
                [("subscription", "result", "note")]
                + [(i["subscriptionId"], i["result"], i["message"]) for i in written],
                out,
            )
        if counts.get("assigned"):
            print(
                f"to undo: python -m work365_fn backfill --undo {result['runId']} --apply{again}"
                if again is not None
                else "to undo later, run with --state FILE: this sandbox's data is gone now",
                file=out,
            )
    print("counts:  " + "  ".join(f"{k} {v}" for k, v in counts.items()), file=out)
    print_problems(result, out)


def print_problems(document: dict[str, Any], out: TextIO) -> None:
    """The `errors` and `warnings` of a summary, report, diagnosis or backfill, one per line."""
    for error in document.get("errors") or []:
        who = f"customer {error['customerId']}: " if error.get("customerId") else ""
        status = f" {error.get('status')}" if error.get("status") else ""  # 0: nothing sent
        print(
            f"error: {who}{error.get('service')}{status} {error.get('code')}: "
            f"{error.get('message')}",
            file=out,
        )
    for warning in document.get("warnings") or []:
        print(f"warning: {warning}", file=out)
