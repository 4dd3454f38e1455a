"""`python -m work365_fn bench --events N --rate R`: the Dataverse webhook path under load.

A generated tenant (C customers, each with a Provider Account -> Account -> one active default
Billing Contract, the setting on since 60 days) in the sandbox, with `--latency-ms` added to
every request it serves. Events are made at R per second: a Partner Center order, then the
provider sync's subscription record, created in the Dataverse emulator directly (the provider
sync is another user: its requests are neither counted nor throttled here). The emulator's
webhook delivery (sandbox/webhooks.py, `--workers` at a time, as Dataverse's asynchronous
service) POSTs each `RemoteExecutionContext` to the records handler, called in this process
as the Functions host would (a `func.HttpRequest` with `?code=`), with one `Services` for all:
one worker, its setting cache and tokens warmed by one event first (not counted).

Reported: the time from the record's creation (the emulator's commit) to the handler's 2xx
answer after its write (p50 / p95 / max), the requests per event by service, and the events
created / delivered / retried (a 503 answered, then tried again) / failed (the system job gave
up) / recovered by the timer / lost (no contract at the end). The delivery retries as Dataverse
documents it: one more attempt after a 502, 503 or 504, none after anything else (sandbox/
webhooks.py RETRY_BACKOFF). When events are left without their contract, one timer run (the
reconciler, `Services.sync`) follows the deliveries, as in production; its requests are not
counted per event. `--throttle` turns the sandbox's service-protection limits on, scaled down
to THROTTLE_WINDOW seconds (Dataverse's 6000 requests per 300 s is 20 a second, Partner
Center's 500 a minute): a throttled event answers 503 with Retry-After and the step is tried
once more. Real sleeps: this measures time; CI runs it tiny
(tests/integration/test_bench_events.py), checking fields and that nothing is lost.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import azure.functions as func

from work365_fn.rules.timestamps import format_timestamp

# The sandbox's service-protection limits under --throttle: the real ones' rates over a short
# window (Dataverse 6000 requests / 300 s, Partner Center 500 / 60 s; sandbox/faults.Limits).
THROTTLE_WINDOW = 10.0
THROTTLE_DATAVERSE_REQUESTS = 200
THROTTLE_PC_REQUESTS = 83
KEY = "bench-webhook-key"  # the function key the host would check: nothing checks it here


@dataclass(frozen=True)
class EventsConfig:
    events: int
    rate: float  # events a second
    latency_ms: int = 0
    customers: int = 10
    workers: int = 16  # webhook deliveries at a time
    throttle: bool = False
    seed: int = 365

    def __post_init__(self) -> None:
        if self.events < 1:
            raise ValueError("--events must be at least 1")
        if not 0 < self.rate <= 10000:
            raise ValueError("--rate must be more than 0 and at most 10000 events a second")
        if not 1 <= self.workers <= 64:
            raise ValueError("--workers must be from 1 to 64")
        if self.latency_ms < 0:
            raise ValueError("--latency-ms must be 0 or more")


@dataclass(frozen=True)
class Tenant:
    raw: dict[str, Any]
    customer_ids: list[str]
    account_ids: list[str]
    contract_ids: list[str]


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate_tenant(config: EventsConfig, now: datetime) -> Tenant:
    """Customers with a Provider Account -> Account -> one default contract; no subscriptions."""
    rng = random.Random(config.seed)  # noqa: S311 - reproducible test data, not secrets
    customers, accounts, contracts = [], [], []
    raw: dict[str, Any] = {
        "description": f"bench events: {config.customers} customers",
        "settings": {
            "associateDefaultBillingContract": True,
            "enabledOn": format_timestamp(now - timedelta(days=60)),
        },
        "accounts": [],
        "providerAccounts": [],
        "billingContracts": [],
        "subscriptions": [],
        "partnerCenter": {"customers": []},
    }
    for c in range(config.customers):
        customer, account, contract = _guid(rng), _guid(rng), _guid(rng)
        customers.append(customer)
        accounts.append(account)
        contracts.append(contract)
        raw["accounts"].append({"id": account, "name": f"Customer {c}"})
        raw["providerAccounts"].append(
            {"id": _guid(rng), "customerId": customer, "accountId": account, "name": f"PA {c}"}
        )
        raw["billingContracts"].append(
            {"id": contract, "accountId": account, "name": f"Default {c}", "isDefault": True}
        )
        raw["partnerCenter"]["customers"].append(
            {"id": customer, "companyName": f"Customer {c}", "subscriptions": []}
        )
    return Tenant(raw, customers, accounts, contracts)


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least `share` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass
class _Events:
    """The records created (record id -> its expected contract) and the handler's failures."""

    expected: dict[str, str] = field(default_factory=dict)
    crashes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Producer:
    """Makes event `i`: the order in the Partner Center emulator, then the provider sync's record
    in the Dataverse emulator (through its handler, as another user: not counted, no latency)."""

    def __init__(self, box: Any, tenant: Tenant, account_nav: str, seed: int) -> None:
        from work365_fn.adapters.schema import Schema
        from work365_fn.sandbox.core import Headers, Request
        from work365_fn.sandbox.dataverse import API
        from work365_fn.sandbox.runner import SANDBOX_CLIENT_ID

        self._box, self._tenant, self._nav = box, tenant, account_nav
        self._schema = Schema()
        self._rng = random.Random(seed + 1)  # noqa: S311 - reproducible test data
        self._api, self._request, self._headers = API, Request, Headers
        self._token = box.tokens.issue(box.url, SANDBOX_CLIENT_ID)[0]

    def make(self, i: int, events: _Events) -> None:
        tenant, schema = self._tenant, self._schema
        c = i % len(tenant.customer_ids)
        sub, record = _guid(self._rng), _guid(self._rng)
        self._box.partner_center.add_subscription(
            tenant.customer_ids[c], {"id": sub, "offerId": "CFQ7TTC0LFLX", "quantity": 1}
        )
        body = {
            schema.subscription.provider_subscription_id: sub,
            schema.subscription.name: f"bench event {i}",
            f"{self._nav}@odata.bind": f"/{schema.account.entity_set}({tenant.account_ids[c]})",
        }
        with events.lock:
            events.expected[record] = tenant.contract_ids[c]
        answer = self._box.dataverse.handle(
            self._request(
                "PATCH",
                f"{self._api}/{schema.subscription.entity_set}({record})",
                "",
                self._headers(
                    {
                        "Authorization": f"Bearer {self._token}",
                        "Content-Type": "application/json",
                        "If-None-Match": "*",
                    }
                ),
                json.dumps(body).encode(),
            )
        )
        if answer.status >= 300:
            raise RuntimeError(f"bench: creating record {i} failed ({answer.status})")


