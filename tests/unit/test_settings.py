"""Settings.from_env: the one reader of the environment; errors name the key, never the value."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from work365_fn.errors import InvalidSettingError, MissingSettingError
from work365_fn.settings import (
    PARTNER_CENTER_SCOPE,
    PUBLIC_AUTHORITY_HOST,
    PUBLIC_PARTNER_CENTER_URL,
    Credential,
    Settings,
)

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "00001111-aaaa-2222-bbbb-3333cccc4444"
SECRET = "Abc8Q~s3cr3t-value-never-shown"
BASE = {
    "WORK365_TENANT_ID": TENANT,
    "WORK365_CLIENT_ID": CLIENT,
    "WORK365_CLIENT_SECRET": SECRET,
    "WORK365_DATAVERSE_URL": "https://contoso.crm.dynamics.com",
}


def settings(**changes: str) -> Settings:
    env = {**BASE, **changes}
    return Settings.from_env({k: v for k, v in env.items() if v != "<unset>"})


def test_the_minimal_environment_gives_the_documented_defaults() -> None:
    s = settings(WORK365_DATAVERSE_URL="https://contoso.crm.dynamics.com/")

    assert s.dataverse_url == "https://contoso.crm.dynamics.com"
    assert s.dataverse_scope == "https://contoso.crm.dynamics.com/.default"
    assert s.authority_host == PUBLIC_AUTHORITY_HOST
    assert s.partner_center_url == PUBLIC_PARTNER_CENTER_URL
    assert s.partner_center_scope == PARTNER_CENTER_SCOPE
    assert (s.max_attempts, s.customer_page_size, s.dataverse_page_size) == (5, 500, 5000)
    assert s.create_missing is False
    assert s.associate_since is None


def test_an_empty_environment_is_not_read_from_os_environ() -> None:
    with pytest.raises(MissingSettingError) as caught:
        Settings.from_env({})

    assert caught.value.key == "WORK365_TENANT_ID"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("WORK365_TENANT_ID", "a GUID like 00000000-0000-0000-0000-000000000000"),
        ("WORK365_CLIENT_ID", "a GUID like 00000000-0000-0000-0000-000000000000"),
        ("WORK365_CLIENT_SECRET", "client secret"),
        ("WORK365_DATAVERSE_URL", "an https URL like https://<org>.crm.dynamics.com"),
    ],
)
def test_a_missing_setting_is_named_with_the_form_it_expects(key: str, expected: str) -> None:
    with pytest.raises(MissingSettingError) as caught:
        settings(**{key: "<unset>"})

    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key} is not set: expected ")
    assert expected in str(caught.value)


def test_a_blank_setting_counts_as_missing() -> None:
    with pytest.raises(MissingSettingError) as caught:
        settings(WORK365_DATAVERSE_URL="   ")

    assert caught.value.key == "WORK365_DATAVERSE_URL"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("WORK365_TENANT_ID", "contoso.onmicrosoft.com-SECRETISH", "a GUID"),
        ("WORK365_CLIENT_ID", "{00001111-aaaa-2222-bbbb-3333cccc4444}", "a GUID"),
        ("WORK365_DATAVERSE_URL", "http://contoso.crm.dynamics.com", "an https URL"),
        ("WORK365_DATAVERSE_URL", "https://contoso.crm.dynamics.com?x=SECRETISH", "an https URL"),
        ("WORK365_AUTHORITY_HOST", "login.microsoftonline.com/SECRETISH", "an https URL"),
        ("WORK365_MAX_ATTEMPTS", "lots-SECRETISH", "an integer from 1 to 20"),
        ("WORK365_MAX_ATTEMPTS", "0", "an integer from 1 to 20"),
        ("WORK365_HTTP_READ_TIMEOUT", "sixty-SECRETISH", "a number from 0.1 to 600"),
        ("WORK365_CONCURRENCY", "2.5", "an integer"),
        ("WORK365_CREATE_MISSING", "maybe-SECRETISH", "true or false"),
        ("WORK365_ASSOCIATE_SINCE", "last tuesday SECRETISH", "an ISO-8601 timestamp"),
        ("WORK365_SYNC_SCHEDULE", "SECRETISH * * * *", "a six-field NCRONTAB expression"),
        ("WORK365_CA_BUNDLE", "/nonexistent/ca-SECRETISH.pem", "an existing PEM file"),
    ],
)
def test_a_malformed_setting_is_named_without_echoing_its_value(
    key: str, value: str, expected: str
) -> None:
    with pytest.raises(InvalidSettingError) as caught:
        settings(**{key: value})

    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key} is malformed: expected ")
    assert expected in str(caught.value)
    assert "SECRETISH" not in str(caught.value)


def test_values_are_parsed() -> None:
    s = settings(
        WORK365_TENANT_ID=TENANT.upper(),
        WORK365_CREATE_MISSING="Yes",
        WORK365_ASSOCIATE_SINCE="2026-01-01T08:00:00+02:00",
        WORK365_MAX_ATTEMPTS="3",
        WORK365_HTTP_READ_TIMEOUT="30.5",
    )

    assert s.dataverse_credential.tenant_id == TENANT
    assert s.create_missing is True
    assert s.associate_since == datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
    assert (s.max_attempts, s.read_timeout) == (3, 30.5)


def test_partner_center_uses_the_shared_credential_by_default() -> None:
    s = settings()

    assert s.partner_center_credential == Credential(TENANT, CLIENT, secret=SECRET)
    assert s.partner_center_credential == s.dataverse_credential


def test_partner_center_may_live_in_another_tenant_with_the_shared_app() -> None:
    other_tenant = "11111111-2222-3333-4444-555555555555"

    s = settings(WORK365_PC_TENANT_ID=other_tenant)

    assert s.partner_center_credential == Credential(other_tenant, CLIENT, secret=SECRET)
    assert s.dataverse_credential.tenant_id == TENANT


def test_partner_center_may_have_its_own_app() -> None:
    pc_client = "99999999-8888-7777-6666-555555555555"

    s = settings(WORK365_PC_CLIENT_ID=pc_client, WORK365_PC_CLIENT_SECRET="pc-secret-value")

    assert s.partner_center_credential == Credential(TENANT, pc_client, secret="pc-secret-value")


def test_an_own_partner_center_app_needs_its_own_secret() -> None:
    with pytest.raises(MissingSettingError) as caught:
        settings(WORK365_PC_CLIENT_ID="99999999-8888-7777-6666-555555555555")

    assert caught.value.key == "WORK365_PC_CLIENT_SECRET"


def test_a_certificate_replaces_the_secret(tmp_path: Path) -> None:
    pem = tmp_path / "app.pem"
    pem.write_text("-----BEGIN PRIVATE KEY-----\n...\n", encoding="utf-8")

    s = settings(
        WORK365_CLIENT_SECRET="<unset>",
        WORK365_CERT_PATH=str(pem),
        WORK365_CERT_THUMBPRINT="ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01",
    )

    assert s.dataverse_credential == Credential(
        TENANT,
        CLIENT,
        cert_path=str(pem),
        cert_thumbprint="ABCDEF0123456789ABCDEF0123456789ABCDEF01",
    )
    assert s.dataverse_credential.secret is None
    assert s.partner_center_credential == s.dataverse_credential


def test_a_certificate_needs_both_path_and_thumbprint() -> None:
    with pytest.raises(MissingSettingError) as caught:
        settings(WORK365_CLIENT_SECRET="<unset>", WORK365_CERT_PATH="/keys/app.pem")

    assert caught.value.key == "WORK365_CERT_THUMBPRINT"


def test_a_malformed_thumbprint_is_named() -> None:
    with pytest.raises(InvalidSettingError) as caught:
        settings(WORK365_CERT_PATH="/keys/app.pem", WORK365_CERT_THUMBPRINT="not-hex-SECRETISH")

    assert caught.value.key == "WORK365_CERT_THUMBPRINT"
    assert "SECRETISH" not in str(caught.value)


def test_the_secret_never_shows_in_repr() -> None:
    s = settings(WORK365_PC_CLIENT_ID=CLIENT, WORK365_PC_CLIENT_SECRET="pc-secret-value")

    for text in (repr(s), str(s), repr(s.dataverse_credential), str(s.partner_center_credential)):
        assert SECRET not in text
        assert "pc-secret-value" not in text
    assert "secret" in repr(s.dataverse_credential)  # says which kind, not which value


def test_overrides_win_over_the_environment() -> None:
    s = Settings.from_env(
        BASE, overrides={"WORK365_DATAVERSE_URL": "https://127.0.0.1:8443/sandbox"}
    )

    assert s.dataverse_url == "https://127.0.0.1:8443/sandbox"


@pytest.mark.parametrize("key", ["WORK365_RUN_SIGNING_KEY", "WORK365_CLIENT_SECRET"])
def test_an_unresolved_key_vault_reference_is_refused_not_taken_as_the_value(key: str) -> None:
    reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/signing/)"

    with pytest.raises(InvalidSettingError) as caught:
        settings(**{key: reference})

    assert caught.value.key == key
    assert "unresolved Key Vault reference" in str(caught.value)
    assert "kv.vault.azure.net" not in str(caught.value)
