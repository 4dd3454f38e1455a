"""Several processes, one sandbox state file: the Dataverse emulator's conditional writes are
atomic across processes, as a real org's are ("perform conditional operations": the ETag is
checked and the row written as one operation). Each process runs its own sandbox (its own
server, emulator and SQLite connection) on the same `--state` file, as concurrent
`sync --sandbox --state FILE` runs do.

- The same `If-Match` ETags sent by every process at once, in a PATCH or in a `$batch` change set
  of two PATCHes: exactly one 2xx per round, the rest 412, and a change set lands whole or not at
  all.
- Three `sync --sandbox --state FILE --json` at once: each write is reported by exactly one run,
  and the rows end as one run alone leaves them.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from collections import Counter
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.conftest import ScenarioBuilder, gid
from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.runner import SANDBOX_CLIENT_ID
from work365_fn.sandbox.scenario import Scenario

PROCESSES = 4
RECORDS = (gid("rec", 1), gid("rec", 2))
SUBSCRIPTIONS = "work365_subscriptions"
TIMEOUT = 60
ROOT = Path(__file__).resolve().parents[2]

# What one process saw at the start of a round (ETag and name of each row) and the status of its
# write in that round.
Seen = tuple[tuple[str, str], ...]


def _changeset(urls: list[str], etags: list[str], name: str) -> tuple[str, bytes]:
    """A `$batch` of one change set: each row of `urls` renamed `name`, If-Match its ETag."""
    parts = ["--batch_x", "Content-Type: multipart/mixed; boundary=changeset_x", ""]
    for i, (url, etag) in enumerate(zip(urls, etags, strict=True), start=1):
        parts += ["--changeset_x", "Content-Type: application/http"]
        parts += ["Content-Transfer-Encoding: binary", f"Content-ID: {i}", ""]
        parts += [f"PATCH {url} HTTP/1.1", "Content-Type: application/json", f"If-Match: {etag}"]
        parts += ["", json.dumps({"work365_name": name})]
    parts += ["--changeset_x--", "--batch_x--", ""]
    return "multipart/mixed; boundary=batch_x", "\r\n".join(parts).encode()


def _racer(state: str, mode: str, rounds: int, barrier: Barrier, results: Any, n: int) -> None:
    """One process: its own sandbox on `state`. Each round: read the rows, wait for every other
    process to have read them too, then write with If-Match: the ETags read (`patch`: one PATCH
    of the first row; `changeset`: a `$batch` change set renaming both rows)."""
    log: list[tuple[Seen, int]] = []
    try:
        with Sandbox.start(Scenario.builtin("demo"), state_path=state) as box:
            token, _ = box.tokens.issue(box.url, SANDBOX_CLIENT_ID)
            session = requests.Session()
            session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify
            session.verify = box.ca_bundle
            session.headers["Authorization"] = f"Bearer {token}"
            api = f"{box.url}/api/data/v9.2"
            urls = [f"{api}/{SUBSCRIPTIONS}({record})" for record in RECORDS]
            for r in range(rounds):
                barrier.wait(TIMEOUT)  # the previous round's writes are all done
                rows = [session.get(url, timeout=TIMEOUT).json() for url in urls]
                seen = tuple((row["@odata.etag"], row["work365_name"]) for row in rows)
                barrier.wait(TIMEOUT)  # every process holds the same ETags
                name = f"process {n} round {r}"
                if mode == "patch":
                    answer = session.patch(
                        urls[0],
                        json={"work365_name": name},
                        headers={"If-Match": seen[0][0]},
                        timeout=TIMEOUT,
                    )
                else:
                    content_type, body = _changeset(urls, [etag for etag, _ in seen], name)
                    answer = session.post(
                        f"{api}/$batch",
                        data=body,
                        headers={"Content-Type": content_type},
                        timeout=TIMEOUT,
                    )
                log.append((seen, answer.status_code))
    except BaseException as exc:
        barrier.abort()
        results.put((n, repr(exc)))
        raise
    results.put((n, log))


def _race(state: Path, mode: str, rounds: int) -> dict[int, list[tuple[Seen, int]]]:
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(PROCESSES)
    results = spawn.Queue()
    racers = [
        spawn.Process(target=_racer, args=(str(state), mode, rounds, barrier, results, n))
        for n in range(PROCESSES)
    ]
    for p in racers:
        p.start()
    try:
        got = dict(results.get(timeout=TIMEOUT) for _ in racers)
    finally:
        for p in racers:
            p.join(timeout=TIMEOUT)
            if p.is_alive():
                p.kill()
    failed = {n: r for n, r in got.items() if isinstance(r, str)}
    assert not failed, failed
    return got


def _seeded(world: ScenarioBuilder, state: Path) -> Scenario:
    scenario = world.scenario()
    Sandbox.start(scenario, state_path=str(state)).stop()
    return scenario


def _names(state: Path) -> list[str]:
    with Sandbox.start(Scenario.builtin("demo"), state_path=str(state)) as box:
        by_id = {r["work365_subscriptionid"]: r for r in box.dataverse.rows(SUBSCRIPTIONS)}
    return [by_id[record]["work365_name"] for record in RECORDS]


@pytest.mark.parametrize(
    ("mode", "rounds", "won", "written"),
    [("patch", 40, 204, 1), ("changeset", 20, 200, 2)],
    ids=["patch", "changeset"],
)
def test_the_same_if_match_etags_from_several_processes_win_exactly_once(
    world: ScenarioBuilder, tmp_path: Path, mode: str, rounds: int, won: int, written: int
) -> None:
    """Exactly one process's write lands per round, the others answer 412 and write nothing: a
    change set lands whole (both rows) or not at all."""
    customer = world.customer(1, account_id=world.account(1))
    world.new_subscription(1, customer)
    world.new_subscription(2, customer)
    state = tmp_path / "state.sqlite"
    _seeded(world, state)

    got = _race(state, mode, rounds)

    winners: list[int] = []
    for r in range(rounds):
        answers = {n: got[n][r] for n in range(PROCESSES)}
        seen = {s for s, _ in answers.values()}
        assert len(seen) == 1, (r, answers)  # every process read the same ETags
        assert {status for _, status in answers.values()} <= {won, 412}, (r, answers)
        winners.append(next((n for n, (_, st) in answers.items() if st == won), -1))
        wins = sum(status == won for _, status in answers.values())
        if wins != 1:
            counts = Counter(sum(got[n][i][1] == won for n in got) for i in range(rounds))
            pytest.fail(f"round {r}: {wins} writes won; wins per round -> rounds {dict(counts)}")
        if r > 0:  # what the last round's winner wrote, and nothing of the losers'
            names = [name for _, name in seen.pop()][:written]
            assert names == [f"process {winners[r - 1]} round {r - 1}"] * written, (r, names)
    last = f"process {winners[-1]} round {rounds - 1}"
    assert _names(state)[:written] == [last] * written


def many_new_subscriptions(world: ScenarioBuilder) -> None:
    """30 customers with 6 new unassigned records each, and 2 subscriptions each with no record
    (create mode creates them on the default contract)."""
    for c in range(1, 31):
        customer = world.customer(c, account_id=world.account(c))
        for s in range(1, 7):
            world.new_subscription(c * 100 + s, customer)
        for s in range(7, 9):
            world.pc_subscription(c * 100 + s, customer)


# `python -m work365_fn ARGS`, except that the Nth Dataverse write request of each run waits
# (up to half a second) for the Nth of every other run: started as separate processes, the runs
# are ~100 ms apart (start-up) while a batch takes milliseconds, so without this meeting they
# rarely write the same record at the same moment and the test would prove little.
MEETING_RUNNER = """
import itertools, os, runpy, sys, time
sys.path.insert(0, os.getcwd())
import requests

