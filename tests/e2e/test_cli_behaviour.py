"""A CLI that behaves (issue 13, section 3): every everyday mistake or interruption ends with one
clear line on stderr and the documented exit code (docs/cli.md#exit-codes), never a traceback.

Each test runs the real entry point, `python -m work365_fn`, in a subprocess with a clean
environment (no WORK365_ setting of the machine) and, where paths matter, in a temporary folder
outside the repository."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from work365_fn.entrypoints.cli.main import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE
from work365_fn.sandbox.scenario import builtin_names
from work365_fn.settings import MissingSettingsError, Settings

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "work365_fn" / "sandbox" / "scenarios"
TIMEOUT = 120


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    def one_line(self) -> str:
        """The only line on stderr, after checking there is exactly one and no traceback."""
        assert "Traceback" not in self.err + self.out, self.err
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        return lines[0]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **(extra or {})}


def cli(*argv: str, cwd: Path, env: Mapping[str, str] | None = None) -> Ran:
    done = subprocess.run(
        [sys.executable, "-m", "work365_fn", *argv],
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def here(tmp_path: Path) -> Path:
    """The caller's folder: a temporary one, outside the repository."""
    return tmp_path


def scenario_file(folder: Path, name: str, builtin: str, **changes: Any) -> Path:
    data = json.loads((SCENARIOS / f"{builtin}.json").read_text(encoding="utf-8"))
    data.update(changes)
    path = folder / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# ---- output into a pipe the reader closed --------------------------------------------------------


