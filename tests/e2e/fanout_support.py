"""Helpers for the fan-out tests: a scenario with every kind of customer, the Functions app over
it with Azurite as the app's storage and a tiny fan-out threshold, and the jobs queue drained
through the real queue handler."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceNotFoundError

import function_app
from tests.azurite import StorageNames
from tests.e2e.async_support import SIGNING_KEY, App, clean_environment, signed
from tests.integration.conftest import OLD, ScenarioBuilder, gid
from work365_fn.adapters.storage import BlobRunStore
from work365_fn.sandbox import Sandbox, Scenario

THRESHOLD = 3
BATCH_SIZE = 2


def scenario() -> Scenario:
    """Nine customers, every reason among them, one without a reseller relationship."""
    world = ScenarioBuilder()
    a1 = world.account(1)  # one default
    a2 = world.account(2, default_contracts=0)
    a3 = world.account(3, default_contracts=2)
    a7 = world.account(7)
    a8 = world.account(8)
    c1 = world.customer(1, account_id=a1)
    c2 = world.customer(2, account_id=a2)
    c3 = world.customer(3, account_id=a3)
    c4 = world.customer(4, account_id=a1, relationship=False)  # 403 20002
    c5 = world.customer_without_provider_account(5)
    c6 = world.customer(6, account_id=a1)
    c7 = world.customer(7, account_id=a7)
    c8 = world.customer(8, account_id=a8)
    c9 = world.customer(9, account_id=a8)
    world.new_subscription(1, c1)
    world.pc_subscription(2, c1)  # not-synced
    world.new_subscription(3, c1, contract_id=gid("con", 10))  # already-assigned
    world.new_subscription(4, c1, created_on=OLD)  # existing-subscription
    world.new_subscription(5, c1, account_id=a2)  # account-mismatch
    world.new_subscription(6, c2)  # no-default-contract
    world.new_subscription(7, c3)  # multiple-default-contracts
    world.new_subscription(8, c4)
    world.new_subscription(9, c5)  # unmapped-customer
    world.new_subscription(10, c6)
    for n in range(11, 15):
        world.new_subscription(n, c7)
    world.new_subscription(15, c8)
    world.new_subscription(16, c9)
    world.new_subscription(17, c9, created_on=OLD)
    return world.scenario()


CUSTOMERS = sorted(gid("cus", n) for n in range(1, 10))


@dataclass
class FanoutApp(App):
    """The app over `scenario()`, fanning out above THRESHOLD customers."""

    def store(self) -> BlobRunStore:
        return self.app_storage().run_store()

    def drain(self) -> list[tuple[str, bytes]]:
        """Every message of the jobs queue, removed: (text on the wire, decoded bytes)."""
        queue = self.raw_queue()
        out: list[tuple[str, bytes]] = []
        try:
            while True:
                batch = list(queue.receive_messages(max_messages=32, visibility_timeout=60))
                if not batch:
                    return out
                for message in batch:
                    wire = str(message.content)
                    out.append((wire, base64.b64decode(wire, validate=True)))
                    queue.delete_message(message)
        except ResourceNotFoundError:
            return out

    def rows(self) -> dict[str, str | None]:
        """Dataverse's subscription records: id -> billing contract."""
        return {
            row["work365_subscriptionid"]: row.get("_work365_billingcontract_value")
            for row in self.box.dataverse.rows("work365_subscriptions")
        }


def messages_by_index(drained: list[tuple[str, bytes]]) -> dict[int, bytes]:
    return {json.loads(raw)["batch"]["index"]: raw for _wire, raw in drained}


def deliver(raw: bytes, message_id: str = "m") -> None:
    """The queue trigger, as the host calls it (first delivery)."""
    function_app.run_job(func.QueueMessage(id=message_id, body=raw))


def deliver_all(raw_messages: list[bytes]) -> None:
    for i, raw in enumerate(raw_messages):
        deliver(raw, f"m{i}")


def deliver_together(first: bytes, second: bytes) -> None:
    """Two instances finishing their batches at the same moment."""
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(raw: bytes) -> None:
        start.wait()
        try:
            deliver(raw)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(raw,)) for raw in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


def status_of(run_id: str) -> func.HttpResponse:
    return function_app.run_status(
        func.HttpRequest(
            method="GET",
            url=f"http://localhost:7071/api/runs/{run_id}",
            params={"sig": signed(run_id, SIGNING_KEY)},
            route_params={"runId": run_id},
            body=b"",
        )
    )


class Timer:
    past_due = False


def summary_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        r.summary  # type: ignore[attr-defined]
        for r in caplog.records
        if hasattr(r, "summary") and r.getMessage().split("] ", 1)[-1].startswith("summary {")
    ]


def start_app(
    monkeypatch: pytest.MonkeyPatch, storage: StorageNames, **settings: str
) -> Iterator[FanoutApp]:
    """The app's worker over a fresh sandbox; closing the generator stops it."""
    clean_environment(monkeypatch)
    try:
        with Sandbox.start(scenario()) as sandbox:
            for key, value in {
                **sandbox.env,
                **storage.settings,
                "WORK365_RUN_SIGNING_KEY": SIGNING_KEY,
                "WORK365_FANOUT_THRESHOLD": str(THRESHOLD),
                "WORK365_FANOUT_BATCH_SIZE": str(BATCH_SIZE),
                **settings,
            }.items():
                monkeypatch.setenv(key, value)
            function_app.services.cache_clear()
            yield FanoutApp(sandbox, storage)
    finally:
        function_app.services.cache_clear()


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, storage: StorageNames) -> Iterator[FanoutApp]:
    yield from start_app(monkeypatch, storage)


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The reference: an in-process full sync of the same scenario on a fresh sandbox, its
    summary and Dataverse's final records."""
    from tests.integration.conftest import services_for
    from work365_fn.operations.sync import SyncRequest

    state = str(tmp_path_factory.mktemp("in-process-state"))
    with Sandbox.start(scenario()) as box:
        services = services_for(box, WORK365_STATE_DIR=state)
        summary = services.sync(SyncRequest(mode="full")).to_json()
        rows = {
            row["work365_subscriptionid"]: row.get("_work365_billingcontract_value")
            for row in box.dataverse.rows("work365_subscriptions")
        }
    return {"summary": summary, "rows": rows}
