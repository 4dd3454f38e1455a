"""The README and docs/ hold together: every relative link resolves (the file, and the heading of
a `#anchor`), the README stays short and links every file of docs/, and the repository paths the
docs name in backticks exist."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 230

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
# [text](target) and ![alt](target); the text may wrap onto the next line.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
EXTERNAL = ("http://", "https://", "mailto:")
# Repository paths named in backticks, e.g. `work365_fn/rules/reasons.py`, `tests/unit/`.
REPO_PATH = re.compile(r"(?:work365_fn|tests|scripts|openapi|docs)/[\w./-]*")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code (links there are not links)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return INLINE_CODE.sub(lambda m: " " * len(m.group(0)), text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower-cased, punctuation dropped,
    spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links -> their text
    text = text.replace("`", "")
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 for repeated headings."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for match in HEADING.finditer(prose_keep_headings(path.read_text(encoding="utf-8"))):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def prose_keep_headings(text: str) -> str:
    """Without fenced code blocks (a `# comment` in a bash block is not a heading)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def links(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, target) of every link of a Markdown file, outside code."""
    text = prose(path.read_text(encoding="utf-8"))
    for match in LINK.finditer(text):
        yield text.count("\n", 0, match.start()) + 1, match.group(1)


def relative_links() -> list[tuple[Path, int, str]]:
    return [
        (path, line, target)
        for path in markdown_files()
        for line, target in links(path)
        if not target.lower().startswith(EXTERNAL)
    ]


def broken(path: Path, target: str) -> str | None:
    """Why a relative link of `path` does not resolve, or None when it does."""
    if not target:
        return "empty link target"
    file_part, _, anchor = target.partition("#")
    dest = (path.parent / file_part).resolve() if file_part else path
    if not dest.exists():
        return f"{file_part} does not exist"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"no heading with anchor #{anchor} in {shown(dest)}"
    return None


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def test_docs_exist() -> None:
    assert README.is_file()
    assert sorted(DOCS.rglob("*.md")), "docs/ holds no Markdown file"


@pytest.mark.parametrize(
    ("path", "line", "target"),
    [pytest.param(p, n, t, id=f"{p.relative_to(ROOT)}:{n}:{t}") for p, n, t in relative_links()],
)
def test_relative_link_resolves(path: Path, line: int, target: str) -> None:
    why = broken(path, target)
    assert why is None, f"{path.relative_to(ROOT)}:{line}: link ({target}): {why}"


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail into docs/ "
        "and link it"
    )


def test_readme_links_every_doc() -> None:
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for _, target in links(README)
        if target and not target.lower().startswith(EXTERNAL) and not target.startswith("#")
    }
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted(DOCS.rglob("*"))
        if path.is_file() and path.resolve() not in linked
    ]
    assert not missing, f"README.md does not link these files of docs/: {missing}"


def test_named_repository_paths_exist() -> None:
    """`work365_fn/...`, `tests/...`, `scripts/...` in backticks: the docs follow the code."""
    missing = []
    for path in markdown_files():
        text = prose_keep_headings(path.read_text(encoding="utf-8"))
        for match in INLINE_CODE.finditer(text):
            code = match.group(2).strip()
            if REPO_PATH.fullmatch(code) and not (ROOT / code).exists():
                line = text.count("\n", 0, match.start()) + 1
                missing.append(f"{path.relative_to(ROOT)}:{line}: {code}")
    assert not missing, f"paths named in the docs that do not exist: {missing}"


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Fan-out (large tenants)", "fan-out-large-tenants"),
        ("Asynchronous runs (Power Automate)", "asynchronous-runs-power-automate"),
        ("POST /api/sync", "post-apisync"),
        ("Diagnose, report, backfill", "diagnose-report-backfill"),
        ("The `backfill` command", "the-backfill-command"),
        ("See [the docs](docs/cli.md)", "see-the-docs"),
        ("snake_case stays", "snake_case-stays"),
    ],
)
def test_slug_is_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_broken_link_is_caught(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(
        "# Title\n\n## Two words\n\n[ok](b.md#real) [ok](#two-words) [bad](missing.md) "
        "[bad anchor](b.md#nowhere) [web](https://example.com/x.md)\n"
        "```\n[in code](missing-too.md)\n```\n",
        encoding="utf-8",
    )
    (tmp_path / "b.md").write_text("## Real\n", encoding="utf-8")
    page = tmp_path / "a.md"
    found = [target for _, target in links(page)]
    assert "missing-too.md" not in found
    results = {t: broken(page, t) for t in found if not t.startswith(EXTERNAL)}
    assert results["b.md#real"] is None
    assert results["#two-words"] is None
    assert results["missing.md"] == "missing.md does not exist"
    assert "no heading with anchor #nowhere" in str(results["b.md#nowhere"])
