"""scripts/package: the deployment zip holds the product and nothing else, and it imports alone."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASH = shutil.which("bash") or "/bin/bash"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
NEVER_DEPLOYED = (
    "work365_fn/sandbox/",
    "work365_fn/bench/",
    "tests/",
    "scripts/",
    "docs/",
    "node_modules/",
    ".venv/",
)


def load_packager() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "package_zip", ROOT / "scripts" / "package_zip.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


packager = load_packager()


@pytest.fixture(scope="module")
def app_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package") / "app.zip"
    done = subprocess.run(
        [BASH, "scripts/package", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    return out


def product_modules() -> set[str]:
    """Every .py under work365_fn/ except the sandbox and the bench, from the tree itself."""
    package = ROOT / "work365_fn"
    return {
        path.relative_to(ROOT).as_posix()
        for path in package.rglob("*.py")
        if "__pycache__" not in path.parts
        and path.relative_to(package).parts[0] not in ("sandbox", "bench")
    }


def test_the_zip_holds_the_product_and_nothing_else(app_zip: Path) -> None:
    with zipfile.ZipFile(app_zip) as zf:
        names = zf.namelist()
    assert names == sorted(names)
    assert len(names) == len(set(names))
    wanted = {"function_app.py", "host.json", "requirements.txt", "work365_fn/__init__.py"}
    assert wanted | product_modules() <= set(names)
    for name in names:
        assert not name.startswith(NEVER_DEPLOYED), name
        assert "__pycache__" not in name.split("/"), name
        assert not name.endswith(".pyc"), name
        assert not Path(name).name.startswith("local.settings"), name
        assert not name.endswith(".zip"), name


def test_the_zip_is_reproducible(app_zip: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.zip"
    assert packager.main(["--root", str(ROOT), str(again)]) == 0
    assert again.read_bytes() == app_zip.read_bytes()
    with zipfile.ZipFile(again) as zf:
        assert {info.date_time for info in zf.infolist()} == {packager.FIXED_TIME}


def test_the_unzipped_app_imports_without_sandbox_or_bench(app_zip: Path, tmp_path: Path) -> None:
    python = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
    probe = (
        "import sys, function_app, work365_fn; "
        "assert not [m for m in sys.modules if m.startswith(('work365_fn.sandbox', "
        "'work365_fn.bench'))]; "
        "print(function_app.__file__); print(work365_fn.__file__); "
        "print(len(function_app.app.get_functions()))"
    )

    def registrations(folder: Path) -> list[str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(folder),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        done = subprocess.run(
            [str(python), "-c", probe],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    app = tmp_path / "app"
    with zipfile.ZipFile(app_zip) as zf:
        zf.extractall(app)
    app_file, package_file, count = registrations(app)
    assert Path(app_file).parent == app
    assert Path(package_file).is_relative_to(app)
    assert int(count) > 0
    assert count == registrations(ROOT)[2]  # the same functions as the source tree registers


@pytest.mark.parametrize(
    ("lines", "path", "is_dir", "ignored"),
    [
        (["tests"], "tests", True, True),
        (["tests"], "a/b/tests", True, True),
        (["tests"], "tests", False, True),
        (["tests/"], "tests", False, False),  # trailing slash: directories only
        (["/docs/"], "docs", True, True),
        (["/docs/"], "a/docs", True, False),  # leading slash: anchored at the root
        (["work365_fn/bench/"], "work365_fn/bench", True, True),
        (["work365_fn/bench/"], "x/work365_fn/bench", True, False),  # middle slash: anchored
        (["*.pyc"], "work365_fn/rules/model.pyc", False, True),
        (["*.pyc"], "work365_fn/rules/model.py", False, False),
        (["*.sqlite*"], "state/demo.sqlite-wal", False, True),
        (["a/*.py"], "a/b/c.py", False, False),  # `*` does not cross `/`
        (["a/**/c.py"], "a/c.py", False, True),
        (["a/**/c.py"], "a/b/b2/c.py", False, True),
        (["**/cache"], "x/y/cache", True, True),
        (["a/**"], "a/b/c", False, True),
        (["a/**"], "a", True, False),
        (["file?.txt"], "file1.txt", False, True),
        (["file[0-9].txt"], "file7.txt", False, True),
        (["file[!0-9].txt"], "file7.txt", False, False),
        (["*.md", "!KEEP.md"], "docs/KEEP.md", False, False),  # negation re-includes
        (["!KEEP.md", "*.md"], "KEEP.md", False, True),  # the last matching line wins
        (["# comment", "", "\\#hash"], "#hash", False, True),
        (["\\!bang"], "!bang", False, True),
        (["trailing   "], "trailing", False, True),
        (["__azurite_db*__.json"], "__azurite_db_queue__.json", False, True),
    ],
)
def test_funcignore_patterns(lines: list[str], path: str, is_dir: bool, ignored: bool) -> None:
    assert packager.Ignore(lines).ignored(path, is_dir=is_dir) is ignored


def test_an_excluded_folder_cannot_be_re_included(tmp_path: Path) -> None:
    (tmp_path / "build" / "keep").mkdir(parents=True)
    (tmp_path / "build" / "keep" / "a.py").write_text("")
    (tmp_path / "b.py").write_text("")
    ignore = packager.Ignore(["build/", "!build/keep/"])
    assert packager.collect(tmp_path, ignore) == ["b.py"]


def make_tree(root: Path, funcignore: str, extra: list[str]) -> None:
    for name in ["function_app.py", "host.json", "requirements.txt", *extra]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    (root / ".funcignore").write_text(funcignore)


@pytest.mark.parametrize(
    "leaked",
    ["work365_fn/sandbox/token.py", "work365_fn/bench/benchmark.py", "local.settings.json"],
)
def test_it_refuses_to_package_the_sandbox_the_bench_or_secrets(
    leaked: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_tree(tmp_path, "", ["work365_fn/__init__.py", leaked])
    out = tmp_path / "dist" / "app.zip"
    assert packager.main(["--root", str(tmp_path), str(out)]) == 2
    assert leaked in capsys.readouterr().err
    assert not (tmp_path / "dist").exists()  # refused before anything is written


def test_it_refuses_a_package_without_the_function_app(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_tree(tmp_path, "/function_app.py\n", [])
    assert packager.main(["--root", str(tmp_path), str(tmp_path / "app.zip")]) == 2
    assert "function_app.py missing" in capsys.readouterr().err


def test_a_previous_zip_in_the_tree_is_not_packed(tmp_path: Path) -> None:
    make_tree(tmp_path, "", [])
    out = tmp_path / "app.zip"
    assert packager.main(["--root", str(tmp_path), str(out)]) == 0
    assert packager.main(["--root", str(tmp_path), str(out)]) == 0
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == [".funcignore", "function_app.py", "host.json", "requirements.txt"]
