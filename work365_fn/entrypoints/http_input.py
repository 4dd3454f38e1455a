"""HTTP input checked field by field, for Power Automate: a bad field is a 400 that names it
(`customerIds[2]`, `undo`, `async`), a body over 64 KiB is a 413, and nothing runs before the
whole input is valid. Shared by every endpoint; the field rules themselves are in
operations/inputs.py (a queued job checks its payload with the same ones)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import azure.functions as func

from work365_fn import safe_json
from work365_fn.operations.inputs import (
    MAX_CUSTOMER_IDS,
    BadRequest,
    boolean,
    guid,
    guid_list,
    optional_guid,
)

MAX_BODY_BYTES = 64 * 1024


# Query parameters the Functions host itself uses: never "unknown".
HOST_PARAMETERS = frozenset({"code"})


def json_object(req: func.HttpRequest, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The body as a JSON object ({} when empty): over `max_bytes` is a 413, anything but an
    object a 400."""
    raw = req.get_body() or b""
    if len(raw) > max_bytes:
        raise BadRequest("body", f"the body is over {max_bytes} bytes", status=413)
    if not raw.strip():
        return {}
    try:
        body = safe_json.loads(raw, "the body")
    except safe_json.JsonInputError as exc:
        raise BadRequest("body", str(exc)) from None
    if not isinstance(body, dict):
        raise BadRequest("body", "the body must be a JSON object")
    return body


def json_body(req: func.HttpRequest, known: Sequence[str]) -> dict[str, Any]:
    """The body as a JSON object with only `known` fields ({} when empty)."""
    body = json_object(req)
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


def query_boolean(params: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return default
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise BadRequest(name, f"'{name}' must be true or false")


__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CUSTOMER_IDS",
    "BadRequest",
    "boolean",
    "guid",
    "guid_list",
    "json_body",
    "optional_guid",
    "query",
    "query_boolean",
]
