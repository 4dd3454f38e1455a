"""HTTP plumbing shared by both clients: the session factory, retries, rate limits, error mapping,
auth.

`Transport.send` is the one place a request leaves the process. It waits for its service's
`RateLimiter` (a client-side request limit and a pause shared by every worker of the service),
adds the bearer token, retries what is transient (tenacity, honouring Retry-After), refreshes the
token once on a 401, and turns failures into typed errors that carry status, service code and
request id, never the token.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from work365_fn.adapters.auth import TokenProvider
from work365_fn.errors import (
    ApiError,
    AuthError,
    ConflictError,
    ConnectionFailedError,
    InvalidResponseError,
    NotFoundError,
    ThrottledError,
)
from work365_fn.logs import count_request

log = logging.getLogger(__name__)

T = TypeVar("T")

ErrorParser = Callable[[requests.Response], tuple[str, str]]

MAX_RETRY_AFTER_SECONDS = 300.0


def build_session(pool_size: int = 16) -> requests.Session:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ThrottledError | ConnectionFailedError | InvalidResponseError):
        return True
    if isinstance(exc, AuthError):  # the authority was unreachable or busy, not a refusal
        return exc.transient
    return isinstance(exc, ApiError) and exc.status in (500, 502, 503, 504)


class RateLimiter:
    """The client side of one service's limits, shared by every thread that calls the service.

    - At most `max_requests` requests are sent in any `window_seconds` (a sliding window: each
      request reserves the earliest moment that keeps the window within the limit, so callers
      sleep once, in order). `max_requests=0` turns the limit off.
    - A shared pause: `throttled(seconds)` (a 429 or 503 with Retry-After) holds every worker of
      the service until the moment the server named, not only the worker that was told. That
      worker waits through its own retry, so the pause does not make it wait twice.

    The clock and sleep are injected (tests pass fakes; nothing here sleeps on its own).
    """

    MAX_PAUSE_ROUNDS = 20  # pauses set while a worker waits are honoured, a bounded number of times

    def __init__(
        self,
        service: str,
        max_requests: int,
        window_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.service = service
        self.max_requests = max_requests
        self.window_seconds = window_seconds
        self._clock = clock
        self._sleep = sleep or time.sleep
        self._lock = threading.Lock()
        # Send times (the last ones may be reserved in the future), ascending; only the newest
        # `max_requests` can decide when the next request may go.
        self._sent: deque[float] = deque(maxlen=max(1, max_requests))
        self._paused_until = float("-inf")
        self._generation = 0  # bumped by every pause that extends the previous one
        self._local = threading.local()
        self.requests = 0  # admitted so far (tests and benchmarks read it)
        self.pauses = 0
        self.waited_seconds = 0.0

    def throttled(self, seconds: float) -> None:
        """The server said: come back in `seconds`. Every worker of the service waits for it."""
        seconds = min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)
        with self._lock:
            until = self._clock() + seconds
            if until > self._paused_until:
                self._paused_until = until
                self._generation += 1
                self.pauses += 1
            # This worker waits through its retry's own wait (Retry-After, or the caller's when
            # it handles the error itself): excuse it once.
            self._local.excused = self._generation
        log.info(
            "%s asked us to wait %.1f s: every %s request waits until then",
            self.service,
            seconds,
            self.service,
        )

    def acquire(self) -> float:
        """Wait until a request may be sent (shared pause, then the request limit). Returns the
        seconds slept."""
        waited = self._wait_out_pause()
        if self.max_requests > 0:
            with self._lock:
                now = self._clock()
                sent = self._sent
                when = max(now, sent[-1]) if sent else now
                if len(sent) >= self.max_requests and sent[0] > when - self.window_seconds:
                    when = sent[0] + self.window_seconds
                sent.append(when)
            if when > now:
                log.debug(
                    "%s: waiting %.2f s to stay under %d requests per %g s",
                    self.service,
                    when - now,
                    self.max_requests,
                    self.window_seconds,
                )
                self._sleep(when - now)
                waited += when - now
        with self._lock:
            self.requests += 1
            self.waited_seconds += waited
        return waited

    def _wait_out_pause(self) -> float:
        waited = 0.0
        for _ in range(self.MAX_PAUSE_ROUNDS):
            with self._lock:
                generation = self._generation
                now = self._clock()
                remaining = self._paused_until - now
                if getattr(self._local, "excused", None) == generation:
                    # The worker that was told comes back from waiting the whole Retry-After
                    # (its retry's wait): the pause it set is over.
                    self._local.excused = None
                    self._paused_until = min(self._paused_until, now)
                    return waited
            if remaining <= 0:
                return waited
            log.info("%s: waiting %.1f s (the service asked us to pause)", self.service, remaining)
            self._sleep(remaining)
            waited += remaining
            with self._lock:
                if self._generation == generation:  # no newer pause was set while we slept
                    return waited
        return waited

    def __repr__(self) -> str:
        return f"RateLimiter({self.service!r}, {self.max_requests} per {self.window_seconds:g} s)"


class wait_for_server(wait_base):
    """Retry-After from a ThrottledError when present, else the fallback."""

    def __init__(self, fallback: wait_base) -> None:
        self._fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, ThrottledError) and exc.retry_after is not None:
            return min(exc.retry_after, MAX_RETRY_AFTER_SECONDS)
        return float(self._fallback(retry_state))


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    max_seconds: float = 120.0
    sleep: Callable[[float], None] | None = None  # injected in tests; None = time.sleep

    def retrying(self) -> Retrying:
        extra: dict[str, Any] = {} if self.sleep is None else {"sleep": self.sleep}
        return Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_for_server(wait_random_exponential(multiplier=0.5, max=30)),
            # stop_before_delay counts the coming wait: a Retry-After that would end past the
            # budget raises now instead of sleeping beyond it (and beyond the HTTP 230 s limit).
            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(self.max_seconds),
            reraise=True,
            before_sleep=_log_retry,
            **extra,
        )


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.warning(
        "retrying after %s (attempt %d, waiting %.1f s)",
        _short(exc),
        state.attempt_number,
        wait,
        extra=failure_fields(exc),
    )


def _short(exc: BaseException | None) -> str:
    if isinstance(exc, ApiError):
        where = f" request id {exc.request_id}" if exc.request_id else ""
        return f"{exc.service} {exc.status} {exc.code}{where}"
    if isinstance(exc, AuthError):
        return f"{exc.service} token {exc.code or 'unavailable'}"
    return type(exc).__name__


def failure_fields(exc: BaseException | None) -> dict[str, object]:
    """Structured fields of a failure for a log record's `extra` (service, status, error code,
    request id): Application Insights shows them as custom dimensions where the host forwards
    them."""
    if isinstance(exc, ApiError):
        return _with_dimensions(
            {
                "service": exc.service,
                "status": exc.status,
                "error_code": exc.code,
                "request_id": exc.request_id,
            }
        )
    if isinstance(exc, AuthError):  # 401 refused, 503 unreachable, 0 never sent (AuthError)
        return _with_dimensions(
            {"service": exc.service, "status": exc.status, "error_code": exc.code or "auth"}
        )
    return {}


def _with_dimensions(fields: dict[str, object]) -> dict[str, object]:
    """The same fields under the `work365.*` names infra/workbook.json queries
    (docs/operations.md#monitoring): work365.service, .httpStatus, .errorCode, .requestId."""
    names = {
        "service": "work365.service",
        "status": "work365.httpStatus",
        "error_code": "work365.errorCode",
        "request_id": "work365.requestId",
    }
    dims = {names[k]: v for k, v in fields.items() if v is not None}
    return {**fields, **dims}


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import UTC, datetime

    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class ServiceApi:
    """What a transport knows of the service it speaks to: its name (in errors and logs), how
    its error bodies read, and the response header that carries its request id."""

    name: str
    parse_error: ErrorParser
    request_id_header: str | None = None


@dataclass(frozen=True)
class HttpOptions:
    """Per-request options for `requests`: (connect, read) timeouts and TLS verification (True
    or a CA bundle path)."""

    timeout: tuple[float, float] = (10.0, 60.0)
    verify: str | bool = True


class Transport:
    """Sends requests for one service with auth, retries and typed errors."""

    def __init__(
        self,
        api: ServiceApi,
        session: requests.Session,
        tokens: TokenProvider,
        retry: RetryPolicy,
        *,
        http: HttpOptions = HttpOptions(),
        limiter: RateLimiter | None = None,
    ) -> None:
        self.service = api.name
        self._session = session
        self._tokens = tokens
        self._retry = retry
        self._parse_error = api.parse_error
        self._timeout = http.timeout
        self._verify = http.verify
        self._request_id_header = api.request_id_header
        self.limiter = limiter

    def with_retry(self, retry: RetryPolicy) -> Transport:
        """The same transport (session, tokens, rate limiter) with another retry policy: the
        Dataverse webhook's calls give up sooner, to answer within its 60 s (docs/events.md)."""
        clone = copy.copy(self)
        clone._retry = retry
        return clone

    def for_probe(self, timeout: tuple[float, float]) -> Transport:
        """The same session and tokens for a health probe (`GET /api/health?deep=true`): one
        attempt, a short (connect, read) timeout, and no rate limiter, so nothing waits out a
        pause: a 429 (or a 503 with Retry-After) comes back at once as ThrottledError, for the
        probe to report. The sync's own calls keep their retries and limiter."""
        clone = copy.copy(self)
        clone._retry = RetryPolicy(1, sum(timeout), self._retry.sleep)
        clone._timeout = timeout
        clone.limiter = None
        return clone

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> requests.Response:
        """One logical call: retried as a whole with the same headers (so the same request id).
        A 2xx answer that says it is JSON must parse, or it is retried like a cut-off body."""
        fixed = dict(headers or {})

        def call() -> requests.Response:
            response = self._send_authorized(method, url, fixed, body, ok)
            if response.content and "json" in response.headers.get("Content-Type", ""):
                self.json(response)
            return response

        return self._retrying(call)

    def _retrying(self, call: Callable[[], T]) -> T:
        return self._retry.retrying()(call)

    def _send_authorized(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        ok: tuple[int, ...],
    ) -> requests.Response:
        response = self._send_once(method, url, headers, body)
        if response.status_code == 401:
            # The cached token may have expired or been revoked: drop it and try once more.
            log.info("%s answered 401; acquiring a new token and retrying once", self.service)
            self._tokens.invalidate()
            response = self._send_once(method, url, headers, body)
        if response.status_code in ok:
            return response
        raise self._error(response)

    def _send_once(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> requests.Response:
        if self.limiter is not None:
            self.limiter.acquire()  # before the token: a long wait must not age it
        all_headers = dict(headers)
        all_headers["Authorization"] = f"Bearer {self._tokens.token()}"
        count_request(self.service)  # the run's requests per service (log dimensions)
        try:
            response = self._session.request(
                method,
                url,
                headers=all_headers,
                data=body,
                timeout=self._timeout,
                verify=self._verify,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise ConnectionFailedError(
                self.service, 0, "timeout", f"{method} {_path(url)} timed out"
            ) from None
        except requests.ConnectionError as exc:
            raise ConnectionFailedError(
                self.service,
                0,
                "connection",
                f"{method} {_path(url)} failed: {_connection_reason(exc)}",
            ) from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError):
            # The connection broke while the body was read: as transient as a reset.
            raise ConnectionFailedError(
                self.service, 0, "connection", f"{method} {_path(url)} failed: body cut off"
            ) from None
        status = response.status_code
        if self.limiter is not None and (
            status == 429 or (status == 503 and "Retry-After" in response.headers)
        ):
            seconds = parse_retry_after(response.headers.get("Retry-After"))
            if seconds is not None:
                self.limiter.throttled(seconds)
        return response

    def _error(self, response: requests.Response) -> ApiError:
        code, message = self._parse_error(response)
        # A service (or a proxy in front of it) may echo the Authorization header back.
        code, message = _redact(code, response), _redact(message, response)
        status = response.status_code
        request_id = (
            response.headers.get(self._request_id_header) if self._request_id_header else None
        ) or response.request.headers.get(self._request_id_header or "", None)
        request_id = str(request_id) if request_id else None
        what = f"{response.request.method} {_path(response.url)}: {message}"
        if status == 429 or (status == 503 and "Retry-After" in response.headers):
            return ThrottledError(
                self.service,
                status,
                code,
                what,
                request_id,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status == 412:
            return ConflictError(self.service, status, code, what, request_id)
        if status == 404:
            return NotFoundError(self.service, status, code, what, request_id)
        return ApiError(self.service, status, code, what, request_id)

    def json(self, response: requests.Response) -> Any:
        """The body as JSON; a truncated or non-JSON 2xx body is an InvalidResponseError."""
        try:
            return response.json()
        except (ValueError, RecursionError):  # not JSON, or nested too deep to read
            raise InvalidResponseError(
                self.service,
                response.status_code,
                "invalid-json",
                f"{response.request.method} {_path(response.url)} returned a body that is not JSON",
            ) from None

    def send_json(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Any:
        """send + json, retried together so a truncated body is fetched again."""
        fixed = dict(headers or {})

        def call() -> Any:
            return self.json(self._send_authorized(method, url, fixed, body, (200, 201)))

        return self._retrying(call)


def _redact(text: str, response: requests.Response) -> str:
    sent = str(response.request.headers.get("Authorization") or "")
    token = sent.split(" ", 1)[1] if " " in sent else sent
    # Real tokens are long JWTs; a few characters could only mangle the text.
    return text.replace(token, "<redacted>") if len(token) >= 8 else text


def _path(url: str) -> str:
    """The URL without scheme/host, trimmed: enough to say which call failed."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    text = parts.path + (f"?{parts.query}" if parts.query else "")
    return text if len(text) <= 200 else text[:197] + "..."


def _connection_reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS certificate not trusted (set WORK365_CA_BUNDLE for a private CA)"
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "NameResolutionError" in text:
        return "host name not found"
    return type(exc).__name__