# The records function's handler (entrypoints/functions/records.records_http), passed in by the
# CLI: only the entry side imports the entry points.
Handler = Callable[[func.HttpRequest, Callable[[], Any]], func.HttpResponse]


def _poster(
    services: Any, events: _Events, records_http: Handler
) -> Callable[[str, dict[str, str], bytes], int]:
    """The webhook's POST, handled as the Functions host would call the records function."""

    def post(url: str, headers: dict[str, str], body: bytes) -> int:
        request = func.HttpRequest(
            "POST", url, headers=headers, params={"code": KEY}, route_params={}, body=body
        )
        try:
            return int(records_http(request, lambda: services).status_code)
        except Exception as exc:  # the host would answer 500: the bench reports it
            with events.lock:
                events.crashes.append(f"{type(exc).__name__}: {exc}")
            return 500

    return post


def _produce(config: EventsConfig, producer: _Producer, events: _Events, first: int) -> float:
    """Events `first`.. at `config.rate` a second; returns the seconds it took."""
    started = time.monotonic()
    for n in range(config.events):
        wait = started + n / config.rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        producer.make(first + n, events)
    return time.monotonic() - started


def _contracts(box: Any) -> dict[str, str | None]:
    from work365_fn.adapters.schema import Schema

    table = Schema().subscription
    return {
        str(row[table.id]).lower(): row.get(f"_{table.billing_contract}_value")
        for row in box.dataverse.rows(table.entity_set)
    }


def run_events(config: EventsConfig, records_http: Handler) -> dict[str, Any]:
    """Start the sandbox, warm the worker with one event, then `config.events` at the rate."""
    from work365_fn.sandbox.faults import Limits
    from work365_fn.sandbox.scenario import parse_scenario

    tenant = generate_tenant(config, datetime.now(UTC))
    limits = Limits(
        dataverse_requests=THROTTLE_DATAVERSE_REQUESTS,
        dataverse_window_seconds=THROTTLE_WINDOW,
        partner_center_requests=THROTTLE_PC_REQUESTS,
        partner_center_window_seconds=THROTTLE_WINDOW,
    )
    scenario = parse_scenario(tenant.raw, origin="bench events")
    quiet = logging.getLogger("work365_fn")  # one summary line per event would drown stderr
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        return _measure(config, tenant, scenario, limits, records_http)
    finally:
        quiet.setLevel(level)


