"""HTTP plumbing shared by both clients: the session factory, retries, error mapping, auth.

`Transport.send` is the one place a request leaves the process. It adds the bearer token,
retries what is transient (tenacity, honouring Retry-After), refreshes the token once on a 401,
and turns failures into typed errors that carry status, service code and request id, never the
token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

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

from .auth import TokenProvider
from .errors import (
    ApiError,
    ConflictError,
    ConnectionFailedError,
    InvalidResponseError,
    NotFoundError,
    ThrottledError,
)

log = logging.getLogger(__name__)

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
    return isinstance(exc, ApiError) and exc.status in (500, 502, 503, 504)


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
    )


def _short(exc: BaseException | None) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.service} {exc.status} {exc.code}"
    return type(exc).__name__


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


class Transport:
    """Sends requests for one service with auth, retries and typed errors."""

    def __init__(
        self,
        service: str,
        session: requests.Session,
        tokens: TokenProvider,
        retry: RetryPolicy,
        error_parser: ErrorParser,
        *,
        timeout: tuple[float, float] = (10.0, 60.0),
        verify: str | bool = True,
        request_id_header: str | None = None,
    ) -> None:
        self.service = service
        self._session = session
        self._tokens = tokens
        self._retry = retry
        self._parse_error = error_parser
        self._timeout = timeout
        self._verify = verify
        self._request_id_header = request_id_header

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> requests.Response:
        """One logical call: retried as a whole with the same headers (so the same request id)."""
        fixed = dict(headers or {})
        return self._retry.retrying()(self._send_authorized, method, url, fixed, body, ok)

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
        all_headers = dict(headers)
        all_headers["Authorization"] = f"Bearer {self._tokens.token()}"
        try:
            return self._session.request(
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
        except (ValueError, json.JSONDecodeError):
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

        return self._retry.retrying()(call)


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
