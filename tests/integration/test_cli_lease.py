"""The CLI and the full-sync lease: without app storage it runs unleased and says so once."""

from __future__ import annotations

import io
import os

import pytest

from tests.azurite import StorageNames
from work365_fn.adapters.storage import AppStorage
from work365_fn.entrypoints.cli.main import main

NO_LEASE = (
    "no app storage configured: running without the full-sync lease; "
    "conditional writes keep concurrent runs safe"
)
HOLDER = "9f1d2c3b-4a5e-4f60-8172-93a4b5c6d7e8"
CUSTOMER = "c0000001-0000-4000-8000-000000000001"  # demo: Contoso


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("WORK365_", "AzureWebJobsStorage")):
            monkeypatch.delenv(key)


def run(*argv: str) -> int:
    return main(list(argv), out=io.StringIO())


def test_a_laptop_sync_without_storage_runs_without_the_lease_and_says_so_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run("sync", "--sandbox") == 0
    err = capsys.readouterr().err
    assert err.count(NO_LEASE) == 1
    assert "took lease" not in err


def test_a_scoped_sync_needs_no_lease(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("sync", "--sandbox", "--customer", CUSTOMER) == 0
    assert NO_LEASE not in capsys.readouterr().err


def test_with_app_storage_the_cli_takes_the_lease_or_says_who_holds_it(
    storage: StorageNames, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in storage.settings.items():
        monkeypatch.setenv(key, value)
    apps = AppStorage(
        storage.azurite.connection_string, container=storage.container, queue=storage.queue
    )
    with apps.lease(HOLDER, renew_every=0):
        assert run("sync", "--sandbox") == 1
        assert f"sync already running (run {HOLDER}): not started" in capsys.readouterr().err

    assert run("sync", "--sandbox") == 0
    err = capsys.readouterr().err
    assert "took lease locks/full-sync" in err
    assert "released lease locks/full-sync" in err
    assert NO_LEASE not in err
