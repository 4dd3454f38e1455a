"""ISO-8601 timestamps as the APIs and the run summary write them. Pure."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_timestamp(value: str) -> datetime | None:
    """ISO-8601 to an aware UTC datetime; a naive value is taken as UTC. None if unreadable,
    or if its UTC time falls outside the years 1-9999 (`0001-01-01T00:00:00+01:00`)."""
    text = value.strip()
    if not (text.isascii() and text.isprintable()):  # fromisoformat stops at a NUL
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def format_timestamp(value: datetime) -> str:
    """`2026-01-01T00:00:00Z`; four-digit years always (strftime's %Y writes year 1 as "1")."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
