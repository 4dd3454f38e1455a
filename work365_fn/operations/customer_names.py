"""Customer names for runs that do not list the customers (scoped, incremental, fan-out batches).

A full listing (`GET /v1/customers`) carries every customer's `companyProfile.companyName` for
free. A run that reads only some customers gets their names, cheapest first:

1. names it was given (a fan-out batch's job message carries the names the listing read);
2. the map every full run keeps in the app storage (run store: run id `state`, document
   `customer-names`; one blob read per run, refreshed by each full run, so a name is at most
   WORK365_FULL_SYNC_EVERY_HOURS old);
3. `GET /v1/customers/{id}` for each customer still unnamed ("Get a customer by ID",
   https://learn.microsoft.com/partner-center/developer/get-a-customer-by-its-id), counted in
   the run's Partner Center requests. A failure there is a warning: the name stays null.

The Provider Account's name is never used: it is a Dataverse record's name, not the customer's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from work365_fn.adapters.partner_center import PartnerCenterClient
from work365_fn.adapters.storage import RunStore
from work365_fn.errors import ApiError, AuthError, Work365Error
from work365_fn.logs import RunLog, submit_in_context
from work365_fn.operations.incremental import STATE_RUN_ID
from work365_fn.rules.model import Customer, is_guid
from work365_fn.rules.timestamps import format_timestamp

NAMES_DOCUMENT = "customer-names"


def save_customer_names(store: RunStore, customers: Sequence[Customer], now: datetime) -> None:
    """Keep the names a full listing read, for the runs that do not list (one blob write)."""
    names = {c.id.lower(): c.company_name for c in customers if c.company_name}
    store.put(STATE_RUN_ID, NAMES_DOCUMENT, {"updatedAt": format_timestamp(now), "names": names})


def load_customer_names(store: RunStore | None) -> dict[str, str]:
    """The names the last full run kept ({} without app storage or before a full run)."""
    doc = store.get(STATE_RUN_ID, NAMES_DOCUMENT) if store is not None else None
    names = doc.get("names") if isinstance(doc, dict) else None
    if not isinstance(names, dict):
        return {}
    return {
        str(k).lower(): v for k, v in names.items() if is_guid(str(k)) and isinstance(v, str) and v
    }


def name_customers(
    customer_ids: Sequence[str],
    given: Mapping[str, str],
    store: RunStore | None,
    pc: Callable[[], PartnerCenterClient],
    concurrency: int,
    rlog: RunLog,
) -> tuple[dict[str, str], list[str]]:
    """(lower-case id -> name for `customer_ids`, warnings). Nothing is read for customers
    `given` names; the stored map is read only when some are left, Partner Center only for
    those the map does not name either."""
    wanted = sorted({c.lower() for c in customer_ids if c})
    names = {c: given[c] for c in wanted if given.get(c)}
    warnings: list[str] = []
    if len(names) == len(wanted):
        return names, warnings
    try:
        stored = load_customer_names(store)
    except Work365Error as exc:
        rlog.warning("the stored customer names could not be read: %s", exc)
        stored = {}
    names.update({c: stored[c] for c in wanted if c not in names and c in stored})
    missing = [c for c in wanted if c not in names]
    if not missing:
        return names, warnings
    client = pc()

    def fetch(customer_id: str) -> tuple[str, str | None]:
        """(id, name); None: the call failed (logged)."""
        try:
            return customer_id, client.customer(customer_id).company_name
        except (ApiError, AuthError) as exc:
            rlog.warning("customer %s: name not read: %s", customer_id, exc)
            return customer_id, None

    failed: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(missing)))) as pool:
        for future in [submit_in_context(pool, fetch, c) for c in missing]:
            customer_id, name = future.result()
            if name is None:
                failed.append(customer_id)
            elif name:
                names[customer_id] = name
    if failed:
        warnings.append(
            f"the names of {len(failed)} customer(s) could not be read from Partner Center: "
            "their ids are shown"
        )
    rlog.info(
        "customer names: %d given, %d stored, %d read from Partner Center",
        len([c for c in wanted if given.get(c)]),
        len([c for c in wanted if c in stored and not given.get(c)]),
        len(missing) - len(failed),
    )
    return names, warnings
