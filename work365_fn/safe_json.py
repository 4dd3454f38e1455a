"""The one gate for JSON that comes from outside: HTTP bodies, queue messages, the schema file,
scenario files and the run documents read back from storage all go through `loads`.

Whatever the text holds, `loads` returns a value or raises `JsonInputError` naming what was
read (`what`): never a RecursionError, a UnicodeDecodeError or the interpreter's own ValueError.
It takes RFC 8259 JSON in UTF-8 and refuses, with the reason:

- bytes that are not UTF-8, and a byte order mark: RFC 8259 section 8.1 forbids adding one and
  lets a parser ignore it; we refuse it, so a file saved "UTF-8 with BOM" is named and fixed
  instead of accepted here and misread by another tool;
- control characters outside the escapes (the grammar: `json` refuses them in strict mode);
- `NaN`, `Infinity`, `-Infinity` and numbers too large for a float (`1e999`): JSON has none;
- integers of more than MAX_INTEGER_DIGITS digits (far beyond any count or id we read, and
  below Python's own 4300-digit limit, so the refusal is ours on any interpreter);
- nesting deeper than MAX_DEPTH levels, lone surrogates (`"\\ud800"`) and a name given twice
  in one object (I-JSON, RFC 7493: such text means different things to different parsers);
  run documents take lone surrogates (`lone_surrogates=True`): they may hold a Partner Center
  name as it came.

`JsonInputError` is a `Work365Error` and a `ValueError`: callers turn it into their own
documented error (a 400 naming the body, a dropped `BadMessage`, a `SchemaError`, a
`ScenarioError`)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from work365_fn.errors import Work365Error

MAX_DEPTH = 64
MAX_INTEGER_DIGITS = 100
_BOM = "\ufeff"
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = "a string holds a lone surrogate (\\ud800-\\udfff)"


class JsonInputError(Work365Error, ValueError):
    """Text from outside that is not JSON this service reads. `what` names the input."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what} is not valid JSON: {reason}")


class _Refused(Exception):
    """Raised inside the parser's hooks; `loads` names the input."""


def loads(data: str | bytes | bytearray, what: str, *, lone_surrogates: bool = False) -> Any:
    """The JSON value of `data` (UTF-8 when bytes), or JsonInputError naming `what`.
    `lone_surrogates=True` takes them (documents we wrote ourselves, which may carry a name
    from Partner Center verbatim: refusing it would lose the document)."""
    text = _text(data, what)
    if text.startswith(_BOM):
        raise JsonInputError(
            what, "it starts with a byte order mark (BOM): save it as UTF-8 without a BOM"
        )
    try:
        value = json.loads(
            text,
            parse_int=_integer,
            parse_float=_float,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except _Refused as exc:
        raise JsonInputError(what, str(exc)) from None
    except json.JSONDecodeError as exc:
        raise JsonInputError(what, f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise JsonInputError(what, f"it is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # the interpreter's own limits
        raise JsonInputError(what, str(exc)) from None
    strings = not lone_surrogates and bool(
        _SURROGATE.search(text) or _ESCAPED_SURROGATE.search(text)
    )
    _check(value, what, strings)
    return value


def _text(data: str | bytes | bytearray, what: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonInputError(what, f"it is not UTF-8 (byte {exc.start})") from None


def _integer(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _Refused(f"an integer has more than {MAX_INTEGER_DIGITS} digits")
    return int(digits)


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused(f"a number is too large for a float ({text[:20]})")
    return value


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON value")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"the name {key[:40]!r} appears twice in one object")
            seen.add(key)
    return obj


def _check(value: Any, what: str, strings: bool) -> None:
    """Depth and (when the text may hold one) lone surrogates, without recursion: the
    parser's own stack limit depends on the caller's stack, MAX_DEPTH does not."""
    stack: list[tuple[Any, int]] = [([value], 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise JsonInputError(what, f"it is nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            if strings and any(_SURROGATE.search(key) for key in item):
                raise JsonInputError(what, _LONE_SURROGATE)
            item = item.values()
        for child in item:
            if isinstance(child, list | dict):
                stack.append((child, depth + 1))
            elif strings and isinstance(child, str) and _SURROGATE.search(child):
                raise JsonInputError(what, _LONE_SURROGATE)
