"""Compare an answer with a documented example by shape: keys and JSON types, not values.

A documented object's keys must all be present with a value of the same JSON type (numbers are
one type; booleans are not numbers); a list's items are each compared with the documented first
item. A documented null accepts anything, and a documented scalar accepts null (a lookup or a
date the example happens to show set). `exact=True` also refuses keys the example does not
have, at every level (for error bodies, whose shape clients parse strictly).
"""

from __future__ import annotations

from typing import Any


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else type(value).__name__


def shape_problems(
    actual: Any, documented: Any, *, exact: bool = False, path: str = "$"
) -> list[str]:
    if documented is None:
        return []
    want, got = _kind(documented), _kind(actual)
    if got == "null" and want not in ("object", "array"):
        return []
    if want != got:
        return [f"{path}: documented {want}, got {got} ({str(actual)[:80]!r})"]
    problems: list[str] = []
    if want == "object":
        for key, value in documented.items():
            if key not in actual:
                problems.append(f"{path}: missing '{key}' (has {sorted(actual)})")
            else:
                problems += shape_problems(actual[key], value, exact=exact, path=f"{path}.{key}")
        if exact:
            extra = sorted(set(actual) - set(documented))
            if extra:
                problems.append(f"{path}: keys the documented example does not have: {extra}")
    elif want == "array" and documented:
        for i, item in enumerate(actual):
            problems += shape_problems(item, documented[0], exact=exact, path=f"{path}[{i}]")
    return problems


def assert_shape(actual: Any, documented: Any, *, exact: bool = False) -> None:
    problems = shape_problems(actual, documented, exact=exact)
    assert not problems, "not the documented shape:\n  " + "\n  ".join(problems)
