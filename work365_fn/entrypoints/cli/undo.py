"""`python -m work365_fn undo RUN_ID [--apply]`: undo the writes of any run (main.py dispatches
here). A dry run unless `--apply`.

Exit codes: 0 done, 1 done with failures (a clear failed, the time ran out, Dataverse failed),
2 usage error (not a run id, no journal for that run, the run is an undo itself).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from work365_fn.composition import Services
from work365_fn.operations.sync import scoped_ids
from work365_fn.operations.undo import JournalNotFoundError, UndoRefusedError, UndoRequest, run_undo
from work365_fn.rules.model import is_guid

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2
COMMAND = "undo"


def _run_id(value: str) -> str:
    if not is_guid(value.strip()):
        raise argparse.ArgumentTypeError(
            f"{value[:80]!r} is not a run id: give an id like 00000000-0000-0000-0000-000000000000"
        )
    return value.strip().lower()


def add_parser(sub: Any, sandbox_options: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser(
        COMMAND,
        help="clear the Billing Contract lookups a run set (a dry run unless --apply)",
        description="Clear exactly the lookups RUN_ID set, where they still point to the "
        "contract it set; records it created are listed, never deleted (docs/undo.md).",
    )
    p.add_argument("run_id", metavar="RUN_ID", type=_run_id, help="the run to undo")
    p.add_argument("--apply", action="store_true", help="write (default: a dry run)")
    p.add_argument(
        "--customer", action="append", default=[], metavar="ID", help="only this customer (repeat)"
    )
    p.add_argument("--json", action="store_true", help="print the undo's result as JSON")
    sandbox_options(p)


def run(services: Services, args: argparse.Namespace, out: TextIO) -> int:
    request = UndoRequest(
        undo_of=args.run_id, apply=args.apply, customer_ids=scoped_ids(args.customer)
    )
    try:
        result = run_undo(services.undo_deps(), request)
    except (JournalNotFoundError, UndoRefusedError) as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        out.write(json.dumps(result, indent=2) + "\n")
    else:
        print_undo(result, out)
    return EXIT_OK if result["status"] == "succeeded" else EXIT_FAILURES


def print_undo(result: dict[str, Any], out: TextIO) -> None:
    """The undo's result for a person: one line per record, then the records the run created,
    the counts, errors and warnings."""
    print(
        f"undo of run {result['undoOf']} (run {result['runId']}, status {result['status']})"
        + ("" if result["apply"] else ": dry run, nothing is cleared; add --apply"),
        file=out,
    )
    items = result["items"]
    if items:
        rows = [("record", "contract", "result", "why", "note")] + [
            (
                i["recordName"] or i["recordId"] or f"(subscription {i['subscriptionId']})",
                i.get("billingContractName") or i["billingContractId"] or "-",
                i["result"],
                i["why"] or "-",
                i["message"],
            )
            for i in items
        ]
        widths = [max(len(str(r[c])) for r in rows) for c in range(len(rows[0]))]
        for row in rows:
            cells = zip(row, widths, strict=True)
            print("  " + "  ".join(str(c).ljust(w) for c, w in cells).rstrip(), file=out)
    created = [i for i in items if i["created"]]
    if created:
        print(f"\nrecords the run created ({len(created)}): kept, not deleted", file=out)
        for i in created:
            print(f"  {i['recordId'] or '-'}  subscription {i['subscriptionId']}", file=out)
    counts = result["counts"]
    print("counts:  " + "  ".join(f"{k} {v}" for k, v in counts.items()), file=out)
    for error in result["errors"]:
        print(
            f"error: {error.get('service')} {error.get('status')}: {error.get('message')}", file=out
        )
