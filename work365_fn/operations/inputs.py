"""Input checked field by field, whichever way it came (HTTP body, queue payload, CLI): a bad
field is a `BadRequest` that names it (`customerIds[2]`, `dryRun`), and nothing runs before the
whole input is valid. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from work365_fn.rules.model import is_guid

MAX_CUSTOMER_IDS = 1000


class BadRequest(Exception):
    def __init__(self, field: str, message: str, status: int = 400) -> None:
        self.field = field
        self.status = status
        super().__init__(message)


def boolean(body: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(name, f"'{name}' must be true or false")
    return value


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
