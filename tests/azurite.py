"""Azurite (the Azure Storage emulator, from npm) for the tests: one process per test session on
free loopback ports, in memory, started on first use and stopped at the end.

`npm ci` at the repo root installs it (scripts/test does); without it the tests that need it FAIL
with that instruction, they never skip.

`azurite_oauth` is a second one, started only by the tests that ask for it: HTTPS with a
certificate made like the sandbox's (work365_fn/sandbox/tls.py) and `--oauth basic`, for storage
by identity. The storage SDK refuses a token credential over http; Azurite then accepts a bearer
JWT whose iss starts https://sts.windows.net/, aud https://storage.azure.com, with nbf/exp/iat
(no signature check): what the sandbox's managed-identity endpoint issues for that resource.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from work365_fn.sandbox.tls import make_certificate

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"
ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the same in every Azurite): not a secret.
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Azurite:
    blob_port: int
    queue_port: int

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT};"
        )


@dataclass(frozen=True)
class OAuthAzurite:
    """Azurite over HTTPS taking OAuth bearer tokens; `ca_bundle` is its certificate (trust it)."""

    blob_port: int
    queue_port: int
    ca_bundle: str

    @property
    def blob_url(self) -> str:
        return f"https://127.0.0.1:{self.blob_port}/{ACCOUNT}"

    @property
    def queue_url(self) -> str:
        return f"https://127.0.0.1:{self.queue_port}/{ACCOUNT}"


@dataclass(frozen=True)
class StorageNames:
    """A queue and a container of their own for one test (Azurite is shared by the session)."""

    azurite: Azurite
    queue: str
    container: str

    @property
    def settings(self) -> dict[str, str]:
        return {
            "WORK365_STORAGE": self.azurite.connection_string,
            "WORK365_JOBS_QUEUE": self.queue,
            "WORK365_RUNS_CONTAINER": self.container,
        }


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start(
    workdir: Path, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[str], Azurite, list[str]]:
    blob, queue, table = _free_ports(3)
    command = [
        str(AZURITE),
        "--blobHost", "127.0.0.1", "--blobPort", str(blob),
        "--queueHost", "127.0.0.1", "--queuePort", str(queue),
        "--tableHost", "127.0.0.1", "--tablePort", str(table),
        "--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--silent",
        "--disableTelemetry", *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(
        command,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            text = "\n".join(lines)
            if "Blob service is successfully listening" in text and (
                "Queue service is successfully listening" in text
            ):
                ready.set()
        ready.set()  # the process ended: stop waiting

    threading.Thread(target=read, name="azurite-output", daemon=True).start()
    ready.wait(START_TIMEOUT)
    return proc, Azurite(blob, queue), lines


def _answers(azurite: Azurite) -> bool:
    for port in (azurite.blob_port, azurite.queue_port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError:
            return False
    return True


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A running Azurite for the whole session."""
    yield from _running(tmp_path_factory.mktemp("azurite"))


@pytest.fixture(scope="session")
def azurite_oauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthAzurite]:
    """A second Azurite, over HTTPS with `--oauth basic`, for the session (storage by identity)."""
    folder = tmp_path_factory.mktemp("azurite-oauth")
    cert = make_certificate(folder / "tls")
    options = ["--oauth", "basic", "--cert", cert.cert_path, "--key", cert.key_path]
    for found in _running(folder, options):
        yield OAuthAzurite(found.blob_port, found.queue_port, cert.cert_path)


def _running(workdir: Path, extra: Sequence[str] = ()) -> Iterator[Azurite]:
    if not os.access(AZURITE, os.X_OK):
        pytest.fail(
            f"Azurite is not installed ({AZURITE.relative_to(ROOT)} is missing): run `npm ci` "
            "at the repo root (Node 20; scripts/test does it for you)",
            pytrace=False,
        )
    output: list[str] = []
    for _ in range(3):  # a port taken between choosing and binding: try other ports
        proc, found, output = _start(workdir, extra)
        if proc.poll() is None and _answers(found):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("Azurite did not start:\n" + "\n".join(output[-20:]), pytrace=False)
    try:
        yield found
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def storage(azurite: Azurite) -> StorageNames:
    """Fresh queue and container names on the session's Azurite (made on first use)."""
    suffix = uuid.uuid4().hex[:12]
    return StorageNames(azurite, f"jobs-{suffix}", f"runs-{suffix}")
