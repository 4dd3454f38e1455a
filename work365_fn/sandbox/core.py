"""Shared plumbing of the sandbox emulators: request/response values, the emulator protocol,
bearer tokens, and the scenario (seed data) model.

Each emulator (token, Partner Center, Dataverse) is a plain object with `handle(Request) ->
Response`; the server module serves it over loopback HTTPS, applies faults and latency, and
counts requests. Emulators never touch sockets, so they can be unit-tested directly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs

from work365_fn.errors import ConfigError


class ScenarioError(ConfigError):
    """A scenario file is unreadable or has a bad field (the message names it)."""


class Headers:
    """Case-insensitive, single-valued request headers."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items = {k.lower(): v for k, v in (items or {}).items()}

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._items.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def items(self) -> list[tuple[str, str]]:
        return list(self._items.items())


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # percent-decoded path, no query string
    raw_query: str  # as sent, still percent-encoded
    headers: Headers
    body: bytes = b""

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.raw_query, keep_blank_values=True)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls, status: int, payload: object, headers: Mapping[str, str] | None = None
    ) -> Response:
        out = {"Content-Type": "application/json; charset=utf-8"}
        out.update(headers or {})
        return cls(status, json.dumps(payload).encode("utf-8"), out)

    @classmethod
    def empty(cls, status: int, headers: Mapping[str, str] | None = None) -> Response:
        return cls(status, b"", dict(headers or {}))


class Emulator(Protocol):
    service: str  # "token" | "partnerCenter" | "dataverse"

    def handle(self, request: Request) -> Response: ...

    def kind(self, request: Request) -> str:
        """A label for request counts, e.g. 'GET customers', 'PATCH work365_subscriptions'."""
        ...


class TokenIssuer:
    """Signs and checks the sandbox's bearer tokens (HMAC, not JWT: the clients treat tokens as
    opaque). A token names its audience (the resource URL, no '/.default') and expiry."""

    def __init__(
        self,
        secret: bytes,
        lifetime_seconds: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock

    def issue(self, audience: str, client_id: str) -> tuple[str, int]:
        expires = int(self._clock()) + self.lifetime_seconds
        body = json.dumps({"aud": audience, "appid": client_id, "exp": expires}).encode()
        payload = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}", self.lifetime_seconds

    def check(self, authorization: str | None, audience: str) -> str | None:
        """None when the header carries a valid token for `audience`, else why it is refused."""
        if not authorization or not authorization.startswith("Bearer "):
            return "missing bearer token"
        token = authorization[len("Bearer ") :]
        payload, _, signature = token.partition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return "invalid token signature"
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return "malformed token"
        if claims.get("aud", "").rstrip("/") != audience.rstrip("/"):
            return "token audience does not match this resource"
        if int(claims.get("exp", 0)) <= int(self._clock()):
            return "token expired"
        return None

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
