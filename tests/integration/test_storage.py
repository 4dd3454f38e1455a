"""The app's storage against Azurite: run documents, the jobs queue's wire format, the lease."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from pathlib import Path

import pytest
from azure.storage.blob import BlobLeaseClient, BlobServiceClient
from azure.storage.queue import QueueClient

from tests.azurite import StorageNames
from work365_fn.adapters.storage import (
    FULL_SYNC_LOCK,
    AppStorage,
    FileRunStore,
    LeaseTakenError,
    RunStore,
)
from work365_fn.errors import ApiError, ConfigError

RUN = "5d0c7a59-7f11-4b0e-9d59-6d0f3e7c2a10"
OTHER = "0b8e2b55-2c1f-4c3e-8a3e-3f7d6c1b9e22"


def app_storage(storage: StorageNames) -> AppStorage:
    return AppStorage(
        storage.azurite.connection_string, container=storage.container, queue=storage.queue
    )


@pytest.fixture(params=["blob", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RunStore:
    if request.param == "file":
        return FileRunStore(tmp_path)
    names: StorageNames = request.getfixturevalue("storage")
    return app_storage(names).run_store()


def test_run_documents_round_trip(store: RunStore) -> None:
    assert store.get(RUN, "state") is None  # nothing yet (the container does not even exist)
    assert store.names(RUN) == []

    store.put(RUN, "state", {"status": "queued", "n": 1})
    store.put(RUN, "state", {"status": "running", "n": 2})  # replaces
    store.put(RUN, "batch-0001", {"index": 1})
    store.put(RUN, "batch-0000", {"index": 0})
    store.put(OTHER, "state", {"status": "queued"})

    assert store.get(RUN, "state") == {"status": "running", "n": 2}
    assert store.names(RUN) == ["batch-0000", "batch-0001", "state"]
    assert store.names(RUN, "batch-") == ["batch-0000", "batch-0001"]
    store.delete(RUN, "state")
    store.delete(RUN, "state")  # deleting what is gone is fine
    assert store.get(RUN, "state") is None
    assert store.names(RUN) == ["batch-0000", "batch-0001"]
    assert store.names(OTHER) == ["state"]


def test_put_new_is_a_claim_only_one_writer_wins(store: RunStore) -> None:
    assert store.put_new(RUN, "aggregated", {"by": "first"}) is True  # container made on the way
    assert store.put_new(RUN, "aggregated", {"by": "second"}) is False
    assert store.get(RUN, "aggregated") == {"by": "first"}

    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        wins.append(store.put_new(OTHER, "aggregated", {"at": threading.get_ident()}))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_put_stream_writes_a_large_document_from_a_file(store: RunStore, tmp_path: Path) -> None:
    rows = [{"n": i, "text": "x" * 100} for i in range(50_000)]  # about 6 MB of JSON
    source = tmp_path / "doc.json"
    source.write_text(json.dumps({"rows": rows}))
    store.put(RUN, "result", {"old": True})

    with source.open("rb") as data:
        store.put_stream(RUN, "result", data)

    assert store.get(RUN, "result") == {"rows": rows}


def test_run_ids_and_names_are_checked_before_they_become_blob_names(store: RunStore) -> None:
    with pytest.raises(ValueError, match="run id"):
        store.put("../x", "state", {})
    with pytest.raises(ValueError, match="document name"):
        store.get(RUN, "a/b")


def test_a_file_store_that_cannot_be_read_is_a_config_error_naming_the_setting(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the run store's folder should be")
    store = FileRunStore(blocked)

    with pytest.raises(ConfigError, match=r"cannot read run state under .*WORK365_STATE_DIR"):
        store.get(RUN, "state")
    assert FileRunStore(tmp_path).get(RUN, "state") is None  # absent is not an error


def test_blob_documents_are_json_blobs_under_runs(storage: StorageNames) -> None:
    app_storage(storage).run_store().put(RUN, "state", {"status": "queued"})

    container = BlobServiceClient.from_connection_string(
        storage.azurite.connection_string
    ).get_container_client(storage.container)
    blob = container.get_blob_client(f"runs/{RUN}/state.json")
    assert json.loads(blob.download_blob().readall()) == {"status": "queued"}
    assert blob.get_blob_properties().content_settings.content_type == "application/json"


def test_a_storage_failure_is_an_api_error_without_the_key(storage: StorageNames) -> None:
    wrong = storage.azurite.connection_string.replace(
        "AccountKey=Eby8", "AccountKey=Xby8"
    )  # signature mismatch: 403
    store = AppStorage(wrong, container=storage.container, queue=storage.queue).run_store()

    with pytest.raises(ApiError) as caught:
        store.put(RUN, "state", {})

    assert caught.value.service == "storage"
    assert caught.value.status == 403
    assert "AccountKey" not in str(caught.value)
    assert "Xby8" not in str(caught.value)


def test_queue_messages_are_base64_json_on_the_wire(storage: StorageNames) -> None:
    app_storage(storage).jobs().send({"schemaVersion": 1, "kind": "sync"})  # makes the queue

    raw = QueueClient.from_connection_string(storage.azurite.connection_string, storage.queue)
    message = raw.receive_message()
    assert message is not None
    wire = str(message.content)
    assert json.loads(base64.b64decode(wire, validate=True)) == {"schemaVersion": 1, "kind": "sync"}
    assert not wire.startswith("{")


def test_the_lease_is_exclusive_and_names_its_holder(storage: StorageNames) -> None:
    apps = app_storage(storage)
    first = apps.lease(RUN, renew_every=0)
    second = apps.lease(OTHER, renew_every=0)
    assert first.name == FULL_SYNC_LOCK
    assert second.holder() == (False, None)

    with first:
        assert second.holder() == (True, RUN)
        with pytest.raises(LeaseTakenError) as caught:
            second.acquire()
        assert caught.value.holder == RUN

    assert second.holder() == (False, None)  # released at the end of the block
    with second:
        assert first.holder() == (True, OTHER)


def test_the_lease_is_released_when_the_run_raises(storage: StorageNames) -> None:
    lease = app_storage(storage).lease(RUN, renew_every=0)
    with pytest.raises(RuntimeError), lease:
        raise RuntimeError("the sync crashed")
    assert lease.holder() == (False, None)


def test_a_background_thread_renews_the_lease(storage: StorageNames) -> None:
    renewed = threading.Event()
    lease = app_storage(storage).lease(RUN, renew_every=0.01, on_renew=renewed.set)
    with lease:
        assert renewed.wait(10)
        assert lease.holder() == (True, RUN)
    assert not lease.lost


def test_a_lost_lease_is_logged_and_not_released(
    storage: StorageNames, caplog: pytest.LogCaptureFixture
) -> None:
    apps = app_storage(storage)
    lease = apps.lease(RUN, renew_every=0)
    with lease:
        BlobLeaseClient(apps.container().get_blob_client(FULL_SYNC_LOCK)).break_lease(
            lease_break_period=0
        )
        lease.renew()
        assert lease.lost
    assert any("lost lease" in r.getMessage() for r in caplog.records)
    taker = apps.lease(str(uuid.uuid4()), renew_every=0)
    with taker:  # free for the next run
        assert taker.holder()[0]