def _measure(
    config: EventsConfig, tenant: Tenant, scenario: Any, limits: Any, records_http: Handler
) -> dict[str, Any]:
    from work365_fn.adapters.schema import Schema
    from work365_fn.composition import Services
    from work365_fn.operations.sync import SyncRequest
    from work365_fn.sandbox import Sandbox
    from work365_fn.sandbox.webhooks import WebhookDelivery, WebhookStep
    from work365_fn.settings import Settings

    with Sandbox.start(
        scenario, latency_ms=config.latency_ms, enforce_limits=config.throttle, limits=limits
    ) as box:
        services = Services.build(Settings.from_env(overrides=box.env))
        events = _Events()
        delivery = box.use_webhooks(
            WebhookDelivery(box.url, post=_poster(services, events, records_http))
        )
        table = Schema().subscription
        # As docs/events.md registers it: Create, and Update of the Account lookup only (the
        # contract the handler writes raises no event).
        delivery.register(
            WebhookStep(
                f"{box.url}/api/records", KEY, table.table, filtering_attributes=(table.account,)
            )
        )
        producer = _Producer(box, tenant, services.bindings().account_nav, config.seed)
        producer.make(0, events)  # the warm-up: tokens, metadata, the setting and cutoff
        delivery.deliver_pending()
        warm = set(events.expected)
        box.reset_counts()
        delivery.start(config.workers)
        started = time.monotonic()
        produced = _produce(config, producer, events, first=1)
        delivery.join()
        wall = time.monotonic() - started
        delivery.stop()
        counts = box.counts()
        missed = _missed(events, warm, _contracts(box))
        if missed:  # the next timer run, the reconciler, assigns what the events missed
            services.sync(SyncRequest())
        contracts = _contracts(box)
    report = _report(config, events, warm, delivery, contracts, counts, produced, wall)
    report["events"]["recoveredByTimer"] = len(missed) - report["events"]["lost"]
    return report


def _missed(events: _Events, warm: set[str], contracts: dict[str, str | None]) -> list[str]:
    """The measured records without their expected contract."""
    return sorted(r for r, c in events.expected.items() if r not in warm and contracts.get(r) != c)


def _report(  # noqa: PLR0913 - the measured pieces, gathered in one place
    config: EventsConfig,
    events: _Events,
    warm: set[str],
    delivery: Any,
    contracts: dict[str, str | None],
    counts: dict[str, dict[str, int]],
    produced: float,
    wall: float,
) -> dict[str, Any]:
    measured = [d for d in delivery.deliveries if d.event.row_id.lower() not in warm]
    done = [d for d in measured if d.delivered and d.answered_at is not None]
    seconds = [d.answered_at - d.raised_at for d in done]
    statuses = Counter(s for d in measured for s in d.statuses)
    lost = _missed(events, warm, contracts)
    n = config.events
    requests = {s: dict(sorted(k.items())) for s, k in counts.items() if k}
    per_event = {s: round(sum(k.values()) / n, 2) for s, k in requests.items()}
    return {
        "scenario": {
            "events": n,
            "rate": config.rate,
            "latencyMs": config.latency_ms,
            "customers": config.customers,
            "workers": config.workers,
            "throttle": _throttle_json() if config.throttle else None,
            "seed": config.seed,
        },
        "producedSeconds": round(produced, 2),
        "wallSeconds": round(wall, 2),
        "creationToContractSeconds": {
            "p50": round(percentile(seconds, 0.5), 3) if seconds else None,
            "p95": round(percentile(seconds, 0.95), 3) if seconds else None,
            "max": round(max(seconds), 3) if seconds else None,
        },
        "requestsPerEvent": per_event,
        "requests": requests,
        "events": {
            "created": len(events.expected) - len(warm),
            "delivered": len(done),
            "retried": sum(1 for d in measured if len(d.statuses) > 1),
            "failed": len(measured) - len(done),
            "lost": len(lost),
        },
        "webhookAnswers": {str(s): statuses[s] for s in sorted(statuses)},
        "handlerCrashes": events.crashes[:5],
    }


def _throttle_json() -> dict[str, float]:
    return {
        "windowSeconds": THROTTLE_WINDOW,
        "dataverseRequests": THROTTLE_DATAVERSE_REQUESTS,
        "partnerCenterRequests": THROTTLE_PC_REQUESTS,
    }


def print_events_report(report: dict[str, Any], out: TextIO) -> None:
    s, t, e = report["scenario"], report["creationToContractSeconds"], report["events"]
    limits = report["scenario"]["throttle"]
    throttle = (
        f", limits {limits['dataverseRequests']} Dataverse / {limits['partnerCenterRequests']} "
        f"Partner Center requests per {limits['windowSeconds']:g} s"
        if limits
        else ""
    )
    print(
        f"bench events: {s['events']} at {s['rate']:g}/s, latency {s['latencyMs']} ms, "
        f"{s['workers']} delivery workers{throttle}",
        file=out,
    )
    print(
        f"creation to contract: p50 {t['p50']} s, p95 {t['p95']} s, max {t['max']} s "
        f"(all delivered in {report['wallSeconds']} s)",
        file=out,
    )
    print(f"requests per event: {json.dumps(report['requestsPerEvent'])}", file=out)
    print(
        f"events: {e['created']} created, {e['delivered']} delivered, {e['retried']} retried, "
        f"{e['failed']} failed ({e['recoveredByTimer']} assigned by the timer run after), "
        f"{e['lost']} lost; webhook answers {report['webhookAnswers']}",
        file=out,
    )
    for service, kinds in report["requests"].items():
        print(f"{service} requests: {json.dumps(kinds)}", file=out)
