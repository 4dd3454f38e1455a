"""The layout keeps its promises (DESIGN.md section 2, issue 10 points 3-5): the import graph of
work365_fn/ and function_app.py, read from the source with `ast` (every import statement,
function-level and `if TYPE_CHECKING:` ones included, relative ones resolved, and string
references such as "work365_fn.operations.report:report_job"), has no cycle and points inward;
the sandbox and the benchmark stay out of the product; no product function is over 60 lines."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "work365_fn"
MAX_FUNCTION_LINES = 60

# A string naming a callable by module path, as a job registry or a config file would.
_STRING_REF = re.compile(rf"^({PACKAGE}(?:\.[A-Za-z_]\w*)+):[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
_IMPORT_CALLS = {"import_module", "__import__"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module of this project
    line: int
    lazy: bool  # inside a function or under TYPE_CHECKING: not run when `source` is imported

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line}{', lazy' if self.lazy else ''})"


# ---- reading the source ---------------------------------------------------------------------


def module_files(root: Path) -> dict[str, Path]:
    """Module name -> file, for the package under `root` and the top-level .py files beside it
    (function_app.py). A package is named by its __init__.py."""
    found: dict[str, Path] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    for path in sorted(root.glob("*.py")):
        found[path.stem] = path
    return found


def _is_package(module: str, files: Mapping[str, Path]) -> bool:
    return files[module].name == "__init__.py"


def _resolve_relative(module: str, files: Mapping[str, Path], level: int, name: str | None) -> str:
    package = module if _is_package(module, files) else module.rpartition(".")[0]
    parts = package.split(".")
    base = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join([*base, *([name] if name else [])])


def _known(name: str, files: Mapping[str, Path]) -> str | None:
    """The module of this project `name` refers to: itself, or its longest known prefix (a name
    imported from a module is an attribute of that module)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in files:
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _named(node: ast.AST, module: str, files: Mapping[str, Path]) -> Iterator[str]:
    """The dotted names one node imports (before resolving them to modules of this project)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = (
            _resolve_relative(module, files, node.level, node.module)
            if node.level
            else node.module or ""
        )
        for alias in node.names:
            # `from pkg import mod` imports the module pkg.mod when there is one, else pkg.
            yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        match = _STRING_REF.match(node.value)
        if match:
            yield match.group(1)
    elif isinstance(node, ast.Call):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0] if node.args else None
        if called in _IMPORT_CALLS and isinstance(first, ast.Constant):
            yield str(first.value)


def imports_of(module: str, files: Mapping[str, Path]) -> list[Import]:
    tree = ast.parse(files[module].read_text(encoding="utf-8"), filename=str(files[module]))
    found: list[Import] = []

    def walk(node: ast.AST, lazy: bool) -> None:
        for name in _named(node, module, files):
            target = _known(name, files)
            if target is not None and target != module:
                found.append(Import(module, target, getattr(node, "lineno", 0), lazy))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            walk(node.test, lazy)
            for child in node.body:
                walk(child, True)
            for child in node.orelse:
                walk(child, lazy)
            return
        inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            walk(child, inner)

    walk(tree, False)
    return found


def import_graph(root: Path = ROOT) -> list[Import]:
    """Every import of every module, once (`from m import a, b` is one edge)."""
    files = module_files(root)
    return list(dict.fromkeys(edge for module in files for edge in imports_of(module, files)))


# ---- the graph ------------------------------------------------------------------------------


def cycles(edges: Iterable[Import]) -> list[list[Import]]:
    """One shortest cycle through each strongly connected component of more than one module."""
    graph: dict[str, dict[str, Import]] = defaultdict(dict)
    for edge in edges:
        graph[edge.source].setdefault(edge.target, edge)
    out = []
    for component in _components(graph):
        if len(component) > 1:
            out.append(_shortest_cycle(graph, min(component), component))
    return out


def _components(graph: Mapping[str, Mapping[str, Import]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively."""
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _shortest_cycle(
    graph: Mapping[str, Mapping[str, Import]], start: str, within: set[str]
) -> list[Import]:
    """Breadth first from `start` back to itself, inside one component."""
    paths: dict[str, list[Import]] = {start: []}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target, edge in sorted(graph.get(node, {}).items()):
            if target == start:
                return [*paths[node], edge]
            if target in within and target not in paths:
                paths[target] = [*paths[node], edge]
                queue.append(target)
    raise AssertionError(f"{start} is in a component but on no cycle")


def _show(cycle: list[Import]) -> str:
    modules = " -> ".join([cycle[0].source, *(edge.target for edge in cycle)])
    return modules + "\n" + "\n".join(f"    {edge}" for edge in cycle)


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# ---- the walker sees every kind of import ---------------------------------------------------


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_walker_sees_hidden_imports_and_finds_their_cycle(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            f"{PACKAGE}/__init__.py": "",
            f"{PACKAGE}/a/__init__.py": "from .one import f\n",
            f"{PACKAGE}/a/one.py": "def f():\n    from ..b import two\n",
            f"{PACKAGE}/b/__init__.py": "",
            f"{PACKAGE}/b/two.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from work365_fn.c import three\n"
            ),
            f"{PACKAGE}/c.py": f'JOBS = {{"x": "{PACKAGE}.a.one:f"}}\n',
            "function_app.py": f"import importlib\nimportlib.import_module('{PACKAGE}.c')\n",
        },
    )
    edges = {(e.source, e.target, e.lazy) for e in import_graph(tmp_path)}
    assert edges == {
        (f"{PACKAGE}.a", f"{PACKAGE}.a.one", False),
        (f"{PACKAGE}.a.one", f"{PACKAGE}.b.two", True),
        (f"{PACKAGE}.b.two", f"{PACKAGE}.c", True),
        (f"{PACKAGE}.c", f"{PACKAGE}.a.one", False),
        ("function_app", f"{PACKAGE}.c", False),
    }
    [cycle] = cycles(import_graph(tmp_path))
    assert {edge.source for edge in cycle} == {
        f"{PACKAGE}.a.one",
        f"{PACKAGE}.b.two",
        f"{PACKAGE}.c",
    }