@pytest.mark.parametrize("output", [[], ["--json"]])
def test_output_into_a_closed_pipe_ends_quietly_with_141(here: Path, output: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`| head -2`) has gone before the first line is written
    try:
        done = subprocess.run(
            [sys.executable, "-m", "work365_fn", "-q", "sync", "--sandbox", *output],
            cwd=here,
            env=clean_env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    finally:
        os.close(write_end)

    assert done.returncode == EXIT_BROKEN_PIPE
    assert done.stderr == ""  # quietly: no BrokenPipeError, no "Exception ignored"


# ---- sandbox serve --port ------------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def test_a_busy_port_is_named(here: Path, busy_port: int) -> None:
    ran = cli("sandbox", "serve", "--port", str(busy_port), cwd=here)

    assert ran.code == EXIT_USAGE
    assert ran.one_line().startswith(f"usage error: port {busy_port} is in use")
    assert ran.out == ""  # nothing was served, no settings printed


@pytest.mark.parametrize("port", ["65536", "70000", "-1", "eighty"])
def test_a_port_out_of_range_is_a_usage_error(here: Path, port: str) -> None:
    ran = cli("sandbox", "serve", "--port", port, cwd=here)

    assert ran.code == EXIT_USAGE
    assert "port must be 1-65535" in ran.one_line()


# ---- --scenario with an existing --state ---------------------------------------------------------


def test_another_scenario_for_an_existing_state_is_refused(here: Path) -> None:
    seeded = cli("-q", "sync", "--sandbox", "--scenario", "setting-off", "--state", "s.sqlite",
                 cwd=here)  # fmt: skip
    assert seeded.code == 0, seeded.err
    before = (here / "s.sqlite").read_bytes()

    ran = cli("sync", "--sandbox", "--scenario", "demo", "--state", "s.sqlite", cwd=here)

    assert ran.code == EXIT_USAGE
    line = ran.one_line()
    assert "--state s.sqlite already holds a scenario (seeded from built-in:setting-off)" in line
    assert "drop --scenario" in line
    assert (here / "s.sqlite").read_bytes() == before  # refused before anything ran


def test_the_scenario_a_state_was_seeded_with_may_be_given_again(here: Path) -> None:
    mine = scenario_file(here, "mine.json", "setting-off")
    for _ in range(2):  # the same command twice: the second reuses the state
        ran = cli("-q", "sync", "--sandbox", "--scenario", mine.name, "--state", "s.sqlite",
                  "--json", cwd=here)  # fmt: skip
        assert ran.code == 0, ran.err
    assert json.loads(ran.out)["counts"]["assigned"] == 0  # the first run changed nothing


# ---- relative paths are the caller's -------------------------------------------------------------


def test_the_demo_script_reads_relative_paths_from_the_callers_folder(here: Path) -> None:
    mine = scenario_file(here, "mine.json", "setting-off")
    setting_on = json.loads(mine.read_text(encoding="utf-8"))["settings"][
        "associateDefaultBillingContract"
    ]

    bash = shutil.which("bash")
    assert bash is not None
    demo = [bash, str(ROOT / "scripts" / "demo"), "--scenario", "mine.json"]

    done = subprocess.run(
        [*demo, "--state", "demo.sqlite", "--json", "-q"],
        cwd=here,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    summary = json.loads(done.stdout)
    assert summary["setting"]["associateDefaultBillingContract"] is setting_on
    assert (here / "demo.sqlite").is_file()  # beside the caller, not in the repository
    assert not (ROOT / "demo.sqlite").exists()


# ---- the undo hint after backfill --apply --------------------------------------------------------


def test_the_undo_hint_is_a_command_that_undoes_the_backfill(here: Path) -> None:
    applied = cli("-q", "backfill", "--sandbox", "--state", "my state.sqlite", "--apply",
                  cwd=here)  # fmt: skip
    assert applied.code == 0, applied.err
    [hint] = [line for line in applied.out.splitlines() if line.startswith("to undo: ")]
    command = shlex.split(hint.removeprefix("to undo: "))
    assert command[:3] == ["python", "-m", "work365_fn"]
    assert command[-3:] == ["--sandbox", "--state", "my state.sqlite"]

    undone = cli("-q", *command[3:], "--json", cwd=here)

    assert undone.code == 0, undone.err
    result = json.loads(undone.out)
    assert result["kind"] == "undo"
    assert result["items"]
    assert {item["result"] for item in result["items"]} == {"cleared"}


def test_a_throwaway_sandbox_says_how_to_keep_the_data_for_an_undo(here: Path) -> None:
    applied = cli("-q", "backfill", "--sandbox", "--apply", cwd=here)

    assert applied.code == 0, applied.err
    assert "python -m work365_fn backfill --undo" not in applied.out
    assert "to undo later, run with --state FILE" in applied.out


# ---- scenarios -----------------------------------------------------------------------------------


def test_an_unknown_builtin_scenario_lists_the_valid_ones(here: Path) -> None:
    ran = cli("sync", "--sandbox", "--scenario", "demoo", cwd=here)

    assert ran.code == EXIT_USAGE
    line = ran.one_line()
    assert "no built-in scenario named 'demoo'" in line
    assert all(name in line for name in builtin_names())


def test_a_scenario_file_that_is_not_json_is_named(here: Path) -> None:
    (here / "mine.json").write_text("scenario: demo\n", encoding="utf-8")

    ran = cli("sync", "--sandbox", "--scenario", "mine.json", cwd=here)

    assert ran.code == EXIT_USAGE
    assert "scenario mine.json is not valid JSON: line 1 column 1" in ran.one_line()


def test_an_unreadable_state_file_is_named(here: Path) -> None:
    (here / "state").mkdir()  # a folder where the state file should be

    ran = cli("sync", "--sandbox", "--state", "state", cwd=here)

    assert ran.code == EXIT_USAGE
    assert "is not a sandbox state file (or cannot be read)" in ran.one_line()


# ---- files the CLI writes: checked before anything is read ---------------------------------------

RUN = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["report", "--sandbox", "--html", "afile/x.html"], "--html afile/x.html: afile is a file"),
        (["report", "--sandbox", "--csv", "afile/x.csv"], "--csv afile/x.csv: afile is a file"),
        (["report", "--sandbox", "--html", "adir"], "--html adir is a folder"),
        (["report", "--sandbox", "--csv", "adir"], "--csv adir is a folder"),
        (["report", "--sandbox", "--html", "/proc/x.html"], "--html /proc/x.html: cannot write"),
        (["report", "--sandbox", "--csv", ""], "--csv needs a file name"),
        (["sync", "--sandbox", "--state", "afile/s.sqlite"], "--state afile/s.sqlite: afile is a"),
        (["sandbox", "serve", "--state", "afile/s.sqlite"], "--state afile/s.sqlite: afile is a"),
        (["undo", RUN, "--sandbox", "--state", "afile/s.sqlite"], "--state afile/s.sqlite: afile"),
        (["check-schema", "--sandbox", "--settings", ""], "--settings needs a file name"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_the_read(
    here: Path, argv: list[str], says: str
) -> None:
    if argv[-1].startswith("/proc/") and not Path("/proc").is_dir():
        pytest.skip("no /proc here")
    (here / "afile").write_text("", encoding="utf-8")
    (here / "adir").mkdir()

    ran = cli(*argv, cwd=here)  # not -q: a started sandbox would log a second line

    assert ran.code == EXIT_USAGE
    line = ran.one_line()
    assert line.startswith("usage error: ")
    assert says in line
    assert ran.out == ""
    assert sorted(p.name for p in here.iterdir()) == ["adir", "afile"]  # nothing written


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "--sandbox", "--html", "missing/x.html"],
        ["report", "--sandbox", "--csv", "missing/x.csv"],
        ["sync", "--sandbox", "--state", "missing/s.sqlite"],
        ["sandbox", "serve", "--state", "missing/s.sqlite"],
    ],
)
def test_a_missing_folder_is_refused_never_created(here: Path, argv: list[str]) -> None:
    ran = cli(*argv, cwd=here)

    assert ran.code == EXIT_USAGE
    assert "the folder missing does not exist" in ran.one_line()
    assert not (here / "missing").exists()


