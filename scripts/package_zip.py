r"""Build the deployment zip: the project folder minus what `.funcignore` leaves out.

Called by `scripts/package` (stdlib only, so any python3 >= 3.9 will do):

    python3 scripts/package_zip.py [--root DIR] [--list] OUT.zip

Walks ROOT (default: this script's parent folder), drops every path the root `.funcignore`
matches, and writes the rest to OUT.zip with sorted names, a fixed timestamp (1980-01-01) and
normalised permissions, so the same tree always gives the same bytes. Prints the file count and
the zip's path; `--list` prints the file names instead of writing anything.

`.funcignore` is read with gitignore semantics, as Core Tools reads it. Supported:
- blank lines and `#` comments; `\#` and `\!` for a literal leading `#` / `!`; trailing
  spaces are dropped unless escaped with a backslash;
- `name/` (trailing slash) matches directories only; `name` matches files and directories;
- a pattern with a `/` at the start or in the middle is anchored at ROOT (`/docs/`,
  `work365_fn/bench/`); one without matches a name at any depth (`__pycache__/`, `*.pyc`);
- `*` and `?` (never crossing a `/`), `[abc]`, `[a-z]`, `[!abc]`; `\x` is a literal `x`;
- `**/x` (x at any depth), `x/**` (everything inside x), `a/**/b` (zero or more directories);
  any other `**` acts as `*`;
- `!pattern` re-includes what an earlier pattern excluded; the last matching line wins. As in
  git, nothing under an excluded directory can be re-included: excluded directories are not
  entered at all.
Not supported: `.funcignore` files in sub-folders (Core Tools reads only the root one too).

Belt and braces: the build stops (exit 2) if a file it would zip is under work365_fn/sandbox/
(it holds a token issuer) or work365_fn/bench/, is a local.settings*.json (secrets), or if
function_app.py, host.json or requirements.txt is missing. A symlinked directory that is not
ignored also stops it (it would not be followed, and silently shipping less is worse).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parent.parent
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
REQUIRED = ("function_app.py", "host.json", "requirements.txt")
FORBIDDEN_DIRS = ("work365_fn/sandbox/", "work365_fn/bench/")
FORBIDDEN_FILE = re.compile(r"(^|/)local\.settings[^/]*\.json$")


class PackageError(Exception):
    """The zip must not be built; the message says why and what to change."""


@dataclass(frozen=True)
class Rule:
    regex: re.Pattern[str]
    negated: bool
    dir_only: bool
    source: str


def _strip_trailing_spaces(line: str) -> str:
    """Drop trailing spaces that are not escaped with a backslash (gitignore rule)."""
    end = len(line)
    while end > 0 and line[end - 1] == " ":
        backslashes = 0
        i = end - 2
        while i >= 0 and line[i] == "\\":
            backslashes += 1
            i -= 1
        if backslashes % 2:  # `\ `: an escaped space ends the pattern
            break
        end -= 1
    return line[:end]


def _translate(pattern: str) -> str:
    """Regex source for a gitignore pattern, matched against a whole root-relative posix path."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**", i):
            at_start = i == 0 or pattern[i - 1] == "/"
            j = i + 2
            if at_start and j < n and pattern[j] == "/":
                out.append("(?:[^/]+/)*")  # `**/`: zero or more directories
                i = j + 1
            elif at_start and j == n:
                out.append(".*")  # trailing `/**`: everything inside
                i = j
            else:
                out.append("[^/]*")  # any other `**` is a plain `*`
                i = j
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "[":
            i = _translate_class(pattern, i, out)
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _translate_class(pattern: str, start: int, out: list[str]) -> int:
    """Append `[...]` at `start` as a regex class (never matching `/`); return the next index."""
    j = start + 1
    if j < len(pattern) and pattern[j] in "!^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    if j >= len(pattern):  # no closing bracket: a literal `[`
        out.append(re.escape("["))
        return start + 1
    body = pattern[start + 1 : j]
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    chars: list[str] = []
    k = 0
    while k < len(body):
        if body[k] == "\\" and k + 1 < len(body):
            k += 1  # `\x` is a literal x
        chars.append("-" if body[k] == "-" else re.escape(body[k]))
        k += 1
    out.append(f"(?!/)[{'^' if negate else ''}{''.join(chars)}]")
    return j + 1


