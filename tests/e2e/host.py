"""A local stand-in for the Azure Functions host's HTTP front door (test code, never deployed).

Core Tools cannot be installed here (DESIGN section 6), so this serves a FunctionApp's registered
HTTP functions over loopback with the stdlib's threaded `http.server`, as the host would:

- routes, methods and auth levels come from `app.get_functions()` (of a fresh copy of
  function_app.py: `get_functions()` builds its list once per FunctionApp object);
- the route prefix is host.json's `extensions.http.routePrefix` (default `api`); route templates
  match like ASP.NET's (`{name}`, `{name?}`, `{*name}`, `{name:int|guid|bool|alpha}`),
  case-insensitively, and the values arrive URL-decoded in `route_params`;
- a path no function serves, or a method the function does not list, is a 404 with an empty body
  (the real host answers 404, not 405: Azure/azure-functions-host#10098);
- `function` and `admin` routes need a key, as `x-functions-key` header or `code` query parameter
  (the header wins when both are given): a function key or the master key for `function`, the
  master key for `admin`; otherwise 401 with an empty body, and the function is not invoked;
- each request becomes a real `func.HttpRequest` (method, full URL, headers, query parameters,
  route parameters, body) and the `func.HttpResponse` goes back through azure-functions' own
  `HttpResponseConverter` (so the `Content-Type` is the worker's);
- a function that raises is a 500 with an empty body, like the host's; the exception is kept in
  `LocalHost.errors` so that a test can show it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
from azure.functions.decorators.http import HttpTrigger
from azure.functions.http import HttpResponseConverter

ROOT = Path(__file__).resolve().parents[2]
KEY_HEADER = "x-functions-key"
KEY_PARAMETER = "code"
MAX_BODY_BYTES = 100 * 1024 * 1024  # the host's default maxRequestBodySize (about 100 MB)
ALL_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"})
CONSTRAINTS = {
    "int": r"-?[0-9]+",
    "long": r"-?[0-9]+",
    "guid": r"\{?[0-9A-Fa-f]{8}(?:-?[0-9A-Fa-f]{4}){3}-?[0-9A-Fa-f]{12}\}?",
    "bool": r"(?i:true|false)",
    "alpha": r"[A-Za-z]+",
}

Handler = Callable[[func.HttpRequest], func.HttpResponse]


def load_function_app(path: Path = ROOT / "function_app.py", name: str = "") -> ModuleType:
    """A fresh copy of function_app.py (its own FunctionApp, its own `services` cache)."""
    spec = importlib.util.spec_from_file_location(name or f"function_app_host_{id(path)}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def route_prefix(host_json: Path = ROOT / "host.json") -> str:
    """host.json's `extensions.http.routePrefix` ("api" when not set)."""
    settings = json.loads(host_json.read_text(encoding="utf-8"))
    prefix = settings.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    return str(prefix).strip("/")


@dataclass(frozen=True)
class HttpFunction:
    """One registered HTTP function: what the host routes on."""

    name: str
    route: str
    methods: frozenset[str]
    auth_level: str  # anonymous | function | admin
    handler: Handler
    pattern: re.Pattern[str] = field(compare=False, repr=False)

    def match(self, path: str) -> dict[str, str] | None:
        """The route values when `path` (without the prefix, no leading slash) is this route."""
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        return {k: unquote(v) for k, v in found.groupdict().items() if v is not None}


def compile_route(route: str) -> re.Pattern[str]:
    """An ASP.NET-style route template as a regex over the still-encoded path."""
    pattern = ""
    for index, segment in enumerate(route.strip("/").split("/")):
        separator = "/" if index else ""
        token = re.fullmatch(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?(\?)?\}", segment)
        if token is None:
            if "{" in segment or "}" in segment:
                raise ValueError(f"route {route!r}: unsupported segment {segment!r}")
            pattern += separator + re.escape(segment)
            continue
        catch_all, name, constraint, optional = token.groups()
        if constraint and constraint not in CONSTRAINTS:
            raise ValueError(f"route {route!r}: unsupported constraint {constraint!r}")
        value = ".*" if catch_all else (CONSTRAINTS[constraint] if constraint else "[^/]+")
        group = f"(?P<{name}>{value})"
        pattern += f"(?:{separator}{group})?" if optional or catch_all else separator + group
    return re.compile(pattern, re.IGNORECASE)


def http_functions(app: func.FunctionApp) -> list[HttpFunction]:
    """The HTTP functions of `app`, as the host reads them from the app's function list."""
    out = []
    for function in app.get_functions():
        trigger = function.get_trigger()
        if not isinstance(trigger, HttpTrigger):
            continue
        name = str(function.get_function_name())
        route = trigger.route or name  # no route: the function's name, as in the host
        methods = frozenset(str(getattr(m, "value", m)).upper() for m in trigger.methods or [])
        level = str(getattr(trigger.auth_level, "value", trigger.auth_level) or "function")
        out.append(
            HttpFunction(
                name=name,
                route=route,
                methods=methods or ALL_METHODS,
                auth_level=level.lower(),
                handler=function.get_user_function(),
                pattern=compile_route(route),
            )
        )
    return out