def test_the_real_graph_is_read() -> None:
    edges = import_graph()
    sources = {edge.source for edge in edges}
    assert {f"{PACKAGE}.rules", f"{PACKAGE}.composition", "function_app"} <= sources
    assert any(_in(e.source, f"{PACKAGE}.operations") and _in(e.target, f"{PACKAGE}.rules")
               for e in edges)  # fmt: skip


# ---- (a) no cycle ---------------------------------------------------------------------------


def test_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, f"{len(found)} import cycle(s):\n" + "\n".join(_show(c) for c in found)


# ---- (b) the layers -------------------------------------------------------------------------

RULES = f"{PACKAGE}.rules"
OPERATIONS = f"{PACKAGE}.operations"
ADAPTERS = f"{PACKAGE}.adapters"
ENTRYPOINTS = f"{PACKAGE}.entrypoints"
COMPOSITION = f"{PACKAGE}.composition"
SANDBOX = f"{PACKAGE}.sandbox"
BENCH = f"{PACKAGE}.bench"
CLI = f"{ENTRYPOINTS}.cli"
# What may import the entry points: themselves, the composition root, the Functions app and
# `python -m work365_fn` (the CLI's launcher).
ENTRY_SIDE = (ENTRYPOINTS, COMPOSITION, "function_app", f"{PACKAGE}.__main__")


def _breaking(forbidden: Iterable[Import]) -> str:
    return "\n".join(f"    {edge}" for edge in sorted(forbidden, key=str))


def test_the_rules_import_nothing_outside_the_rules() -> None:
    bad = [
        e
        for e in import_graph()
        if _in(e.source, RULES) and _in(e.target, PACKAGE) and not _in(e.target, RULES)
    ]
    assert not bad, "the rules are pure:\n" + _breaking(bad)


def test_adapters_never_import_operations_entrypoints_or_composition() -> None:
    bad = [
        e
        for e in import_graph()
        if _in(e.source, ADAPTERS) and _in(e.target, OPERATIONS, ENTRYPOINTS, COMPOSITION)
    ]
    assert not bad, "adapters point inward only:\n" + _breaking(bad)


def test_operations_never_import_entrypoints_or_composition() -> None:
    bad = [
        e
        for e in import_graph()
        if _in(e.source, OPERATIONS) and _in(e.target, ENTRYPOINTS, COMPOSITION)
    ]
    assert not bad, "operations take narrow ports, not the composition root:\n" + _breaking(bad)


def test_only_the_entry_side_imports_the_entry_points() -> None:
    bad = [
        e for e in import_graph() if _in(e.target, ENTRYPOINTS) and not _in(e.source, *ENTRY_SIDE)
    ]
    assert not bad, "nothing below the entry points imports them:\n" + _breaking(bad)


def test_the_product_never_imports_the_sandbox_or_the_bench() -> None:
    """Neither is deployed (.funcignore). The CLI alone may reach them, lazily (inside the
    function of the command that needs them), so `python -m work365_fn` runs without them."""
    bad = [
        e
        for e in import_graph()
        if _in(e.target, SANDBOX, BENCH)
        and not _in(e.source, SANDBOX, BENCH)
        and not (_in(e.source, CLI) and e.lazy)
    ]
    assert not bad, "the sandbox and the benchmark are not deployed:\n" + _breaking(bad)


# ---- (c) functions a reader can hold --------------------------------------------------------


def product_files(root: Path = ROOT) -> dict[str, Path]:
    return {m: p for m, p in module_files(root).items() if not _in(m, SANDBOX, BENCH)}


def long_functions(files: Mapping[str, Path]) -> list[tuple[str, int]]:
    """(module:qualified name (lines from the def line to the last), length) over the limit."""
    out = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for qualname, node in _functions(tree, ""):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                out.append((f"{module}:{qualname} (line {node.lineno})", lines))
    return sorted(out, key=lambda item: -item[1])


def _functions(
    node: ast.AST, prefix: str
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + child.name, child
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def test_the_size_check_counts_from_def_to_the_last_line(tmp_path: Path) -> None:
    def body(lines: int, indent: str) -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(lines))

    _write(
        tmp_path,
        {
            f"{PACKAGE}/__init__.py": "",
            f"{PACKAGE}/fits.py": "@staticmethod\ndef fits():\n" + body(59, "    "),
            f"{PACKAGE}/long.py": "class C:\n    def long(self):\n" + body(60, "        "),
        },
    )
    assert long_functions(module_files(tmp_path)) == [
        (f"{PACKAGE}.long:C.long (line 2)", MAX_FUNCTION_LINES + 1)
    ]


def test_no_product_function_is_longer_than_60_lines() -> None:
    found = long_functions(product_files())
    assert not found, f"{len(found)} function(s) over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(
        f"    {name}: {lines} lines" for name, lines in found
    )


@pytest.mark.parametrize("package", [SANDBOX, BENCH])
def test_the_size_check_leaves_out_what_is_not_deployed(package: str) -> None:
    assert all(not _in(module, package) for module in product_files())