def test_the_report_files_are_written_whole_into_an_existing_folder(here: Path) -> None:
    (here / "out").mkdir()
    (here / "out" / "report.csv").write_text("old", encoding="utf-8")

    page = cli("-q", "report", "--sandbox", "--html", "out/report.html", cwd=here)
    rows = cli("-q", "report", "--sandbox", "--csv", "out/report.csv", cwd=here)

    assert (page.code, rows.code) == (0, 0), page.err + rows.err
    assert (here / "out" / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE")
    assert (here / "out" / "report.csv").read_text(encoding="utf-8").startswith('"kind",')
    assert sorted(p.name for p in (here / "out").iterdir()) == ["report.csv", "report.html"]


# ---- usage ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["frob"], "invalid choice: 'frob'"),
        (["sync", "--frob"], "unrecognized arguments: --frob"),
        (["sync", "--mode", "weekly"], "argument --mode: invalid choice: 'weekly'"),
    ],
)
def test_a_usage_error_is_one_line_pointing_at_the_help(
    here: Path, argv: list[str], says: str
) -> None:
    ran = cli(*argv, cwd=here)

    assert ran.code == EXIT_USAGE
    line = ran.one_line()
    assert line.startswith("usage error: ")
    assert says in line
    assert line.endswith("--help)")


@pytest.mark.parametrize(
    ("argv", "debug"),
    [
        (["-q", "sync", "--sandbox"], False),
        (["sync", "--sandbox", "-q"], False),
        (["sync", "-q", "--sandbox"], False),
        (["sync", "--sandbox", "--verbose"], True),
        (["-v", "sync", "--sandbox"], True),  # a command's own default never undoes it
    ],
)
def test_quiet_and_verbose_go_before_or_after_the_command(
    here: Path, argv: list[str], debug: bool
) -> None:
    ran = cli(*argv, "--dry-run", cwd=here)

    assert ran.code == 0, ran.err
    assert "Traceback" not in ran.err
    assert (" DEBUG " in ran.err) is debug
    if "-q" in argv:
        assert " INFO " not in ran.err


# ---- settings: every missing one at once, and --settings FILE ------------------------------------


