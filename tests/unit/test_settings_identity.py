"""Settings of the secretless modes: Dataverse with the managed identity, Partner Center with a
federated credential, the app's storage by identity (docs/identity.md)."""

from __future__ import annotations

import pytest

from work365_fn.errors import InvalidSettingError, MissingSettingError
from work365_fn.settings import Credential, Settings, StorageIdentity

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "00001111-aaaa-2222-bbbb-3333cccc4444"
IDENTITY = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
SECRET = "Abc8Q~s3cr3t-value-never-shown"
HEADER = "identity-header-value-never-shown"
BASE = {
    "WORK365_TENANT_ID": TENANT,
    "WORK365_CLIENT_ID": CLIENT,
    "WORK365_DATAVERSE_URL": "https://contoso.crm.dynamics.com",
}
AZURE = {"IDENTITY_ENDPOINT": "http://localhost:8081/msi/token", "IDENTITY_HEADER": HEADER}
SECRETLESS = {
    **BASE,
    **AZURE,
    "WORK365_DATAVERSE_AUTH": "managed-identity",
    "WORK365_PC_AUTH": "federated",
    "WORK365_MANAGED_IDENTITY_CLIENT_ID": IDENTITY,
}


def without(env: dict[str, str], *keys: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in keys}


def test_the_default_is_the_app_registrations_secret() -> None:
    s = Settings.from_env({**BASE, "WORK365_CLIENT_SECRET": SECRET})
    assert s.dataverse_credential == Credential(TENANT, CLIENT, secret=SECRET)
    assert not s.partner_center_credential.federated
    assert s.managed_identity_client_id is None
    assert s.storage_identity is None


def test_managed_identity_and_federated_need_no_secret_at_all() -> None:
    s = Settings.from_env(SECRETLESS)
    assert s.dataverse_credential is None
    assert s.partner_center_credential == Credential(TENANT, CLIENT, federated=True)
    assert s.managed_identity_client_id == IDENTITY
    assert "federated" in repr(s.partner_center_credential)
    assert HEADER not in repr(s)


def test_federated_uses_the_partner_center_app_registration_when_there_is_one() -> None:
    pc_tenant = "11111111-2222-4333-8444-555555555555"
    pc_client = "66666666-7777-4888-8999-aaaaaaaaaaaa"
    s = Settings.from_env(
        {**SECRETLESS, "WORK365_PC_TENANT_ID": pc_tenant, "WORK365_PC_CLIENT_ID": pc_client}
    )
    assert s.partner_center_credential == Credential(pc_tenant, pc_client, federated=True)


def test_dataverse_by_identity_and_partner_center_by_the_shared_secret() -> None:
    env = {**without(SECRETLESS, "WORK365_PC_AUTH"), "WORK365_CLIENT_SECRET": SECRET}
    s = Settings.from_env(env)
    assert s.dataverse_credential is None
    assert s.partner_center_credential == Credential(TENANT, CLIENT, secret=SECRET)


def test_dataverse_by_identity_still_needs_partner_centers_secret() -> None:
    with pytest.raises(MissingSettingError) as missing:
        Settings.from_env(without(SECRETLESS, "WORK365_PC_AUTH"))
    assert missing.value.key == "WORK365_CLIENT_SECRET"


@pytest.mark.parametrize("mode", ["WORK365_DATAVERSE_AUTH", "WORK365_PC_AUTH"])
def test_an_identity_mode_needs_the_identitys_client_id(mode: str) -> None:
    env = without(SECRETLESS, "WORK365_DATAVERSE_AUTH", "WORK365_PC_AUTH")
    env = {**env, "WORK365_CLIENT_SECRET": SECRET, mode: SECRETLESS[mode]}
    assert Settings.from_env(env).managed_identity_client_id == IDENTITY
    with pytest.raises(MissingSettingError) as missing:
        Settings.from_env(without(env, "WORK365_MANAGED_IDENTITY_CLIENT_ID"))
    assert missing.value.key == "WORK365_MANAGED_IDENTITY_CLIENT_ID"


