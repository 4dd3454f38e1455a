"""A small reader of `$batch` bodies (multipart/mixed of application/http parts), written for the
conformance tests from the batch page and RFC 2046, apart from the client's and the emulator's
own parsers so that neither grades itself. Keeps change sets nested."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


@dataclass
class Part:
    """One part: its MIME headers, then either nested parts (a change set) or one HTTP
    message (`start` is its request or status line)."""

    mime: dict[str, str]
    parts: list[Part] = field(default_factory=list)
    start: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""

    @property
    def status(self) -> int:
        match = re.match(r"HTTP/1\.1 (\d{3})\b", self.start)
        assert match, f"not a status line: {self.start!r}"
        return int(match.group(1))

    def json(self) -> Any:
        return json.loads(self.body)


def boundary(content_type: str | None) -> str:
    match = _BOUNDARY.search(content_type or "")
    assert content_type and content_type.lower().startswith("multipart/mixed") and match, (
        f"not a multipart/mixed Content-Type with a boundary: {content_type!r}"
    )
    return match.group(1)


def parse(content_type: str | None, body: bytes | str) -> list[Part]:
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return _parts(text.replace("\r\n", "\n"), boundary(content_type))


def _parts(text: str, mark: str) -> list[Part]:
    lines = text.split("\n")
    chunks: list[list[str]] = []
    closed = False
    for line in lines:
        stripped = line.rstrip()
        if stripped == f"--{mark}--":
            closed = True
            break
        if stripped == f"--{mark}":
            chunks.append([])
        elif chunks:
            chunks[-1].append(line)
    assert closed, f"no closing delimiter --{mark}--"
    return [_part(chunk) for chunk in chunks]


def _headers(lines: list[str]) -> tuple[dict[str, str], list[str]]:
    headers: dict[str, str] = {}
    for i, line in enumerate(lines):
        if not line.strip():
            return headers, lines[i + 1 :]
        name, sep, value = line.partition(":")
        assert sep, f"not a header line: {line!r}"
        headers[name.strip().lower()] = value.strip()
    return headers, []


def _part(lines: list[str]) -> Part:
    mime, rest = _headers(lines)
    content_type = mime.get("content-type", "")
    if content_type.lower().startswith("multipart/mixed"):
        return Part(mime, parts=_parts("\n".join(rest), boundary(content_type)))
    while rest and not rest[0].strip():
        rest = rest[1:]
    assert rest, "an application/http part without a request or status line"
    headers, body = _headers(rest[1:])
    return Part(mime, start=rest[0].strip(), headers=headers, body="\n".join(body).strip())
