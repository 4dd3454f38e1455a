"""Reading Dataverse Web API requests: resource paths and keys, query options, preferences."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .core import Request
from .odata import bad_request, unsupported


@dataclass(frozen=True)
class Segment:
    name: str
    args: str | None  # the text between the parentheses, or None without them


def split_segments(path: str) -> list[Segment]:
    """`a(b='x/y')/c` -> [a(b='x/y'), c]: slashes inside parentheses or quotes do not split."""
    segments: list[Segment] = []
    depth, quoted, start = 0, False, 0
    for i, ch in enumerate(path + "/"):
        if ch == "'" and depth:
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "/" and depth == 0:
            segments.append(_segment(path[start:i]))
            start = i + 1
    if depth or quoted:
        raise bad_request("Bad Request - Error in query syntax.")
    return segments


def _segment(text: str) -> Segment:
    if "(" not in text:
        if ")" in text or not text:
            raise bad_request("Bad Request - Error in query syntax.")
        return Segment(text, None)
    name, _, rest = text.partition("(")
    if not rest.endswith(")") or not name:
        raise bad_request("Bad Request - Error in query syntax.")
    return Segment(name, rest[:-1])


def split_args(text: str) -> list[tuple[str, str]]:
    """`a='x,y',b=@p` -> [("a", "'x,y'"), ("b", "@p")] (commas inside quotes do not split)."""
    items: list[str] = []
    quoted, start = False, 0
    for i, ch in enumerate(text + ","):
        if ch == "'":
            quoted = not quoted
        elif ch == "," and not quoted:
            items.append(text[start:i])
            start = i + 1
    out: list[tuple[str, str]] = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise bad_request("Bad Request - Error in query syntax.")
        out.append((name.strip(), value.strip()))
    return out


def string_literal(text: str) -> str | None:
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    return None


def lenient_json(text: str) -> Any:
    """JSON, also with the single-quoted strings OData parameter aliases use."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif ch == "'":
            j, buf = i + 1, []
            while j < len(text):
                if text[j] == "'":
                    if text[j + 1 : j + 2] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            out.append(json.dumps("".join(buf)))
            i = j + 1
        else:
            out.append(ch)
            i += 1
    try:
        return json.loads("".join(out))
    except ValueError:
        raise bad_request(f"The parameter value '{text}' is not valid JSON.") from None


@dataclass(frozen=True)
class Key:
    id: str | None = None
    alternate: tuple[str, str] | None = None  # (column, value)

    def describe(self) -> str:
        if self.id:
            return self.id
        assert self.alternate is not None
        return f"{self.alternate[0]}='{self.alternate[1]}'"


def prefer(request: Request) -> dict[str, str]:
    """The Prefer header's preferences, name -> value ('' when it has none)."""
    out: dict[str, str] = {}
    # Commas inside a quoted value (odata.include-annotations="a,b") do not split preferences.
    for item in re.findall(r'(?:[^,"]|"[^"]*")+', request.headers.get("Prefer") or ""):
        name, _, value = item.strip().partition("=")
        if name:
            out[name.strip().lower()] = value.strip().strip('"')
    return out


COLLECTION_OPTIONS = {"$select", "$filter", "$orderby", "$top", "$count", "$skiptoken"}
_SANDBOX_UNSUPPORTED_OPTIONS = {"$expand", "$apply", "$search", "$compute", "$levels"}


def query_options(request: Request, allowed: set[str]) -> dict[str, str]:
    """The query's `$` options (each at most once), validated against `allowed`."""
    out: dict[str, str] = {}
    for name, value in parse_qsl(request.raw_query, keep_blank_values=True):
        if name == "sql":
            raise unsupported("the ?sql= query parameter (Dataverse SQL)")
        if name == "fetchXml":
            raise unsupported("FetchXML queries")
        if not name.startswith("$"):
            continue  # parameter aliases (@p) and custom options
        if name in out:
            raise bad_request(
                f"Query option '{name}' was specified more than once, but it must be "
                "specified at most once."
            )
        if name == "$skip":
            raise bad_request("The query parameter $skip is not supported.")
        if name not in allowed:
            if name in _SANDBOX_UNSUPPORTED_OPTIONS or name == "$format":
                raise unsupported(f"the {name} query option here")
            raise bad_request(f"The query parameter {name} is not supported.")
        out[name] = value
    return out


def aliases(request: Request) -> dict[str, str]:
    return {k: v for k, v in parse_qsl(request.raw_query, keep_blank_values=True) if k[:1] == "@"}


def etag_matches(header: str, etag: str) -> bool:
    def norm(tag: str) -> str:
        tag = tag.strip()
        return tag[2:] if tag.startswith("W/") else tag

    return any(norm(t) == norm(etag) for t in header.split(",") if t.strip())


def resolve_content_ids(body: bytes, ids: Mapping[str, str]) -> bytes:
    """Replace `"$1"` references in `...@odata.bind` / `@odata.id` values by the entity URLs."""
    if not body or b'"$' not in body:
        return body
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return body
    if not isinstance(payload, dict):
        return body
    for key, value in list(payload.items()):
        bindable = key.endswith("@odata.bind") or key == "@odata.id"
        if bindable and isinstance(value, str) and value.startswith("$"):
            if value[1:] not in ids:
                raise bad_request(
                    f"Content-ID Reference: '{value}' does not exist in the batch context."
                )
            payload[key] = ids[value[1:]]
    return json.dumps(payload).encode("utf-8")