@pytest.mark.parametrize("key", ["IDENTITY_ENDPOINT", "IDENTITY_HEADER"])
def test_without_azures_identity_endpoint_the_start_fails_naming_it(key: str) -> None:
    with pytest.raises(MissingSettingError) as missing:
        Settings.from_env(without(SECRETLESS, key))
    assert missing.value.key == key
    assert "identity" in str(missing.value)


def test_a_malformed_identity_endpoint_is_named_and_not_echoed() -> None:
    with pytest.raises(InvalidSettingError) as bad:
        Settings.from_env({**SECRETLESS, "IDENTITY_ENDPOINT": "not a url " + HEADER})
    assert bad.value.key == "IDENTITY_ENDPOINT"
    assert HEADER not in str(bad.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("WORK365_DATAVERSE_AUTH", "managed_identity"), ("WORK365_PC_AUTH", "secretless")],
)
def test_an_unknown_mode_is_refused_naming_the_setting(key: str, value: str) -> None:
    with pytest.raises(InvalidSettingError) as bad:
        Settings.from_env({**SECRETLESS, key: value})
    assert bad.value.key == key


def test_the_client_credentials_mode_does_not_need_the_identity_endpoint() -> None:
    s = Settings.from_env({**BASE, "WORK365_CLIENT_SECRET": SECRET})
    assert s.managed_identity_client_id is None  # and no IDENTITY_ENDPOINT was asked for


# ---- storage by identity ----------------------------------------------------------------------


def storage(**settings: str) -> Settings:
    env = {**BASE, "WORK365_CLIENT_SECRET": SECRET, **AZURE}
    return Settings.from_env(
        {**env, **{f"AzureWebJobsStorage__{k}": v for k, v in settings.items()}}
    )


def test_an_account_name_gives_the_public_service_urls() -> None:
    s = storage(accountName="work365data", credential="managedidentity", clientId=IDENTITY)
    assert s.storage_connection is None
    assert s.storage_identity == StorageIdentity(
        "https://work365data.blob.core.windows.net",
        "https://work365data.queue.core.windows.net",
        IDENTITY,
    )


def test_service_uris_win_over_the_account_name() -> None:
    s = storage(
        accountName="work365data",
        blobServiceUri="https://blob.example.net/acct/",
        queueServiceUri="https://queue.example.net/acct",
    )
    assert s.storage_identity == StorageIdentity(
        "https://blob.example.net/acct", "https://queue.example.net/acct", None
    )


def test_a_connection_string_wins_over_the_identity_settings() -> None:
    s = storage(accountName="work365data")
    with_string = Settings.from_env(
        {
            **BASE,
            "WORK365_CLIENT_SECRET": SECRET,
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "AzureWebJobsStorage__accountName": "work365data",
        }
    )
    assert s.storage_identity is not None
    assert with_string.storage_identity is None
    assert with_string.storage_connection == "UseDevelopmentStorage=true"


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"accountName": "work365data", "credential": "connectionstring"}, "credential"),
        ({"accountName": "Work365_Data"}, "accountName"),
        (
            {"blobServiceUri": "http://x.blob.core.windows.net", "accountName": "ab1"},
            "blobServiceUri",
        ),
        ({"accountName": "work365data", "clientId": "not-a-guid"}, "clientId"),
    ],
)
def test_malformed_identity_storage_settings_are_named(settings: dict[str, str], key: str) -> None:
    with pytest.raises(InvalidSettingError) as bad:
        storage(**settings)
    assert bad.value.key == f"AzureWebJobsStorage__{key}"


def test_one_service_uri_without_the_account_name_is_not_enough() -> None:
    with pytest.raises(MissingSettingError) as missing:
        storage(blobServiceUri="https://blob.example.net/acct")
    assert missing.value.key == "AzureWebJobsStorage__accountName"


def test_storage_by_identity_needs_azures_identity_endpoint() -> None:
    env = {**BASE, "WORK365_CLIENT_SECRET": SECRET, "AzureWebJobsStorage__accountName": "abc"}
    with pytest.raises(MissingSettingError) as missing:
        Settings.from_env(env)
    assert "IDENTITY_ENDPOINT" in str(missing.value)
