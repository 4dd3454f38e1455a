"""Fault injection and service-protection limits for the sandbox server.

A fault rule (from a scenario's `faults` list, or `sandbox.faults.add({...})` in a test):

    {"service": "dataverse" | "partnerCenter" | "token",   # optional: any service
     "method": "PATCH",                                     # optional: any method
     "path": "work365_subscriptions\\(",                    # optional regex: path, or path?query
     "kind": "429" | "503" | "500" | "slow" | "drop" | "malformed-json" | "401" | "race",
     "retryAfter": 1,          # 429 (default 1) and 503 (default none): Retry-After seconds
     "code": "0x80072321",     # 429 on Dataverse: the service-protection code (default
                               # 0x80072322, number of requests)
     "delayMs": 200,           # slow: delay before the normal answer (default 200)
     "set": {"column": value}, # race: changes applied to the row before the request is handled
     "times": 1,               # apply to the first N matching requests (default 1), or
     "every": 3,               # apply to every Nth matching request (never with times)
     "batchPart": true,        # match the operations inside a Dataverse $batch, not requests:
                               # kinds 429, 503, 500, 401 answer that operation alone (a change
                               # set is then rolled back whole)
     "description": "why"}     # optional note

Rules are checked in order; every matching rule counts the request, the first that fires applies.
`race` applies only to Dataverse: `DataverseEmulator.race(request, set)` changes the row (and its
ETag) first, so the normal handler then answers 412 to a stale If-Match.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from .core import Request, Response, ScenarioError

SERVICES = ("dataverse", "partnerCenter", "token")
KINDS = ("429", "503", "500", "slow", "drop", "malformed-json", "401", "race")
_FIELDS = {
    "service", "method", "path", "kind", "retryAfter", "delayMs", "set", "times", "every",
    "description", "code", "batchPart",
}  # fmt: skip
# Not race: inside a change set, the race's own change would be rolled back with it.
_PART_KINDS = ("429", "503", "500", "401")
_METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class FaultRule:
    kind: str
    service: str | None = None
    method: str | None = None
    path: re.Pattern[str] | None = None
    retry_after: float | None = None
    code: str | None = None  # 429: the service's error code
    delay_ms: int = 200
    changes: Mapping[str, object] = field(default_factory=dict)
    times: int | None = 1
    every: int | None = None
    description: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    batch_part: bool = False  # matches operations inside a $batch instead of requests

    def matches(self, service: str, request: Request, *, part: bool = False) -> bool:
        if self.batch_part != part:
            return False
        if self.service is not None and self.service != service:
            return False
        if self.kind == "race" and service != "dataverse":
            return False
        if self.method is not None and self.method != request.method.upper():
            return False
        if self.path is not None:
            # Searched in the path alone (so "/v1/customers$" matches "?size=500" calls too),
            # then in path?query with the query percent-decoded (for "\$filter=..." rules).
            full = f"{request.path}?{unquote(request.raw_query)}" if request.raw_query else ""
            if not self.path.search(request.path) and not (full and self.path.search(full)):
                return False
        return True


def parse_rule(  # noqa: PLR0912, PLR0915 - one check per rule field, each naming the field
    raw: object, where: str = "faults[0]", origin: str = "fault rule"
) -> FaultRule:
    """Validate one rule; ScenarioError names the bad field, e.g. "'faults[2].kind' must be ..."."""

    def fail(key: str, why: str) -> ScenarioError:
        name = f"{where}.{key}" if key else where
        return ScenarioError(f"{origin}: '{name}' {why}")

    if not isinstance(raw, Mapping):
        raise fail("", "must be an object")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise fail(unknown[0], f"is not a known field ({', '.join(sorted(_FIELDS))})")

    kind = raw.get("kind")
    if isinstance(kind, int) and not isinstance(kind, bool):
        kind = str(kind)
    if kind not in KINDS:
        raise fail("kind", f"must be one of {', '.join(KINDS)}")

    service = raw.get("service")
    if service is not None and service not in SERVICES:
        raise fail("service", f"must be one of {', '.join(SERVICES)}")
    if kind == "race" and service not in (None, "dataverse"):
        raise fail("service", "must be dataverse for a race (only Dataverse rows have ETags)")

    method = raw.get("method")
    if method is not None:
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise fail("method", f"must be one of {', '.join(_METHODS)}")
        method = method.upper()

    path = raw.get("path")
    pattern = None
    if path is not None:
        if not isinstance(path, str) or not path:
            raise fail("path", "must be a non-empty regular expression")
        try:
            pattern = re.compile(path)
        except re.error as exc:
            raise fail("path", f"is not a valid regular expression ({exc})") from None

    retry_after = raw.get("retryAfter")
    if retry_after is not None:
        if kind not in ("429", "503"):
            raise fail("retryAfter", "only applies to kinds 429 and 503")
        if not _is_number(retry_after) or retry_after < 0:
            raise fail("retryAfter", "must be a number of seconds >= 0")
        retry_after = float(retry_after)
    elif kind == "429":
        retry_after = 1.0

    code = raw.get("code")
    if code is not None:
        if kind != "429":
            raise fail("code", "only applies to kind 429")
        if not isinstance(code, str) or not code:
            raise fail("code", "must be a service error code like 0x80072321")

    delay = raw.get("delayMs")
    if delay is not None:
        if kind != "slow":
            raise fail("delayMs", "only applies to kind slow")
        if not _is_int(delay) or delay < 0:
            raise fail("delayMs", "must be an integer number of milliseconds >= 0")

    changes = raw.get("set")
    if kind == "race":
        if not isinstance(changes, Mapping) or not changes:
            raise fail("set", "must be an object of column values for a race")
    elif changes is not None:
        raise fail("set", "only applies to kind race")

    times = raw.get("times")
    every = raw.get("every")
    if times is not None and every is not None:
        raise fail("every", "cannot be combined with times")
    if times is not None and (not _is_int(times) or times < 1):
        raise fail("times", "must be an integer >= 1")
    if every is not None and (not _is_int(every) or every < 1):
        raise fail("every", "must be an integer >= 1")
    if times is None and every is None:
        times = 1

    description = raw.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "must be a string")

    batch_part = raw.get("batchPart", False)
    if not isinstance(batch_part, bool):
        raise fail("batchPart", "must be true or false")
    if batch_part and (kind not in _PART_KINDS or service not in (None, "dataverse")):
        raise fail("batchPart", f"applies to Dataverse kinds {', '.join(_PART_KINDS)} only")

    return FaultRule(
        kind=str(kind),
        service=service,
        method=method,
        path=pattern,
        retry_after=retry_after,
        code=code,
        delay_ms=int(delay) if delay is not None else 200,
        changes=dict(changes) if isinstance(changes, Mapping) else {},
        times=times,
        every=every,
        description=description,
        raw=dict(raw),
        batch_part=batch_part,
    )


def parse_rules(raw: Iterable[object], origin: str = "fault rules") -> list[FaultRule]:
    return [parse_rule(r, f"faults[{i}]", origin) for i, r in enumerate(raw)]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class _Armed:
    rule: FaultRule
    seen: int = 0
    fired: int = 0

    def fire(self) -> bool:
        self.seen += 1
        if self.rule.every is not None:
            hit = self.seen % self.rule.every == 0
        else:
            hit = self.fired < (self.rule.times or 1)
        if hit:
            self.fired += 1
        return hit


class FaultSet:
    """The sandbox's active rules; thread-safe. Tests add and clear rules between requests."""

    def __init__(self, rules: Iterable[FaultRule] = ()) -> None:
        self._lock = threading.Lock()
        self._rules = [_Armed(r) for r in rules]

    def add(self, raw: Mapping[str, Any]) -> FaultRule:
        with self._lock:
            rule = parse_rule(raw, f"faults[{len(self._rules)}]")
            self._rules.append(_Armed(rule))
        return rule

    def extend(self, rules: Iterable[FaultRule]) -> None:
        with self._lock:
            self._rules.extend(_Armed(r) for r in rules)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [a.rule for a in self._rules]

    def fired(self) -> list[int]:
        """How many times each rule has applied, in rule order."""
        with self._lock:
            return [a.fired for a in self._rules]

    def match(self, service: str, request: Request, *, part: bool = False) -> FaultRule | None:
        """The rule that applies to a request (`part`: an operation inside a $batch)."""
        chosen = None
        with self._lock:
            for armed in self._rules:
                if not armed.rule.matches(service, request, part=part):
                    continue
                if chosen is None:
                    if armed.fire():
                        chosen = armed.rule
                else:
                    armed.seen += 1  # counted, but only one fault applies per request
        return chosen


