"""Helpers for the asynchronous-run and lease tests: the Functions app over the demo sandbox with
Azurite as the app's storage, real `func.HttpRequest`s and the real queue messages."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient

import function_app
from tests.azurite import StorageNames
from work365_fn.adapters.storage import AppStorage
from work365_fn.entrypoints.functions.runs import run_resource
from work365_fn.sandbox import Sandbox, Scenario
from work365_fn.signing import LinkSigner

SIGNING_KEY = "test-signing-key-0123456789-abcdefghijklmnop"
CUSTOMER = "c0000001-0000-4000-8000-000000000001"  # demo: Contoso


@dataclass
class App:
    """The demo sandbox and Azurite, wired as the app settings of a fresh worker."""

    box: Sandbox
    storage: StorageNames

    def app_storage(self) -> AppStorage:
        return AppStorage(
            self.storage.azurite.connection_string,
            container=self.storage.container,
            queue=self.storage.queue,
        )

    def raw_queue(self, name: str | None = None) -> QueueClient:
        """The jobs queue as the Functions host sees it: no decoding, the bytes on the wire."""
        return QueueClient.from_connection_string(
            self.storage.azurite.connection_string, name or self.storage.queue
        )

    def receive(self) -> tuple[str, bytes]:
        """(the message text as stored, the bytes the host hands the function after Base64)."""
        queue = self.raw_queue()
        message = queue.receive_message()
        assert message is not None, "no message in the jobs queue"
        queue.delete_message(message)
        wire = str(message.content)
        return wire, base64.b64decode(wire, validate=True)

    def queued(self) -> list[str]:
        """The messages waiting in the jobs queue (none when the queue was never made)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return [str(m.content) for m in self.raw_queue().peek_messages(max_messages=32)]
        except ResourceNotFoundError:
            return []

    def assigned(self) -> int:
        return sum(
            1
            for row in self.box.dataverse.rows("work365_subscriptions")
            if row.get("_work365_billingcontract_value")
        )


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("WORK365_", "AzureWebJobsStorage")):
            monkeypatch.delenv(key)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, storage: StorageNames) -> Iterator[App]:
    clean_environment(monkeypatch)
    with Sandbox.start(Scenario.builtin("demo")) as sandbox:
        for key, value in {
            **sandbox.env,
            **storage.settings,
            "WORK365_RUN_SIGNING_KEY": SIGNING_KEY,
        }.items():
            monkeypatch.setenv(key, value)
        function_app.services.cache_clear()
        yield App(sandbox, storage)
    function_app.services.cache_clear()


def post(body: dict[str, Any], route: str = "sync") -> func.HttpRequest:
    return func.HttpRequest(
        method="POST",
        url=f"http://localhost:7071/api/{route}",
        headers={"Content-Type": "application/json"},
        body=json.dumps(body).encode(),
    )


def get_status(location: str) -> func.HttpRequest:
    """GET the status URL as Power Automate does: the URL exactly as the Location header gave it."""
    parts = urlsplit(location)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return func.HttpRequest(
        method="GET",
        url=location,
        params=params,
        route_params={"runId": parts.path.rsplit("/", 1)[-1]},
        body=b"",
    )


def status_request(run_id: str, sig: str | None) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET",
        url=f"http://localhost:7071/api/runs/{run_id}",
        params={"sig": sig} if sig is not None else {},
        route_params={"runId": run_id},
        body=b"",
    )


def signer(key: str = SIGNING_KEY) -> LinkSigner:
    """The app's link signer as the tests' settings make it (24 hours, the real clock)."""
    return LinkSigner(key, lifetime=timedelta(hours=24), clock=lambda: datetime.now(UTC))


def signed(run_id: str, key: str = SIGNING_KEY) -> str:
    """A `sig` for the run's status URL, as the app would sign it now."""
    return signer(key).sign(run_resource(run_id))


def link_ok(run_id: str, location: str) -> bool:
    """Whether `location` is a good status URL of the run (its path and its `sig`)."""
    parts = urlsplit(location)
    sig = parse_qs(parts.query).get("sig", [None])[0]
    return parts.path == f"/api/runs/{run_id}" and signer().check(run_resource(run_id), sig).valid


def body(resp: func.HttpResponse) -> dict[str, Any]:
    data = json.loads(resp.get_body())
    assert isinstance(data, dict)
    return data
