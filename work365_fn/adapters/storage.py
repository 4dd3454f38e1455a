"""The app's own state: run documents (async runs, fan-out batches, backfill journals),
the job queue and the full-sync lease.

Run documents are JSON objects addressed by (run id, name), e.g. ("<run id>", "state"),
("<run id>", "result"), ("<run id>", "batch-0003"), ("<run id>", "backfill-journal"), behind one
small interface with two implementations: Azure Blob Storage (the Function App's storage account;
Azurite locally) as `runs/<run id>/<name>.json` in the runs container, and a local folder (the CLI
on a laptop, the sandbox). The queue and the lease exist only with a storage account.

The account is reached with a connection string (an account key or SAS) or by identity: the
service URLs of `AzureWebJobsStorage__*` and azure-identity's `ManagedIdentityCredential` (the
Functions host's own identity-based connection; docs/identity.md#storage-by-identity).

Every client here is built on first use and does no I/O when built; SDK errors become `ApiError`
with service "storage" (messages never carry the connection string, a key or a token).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from work365_fn import safe_json
from work365_fn.errors import ApiError, ConfigError, Work365Error
from work365_fn.settings import StorageIdentity

if TYPE_CHECKING:  # the SDKs are imported when a client is first built, not at import
    from azure.core.exceptions import AzureError
    from azure.storage.blob import BlobClient, ContainerClient
    from azure.storage.queue import QueueClient

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

LEASE_SECONDS = 60  # the longest finite blob lease
LEASE_RENEW_SECONDS = 20.0
FULL_SYNC_LOCK = "locks/full-sync"


def check_name(value: str, what: str) -> str:
    """Run ids and document names become paths and blob names: only safe characters."""
    if not _NAME.match(value):
        raise ValueError(f"{what} must be 1-128 letters, digits, '.', '_' or '-'")
    return value


class RunStore(Protocol):
    def put(self, run_id: str, name: str, document: dict[str, Any]) -> None:
        """Write (or replace) one JSON document of a run."""
        ...

    def get(self, run_id: str, name: str) -> dict[str, Any] | None:
        """The document, or None when it does not exist."""
        ...

    def names(self, run_id: str, prefix: str = "") -> list[str]:
        """Names of the run's documents that start with `prefix`, sorted."""
        ...

    def delete(self, run_id: str, name: str) -> None:
        """Remove one document (nothing happens when it does not exist)."""
        ...

    def put_new(self, run_id: str, name: str, document: dict[str, Any]) -> bool:
        """Write the document only if it does not exist yet (atomically): True when this call
        made it, False when it was there already. A claim that only one caller can win."""
        ...

    def put_stream(self, run_id: str, name: str, source: BinaryIO) -> None:
        """Write (or replace) a document whose JSON text is read from `source` (a seekable
        binary file at its start): large documents without holding them in memory."""
        ...


