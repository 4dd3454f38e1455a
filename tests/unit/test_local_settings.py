"""Every missing setting in one error, and the `Values` of a local.settings.json under the
environment (`--settings FILE`), as Azure Functions Core Tools reads that file for `func start`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from work365_fn.errors import ConfigError, MissingSettingError
from work365_fn.settings import MissingSettingsError, Settings, read_local_settings

TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "66666666-7777-8888-9999-000000000000"
COMPLETE = {
    "WORK365_TENANT_ID": TENANT,
    "WORK365_CLIENT_ID": CLIENT,
    "WORK365_CLIENT_SECRET": "secret-value",
    "WORK365_DATAVERSE_URL": "https://contoso.crm.dynamics.com",
}


def test_every_missing_setting_is_in_one_error() -> None:
    with pytest.raises(MissingSettingsError) as caught:
        Settings.from_env({})

    assert [m.key for m in caught.value.missing] == list(COMPLETE)
    assert str(caught.value).startswith(f"{len(COMPLETE)} settings are not set: ")
    assert all(key in str(caught.value) for key in COMPLETE)


def test_one_missing_setting_keeps_its_own_message() -> None:
    partial = {k: v for k, v in COMPLETE.items() if k != "WORK365_CLIENT_ID"}

    with pytest.raises(MissingSettingError) as caught:
        Settings.from_env(partial)

    assert type(caught.value) is MissingSettingError
    assert str(caught.value).startswith("WORK365_CLIENT_ID is not set: expected a GUID")


def test_a_malformed_setting_is_still_reported_as_such() -> None:
    with pytest.raises(ConfigError, match="WORK365_TENANT_ID is malformed"):
        Settings.from_env({"WORK365_TENANT_ID": "not-a-guid"})


def test_file_values_fill_in_what_the_environment_leaves_unset_or_empty() -> None:
    environment = {**COMPLETE, "WORK365_BATCH_SIZE": "", "WORK365_CONCURRENCY": "4"}
    file_values = {
        "WORK365_BATCH_SIZE": "25",
        "WORK365_CONCURRENCY": "2",
        "WORK365_PC_PAGE_SIZE": "9",
    }

    s = Settings.from_env(environment, defaults=file_values)

    assert s.batch_size == 25  # empty in the environment: the file's (Core Tools: IsNullOrEmpty)
    assert s.concurrency == 4  # the environment wins
    assert s.customer_page_size == 9  # only in the file


def test_overrides_win_over_the_file_and_the_environment() -> None:
    s = Settings.from_env(
        {**COMPLETE, "WORK365_BATCH_SIZE": "3"},
        defaults={"WORK365_BATCH_SIZE": "4"},
        overrides={"WORK365_BATCH_SIZE": "5"},
    )

    assert s.batch_size == 5


def test_the_values_of_a_local_settings_file_are_read(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    document = {"IsEncrypted": False, "Values": COMPLETE, "Host": {"LocalHttpPort": 7071}}
    path.write_text(json.dumps(document), encoding="utf-8")

    assert read_local_settings(str(path)) == COMPLETE
    assert Settings.from_env({}, defaults=read_local_settings(str(path))).batch_size == 100


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\xef\xbb\xbf{}", "byte order mark"),
        (b'{"Values": {}, "Values": {}}', "appears twice"),
        (b"[]", 'an object with "Values"'),
        (b'{"Values": []}', 'an object with "Values"'),
        (b'{"IsEncrypted": true, "Values": {"A": "x"}}', "func settings decrypt"),
        (b'{"Values": {"WORK365_CLIENT_SECRET": 12345678}}', "must be a string"),
    ],
)
def test_a_bad_local_settings_file_is_a_config_error(
    tmp_path: Path, content: bytes, says: str
) -> None:
    path = tmp_path / "local.settings.json"
    path.write_bytes(content)

    with pytest.raises(ConfigError) as caught:
        read_local_settings(str(path))

    assert says in str(caught.value)
    assert str(path) in str(caught.value)
    assert "12345678" not in str(caught.value)  # a value is never echoed


def test_a_missing_local_settings_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        read_local_settings(str(tmp_path / "absent.json"))