class LocalHost:
    """The HTTP functions of an app on `http://127.0.0.1:<free port>/<routePrefix>`.

    `function_keys` open `function` routes; `master_key` opens every route. Counts every answer
    in `answers` ((method, route, status) -> n) and keeps the handlers' exceptions in `errors`."""

    def __init__(
        self,
        functions: Iterable[HttpFunction],
        *,
        function_keys: Iterable[str] = (),
        master_key: str | None = None,
        prefix: str | None = None,
    ) -> None:
        self.functions = list(functions)
        self.function_keys = frozenset(function_keys)
        self.master_key = master_key
        self.prefix = route_prefix() if prefix is None else prefix.strip("/")
        self.answers: Counter[tuple[str, str, int]] = Counter()
        self.errors: list[str] = []
        self.timings: list[tuple[float, str, str, int]] = []  # (seconds, method, target, status)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- life cycle ---------------------------------------------------------------------------

    def start(self) -> LocalHost:
        host = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def serve(self) -> None:
                started = time.monotonic()
                try:
                    content = self._body()
                except ValueError:  # a Content-Length or chunk size that is not a number
                    self.send_error(400)
                    return
                status, headers, body = host.serve(
                    self.command, self.path, self.headers.items(), content
                )
                with host._lock:
                    host.timings.append(
                        (time.monotonic() - started, self.command, self.path, status)
                    )
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _body(self) -> bytes | None:
                """The request body (None when over the host's limit)."""
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    size = 0
                    while True:
                        length = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if length == 0:
                            while self.rfile.readline().strip():  # trailers
                                pass
                            break
                        size += length
                        chunks.append(self.rfile.read(length))
                        self.rfile.readline()
                    return b"".join(chunks) if size <= MAX_BODY_BYTES else None
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self.close_connection = True
                    return None
                return self.rfile.read(length) if length > 0 else b""

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def __getattr__(self, name: str) -> Any:
                """`do_<METHOD>` for any method (QUERY, PROPFIND, ...): the host routes them all
                (and answers 404 when the function does not list the method)."""
                if name.startswith("do_"):
                    return self.serve
                raise AttributeError(name)

        server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="functions-local-host", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> LocalHost:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the host is not started"
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL of the functions: `http://127.0.0.1:PORT/api`."""
        return f"{self.origin}/{self.prefix}" if self.prefix else self.origin

    # ---- one request --------------------------------------------------------------------------

    def serve(
        self,
        method: str,
        target: str,
        raw_headers: Iterable[tuple[str, str]],
        body: bytes | None,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) for one request, as the host would answer it."""
        headers: dict[str, str] = {}
        for name, value in raw_headers:  # repeated headers: joined, as ASP.NET does
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        parts = urlsplit(target)
        path = parts.path.lstrip("/")
        if self.prefix:
            if path.lower() != self.prefix.lower() and not path.lower().startswith(
                self.prefix.lower() + "/"
            ):
                return self._count(method, "", 404)
            path = path[len(self.prefix) :].lstrip("/")
        function, values = self._route(path)
        if function is None or values is None:
            return self._count(method, "", 404)
        if method.upper() not in function.methods:
            return self._count(method, function.route, 404)
        query: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            query[name] = f"{query[name]},{value}" if name in query else value
        if not self._authorized(function, headers, query):
            return self._count(method, function.route, 401)
        if body is None:
            return self._count(method, function.route, 413)
        host_header = headers.get("host") or f"127.0.0.1:{self.port}"
        request = func.HttpRequest(
            method=method.upper(),
            url=f"http://{host_header}{target}",
            headers=headers,
            params=query,
            route_params=values,
            body=body,
        )
        try:
            response = function.handler(request)
            datum = HttpResponseConverter.encode(response, expected_type=None)
        except Exception:  # the host answers 500 for an unhandled exception
            with self._lock:
                self.errors.append(f"{method} {target}\n{traceback.format_exc()}")
            return self._count(method, function.route, 500)
        value = datum.value
        status = int(value["status_code"].value)
        out = [(name, str(v.value)) for name, v in value["headers"].items()]
        payload = value["body"].value or b""
        return self._count(method, function.route, status, out, payload)

    def _route(self, path: str) -> tuple[HttpFunction | None, dict[str, str] | None]:
        for function in self.functions:
            values = function.match(path)
            if values is not None:
                return function, values
        return None, None

    def _authorized(
        self, function: HttpFunction, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> bool:
        if function.auth_level == "anonymous":
            return True
        key = headers.get(KEY_HEADER)
        if key is None:
            key = query.get(KEY_PARAMETER)
        if not key:
            return False
        if self.master_key is not None and key == self.master_key:
            return True
        return function.auth_level == "function" and key in self.function_keys

    def _count(
        self,
        method: str,
        route: str,
        status: int,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        with self._lock:
            self.answers[(method.upper(), route, status)] += 1
        return status, headers or [], body

    def server_errors(self) -> int:
        """How many answers were 5xx."""
        return sum(n for (_, _, status), n in self.answers.items() if status >= 500)