class FileRunStore:
    """Run documents as files: <root>/runs/<run id>/<name>.json, written atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _dir(self, run_id: str) -> Path:
        return self.root / "runs" / check_name(run_id, "run id")

    def put(self, run_id: str, name: str, document: dict[str, Any]) -> None:
        folder = self._dir(run_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(document, out)
            os.replace(tmp, folder / f"{check_name(name, 'document name')}.json")
        except OSError as exc:
            raise self._unwritable(exc) from None

    def get(self, run_id: str, name: str) -> dict[str, Any] | None:
        path = self._dir(run_id) / f"{check_name(name, 'document name')}.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:  # e.g. a file where a folder should be: a store not readable
            raise ConfigError(
                f"cannot read run state under {self.root} ({exc.strerror or exc}): "
                "check WORK365_STATE_DIR"
            ) from None
        return read_document(raw, f"run document {path}")

    def names(self, run_id: str, prefix: str = "") -> list[str]:
        folder = self._dir(run_id)
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json") if p.stem.startswith(prefix))

    def delete(self, run_id: str, name: str) -> None:
        (self._dir(run_id) / f"{check_name(name, 'document name')}.json").unlink(missing_ok=True)

    def put_new(self, run_id: str, name: str, document: dict[str, Any]) -> bool:
        folder = self._dir(run_id)
        path = folder / f"{check_name(name, 'document name')}.json"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise self._unwritable(exc) from None
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(document, out)
        return True

    def put_stream(self, run_id: str, name: str, source: BinaryIO) -> None:
        folder = self._dir(run_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(source, out)
            os.replace(tmp, folder / f"{check_name(name, 'document name')}.json")
        except OSError as exc:
            raise self._unwritable(exc) from None

    def _unwritable(self, exc: OSError) -> ConfigError:
        return ConfigError(
            f"cannot write run state under {self.root} ({exc.strerror or exc}): "
            "check WORK365_STATE_DIR"
        )


def read_document(raw: bytes, what: str) -> dict[str, Any] | None:
    """A run document read back (through the one JSON gate); one that does not parse, or is
    not an object, is ignored with a warning, as if it were not there. Lone surrogates are
    taken: a Partner Center name is stored as it came."""
    try:
        data = safe_json.loads(raw, what, lone_surrogates=True)
    except safe_json.JsonInputError as exc:
        log.warning("%s: ignored", exc)
        return None
    return data if isinstance(data, dict) else None


def storage_error(exc: AzureError, what: str) -> ApiError:
    """An SDK error as our ApiError: status, the service's error code, no request details."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:
        # azure-identity could not get a token (the identity endpoint refused or is missing)
        reason = str(exc.message or "").strip().splitlines()
        return ApiError(
            "storage",
            0,
            "authentication",
            f"{what} failed: the managed identity got no storage token "
            f"({reason[0][:300] if reason else type(exc).__name__})",
        )
    if isinstance(exc, HttpResponseError):
        code = _code(exc) or str(exc.reason or "")
        return ApiError("storage", _status(exc), code, f"{what} failed")
    return ApiError(
        "storage", 0, type(exc).__name__, f"{what} failed: the app's storage is unreachable"
    )


def format_utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _code(exc: AzureError) -> str:
    return str(getattr(exc, "error_code", "") or "")


def _status(exc: AzureError) -> int:
    return int(getattr(exc, "status_code", 0) or 0)