# --- service-shaped error bodies ---------------------------------------------------------------


def _retry_header(seconds: float | None) -> dict[str, str]:
    return {} if seconds is None else {"Retry-After": str(math.ceil(seconds))}


def dataverse_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    return Response.json(status, {"error": {"code": code, "message": message}}, headers)


def partner_center_error(
    status: int, code: int, description: str, headers: Mapping[str, str] | None = None
) -> Response:
    body = {"code": code, "description": description, "data": [], "source": "PartnerFD"}
    return Response.json(status, body, headers)


def token_service_error(
    status: int, error: str, code: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {message}",
        "error_codes": [code],
    }
    return Response.json(status, body, headers)


DV_REQUESTS = "0x80072322"
DV_EXECUTION_TIME = "0x80072321"
DV_CONCURRENCY = "0x80072326"
DV_UNEXPECTED = "0x80040216"
DV_UNAUTHORIZED = "0x80072560"
# The messages Dataverse sends with each service-protection code (the limits' defaults).
_DV_MESSAGES = {
    DV_EXECUTION_TIME: "Combined execution time of incoming requests exceeded limit of "
    "1,200,000 milliseconds over time window of 300 seconds. Decrease number of concurrent "
    "requests or reduce the duration of requests and try again later.",
    DV_CONCURRENCY: "Number of concurrent requests exceeded the limit of 52.",
}


