"""Dataverse webhooks, emulated: a registered step is POSTed a `RemoteExecutionContext` when a
row of its table is created (or updated, on its filtering attributes), as an asynchronous step.

    box.webhooks.register(WebhookStep(url, key, table="work365_subscription"))
    ... a row is created (Web API POST, upsert PATCH, $batch, or box.provider_sync(...)) ...
    box.webhooks.deliver_pending()   # or start() a background worker, as Dataverse's async service

What is sent follows Microsoft's documentation ("Use webhooks to create external handlers for
server events", "Register a WebHook"): a POST with the JSON of a `RemoteExecutionContext`
(MessageName, PrimaryEntityName, PrimaryEntityId, InputParameters with the Target entity, Mode 1
for asynchronous, Stage 40 post-operation, OutputParameters `id` on Create), the headers
x-ms-dynamics-organization, x-ms-dynamics-entity-name, x-ms-dynamics-request-name,
x-ms-correlation-request-id and x-request-id, and for WebhookKey authentication the key as
`?code=`. Events are raised after the write commits (a rolled-back change set raises none).
Retries as documented ("Troubleshoot WebHook registrations"): any answer outside 2xx, or none
within 60 s, fails the step, except a 502, 503 or 504, after which "the WebHook service will
make one more attempt": one, after a back-off (the sleep is injected).
https://learn.microsoft.com/power-apps/developer/data-platform/use-webhooks#troubleshoot-webhook-registrations
https://learn.microsoft.com/power-apps/developer/data-platform/register-web-hook
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests

log = logging.getLogger(__name__)

# The only answers Dataverse tries a step again after, and how many times more (its docs).
RETRY_STATUSES = frozenset({502, 503, 504})
RETRY_BACKOFF = (1.0,)  # one more attempt; Microsoft does not say after how long
ENTITY_TYPE = "Entity:http://schemas.microsoft.com/xrm/2011/Contracts"
REFERENCE_TYPE = "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts"
ORGANIZATION_ID = "4ef5b371-e89e-e711-8122-000d3aa2331c"
SYSTEM_USER_ID = "75c2dd85-e89e-e711-8122-000d3aa2331c"
BUSINESS_UNIT_ID = "e2b9dd85-e89e-e711-8122-000d3aa2331c"

# (url, headers, body) -> HTTP status (0: no answer)
Poster = Callable[[str, dict[str, str], bytes], int]


@dataclass(frozen=True)
class WebhookStep:
    """A service endpoint (WebhookKey authentication) and its step on one table."""

    url: str
    key: str
    table: str  # logical name of the primary table
    messages: tuple[str, ...] = ("Create", "Update")
    filtering_attributes: tuple[str, ...] = ()  # Update: only when one of these changed
    step_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class RowEvent:
    """A committed change: the message, the table, the row id, and its attributes as
    (logical name, lookup target or None, value) - all of them on Create, the changed ones on
    Update."""

    message: str
    table: str
    row_id: str
    attributes: tuple[tuple[str, str | None, Any], ...]
    when: datetime


@dataclass
class Delivery:
    step: WebhookStep
    event: RowEvent
    statuses: list[int] = field(default_factory=list)
    raised_at: float = 0.0  # monotonic: when the event was raised
    answered_at: float | None = None  # monotonic: when the step was answered 2xx

    @property
    def delivered(self) -> bool:
        return bool(self.statuses) and 200 <= self.statuses[-1] < 300


def _date(value: datetime) -> str:
    return f"/Date({int(value.timestamp() * 1000)})/"


def _value(target: str | None, value: Any) -> Any:
    if value is None:
        return None
    if target is not None:
        return {
            "__type": REFERENCE_TYPE,
            "Id": str(value),
            "KeyAttributes": [],
            "LogicalName": target,
            "Name": None,
            "RowVersion": None,
        }
    if isinstance(value, datetime):
        return _date(value)
    return value


def remote_execution_context(
    event: RowEvent, step: WebhookStep, organization: str
) -> dict[str, Any]:
    """The documented JSON of a `RemoteExecutionContext` for one asynchronous step."""
    target = {
        "__type": ENTITY_TYPE,
        "Attributes": [{"key": k, "value": _value(t, v)} for k, t, v in event.attributes],
        "EntityState": None,
        "FormattedValues": [],
        "Id": event.row_id,
        "KeyAttributes": [],
        "LogicalName": event.table,
        "RelatedEntities": [],
        "RowVersion": None,
    }
    output = [{"key": "id", "value": event.row_id}] if event.message == "Create" else []
    return {
        "BusinessUnitId": BUSINESS_UNIT_ID,
        "CorrelationId": str(uuid.uuid4()),
        "Depth": 1,
        "InitiatingUserId": SYSTEM_USER_ID,
        "InputParameters": [{"key": "Target", "value": target}],
        "IsExecutingOffline": False,
        "IsInTransaction": False,
        "IsOfflinePlayback": False,
        "IsolationMode": 1,
        "MessageName": event.message,
        "Mode": 1,  # asynchronous
        "OperationCreatedOn": _date(event.when),
        "OperationId": str(uuid.uuid4()),
        "OrganizationId": ORGANIZATION_ID,
        "OrganizationName": organization.split(".", maxsplit=1)[0],
        "OutputParameters": output,
        "OwningExtension": {
            "Id": step.step_id,
            "KeyAttributes": [],
            "LogicalName": "sdkmessageprocessingstep",
            "Name": None,
            "RowVersion": None,
        },
        "ParentContext": None,
        "PostEntityImages": [],
        "PreEntityImages": [],
        "PrimaryEntityId": event.row_id,
        "PrimaryEntityName": event.table,
        "RequestId": None,
        "SecondaryEntityName": "none",
        "SharedVariables": [],
        "Stage": 40,  # post-operation
        "UserId": SYSTEM_USER_ID,
    }


class WebhookDelivery:
    """The registered steps and the events waiting for them. `notify` only queues (it runs
    inside the emulator's lock); `deliver_pending` or the background worker POSTs."""

    def __init__(
        self,
        organization_url: str,
        *,
        post: Poster | None = None,
        sleep: Callable[[float], None] = time.sleep,
        backoff: Sequence[float] = RETRY_BACKOFF,
        monotonic: Callable[[], float] = time.monotonic,
        timeout: float = 60.0,
    ) -> None:
        self.organization = urlsplit(organization_url).netloc or organization_url
        self._post = post or self._http_post
        self._sleep = sleep
        self._backoff = tuple(backoff)  # the waits before each retry: len + 1 attempts
        self._monotonic = monotonic
        self._timeout = timeout  # Dataverse waits 60 s for the answer
        self._steps: list[WebhookStep] = []
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._lock = threading.Lock()
        self.deliveries: list[Delivery] = []
        self._workers: list[threading.Thread] = []
        self._session: requests.Session | None = None

    def register(self, step: WebhookStep) -> WebhookStep:
        with self._lock:
            self._steps.append(step)
        return step

    def clear(self) -> None:
        with self._lock:
            self._steps.clear()

    def notify(self, event: RowEvent) -> None:
        """A committed change: one delivery per step that takes it (queued, never sent here)."""
        with self._lock:
            steps = list(self._steps)
        for step in steps:
            if event.table != step.table or event.message not in step.messages:
                continue
            changed = {name for name, _, _ in event.attributes}
            filtered = event.message == "Update" and bool(step.filtering_attributes)
            if filtered and not changed & set(step.filtering_attributes):
                continue
            self._queue.put(Delivery(step, event, raised_at=self._monotonic()))

    def pending(self) -> int:
        return self._queue.qsize()

    def deliver_pending(self) -> list[Delivery]:
        """Deliver every queued event now, in order, in this thread."""
        done: list[Delivery] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return done
            try:
                if item is not None:
                    self._deliver(item)
                    done.append(item)
            finally:
                self._queue.task_done()

    def start(self, workers: int = 4) -> None:
        """Deliver in the background, `workers` at a time (Dataverse's asynchronous service)."""
        for _ in range(workers):
            thread = threading.Thread(target=self._work, daemon=True, name="sandbox-webhooks")
            thread.start()
            self._workers.append(thread)

    def stop(self) -> None:
        for _ in self._workers:
            self._queue.put(None)
        for thread in self._workers:
            thread.join(timeout=5)
        self._workers.clear()

    def join(self) -> None:
        """Wait until every queued event has been delivered (or its system job has failed)."""
        self._queue.join()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._deliver(item)
            finally:
                self._queue.task_done()

    def _deliver(self, delivery: Delivery) -> None:
        step, event = delivery.step, delivery.event
        body = json.dumps(remote_execution_context(event, step, self.organization)).encode()
        for attempt in range(len(self._backoff) + 1):
            headers = {
                "Content-Type": "application/json",
                "x-request-id": str(uuid.uuid4()),
                "x-ms-correlation-request-id": str(uuid.uuid4()),
                "x-ms-dynamics-organization": self.organization,
                "x-ms-dynamics-entity-name": event.table,
                "x-ms-dynamics-request-name": event.message,
            }
            status = self._post(_with_code(step.url, step.key), headers, body)
            delivery.statuses.append(status)
            if status not in RETRY_STATUSES or attempt == len(self._backoff):
                break
            log.info("webhook %s answered %d: trying again", step.url, status)
            self._sleep(self._backoff[attempt])
        if delivery.delivered:
            delivery.answered_at = self._monotonic()
        else:
            log.warning("webhook %s: the system job failed (%s)", step.url, delivery.statuses)
        with self._lock:
            self.deliveries.append(delivery)

    def _http_post(self, url: str, headers: dict[str, str], body: bytes) -> int:
        if self._session is None:
            self._session = requests.Session()
            self._session.trust_env = False  # loopback only
        try:
            return self._session.post(
                url, data=body, headers=headers, timeout=self._timeout
            ).status_code
        except requests.RequestException as exc:
            log.info("webhook %s: no answer (%s)", url, type(exc).__name__)
            return 0


def _with_code(url: str, key: str) -> str:
    """WebhookKey: the key as the `code` query parameter, as Dataverse sends it."""
    return f"{url}{'&' if '?' in url else '?'}code={quote(key, safe='')}"
