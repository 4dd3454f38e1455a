"""The app-storage settings: WORK365_STORAGE (or AzureWebJobsStorage), the signing key, names."""

from __future__ import annotations

import pytest

from work365_fn.errors import InvalidSettingError
from work365_fn.settings import Settings

BASE = {
    "WORK365_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "WORK365_CLIENT_ID": "00001111-aaaa-2222-bbbb-3333cccc4444",
    "WORK365_CLIENT_SECRET": "Abc8Q~s3cr3t-value-never-shown",
    "WORK365_DATAVERSE_URL": "https://contoso.crm.dynamics.com",
}
KEY = "Zm9vYmFyYmF6cXV4LXNlY3JldC1hY2NvdW50LWtleS12YWx1ZQ=="
CONNECTION = (
    f"DefaultEndpointsProtocol=https;AccountName=work365app;AccountKey={KEY};"
    "EndpointSuffix=core.windows.net"
)
SIGNING = "a-signing-key-of-forty-characters-000000"


def settings(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def test_without_storage_settings_there_is_no_app_storage() -> None:
    s = settings()
    assert s.storage_connection is None
    assert s.run_signing_key is None
    assert (s.jobs_queue, s.runs_container) == ("work365-jobs", "work365-runs")


def test_the_function_apps_own_storage_is_the_fallback() -> None:
    s = settings(AzureWebJobsStorage=CONNECTION)
    assert (s.storage_connection, s.storage_setting) == (CONNECTION, "AzureWebJobsStorage")


def test_work365_storage_wins_over_azure_web_jobs_storage() -> None:
    other = CONNECTION.replace("work365app", "other")
    s = settings(WORK365_STORAGE=CONNECTION, AzureWebJobsStorage=other)
    assert (s.storage_connection, s.storage_setting) == (CONNECTION, "WORK365_STORAGE")


@pytest.mark.parametrize("value", ["UseDevelopmentStorage=true", "usedevelopmentstorage=True;"])
def test_development_storage_means_azurite_on_its_default_ports(value: str) -> None:
    assert settings(AzureWebJobsStorage=value).storage_connection == "UseDevelopmentStorage=true"


@pytest.mark.parametrize(
    "value",
    [
        "just-a-key-" + KEY,
        "AccountName=work365app",
        f"AccountName=work365app;AccountKey={KEY};broken",
        "UseDevelopmentStorage=false",
    ],
)
def test_a_malformed_connection_string_names_the_key_not_the_value(value: str) -> None:
    with pytest.raises(InvalidSettingError) as caught:
        settings(WORK365_STORAGE=value)
    assert caught.value.key == "WORK365_STORAGE"
    assert KEY not in str(caught.value)


def test_a_sas_connection_string_is_accepted() -> None:
    sas = "BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=sv=2024&sig=x"
    assert settings(WORK365_STORAGE=sas).storage_connection == sas


def test_the_signing_key_must_be_long_enough() -> None:
    assert settings(WORK365_RUN_SIGNING_KEY=SIGNING).run_signing_key == SIGNING
    with pytest.raises(InvalidSettingError) as caught:
        settings(WORK365_RUN_SIGNING_KEY="short-key")
    assert caught.value.key == "WORK365_RUN_SIGNING_KEY"
    assert "short-key" not in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("WORK365_JOBS_QUEUE", "Work365-Jobs"),
        ("WORK365_JOBS_QUEUE", "a--b"),
        ("WORK365_JOBS_QUEUE", "x" * 57),  # "<queue>-poison" would pass 63 characters
        ("WORK365_RUNS_CONTAINER", "ab"),
        ("WORK365_RUNS_CONTAINER", "runs_"),
    ],
)
def test_queue_and_container_names_follow_azure_rules(key: str, value: str) -> None:
    with pytest.raises(InvalidSettingError) as caught:
        settings(**{key: value})
    assert caught.value.key == key


def test_storage_secrets_never_show_in_repr() -> None:
    s = settings(WORK365_STORAGE=CONNECTION, WORK365_RUN_SIGNING_KEY=SIGNING)
    assert KEY not in repr(s)
    assert SIGNING not in repr(s)
