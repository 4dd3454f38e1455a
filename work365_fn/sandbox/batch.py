"""`$batch` bodies (OData 4.0 multipart/mixed) as Dataverse reads and writes them.

A batch is a list of parts, each one HTTP request (`Content-Type: application/http`,
`Content-Transfer-Encoding: binary`) or one change set (a nested `multipart/mixed` whose
requests are atomic and may carry `Content-ID`). Line breaks may be CRLF (the standard) or bare
LF (as many clients and Microsoft's own examples write them); answers always use CRLF.
"""

from __future__ import annotations

import http
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from .core import Headers, Response
from .odata import bad_request

MAX_OPERATIONS = 1000
_LINE_BREAK = re.compile(r"\r?\n")


@dataclass(frozen=True)
class Operation:
    """One request inside a batch: its request line, headers and body as sent."""

    method: str
    url: str
    headers: Headers
    body: bytes
    content_id: str | None = None


@dataclass(frozen=True)
class ChangeSet:
    operations: tuple[Operation, ...]


Part = Operation | ChangeSet


@dataclass(frozen=True)
class Answer:
    """The response to one operation, with the Content-ID of its request (if any)."""

    response: Response
    content_id: str | None = None


@dataclass(frozen=True)
class ChangeSetAnswer:
    answers: tuple[Answer, ...] = field(default=())


AnswerPart = Answer | ChangeSetAnswer


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
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value or None
    return None


def parse_batch(content_type: str | None, body: bytes) -> list[Part]:
    boundary = boundary_of(content_type)
    if boundary is None:
        raise bad_request(
            "The batch request must have a Content-Type header 'multipart/mixed' with a boundary."
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("The batch request body is not UTF-8 text.") from None
    parts: list[Part] = []
    for raw in _split(text, boundary, "batch"):
        headers, content = _headers_and_rest(raw, "batch part")
        inner = boundary_of(headers.get("Content-Type"))
        if inner is not None:
            operations = []
            for op_raw in _split(content, inner, "change set"):
                op_headers, op_content = _headers_and_rest(op_raw, "change set part")
                if boundary_of(op_headers.get("Content-Type")):
                    raise bad_request("Change sets cannot contain other change sets or batches.")
                operations.append(_operation(op_headers, op_content))
            if not operations:
                raise bad_request("A change set in the batch has no requests.")
            parts.append(ChangeSet(tuple(operations)))
        else:
            parts.append(_operation(headers, content))
    count = sum(len(p.operations) if isinstance(p, ChangeSet) else 1 for p in parts)
    if count > MAX_OPERATIONS:
        raise bad_request(
            f"The batch has {count} requests; the maximum number of requests in a batch is "
            f"{MAX_OPERATIONS}.",
            code="0x8005f103",
        )
    return parts


def _split(text: str, boundary: str, what: str) -> list[str]:
    """The bodies between `--boundary` delimiter lines, up to the `--boundary--` close."""
    lines = _LINE_BREAK.split(text)
    delimiter, close = f"--{boundary}", f"--{boundary}--"
    parts: list[str] = []
    current: list[str] | None = None
    for line in lines:
        stripped = line.rstrip(" \t")
        if stripped in (delimiter, close):
            if current is not None:
                parts.append("\r\n".join(current))
            if stripped == close:
                return parts
            current = []
        elif current is not None:
            current.append(line)
    raise bad_request(f"The {what} is not terminated by '{close}'.")


def _headers_and_rest(raw: str, what: str) -> tuple[Headers, str]:
    lines = raw.split("\r\n")
    headers: dict[str, str] = {}
    for i, line in enumerate(lines):
        if line == "":
            return Headers(headers), "\r\n".join(lines[i + 1 :])
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise bad_request(f"Malformed header line '{line}' in a {what}.")
        headers[name.strip()] = value.strip()
    return Headers(headers), ""


def _operation(headers: Headers, content: str) -> Operation:
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/http":
        raise bad_request(
            "Each request in a batch needs 'Content-Type: application/http' "
            f"(found '{headers.get('Content-Type') or ''}')."
        )
    encoding = headers.get("Content-Transfer-Encoding")
    if encoding is None or encoding.lower() != "binary":
        raise bad_request("Each request in a batch needs 'Content-Transfer-Encoding: binary'.")
    lines = content.split("\r\n")
    while lines and lines[0] == "":
        lines.pop(0)
    if not lines:
        raise bad_request("A batch part has no request line.")
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or not request_line[2].startswith("HTTP/"):
        raise bad_request(f"Malformed request line '{lines[0]}' in a batch part.")
    method, url, _ = request_line
    inner_headers, body = _headers_and_rest("\r\n".join(lines[1:]), "batch request")
    return Operation(
        method=method.upper(),
        url=url,
        headers=inner_headers,
        body=body.rstrip("\r\n").encode("utf-8"),
        content_id=headers.get("Content-ID") or inner_headers.get("Content-ID"),
    )


# ---------------------------------------------------------------- answers

_PART_HEADERS = (
    "Content-Type",
    "OData-Version",
    "Location",
    "OData-EntityId",
    "ETag",
    "Preference-Applied",
    "WWW-Authenticate",
    "Retry-After",
)


def render_batch(parts: Sequence[AnswerPart]) -> tuple[str, bytes]:
    """(Content-Type, body) of a batch response."""
    boundary = f"batchresponse_{uuid.uuid4()}"
    out: list[str] = []
    for part in parts:
        out.append(f"--{boundary}\r\n")
        if isinstance(part, ChangeSetAnswer):
            inner = f"changesetresponse_{uuid.uuid4()}"
            out.append(f"Content-Type: multipart/mixed; boundary={inner}\r\n\r\n")
            for answer in part.answers:
                out.append(f"--{inner}\r\n")
                out.append(_render_answer(answer))
            out.append(f"--{inner}--\r\n")
        else:
            out.append(_render_answer(part))
    out.append(f"--{boundary}--\r\n")
    return f"multipart/mixed; boundary={boundary}", "".join(out).encode("utf-8")


def _render_answer(answer: Answer) -> str:
    response = answer.response
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if answer.content_id is not None:
        lines.append(f"Content-ID: {answer.content_id}")
    lines.append("")
    phrase = http.HTTPStatus(response.status).phrase
    lines.append(f"HTTP/1.1 {response.status} {phrase}")
    for name in _PART_HEADERS:
        value = next((v for k, v in response.headers.items() if k.lower() == name.lower()), None)
        if value is not None:
            lines.append(f"{name}: {value}")
    lines.append("")
    body = response.body.decode("utf-8")
    return "\r\n".join(lines) + "\r\n" + body + "\r\n"
