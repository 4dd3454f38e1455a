"""Incremental runs: which mode a run takes, and the watermark that makes the next one cheap.

A full run lists every Partner Center customer. An incremental run lists only the customers that
changed since the last run's watermark (minus an overlap, `WORK365_INCREMENTAL_OVERLAP_HOURS`):

- customers named by Partner Center's activity log (`GET /v1/auditrecords`) in that window;
- customers with unassigned Dataverse subscription records created in that window (a record can
  appear hours after its order): record -> its Account -> the Provider Accounts of that Account
  -> their customer ids. A record without an Account cannot be mapped without listing every
  customer; it is counted in a warning and the next full run takes it;
- customers the previous run could not finish (failed calls, deadline, write errors).

The watermark document `{"lastFullAt", "lastRunAt", "watermark", "pendingCustomers"}` lives in the
run store under run id `state`, name `watermark`. A full run happens when the watermark is
missing or unreadable, older than the activity log keeps (90 days), or, in `auto` mode (the
timer's), when the last full run is older than `WORK365_FULL_SYNC_EVERY_HOURS`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from work365_fn.adapters.storage import RunStore
from work365_fn.rules.model import is_guid
from work365_fn.rules.timestamps import format_timestamp, parse_timestamp

log = logging.getLogger(__name__)

STATE_RUN_ID = "state"
WATERMARK_DOCUMENT = "watermark"
# The activity log, "Get a record of Partner Center activity":
# https://learn.microsoft.com/partner-center/developer/get-a-record-of-partner-center-activity-by-user
# Its REST reference types startDate and endDate as dates (yyyy-mm-dd) while its own example sends
# a date-time, and the throttling page asks for one day as startDate=2020-09-02&endDate=2020-09-02
# (https://learn.microsoft.com/partner-center/developer/api-throttling-guidance): so the query
# names whole UTC days, the end day included, and the window's bounds are applied here to each
# record's operationDate.
AUDIT_LOG_DAYS = 90  # Partner Center keeps (and answers) 90 days of activity
AUDIT_WINDOW_DAYS = 30  # calendar days per request, the end day included


class Mode(enum.StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"
    AUTO = "auto"  # incremental unless a full run is due (the timer's mode)


MODES = tuple(m.value for m in Mode)


def parse_mode(value: str) -> Mode:
    """The mode named `value` (ValueError naming the choices otherwise)."""
    try:
        return Mode(value.strip().lower())
    except ValueError:
        raise ValueError(f"mode must be one of {', '.join(MODES)}") from None


@dataclass(frozen=True)
class Watermark:
    watermark: datetime
    last_run_at: datetime
    last_full_at: datetime | None = None
    pending_customers: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "lastFullAt": format_timestamp(self.last_full_at) if self.last_full_at else None,
            "lastRunAt": format_timestamp(self.last_run_at),
            "watermark": format_timestamp(self.watermark),
            "pendingCustomers": list(self.pending_customers),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Watermark | None:
        """None when the document is not a readable watermark (a full run then rebuilds it)."""
        mark = parse_timestamp(str(doc.get("watermark") or ""))
        last_run = parse_timestamp(str(doc.get("lastRunAt") or "")) or mark
        last_full = parse_timestamp(str(doc.get("lastFullAt") or ""))
        pending = doc.get("pendingCustomers") or []
        if mark is None or last_run is None or not isinstance(pending, list):
            return None
        return cls(mark, last_run, last_full, tuple(str(p) for p in pending))


def load_watermark(store: RunStore | None) -> Watermark | None:
    if store is None:
        return None
    doc = store.get(STATE_RUN_ID, WATERMARK_DOCUMENT)
    if doc is None:
        return None
    state = Watermark.from_json(doc)
    if state is None:
        log.warning("the watermark document is unreadable: this run is a full one")
    return state


def save_watermark(store: RunStore, state: Watermark) -> None:
    store.put(STATE_RUN_ID, WATERMARK_DOCUMENT, state.to_json())


@dataclass(frozen=True)
class ModeChoice:
    mode: Mode  # FULL or INCREMENTAL
    why: str
    since: datetime | None = None  # incremental: the start of the window


def choose_mode(
    requested: Mode,
    state: Watermark | None,
    now: datetime,
    *,
    overlap_hours: float,
    full_every_hours: float,
) -> ModeChoice:
    """Full or incremental, and why. Pure: no clock, no I/O."""
    if requested is Mode.FULL:
        return ModeChoice(Mode.FULL, "full run requested")
    if state is None:
        return ModeChoice(Mode.FULL, "no watermark yet: a full run sets it")
    since = state.watermark - timedelta(hours=overlap_hours)
    # The query starts at midnight of since's day: read as a date-time, that midnight must not
    # be more than 90 days before now either.
    if _midnight(_utc_day(since)) < now - timedelta(days=AUDIT_LOG_DAYS):
        return ModeChoice(
            Mode.FULL,
            f"the watermark ({format_timestamp(state.watermark)}) is older than the "
            f"{AUDIT_LOG_DAYS} days the Partner Center activity log keeps",
        )
    if requested is Mode.AUTO:
        due = state.last_full_at is None or now - state.last_full_at >= timedelta(
            hours=full_every_hours
        )
        if due:
            return ModeChoice(
                Mode.FULL,
                f"a full reconciliation is due (every {full_every_hours:g} h; last "
                f"{format_timestamp(state.last_full_at) if state.last_full_at else 'never'})",
            )
    return ModeChoice(
        Mode.INCREMENTAL,
        f"changes since {format_timestamp(since)} (watermark minus overlap)",
        since,
    )


def audit_windows(since: datetime, until: datetime) -> list[tuple[date, date]]:
    """The UTC days from since's to until's, both included, as (first day, last day) windows of
    at most AUDIT_WINDOW_DAYS days each (the activity log's longest request under any reading of
    "30 days"). The days cover more than [since, until]: `changed_customers` trims by
    operationDate."""
    first, last = _utc_day(since), _utc_day(until)
    windows = []
    while True:
        end = min(first + timedelta(days=AUDIT_WINDOW_DAYS - 1), last)
        windows.append((first, end))
        if end >= last:
            return windows
        first = end + timedelta(days=1)


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


# Activity that cannot add or move a subscription: users, licences, app registrations, MPN ids.
IGNORED_RESOURCE_TYPES = frozenset(
    {
        "customer_user",
        "license",
        "application",
        "application_credential",
        "partner_user",
        "mpn_association",
    }
)


def changed_customers(records: Iterable[dict[str, Any]], since: datetime | None = None) -> set[str]:
    """Customer ids (lower case) named by activity-log records that may concern subscriptions.
    Unknown resource types count (enums are open); failed operations changed nothing. With
    `since`, records whose operationDate is before it are left out (the query asked for whole
    days); a record without a readable operationDate counts (one customer too many is cheap)."""
    out: set[str] = set()
    for record in records:
        if since is not None and _before(record, since):
            continue
        customer = record.get("customerId")
        if not isinstance(customer, str) or not is_guid(customer.strip()):
            continue
        resource = str(record.get("resourceType") or "").lower()
        if resource in IGNORED_RESOURCE_TYPES:
            continue
        if str(record.get("operationStatus") or "").lower() == "failed":
            continue
        out.add(customer.strip().lower())
    return out


def _before(record: dict[str, Any], since: datetime) -> bool:
    when = parse_timestamp(str(record.get("operationDate") or ""))
    return when is not None and when < since


def pending_customers(
    skipped: Iterable[Mapping[str, Any]],
    errors: Iterable[Mapping[str, Any]],
    failed_customers: Iterable[str],
) -> set[str]:
    """Customers the next incremental run must take: those not read before the deadline, those
    whose read failed (but not those Partner Center says are lost for good: gone (404) or
    without a reseller relationship (403 20002), else they would come back again and again),
    and those with a subscription that failed."""
    pending = {str(s["customerId"]) for s in skipped if s.get("customerId")}
    for error in errors:
        customer = error.get("customerId")
        said_by_partner_center = error.get("service") == "partnerCenter"
        lost = said_by_partner_center and (
            error.get("status") == 404
            or (error.get("status") == 403 and str(error.get("code")) == "20002")
        )
        if customer and not lost:
            pending.add(str(customer))
    return pending | set(failed_customers)
