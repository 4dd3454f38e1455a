"""ISO-8601 timestamps as the APIs and the run summary write them. Pure."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_timestamp(value: str) -> datetime | None:
    """ISO-8601 to an aware UTC datetime; a naive value is taken as UTC. None if unreadable."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