class BlobRunStore:
    """Run documents as blobs `runs/<run id>/<name>.json` in one container (made on first write)."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    @staticmethod
    def blob_name(run_id: str, name: str) -> str:
        return f"runs/{check_name(run_id, 'run id')}/{check_name(name, 'document name')}.json"

    def put(self, run_id: str, name: str, document: dict[str, Any]) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        blob = self.blob_name(run_id, name)
        data = json.dumps(document, separators=(",", ":")).encode("utf-8")
        settings = ContentSettings(content_type="application/json")
        try:
            try:
                self._container.upload_blob(blob, data, overwrite=True, content_settings=settings)
            except ResourceNotFoundError as exc:
                if _code(exc) != "ContainerNotFound":
                    raise
                ensure_container(self._container)
                self._container.upload_blob(blob, data, overwrite=True, content_settings=settings)
        except AzureError as exc:
            raise storage_error(exc, f"writing run document {blob}") from None

    def get(self, run_id: str, name: str) -> dict[str, Any] | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        blob = self.blob_name(run_id, name)
        try:
            raw = self._container.download_blob(blob).readall()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise storage_error(exc, f"reading run document {blob}") from None
        return read_document(raw, f"run document {blob}")

    def names(self, run_id: str, prefix: str = "") -> list[str]:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        folder = f"runs/{check_name(run_id, 'run id')}/"
        try:
            found = [b.name for b in self._container.list_blobs(name_starts_with=folder + prefix)]
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise storage_error(exc, f"listing run documents under {folder}") from None
        names = (n[len(folder) : -len(".json")] for n in found if n.endswith(".json"))
        return sorted(n for n in names if "/" not in n)

    def put_new(self, run_id: str, name: str, document: dict[str, Any]) -> bool:
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        blob = self.blob_name(run_id, name)
        data = json.dumps(document, separators=(",", ":")).encode("utf-8")
        settings = ContentSettings(content_type="application/json")
        try:
            for attempt in range(2):
                try:
                    # If-None-Match: * on the service side: only one writer can make it
                    self._container.upload_blob(
                        blob, data, overwrite=False, content_settings=settings
                    )
                    return True
                except ResourceNotFoundError as exc:
                    if _code(exc) != "ContainerNotFound" or attempt:
                        raise
                    ensure_container(self._container)
        except ResourceExistsError:
            return False
        except AzureError as exc:
            raise storage_error(exc, f"writing run document {blob}") from None
        return False  # pragma: no cover - the loop returns or raises

    def put_stream(self, run_id: str, name: str, source: BinaryIO) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        blob = self.blob_name(run_id, name)
        settings = ContentSettings(content_type="application/json")
        start = source.tell()
        try:
            try:
                self._container.upload_blob(blob, source, overwrite=True, content_settings=settings)
            except ResourceNotFoundError as exc:
                if _code(exc) != "ContainerNotFound":
                    raise
                ensure_container(self._container)
                source.seek(start)
                self._container.upload_blob(blob, source, overwrite=True, content_settings=settings)
        except AzureError as exc:
            raise storage_error(exc, f"writing run document {blob}") from None

    def delete(self, run_id: str, name: str) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        blob = self.blob_name(run_id, name)
        try:
            self._container.delete_blob(blob)
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise storage_error(exc, f"deleting run document {blob}") from None


def ensure_container(container: ContainerClient) -> None:
    from azure.core.exceptions import ResourceExistsError

    with contextlib.suppress(ResourceExistsError):
        container.create_container()


class JobQueue:
    """The jobs queue. Messages are JSON text, Base64-encoded on the wire (the client's policy):
    what the Functions queue trigger expects by default (host.json `messageEncoding: base64`)."""

    def __init__(self, queue: QueueClient) -> None:
        self._queue = queue

    @property
    def name(self) -> str:
        return str(self._queue.queue_name)

    def send(self, message: dict[str, Any]) -> str:
        """Enqueue one message (the queue is made on first use); returns the message id."""
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

        text = json.dumps(message, separators=(",", ":"))
        try:
            try:
                sent = self._queue.send_message(text)
            except ResourceNotFoundError as exc:
                if _code(exc) != "QueueNotFound":
                    raise
                with contextlib.suppress(ResourceExistsError):
                    self._queue.create_queue()
                sent = self._queue.send_message(text)
        except AzureError as exc:
            raise storage_error(exc, f"sending a message to queue {self.name}") from None
        return str(sent.id)


class LeaseTakenError(Work365Error):
    """Another run holds the lease. `holder` is its run id (None when it has not said yet)."""

    def __init__(self, lock: str, holder: str | None) -> None:
        self.lock = lock
        self.holder = holder
        super().__init__(f"{lock} is held by run {holder or '(unknown)'}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LeaseTerms:
    """How a lease is held: its length in seconds, how often the background thread renews it
    (0 = never), the clock that stamps `acquiredat`, and a hook called after each renewal."""

    duration: int = LEASE_SECONDS
    renew_every: float = LEASE_RENEW_SECONDS
    clock: Callable[[], datetime] = _utc_now
    on_renew: Callable[[], None] | None = None


class Lease:
    """An exclusive blob lease for one run: `with lease:` acquires it (60 s), renews it every
    20 s from a background thread, records the holder's run id in the blob's metadata (`runid`)
    and releases it at the end. A crashed holder's lease expires by itself within 60 s."""

    def __init__(
        self,
        container: ContainerClient,
        blob_name: str,
        run_id: str,
        terms: LeaseTerms = LeaseTerms(),
    ) -> None:
        self._container = container
        self._blob: BlobClient = container.get_blob_client(blob_name)
        self.run_id = run_id
        self.duration = terms.duration
        self.renew_every = terms.renew_every
        self._clock = terms.clock
        self._on_renew = terms.on_renew
        self._lease: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    @property
    def name(self) -> str:
        return str(self._blob.blob_name)

    def holder(self) -> tuple[bool, str | None]:
        """(held, run id of the holder or None). Reads the blob's properties; takes nothing."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            props = self._blob.get_blob_properties()
        except ResourceNotFoundError:
            return False, None
        except AzureError as exc:
            raise storage_error(exc, f"reading lease {self.name}") from None
        held = props.lease.status == "locked"
        return held, (props.metadata or {}).get("runid") if held else None

    def acquire(self) -> None:
        """Take the lease or raise LeaseTakenError naming the holder."""
        from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

        try:
            try:
                lease = self._take()
            except ResourceNotFoundError:  # the first lease ever: make the blob (and container)
                self._create_blob()
                lease = self._take()
            try:
                self._blob.set_blob_metadata(
                    {"runid": self.run_id, "acquiredat": format_utc(self._clock())}, lease=lease
                )
            except AzureError:
                with contextlib.suppress(AzureError):
                    lease.release()  # do not block every sync for a minute
                raise
        except HttpResponseError as exc:
            if _status(exc) != 409:
                raise storage_error(exc, f"taking lease {self.name}") from None
            _held, holder = self.holder()
            raise LeaseTakenError(self.name, holder) from None
        except AzureError as exc:
            raise storage_error(exc, f"taking lease {self.name}") from None
        self._lease = lease
        self.lost = False
        log.info("[run %s] took lease %s", self.run_id, self.name)
        if self.renew_every > 0:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._renew_loop, name=f"lease-{self.run_id}", daemon=True
            )
            self._thread.start()

    def _take(self) -> Any:
        return self._blob.acquire_lease(lease_duration=self.duration, lease_id=str(uuid.uuid4()))

    def _create_blob(self) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        for attempt in range(2):
            try:
                self._blob.upload_blob(b"", overwrite=False)
                return
            except ResourceNotFoundError as exc:
                if _code(exc) != "ContainerNotFound" or attempt:
                    raise
                ensure_container(self._container)
            except HttpResponseError as exc:
                if _status(exc) in (409, 412):  # another run made it meanwhile (and leased it)
                    return
                raise

    def renew(self) -> None:
        """Extend the lease by another `duration` seconds (the thread calls this)."""
        from azure.core.exceptions import AzureError

        if self._lease is None:
            return
        try:
            self._lease.renew()
        except AzureError as exc:
            if _status(exc) == 409:  # expired and taken by another run, or released
                self.lost = True
                log.error(
                    "[run %s] lost lease %s: another run may start (conditional writes keep "
                    "both safe)",
                    self.run_id,
                    self.name,
                )
                self._stop.set()
                return
            log.warning(
                "[run %s] could not renew lease %s: %s",
                self.run_id,
                self.name,
                storage_error(exc, "renewing"),
            )
            return
        if self._on_renew is not None:
            self._on_renew()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_every):
            self.renew()

    def release(self) -> None:
        from azure.core.exceptions import AzureError

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        lease, self._lease = self._lease, None
        if lease is None or self.lost:
            return
        try:
            self._blob.set_blob_metadata({}, lease=lease)
            lease.release()
        except AzureError as exc:
            log.warning(
                "[run %s] could not release lease %s (it expires within %d s): %s",
                self.run_id,
                self.name,
                self.duration,
                storage_error(exc, "releasing"),
            )
            return
        log.info("[run %s] released lease %s", self.run_id, self.name)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class AppStorage:
    """The app's storage account (WORK365_STORAGE or AzureWebJobsStorage). Clients are built on
    first use, once, and building them does no I/O. Containers and queues are made on first
    write, so a fresh account (or a fresh Azurite) needs no set-up."""

    def __init__(  # noqa: PLR0913 - independent options, all keyword-only but the account
        self,
        connection: str | StorageIdentity,
        *,
        container: str,
        queue: str,
        setting: str = "WORK365_STORAGE",
        timeout: tuple[float, float] = (5.0, 30.0),
        attempts: int = 3,
        verify: str | None = None,
    ) -> None:
        """`connection`: a connection string, or the URLs and managed identity of an
        identity-based connection. `verify`: a CA bundle to trust (WORK365_CA_BUNDLE) for the
        account and the identity endpoint; None: the system's."""
        self._connection = connection
        self._verify = verify
        self._token_credential: Any = None
        self.container_name = container
        self.queue_name = queue
        self.setting = setting
        self._timeout = timeout
        self._attempts = attempts
        self._lock = threading.Lock()
        self._container_client: ContainerClient | None = None
        self._queues: dict[str, QueueClient] = {}

    def __repr__(self) -> str:  # never the connection string: it carries the account key
        return f"AppStorage(container={self.container_name!r}, queue={self.queue_name!r})"

    def _options(self) -> dict[str, Any]:
        return {
            "connection_timeout": self._timeout[0],
            "read_timeout": self._timeout[1],
            "retry_total": self._attempts - 1,
            "retry_backoff_factor": 0.5,
            "retry_backoff_max": 5,
            "initial_backoff": 1,
            "increment_base": 2,
            "logger": _SDK_HTTP_LOG,  # the SDK logs every request at INFO otherwise
            **({"connection_verify": self._verify} if self._verify else {}),
        }

    def _credential(self, identity: StorageIdentity) -> Any:
        """azure-identity's ManagedIdentityCredential (DefaultAzureCredential would ignore
        `__clientId`), built once. On App Service and Functions it reads IDENTITY_ENDPOINT and
        IDENTITY_HEADER from the process environment when built (docs/identity.md)."""
        if self._token_credential is None:
            from azure.identity import ManagedIdentityCredential

            options: dict[str, Any] = {"connection_verify": self._verify} if self._verify else {}
            self._token_credential = ManagedIdentityCredential(
                client_id=identity.client_id, **options
            )
        return self._token_credential

    def container(self) -> ContainerClient:
        with self._lock:
            if self._container_client is None:
                from azure.storage.blob import BlobServiceClient

                c = self._connection
                try:
                    service = (
                        BlobServiceClient.from_connection_string(c, **self._options())
                        if isinstance(c, str)
                        else BlobServiceClient(c.blob_url, self._credential(c), **self._options())
                    )
                except ValueError:
                    raise self._malformed() from None
                self._container_client = service.get_container_client(self.container_name)
            return self._container_client

    def queue(self, name: str | None = None) -> QueueClient:
        name = name or self.queue_name
        with self._lock:
            if name not in self._queues:
                from azure.storage.queue import (
                    QueueClient,
                    TextBase64DecodePolicy,
                    TextBase64EncodePolicy,
                )

                c = self._connection
                options = {
                    "message_encode_policy": TextBase64EncodePolicy(),
                    "message_decode_policy": TextBase64DecodePolicy(),
                    **self._options(),
                }
                try:
                    self._queues[name] = (
                        QueueClient.from_connection_string(c, name, **options)
                        if isinstance(c, str)
                        else QueueClient(c.queue_url, name, self._credential(c), **options)
                    )
                except ValueError:
                    raise self._malformed() from None
            return self._queues[name]

    def _malformed(self) -> ConfigError:
        if not isinstance(self._connection, str):
            return ConfigError(
                "AzureWebJobsStorage__blobServiceUri / __queueServiceUri (or __accountName) do "
                "not make storage URLs: expected https://<account>.blob.core.windows.net"
            )
        return ConfigError(
            f"{self.setting} is malformed: expected a storage connection string like "
            "DefaultEndpointsProtocol=https;AccountName=<name>;AccountKey=<key>;"
            "EndpointSuffix=core.windows.net"
        )

    def run_store(self) -> BlobRunStore:
        return BlobRunStore(self.container())

    def jobs(self) -> JobQueue:
        return JobQueue(self.queue())

    def lease(self, run_id: str, blob_name: str = FULL_SYNC_LOCK, **terms: Any) -> Lease:
        """`terms` are the fields of `LeaseTerms` (e.g. `renew_every=0`)."""
        return Lease(self.container(), blob_name, run_id, LeaseTerms(**terms))


# A logger of its own, not under "azure": the storage SDK's per-request INFO lines would flood
# Application Insights. Warnings and errors still come through.
_SDK_HTTP_LOG = logging.getLogger("work365_fn.adapters.storage.sdk")
_SDK_HTTP_LOG.setLevel(logging.WARNING)
