"""The files the CLI reads and writes, checked before anything runs (docs/cli.md#files-and-folders).

A file the CLI writes (`report --html FILE`, `report --csv FILE`, a new `--state FILE`) goes into
a folder that exists: a missing folder is refused, never created (a typo would otherwise make
folders anywhere, `/nonexist/...` as root). The folder is tried with a probe file first, so a
command that cannot write its output says so before the sandbox starts or the tenant is read.
Every problem is a ValueError naming the option: the CLI prints it as one `usage error:` line and
exits 2. The output itself is written whole or not at all (a temporary file in the same folder,
then renamed over the target).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

STDOUT = "-"
_OUTPUTS = ("html", "csv")  # report's file outputs ('-': stdout)
_INPUTS = ("settings", "landing_rules", "scenario")  # read later, where a bad file is named
_PROBE_PREFIX = ".work365-"


def check(args: argparse.Namespace) -> None:
    """Every path option of the parsed command line: a usage error (ValueError) before anything
    is read or started."""
    for name in _INPUTS:
        _not_empty(args, name)
    for name in _OUTPUTS:
        given = _not_empty(args, name)
        if given is not None and given != STDOUT:
            check_new_file(_option(name), given)
    # The state is a sandbox's: `sandbox serve` has no --sandbox flag, the other commands do
    # (without it, --state is refused with its own message).
    state = _not_empty(args, "state") if getattr(args, "sandbox", True) else None
    if state is not None and not os.path.lexists(state):
        check_new_file("--state", state)


def check_new_file(option: str, given: str) -> None:
    """`given` can be written: not a folder, in a folder that exists and takes a new file."""
    path = Path(given)
    if path.is_dir():
        raise ValueError(f"{option} {given} is a folder: give a file name in it")
    folder = path.parent
    if not folder.exists():
        raise ValueError(
            f"{option} {given}: the folder {folder} does not exist (the CLI never creates "
            "folders): create it first, or give a path in an existing folder"
        )
    if not folder.is_dir():
        raise ValueError(f"{option} {given}: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=_PROBE_PREFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{option} {given}: cannot write in {folder} ({_why(exc)})") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{option} {given}: the file is read-only")


def write_text(option: str, given: str, text: str) -> None:
    """Write `text` to `given` whole, or raise a ValueError naming the option and leave any
    earlier file as it was."""
    path = Path(given)
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=_PROBE_PREFIX)
    except OSError as exc:
        raise ValueError(f"{option} {given}: cannot write in {path.parent} ({_why(exc)})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        if path.exists():
            shutil.copymode(path, temporary)  # a rewritten file keeps its permissions
        else:
            os.chmod(temporary, 0o666 & ~_umask())  # a new one gets what open() would give
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ValueError(f"{option} {given}: cannot write it ({_why(exc)})") from None


def _not_empty(args: argparse.Namespace, name: str) -> str | None:
    given = getattr(args, name, None)
    if given is not None and not given.strip():
        raise ValueError(f"{_option(name)} needs a file name")
    return given


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _umask() -> int:
    """The process's umask (os.umask can only be read by setting it: set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