def throttled(
    service: str, retry_after: float | None, code: str = DV_REQUESTS, message: str | None = None
) -> Response:
    headers = _retry_header(retry_after)
    if service == "dataverse":
        text = message or (
            "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
        )
        return dataverse_error(429, code, text, headers)
    seconds = math.ceil(retry_after or 1)
    if service == "partnerCenter":
        # Not the `{code, description}` shape of its other errors: Partner Center documents its
        # 429 as `{"statusCode": 429, "message": "Rate limit is exceeded. Try again in N
        # seconds."}` with Retry-After:
        # https://learn.microsoft.com/partner-center/developer/api-throttling-guidance
        text = message or f"Rate limit is exceeded. Try again in {seconds} seconds."
        return Response.json(429, {"statusCode": 429, "message": text}, headers)
    return token_service_error(
        429,
        "temporarily_unavailable",
        90055,
        message or "The tenant is being throttled: too many requests. Try again later.",
        headers,
    )


def service_error(
    service: str, status: int, message: str | None = None, retry_after: float | None = None
) -> Response:
    """A 5xx shaped like the service's own errors."""
    headers = _retry_header(retry_after)
    if service == "dataverse":
        text = message or (
            "Service Unavailable" if status == 503 else "An unexpected error occurred."
        )
        return dataverse_error(status, DV_UNEXPECTED, text, headers)
    if service == "partnerCenter":
        if status == 503:
            return partner_center_error(503, 503, message or "Service unavailable.", headers)
        return partner_center_error(status, 800003, message or "Unexpected service error.", headers)
    error = "temporarily_unavailable" if status == 503 else "server_error"
    return token_service_error(
        status,
        error,
        50196 if status == 503 else 90033,
        message or "The service is temporarily unavailable. Try again later.",
        headers,
    )


def expired_token(service: str) -> Response:
    """A 401 as the service answers a token that expired."""
    if service == "dataverse":  # as dataverse.DataverseEmulator refuses an expired token
        return dataverse_error(
            401,
            DV_UNAUTHORIZED,
            "Bearer token rejected: token expired.",
            {
                "WWW-Authenticate": 'Bearer error="invalid_token", authorization_uri='
                "https://login.microsoftonline.com/common/oauth2/authorize"
            },
        )
    if service == "partnerCenter":
        return partner_center_error(
            401,
            400,
            "Access denied: token expired.",
            {"WWW-Authenticate": "OAuth realm=urn:cpsvc:cpid:sandbox"},
        )
    return token_service_error(401, "invalid_client", 7000215, "Invalid client secret provided.")


