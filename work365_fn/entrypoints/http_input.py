"""HTTP input checked field by field, for Power Automate: a bad field is a 400 that names it
(`customerIds[2]`, `undo`, `async`), a body over 64 KiB is a 413, and nothing runs before the
whole input is valid. The style of `triggers.SyncHttpRequest`, shared by the operations
endpoints, and of `POST /api/sync`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import azure.functions as func

from work365_fn.rules.model import is_guid

MAX_BODY_BYTES = 64 * 1024
MAX_CUSTOMER_IDS = 1000


class BadRequest(Exception):
    def __init__(self, field: str, message: str, status: int = 400) -> None:
        self.field = field
        self.status = status
        super().__init__(message)


# Query parameters the Functions host itself uses: never "unknown".
HOST_PARAMETERS = frozenset({"code"})


def json_body(req: func.HttpRequest, known: Sequence[str]) -> dict[str, Any]:
    """The body as a JSON object with only `known` fields ({} when empty)."""
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest("body", f"the body is over {MAX_BODY_BYTES} bytes", status=413)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("body", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body", "the body must be a JSON object")
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise BadRequest(unknown[0], f"unknown field '{unknown[0]}' (known: {', '.join(known)})")
    return body


def query(req: func.HttpRequest, known: Sequence[str]) -> dict[str, str]:
    """The query parameters, only `known` ones (and the host's `code`); each given once."""
    params = {k: v for k, v in dict(req.params or {}).items() if k not in HOST_PARAMETERS}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise BadRequest(
            unknown[0], f"unknown parameter '{unknown[0]}' (known: {', '.join(known)})"
        )
    return params


def boolean(body: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(name, f"'{name}' must be true or false")
    return value


def query_boolean(params: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return default
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise BadRequest(name, f"'{name}' must be true or false")


def guid(value: Any, name: str) -> str:
    """A GUID in the 8-4-4-4-12 form, lower-cased."""
    if not isinstance(value, str) or not is_guid(value):
        raise BadRequest(name, f"'{name}' is not a GUID")
    return value.lower()


def optional_guid(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    return guid(value, name)


def guid_list(body: Mapping[str, Any], name: str, limit: int = MAX_CUSTOMER_IDS) -> tuple[str, ...]:
    """A list of GUIDs, lower-cased and de-duplicated in order."""
    values = body.get(name)
    if values is None:
        return ()
    if not isinstance(values, list):
        raise BadRequest(name, f"'{name}' must be a list of GUIDs")
    if len(values) > limit:
        raise BadRequest(name, f"'{name}' takes at most {limit} ids")
    out: dict[str, None] = {}
    for i, value in enumerate(values):
        out[guid(value, f"{name}[{i}]")] = None
    return tuple(out)