meet, count = sys.argv[1], int(sys.argv[2])
del sys.argv[1:3]
send, writes = requests.Session.request, itertools.count()

def request(self, method, url, *args, **kwargs):
    if str(method).upper() in ("POST", "PATCH") and "/api/data/" in str(url):
        here = os.path.join(meet, str(next(writes)))
        os.makedirs(here, exist_ok=True)
        open(os.path.join(here, str(os.getpid())), "w").close()
        until = time.monotonic() + 0.5
        while len(os.listdir(here)) < count and time.monotonic() < until:
            time.sleep(0.0005)
    return send(self, method, url, *args, **kwargs)

requests.Session.request = request
sys.argv[0] = "work365_fn"
runpy.run_module("work365_fn", run_name="__main__", alter_sys=True)
"""


def _sync_processes(scenario: Path, state: Path, count: int) -> list[dict[str, Any]]:
    """`count` runs of `python -m work365_fn sync --sandbox --state STATE --json` at once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK365_")}
    env.update({"WORK365_CREATE_MISSING": "true", "WORK365_BATCH_SIZE": "20"})
    meet = state.parent / f"{state.stem}-meet"
    meet.mkdir()
    runner = state.parent / "meeting_runner.py"
    runner.write_text(MEETING_RUNNER, encoding="utf-8")
    argv = [sys.executable, str(runner), str(meet), str(count), "sync", "--sandbox"]
    argv += ["--scenario", str(scenario), "--state", str(state), "--json"]
    procs = [
        subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(count)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append((p.communicate(timeout=TIMEOUT), p.returncode))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for (_, err), code in outputs:
        assert code == 0, err[-3000:]
    return [json.loads(out) for (out, _), _ in outputs]


def _rows(state: Path) -> list[tuple[Any, ...]]:
    with Sandbox.start(Scenario.builtin("demo"), state_path=str(state)) as box:
        return sorted(
            (
                r["work365_subscriptionid"],
                r["work365_providersubscriptionid"],
                r["_work365_account_value"],
                r["_work365_billingcontract_value"],
            )
            for r in box.dataverse.rows(SUBSCRIPTIONS)
        )


def _writes(summary: dict[str, Any]) -> list[str]:
    """The subscriptions this run says it wrote (assigned or created, without error)."""
    return [
        row["subscriptionId"]
        for row in summary["subscriptions"]
        if row["action"] in ("assign", "create") and row["reason"] == "default-contract"
    ]


def test_three_concurrent_cli_syncs_on_one_state_file_report_each_write_once(
    world: ScenarioBuilder, tmp_path: Path
) -> None:
    many_new_subscriptions(world)
    scenario_file = tmp_path / "many.json"
    scenario_file.write_text(json.dumps(world.raw), encoding="utf-8")
    alone, shared = tmp_path / "alone.sqlite", tmp_path / "shared.sqlite"
    _seeded(world, alone)
    _seeded(world, shared)

    [single] = _sync_processes(scenario_file, alone, 1)
    runs = _sync_processes(scenario_file, shared, 3)

    expected = _writes(single)
    assert len(expected) == 30 * 8 and single["counts"]["created"] == 60
    assert all(run["status"] == "succeeded" and not run["errors"] for run in runs), [
        (run["status"], run["errors"][:3]) for run in runs
    ]
    reported = Counter(sub for run in runs for sub in _writes(run))
    twice = sorted(sub for sub, n in reported.items() if n > 1)
    assert not twice, f"{len(twice)} writes reported by more than one run: {twice[:5]}"
    assert sorted(reported) == sorted(expected)
    assert sum(run["counts"]["created"] for run in runs) == single["counts"]["created"]
    assert sum(run["counts"]["assigned"] for run in runs) == single["counts"]["assigned"]
    assert _rows(shared) == _rows(alone)
