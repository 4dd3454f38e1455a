"""One loopback HTTPS server for every emulator, routed by path.

    /{tenant}/v2.0/.well-known/openid-configuration, /{tenant}/oauth2/v2.0/token  -> token
    /v1/...                                                                       -> partnerCenter
    /api/data/v9.2/...                                                            -> dataverse

HTTP/1.1 with keep-alive (every answer carries Content-Length). Each request is counted by service
and kind, delayed by the global latency, checked against the service-protection limits when they
are enforced, then against the fault rules, and finally handled by the emulator.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from work365_fn.errors import ConfigError

from .core import Emulator, Headers, Request, Response
from .faults import FaultSet, Limiter, Slot, respond, service_error, truncate
from .identity import IdentityEmulator
from .token import TokenEmulator

log = logging.getLogger(__name__)

DATAVERSE_PREFIX = "/api/data/v9.2"
PARTNER_CENTER_PREFIX = "/v1/"
SERVICES = ("token", "partnerCenter", "dataverse")
# Counted from its first request on (absent from `counts()` before): the managed-identity endpoint.
LATER_SERVICES = ("identity",)
MAX_BODY = 64 * 1024 * 1024
MAX_PORT = 65535


class PortError(ConfigError):
    """The sandbox cannot listen on the port asked for: busy, out of range, not allowed."""


def _listen(host: str, port: int, app: SandboxServer) -> _Server:
    """The listening server, or a PortError saying what to do instead of bind()'s OSError or
    OverflowError."""
    if not 0 <= port <= MAX_PORT:
        raise PortError(f"port must be 1-{MAX_PORT} (or 0 for any free port), not {port}")
    try:
        return _Server((host, port), app)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortError(
                f"port {port} is in use: stop what listens there, or pick another --port "
                "(0: any free port)"
            ) from None
        raise PortError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@runtime_checkable
class Racing(Protocol):
    def race(self, request: Request, changes: dict[str, object]) -> None: ...


def route(path: str) -> str | None:
    """The service that owns a path, or None."""
    if path == DATAVERSE_PREFIX or path.startswith(DATAVERSE_PREFIX + "/"):
        return "dataverse"
    if path.startswith(PARTNER_CENTER_PREFIX):
        return "partnerCenter"
    if TokenEmulator.owns(path):
        return "token"
    if IdentityEmulator.owns(path):  # /msi/token: the managed-identity endpoint (identity.py)
        return "identity"
    return None


class Counts:
    """Requests served by service and kind ("GET customers", "PATCH work365_subscriptions")."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, Counter[str]] = {s: Counter() for s in SERVICES}

    def add(self, service: str, kind: str) -> None:
        with self._lock:
            self._counts.setdefault(service, Counter())[kind] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {service: dict(counter) for service, counter in self._counts.items()}

    def reset(self) -> None:
        with self._lock:
            for counter in self._counts.values():
                counter.clear()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: SandboxServer) -> None:
        self.app = app
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # TLS handshakes refused by clients and resets are routine here: keep them out of stderr.
        log.debug("sandbox connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 120
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def setup(self) -> None:
        raw: socket.socket = self.request
        raw.settimeout(30)
        self.request = self.server.app.ssl_context.wrap_socket(raw, server_side=True)
        with self.server.connections_lock:
            self.server.connections.add(self.request)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.request)
            with contextlib.suppress(OSError):
                self.request.close()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("sandbox: " + format, *args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=unquote(parts.path),
            raw_query=parts.query,
            headers=Headers(dict(self.headers.items())),
            body=self._read_body(),
        )
        response = self.server.app.dispatch(request)
        if response is None:  # drop: close the connection without an answer
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            if name.lower() not in ("content-length", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _serve


class SandboxServer:
    """The HTTPS server and the request pipeline. Emulators are mounted by their service name."""

    def __init__(  # noqa: PLR0913 - independent server options; tests set each alone
        self,
        ssl_context: ssl.SSLContext,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultSet | None = None,
        limiter: Limiter | None = None,
        latency_ms: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ssl_context = ssl_context
        self.faults = faults if faults is not None else FaultSet()
        self.limiter = limiter
        self.latency_ms = latency_ms
        self.counts = Counts()
        self._sleep = sleep
        self._emulators: dict[str, Emulator] = {}
        self._httpd = _listen(host, port, self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def mount(self, emulator: Emulator) -> None:
        if emulator.service not in SERVICES + LATER_SERVICES:
            raise ValueError(f"unknown sandbox service {emulator.service!r}")
        self._emulators[emulator.service] = emulator
        if hasattr(emulator, "part_fault"):  # Dataverse: faults on operations inside $batch
            setattr(emulator, "part_fault", lambda request: self._part_fault(emulator, request))  # noqa: B010

    def _part_fault(self, emulator: Emulator, request: Request) -> Response | None:
        """The answer a `batchPart` fault rule gives one operation inside a $batch (None: the
        emulator answers it)."""
        rule = self.faults.match(emulator.service, request, part=True)
        if rule is None:
            return None
        log.debug("sandbox fault %s on batch part %s %s", rule.kind, request.method, request.path)
        return respond(rule, emulator.service)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        with self._httpd.connections_lock:
            open_connections = list(self._httpd.connections)
        for conn in open_connections:  # idle keep-alive connections would block their threads
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()

    def dispatch(self, request: Request) -> Response | None:
        """The answer to one request, or None to drop the connection."""
        service = route(request.path)
        emulator = self._emulators.get(service) if service else None
        if service is None or emulator is None:
            return Response.json(
                404,
                {
                    "error": {
                        "code": "NotFound",
                        "message": f"the sandbox serves no {request.method} {request.path}",
                    }
                },
            )
        self.counts.add(service, emulator.kind(request))
        if self.latency_ms:
            self._sleep(self.latency_ms / 1000)
        slot: Slot | None = None
        if self.limiter is not None:
            admitted = self.limiter.acquire(service)
            if isinstance(admitted, Response):
                return self._finish(service, request, admitted)
            slot = admitted
        try:
            return self._faulted(service, emulator, request)
        finally:
            if slot is not None and self.limiter is not None:
                self.limiter.release(slot)

    def _faulted(self, service: str, emulator: Emulator, request: Request) -> Response | None:
        rule = self.faults.match(service, request)
        if rule is not None:
            log.debug("sandbox fault %s on %s %s", rule.kind, request.method, request.path)
            if rule.kind == "drop":
                return None
            if rule.kind == "slow":
                self._sleep(rule.delay_ms / 1000)
            elif rule.kind == "race":
                if isinstance(emulator, Racing):
                    emulator.race(request, dict(rule.changes))
                else:
                    log.warning("sandbox: %s cannot race; fault ignored", service)
            elif rule.kind == "malformed-json":
                if request.method == "GET":
                    return self._finish(
                        service, request, truncate(self._handle(emulator, service, request))
                    )
                return self._finish(service, request, truncate(Response(200)))
            else:
                return self._finish(service, request, respond(rule, service))
        return self._finish(service, request, self._handle(emulator, service, request))

    def _handle(self, emulator: Emulator, service: str, request: Request) -> Response:
        try:
            return emulator.handle(request)
        except Exception as exc:  # a bug in an emulator: answer 500 and keep serving
            log.exception(
                "sandbox %s emulator failed on %s %s", service, request.method, request.path
            )
            return service_error(service, 500, f"sandbox emulator error: {type(exc).__name__}")

    def _finish(self, service: str, request: Request, response: Response) -> Response:
        if service == "partnerCenter":
            for name in ("MS-RequestId", "MS-CorrelationId"):
                if not any(k.lower() == name.lower() for k in response.headers):
                    response.headers[name] = request.headers.get(name) or str(uuid.uuid4())
        return response