def required_settings() -> list[str]:
    """The settings a fresh environment lacks, as Settings itself reports them."""
    with pytest.raises(MissingSettingsError) as caught:
        Settings.from_env({})
    return [missing.key for missing in caught.value.missing]


def test_missing_settings_are_all_listed_in_one_line_with_how_to_set_them(here: Path) -> None:
    ran = cli("sync", cwd=here)

    assert ran.code == EXIT_USAGE
    line = ran.one_line()
    assert all(key in line for key in required_settings())
    assert "set them in the environment, or in --settings local.settings.json" in line


def test_settings_file_values_fill_what_the_environment_leaves_unset(here: Path) -> None:
    first, *others = required_settings()
    values = {key: "5a4f0e1c-8b2d-4c3e-9f6a-7b8c9d0e1f2a" for key in others}
    values.update({k: "https://contoso.crm.dynamics.com" for k in others if k.endswith("_URL")})
    values.update({k: "s3cr3t-in-file" for k in others if k.endswith("_SECRET")})
    (here / "local.settings.json").write_text(
        json.dumps({"IsEncrypted": False, "Values": values}), encoding="utf-8"
    )

    ran = cli("check-schema", "--settings", "local.settings.json", cwd=here)

    assert ran.code == EXIT_USAGE
    line = ran.one_line()
    assert line.startswith(f"configuration error: {first} is not set")
    assert not any(key in line for key in others)  # the file supplied them
    assert "the Values of local.settings.json" in line
    assert "s3cr3t-in-file" not in line


def test_the_environment_wins_over_the_settings_file_as_in_core_tools(here: Path) -> None:
    (here / "local.settings.json").write_text(
        json.dumps({"Values": {"WORK365_CREATE_MISSING": "true", "WORK365_BATCH_SIZE": "7"}}),
        encoding="utf-8",
    )
    argv = ("-q", "sync", "--sandbox", "--dry-run", "--json", "--settings", "local.settings.json")

    from_file = json.loads(cli(*argv, cwd=here).out)
    overridden = json.loads(cli(*argv, cwd=here, env={"WORK365_CREATE_MISSING": "false"}).out)

    creates = [r for r in from_file["subscriptions"] if r["action"] == "create"]
    assert creates  # create mode came from the file
    assert not [r for r in overridden["subscriptions"] if r["action"] == "create"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "--settings local.settings.json: cannot read it (No such file or directory)"),
        ("{'Values': {}}", "--settings local.settings.json is not valid JSON: line 1 column 2"),
        ('{"values": {}}', 'expected a local.settings.json, an object with "Values"'),
        ('{"IsEncrypted": true, "Values": {}}', "run `func settings decrypt` first"),
        ('{"Values": {"WORK365_CLIENT_SECRET": ["s3cr3t"]}}', "Values.WORK365_CLIENT_SECRET must"),
    ],
)
def test_a_bad_settings_file_is_named(here: Path, content: str | None, says: str) -> None:
    if content is not None:
        (here / "local.settings.json").write_text(content, encoding="utf-8")

    ran = cli("sync", "--settings", "local.settings.json", cwd=here)

    assert ran.code == EXIT_USAGE
    line = ran.one_line()
    assert says in line
    assert "s3cr3t" not in line


# ---- Ctrl-C --------------------------------------------------------------------------------------


def test_ctrl_c_stops_with_130_and_one_line(here: Path) -> None:
    slow = [{"service": "partnerCenter", "kind": "slow", "delayMs": 60000, "times": 1000}]
    scenario_file(here, "slow.json", "demo", faults=slow)
    process = subprocess.Popen(
        [sys.executable, "-m", "work365_fn", "sync", "--sandbox", "--scenario", "slow.json"],
        cwd=here, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        seen: list[str] = []
        while not any("setting: associate default billing contract" in s for s in seen):
            line = process.stderr.readline()  # the sync is now waiting on Partner Center
            assert line, "".join(seen)
            seen.append(line)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == EXIT_INTERRUPTED
    assert "Traceback" not in err + out
    assert err.strip().splitlines()[-1] == "interrupted"