def parse_rule(line: str) -> Rule | None:
    """One `.funcignore` line as a rule, or None for a blank line or a comment."""
    line = _strip_trailing_spaces(line.rstrip("\r\n"))
    if not line or line.startswith("#"):
        return None
    source = line
    negated = line.startswith("!")
    if negated or line.startswith(("\\!", "\\#")):  # `!x` negates; `\!x`, `\#x` are literal
        line = line[1:]
    dir_only = line.endswith("/")
    line = line.rstrip("/")
    if not line:
        return None
    # With a `/` it is anchored at the root; a bare name matches at any depth.
    line = line.lstrip("/") if "/" in line else "**/" + line
    return Rule(re.compile(_translate(line) + r"\Z", re.DOTALL), negated, dir_only, source)


class Ignore:
    """The rules of one `.funcignore`, applied in order; the last matching rule wins."""

    def __init__(self, lines: list[str]) -> None:
        self.rules = [rule for rule in map(parse_rule, lines) if rule is not None]

    @classmethod
    def from_file(cls, path: Path) -> Ignore:
        if not path.is_file():
            return cls([])
        return cls(path.read_text(encoding="utf-8").splitlines())

    def ignored(self, rel_path: str, is_dir: bool) -> bool:
        """Whether `rel_path` (posix, relative to the root, no leading `/`) is left out.

        Only the path itself is tested: callers walk the tree and do not enter ignored folders.
        """
        result = False
        for rule in self.rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.regex.match(rel_path):
                result = not rule.negated
        return result


def collect(root: Path, ignore: Ignore) -> list[str]:
    """Root-relative posix names of the files to deploy, sorted."""
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        kept = []
        for name in sorted(dirnames):
            rel = prefix + name
            if ignore.ignored(rel, is_dir=True):
                continue
            if os.path.islink(os.path.join(dirpath, name)):
                raise PackageError(
                    f"{rel}/ is a symlinked directory: it would not be packaged. "
                    "Add it to .funcignore or replace the link with the folder."
                )
            kept.append(name)
        dirnames[:] = kept
        files.extend(
            prefix + name for name in filenames if not ignore.ignored(prefix + name, is_dir=False)
        )
    return sorted(files)


def check(files: list[str]) -> None:
    """Refuse a file list that would ship the sandbox, the bench or local secrets."""
    bad = [f for f in files if f.startswith(FORBIDDEN_DIRS) or FORBIDDEN_FILE.search(f)]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise PackageError(
            f"refusing to package {shown}: work365_fn/sandbox/ (a token issuer), "
            "work365_fn/bench/ and local.settings*.json must never be deployed. "
            "Restore their lines in .funcignore."
        )
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise PackageError(
            f"{', '.join(missing)} missing from the package: run from the project folder, "
            "and check that .funcignore does not leave it out."
        )


def write_zip(root: Path, files: list[str], out: Path) -> None:
    """Write `files` to `out` reproducibly, replacing `out` only once the zip is complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as zf:
            for name in files:
                source = root / name
                info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
                info.create_system = 3  # unix, whatever machine builds it
                mode = 0o755 if source.stat().st_mode & 0o111 else 0o644
                info.external_attr = (0o100000 | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, source.read_bytes(), compresslevel=9)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp made it 0600: give it a normal file's mode
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("out", type=Path, help="the zip to write, e.g. dist/work365-fn.zip")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the project folder")
    parser.add_argument("--list", action="store_true", help="print the file names, write nothing")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    out = args.out.resolve()
    try:
        files = collect(root, Ignore.from_file(root / ".funcignore"))
        if out.is_relative_to(root):  # never pack a previous build into the new one
            files = [f for f in files if f != out.relative_to(root).as_posix()]
        check(files)
        if args.list:
            print("\n".join(files))
            return 0
        write_zip(root, files, out)
    except PackageError as exc:
        print(f"scripts/package: {exc}", file=sys.stderr)
        return 2
    print(f"{len(files)} files -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
