"""Dataverse `$batch` bodies as the client writes and reads them (OData 4.0 multipart/mixed).

A part is one operation, or one change set of operations that succeed or fail together (a write
and the note that records it). Dataverse runs the parts in order and, with
`Prefer: odata.continue-on-error`, a failing part (a 412 from a stale `If-Match`) neither stops
nor rolls back the others. Answers come back in request order, one per part: outside change
sets Dataverse does not echo `Content-ID`, so results are matched to parts by position. A change
set that succeeded answers one response per operation (in a nested multipart); one that failed
is rolled back whole and answers the failure alone.
https://learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api#change-sets
"""

from __future__ import annotations

import json
import re
import uuid
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
class ChangeSet:
    """Operations that succeed or fail together, in order (at least one)."""

    operations: tuple[BatchOperation, ...]


BatchPart = BatchOperation | ChangeSet


@dataclass(frozen=True)
class BatchResult:
    """The answer to one part. Header names are lower-case. For a change set: the answer of its
    first operation when all succeeded (`parts` holds every operation's), else the failure that
    rolled it back (`content_id` names the operation that failed, when Dataverse says)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    content_id: str | None = None
    parts: tuple[BatchResult, ...] = ()

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


def operation_count(parts: Sequence[BatchPart]) -> int:
    """Operations in a batch, counting each operation of a change set (Dataverse's limit)."""
    return sum(len(p.operations) if isinstance(p, ChangeSet) else 1 for p in parts)


def encode_batch(
    parts: Sequence[BatchPart], boundary: str, changeset_boundary: str | None = None
) -> bytes:
    """The request body: one `application/http` part per operation, a nested multipart/mixed
    per change set (its operations numbered with `Content-ID`, unique in the batch), CRLF line
    breaks. `changeset_boundary` (tests) names the first change set's boundary."""
    lines: list[str] = []
    content_id = 0
    for part in parts:
        lines.append(f"--{boundary}")
        if isinstance(part, BatchOperation):
            lines += _operation_lines(part, None)
            continue
        inner = changeset_boundary or f"changeset_{uuid.uuid4()}"
        changeset_boundary = None
        lines += [f"Content-Type: multipart/mixed; boundary={inner}", ""]
        for op in part.operations:
            content_id += 1
            lines.append(f"--{inner}")
            lines += _operation_lines(op, str(content_id))
        lines.append(f"--{inner}--")
    lines.append(f"--{boundary}--")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _operation_lines(op: BatchOperation, content_id: str | None) -> list[str]:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"{op.method} {op.url} HTTP/1.1"]
    if op.body is not None:
        lines.append("Content-Type: application/json; type=entry")
    lines += [f"{name}: {value}" for name, value in op.headers.items()]
    lines.append("")
    lines.append(json.dumps(op.body) if op.body is not None else "")
    return lines


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
    out: list[BatchResult] = []
    for result in decode_batch_parts(content_type, body):
        out.extend(result.parts or (result,))
    return out


def decode_batch_parts(content_type: str | None, body: bytes) -> list[BatchResult]:
    """One answer per part of a batch response, in order: a change set's answers grouped in
    one result (see `BatchResult`)."""
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


def _decode_parts(
    lines: Sequence[str], boundary: str, *, nested: bool = False
) -> list[BatchResult]:
    results: list[BatchResult] = []
    for part in _split(lines, boundary):
        headers, rest = _headers(part)
        inner = boundary_of(headers.get("content-type"))
        if inner is None:
            results.append(_response(rest, headers.get("content-id")))
        elif nested:
            raise BatchFormatError("a change set answer inside a change set answer")
        else:
            answers = tuple(_decode_parts(rest, inner, nested=True))
            if not answers:
                raise BatchFormatError("an empty change set answer")
            failed = [a for a in answers if not a.ok]
            first = failed[0] if failed else answers[0]
            results.append(
                BatchResult(first.status, first.headers, first.body, first.content_id, answers)
            )
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


def _response(lines: Sequence[str], content_id: str | None = None) -> BatchResult:
    rest = list(lines)
    while rest and not rest[0].strip():
        rest.pop(0)
    match = _STATUS_LINE.match(rest[0].strip()) if rest else None
    if match is None:
        raise BatchFormatError("a part of the batch answer has no HTTP status line")
    headers, body = _headers(rest[1:])
    return BatchResult(int(match.group(1)), headers, "\n".join(body).strip(), content_id)