def respond(rule: FaultRule, service: str) -> Response:
    """The answer of a status fault (429, 503, 500, 401)."""
    if rule.kind == "429":
        if rule.code is not None and service == "dataverse":
            return throttled(service, rule.retry_after, rule.code, _DV_MESSAGES.get(rule.code))
        return throttled(service, rule.retry_after)
    if rule.kind == "401":
        return expired_token(service)
    return service_error(service, int(rule.kind), retry_after=rule.retry_after)


def truncate(response: Response) -> Response:
    """A 200 whose JSON body was cut in the middle (malformed-json)."""
    body = response.body if response.status == 200 and len(response.body) > 8 else b""
    if not body:
        body = json.dumps({"value": [{"id": "truncated", "name": "cut here"}]}).encode()
    headers = {"Content-Type": "application/json; charset=utf-8"}
    return Response(200, body[: max(1, len(body) // 2)], headers)


# --- service protection limits -----------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Dataverse service protection (DESIGN.md section 3) per user, sliding window; plus a simple
    request limit for Partner Center. Tests pass small numbers."""

    dataverse_requests: int = 6000
    dataverse_execution_seconds: float = 1200.0
    dataverse_concurrent: int = 52
    dataverse_window_seconds: float = 300.0
    partner_center_requests: int = 500
    partner_center_window_seconds: float = 60.0


@dataclass
class Slot:
    service: str
    started: float


DEFAULT_LIMITS = Limits()


class Limiter:
    """Admits or throttles requests. Requests answered 429 are not counted against the window."""

    def __init__(
        self, limits: Limits = DEFAULT_LIMITS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._requests: dict[str, deque[float]] = {"dataverse": deque(), "partnerCenter": deque()}
        self._execution: deque[tuple[float, float]] = deque()  # (finished at, seconds)
        self._in_flight = 0

    def acquire(self, service: str) -> Slot | Response:
        if service not in self._requests:
            return Slot(service, self._clock())
        with self._lock:
            now = self._clock()
            if service == "dataverse":
                refused = self._check_dataverse(now)
            else:
                refused = self._check_window(
                    service,
                    now,
                    self.limits.partner_center_requests,
                    self.limits.partner_center_window_seconds,
                )
            if refused is not None:
                return refused
            self._requests[service].append(now)
            if service == "dataverse":
                self._in_flight += 1
            return Slot(service, now)

    def release(self, slot: Slot) -> None:
        if slot.service != "dataverse":
            return
        with self._lock:
            now = self._clock()
            self._in_flight -= 1
            self._execution.append((now, max(0.0, now - slot.started)))

    def _check_window(self, service: str, now: float, limit: int, window: float) -> Response | None:
        times = self._requests[service]
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) >= limit:
            wait = times[0] + window - now
            if service == "dataverse":
                return throttled(
                    service,
                    wait,
                    DV_REQUESTS,
                    f"Number of requests exceeded the limit of {limit} over time window of "
                    f"{window:g} seconds.",
                )
            return throttled(service, wait)
        return None

    def _check_dataverse(self, now: float) -> Response | None:
        limits = self.limits
        window = limits.dataverse_window_seconds
        if self._in_flight >= limits.dataverse_concurrent:
            return throttled(
                "dataverse",
                1,
                DV_CONCURRENCY,
                "Number of concurrent requests exceeded the limit of "
                f"{limits.dataverse_concurrent}.",
            )
        refused = self._check_window("dataverse", now, limits.dataverse_requests, window)
        if refused is not None:
            return refused
        while self._execution and self._execution[0][0] <= now - window:
            self._execution.popleft()
        used = sum(seconds for _, seconds in self._execution)
        if used >= limits.dataverse_execution_seconds:
            wait = self._execution[0][0] + window - now
            return throttled(
                "dataverse",
                wait,
                DV_EXECUTION_TIME,
                f"Combined execution time of incoming requests exceeded limit of "
                f"{int(limits.dataverse_execution_seconds * 1000):,} milliseconds over time "
                f"window of {window:g} seconds. Decrease number of concurrent requests or reduce "
                "the duration of requests and try again later.",
            )
        return None
