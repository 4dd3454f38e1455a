"""The app's own state: run documents (async runs, fan-out batches, backfill journals),
watermarks and leases.

Two implementations of one small interface: Azure Blob Storage (the Function App's storage
account; Azurite locally) and a local folder (the CLI on a laptop, the sandbox). Documents are
JSON objects addressed by (run id, name), e.g. ("<run id>", "state"), ("<run id>", "result"),
("<run id>", "batch-0003"), ("<run id>", "backfill-journal").
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol

from .errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(value: str, what: str) -> str:
    """Run ids and document names become paths and blob names: only safe characters."""
    if not _NAME.match(value):
        raise ValueError(f"{what} must be 1-128 letters, digits, '.', '_' or '-'")
    return value


class RunStore(Protocol):
    def put(self, run_id: str, name: str, document: dict[str, Any]) -> None:
        """Write (or replace) one JSON document of a run."""
        ...

    def get(self, run_id: str, name: str) -> dict[str, Any] | None:
        """The document, or None when it does not exist."""
        ...

    def names(self, run_id: str, prefix: str = "") -> list[str]:
        """Names of the run's documents that start with `prefix`, sorted."""
        ...


class FileRunStore:
    """Run documents as files: <root>/runs/<run id>/<name>.json, written atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _dir(self, run_id: str) -> Path:
        return self.root / "runs" / check_name(run_id, "run id")

    def put(self, run_id: str, name: str, document: dict[str, Any]) -> None:
        folder = self._dir(run_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(document, out)
            os.replace(tmp, folder / f"{check_name(name, 'document name')}.json")
        except OSError as exc:
            raise ConfigError(
                f"cannot write run state under {self.root} ({exc.strerror or exc}): "
                "check WORK365_STATE_DIR"
            ) from None

    def get(self, run_id: str, name: str) -> dict[str, Any] | None:
        path = self._dir(run_id) / f"{check_name(name, 'document name')}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return data if isinstance(data, dict) else None

    def names(self, run_id: str, prefix: str = "") -> list[str]:
        folder = self._dir(run_id)
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json") if p.stem.startswith(prefix))
