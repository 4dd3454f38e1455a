"""Dataverse `$batch` bodies as the client writes and reads them (OData 4.0 multipart/mixed).

Every operation is its own part, outside any change set: Dataverse runs the parts in order and,
with `Prefer: odata.continue-on-error`, a failing part (a 412 from a stale `If-Match`) neither
stops nor rolls back the others. Answers come back in request order; outside change sets
Dataverse does not echo `Content-ID`, so results are matched to operations by position.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_OPERATIONS = 1000  # Dataverse refuses larger batches (0x8005f103)
_LINE = re.compile(r"\r?\n")
_STATUS_LINE = re.compile(r"^HTTP/\d\.\d (\d{3})(?: .*)?$")


class BatchFormatError(ValueError):
    """A `$batch` answer that is not the multipart/mixed document the API documents."""


@dataclass(frozen=True)
class BatchOperation:
    """One request inside a batch: method, absolute URL, its own headers and JSON body."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class BatchResult:
    """The answer to one operation. Header names are lower-case."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    @property
    def entity_id(self) -> str | None:
        return self.headers.get("odata-entityid")

    @property
    def retry_after(self) -> float | None:
        raw = self.headers.get("retry-after")
        try:
            return max(0.0, float(raw)) if raw else None
        except ValueError:
            return None

    def error(self) -> tuple[str, str]:
        """(code, message) of a failed operation: Dataverse's `{"error": {"code", "message"}}`,
        else the status."""
        try:
            payload = json.loads(self.body) if self.body.strip() else None
        except (ValueError, RecursionError):  # deep nesting too
            payload = None
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or self.status)
            return code, str(error.get("message") or "")[:500]
        return str(self.status), self.body.strip()[:200]


def encode_batch(operations: Sequence[BatchOperation], boundary: str) -> bytes:
    """The request body: one `application/http` part per operation, CRLF line breaks."""
    lines: list[str] = []
    for op in operations:
        lines += [
            f"--{boundary}",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            "",
            f"{op.method} {op.url} HTTP/1.1",
        ]
        if op.body is not None:
            lines.append("Content-Type: application/json; type=entry")
        lines += [f"{name}: {value}" for name, value in op.headers.items()]
        lines.append("")
        lines.append(json.dumps(op.body) if op.body is not None else "")
    lines.append(f"--{boundary}--")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def boundary_of(content_type: str | None) -> str | None:
    """The boundary parameter of a multipart/mixed Content-Type, or None."""
    if not content_type:
        return None
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "multipart/mixed":
        return None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip().strip('"')
            return value or None
    return None


def decode_batch(content_type: str | None, body: bytes) -> list[BatchResult]:
    """The answers of a batch response, in order (change set answers flattened in place)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BatchFormatError("the batch answer is not UTF-8 text") from None
    lines = _LINE.split(text)
    boundary = boundary_of(content_type) or _first_boundary(lines)
    if boundary is None:
        raise BatchFormatError("the batch answer has no multipart boundary")
    return _decode_parts(lines, boundary)


def _first_boundary(lines: Sequence[str]) -> str | None:
    for line in lines:
        if line.strip():
            return line.strip()[2:] if line.startswith("--") else None
    return None


def _decode_parts(lines: Sequence[str], boundary: str) -> list[BatchResult]:
    results: list[BatchResult] = []
    for part in _split(lines, boundary):
        headers, rest = _headers(part)
        inner = boundary_of(headers.get("content-type"))
        if inner is not None:
            results.extend(_decode_parts(rest, inner))
        else:
            results.append(_response(rest))
    return results


def _split(lines: Sequence[str], boundary: str) -> list[list[str]]:
    delimiter, close = f"--{boundary}", f"--{boundary}--"
    parts: list[list[str]] = []
    current: list[str] | None = None
    for line in lines:
        stripped = line.rstrip()
        if stripped in (delimiter, close):
            if current is not None:
                parts.append(current)
            if stripped == close:
                return parts
            current = []
        elif current is not None:
            current.append(line)
    raise BatchFormatError(f"the batch answer is not closed by '{close}'")


def _headers(lines: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    headers: dict[str, str] = {}
    for i, line in enumerate(lines):
        if line.strip() == "":
            return headers, list(lines[i + 1 :])
        name, sep, value = line.partition(":")
        if not sep:
            raise BatchFormatError(f"malformed header line in a batch answer: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers, []


def _response(lines: Sequence[str]) -> BatchResult:
    rest = list(lines)
    while rest and not rest[0].strip():
        rest.pop(0)
    match = _STATUS_LINE.match(rest[0].strip()) if rest else None
    if match is None:
        raise BatchFormatError("a part of the batch answer has no HTTP status line")
    headers, body = _headers(rest[1:])
    return BatchResult(int(match.group(1)), headers, "\n".join(body).strip())
