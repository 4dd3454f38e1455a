"""The last sync runs, for the report page: a short list kept beside the watermark.

The document `recent-runs` of run id `state` in the run store (the app's storage) holds
`{"runs": [...]}`, newest first, at most MAX_RUNS entries of
`{"runId", "mode", "dryRun", "status", "startedAt", "finishedAt", "counts"}` (the run summary's
own fields and counts, copied, never recounted). Written after each sync run with app storage
(the timer, `POST /api/sync`, a queued or fanned-out run); a run that cannot record itself
only logs a warning. Records runs (`POST /api/records`, the Dataverse webhook; mode `records`)
keep their own list, `recent-record-runs`, of the same shape: a burst of events never pushes the
sync runs off this one, and the health check (rules/health.py) judges sync runs only.

Two runs finishing at the same moment may keep only one of them: the list
is for reading, nothing decides from it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from work365_fn.adapters.storage import RunStore
from work365_fn.errors import Work365Error
from work365_fn.operations.incremental import STATE_RUN_ID
from work365_fn.rules.health import is_sync_run

log = logging.getLogger(__name__)

HISTORY_DOCUMENT = "recent-runs"
RECORD_RUNS_DOCUMENT = "recent-record-runs"  # the records runs: never mixed with the syncs
MAX_RUNS = 20
FIELDS = ("runId", "mode", "dryRun", "status", "startedAt", "finishedAt")
COUNTS = ("customers", "subscriptions", "assigned", "unassigned", "unchanged", "failed", "created")


def run_entry(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The history's entry of one run summary (its JSON form)."""
    counts = summary.get("counts") or {}
    return {
        **{key: summary.get(key) for key in FIELDS},
        "counts": {key: counts.get(key, 0) for key in COUNTS},
    }


def recent_runs(store: RunStore, *, records: bool = False) -> list[dict[str, Any]]:
    """The recorded sync runs (`records`: the records runs), newest first ([] when none is
    recorded yet). Entries that are not objects are left out, and so are records runs in the
    sync list (a history written before they had their own)."""
    document = store.get(STATE_RUN_ID, _document(records)) or {}
    runs = document.get("runs")
    if not isinstance(runs, list):
        return []
    entries = [
        r
        for r in runs
        if isinstance(r, dict) and isinstance(r.get("counts"), dict) and is_sync_run(r) != records
    ]
    return entries[:MAX_RUNS]


def remember_run(store: RunStore, summary: Mapping[str, Any]) -> bool:
    """Put the run first in its history (a sync's, or a records run's). Never raises: True when
    it was recorded."""
    entry = run_entry(summary)
    records = not is_sync_run(entry)
    try:
        older = [r for r in recent_runs(store, records=records) if r.get("runId") != entry["runId"]]
        store.put(STATE_RUN_ID, _document(records), {"runs": [entry, *older][:MAX_RUNS]})
    except Work365Error as exc:
        log.warning("[run %s] not added to the run history: %s", entry["runId"], exc)
        return False
    return True


def _document(records: bool) -> str:
    return RECORD_RUNS_DOCUMENT if records else HISTORY_DOCUMENT
