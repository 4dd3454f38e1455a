"""Credential expiry (issue 15): a client secret's end date from WORK365_CLIENT_SECRET_EXPIRES,
a certificate's notAfter from the PEM of WORK365_CERT_PATH; warned from 30 days before, failing
from 7 (rules/expiry.py), never naming the secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from work365_fn.adapters.credential_expiry import credential_expiries
from work365_fn.errors import InvalidSettingError
from work365_fn.rules.expiry import (
    FAIL_DAYS,
    WARN_DAYS,
    CredentialExpiry,
    expiry_failures,
    expiry_warnings,
)
from work365_fn.settings import Settings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SECRET = "the-client-secret-value-SECRETISH"
CLIENT = "3c2b1a09-8f7e-4d6c-b5a4-938271605f4e"
BASE = {
    "WORK365_TENANT_ID": "5a4f0e1c-8b2d-4c3e-9f6a-7b8c9d0e1f2a",
    "WORK365_CLIENT_ID": CLIENT,
    "WORK365_CLIENT_SECRET": SECRET,
    "WORK365_DATAVERSE_URL": "https://contoso.crm.dynamics.com",
}


def settings(**values: str) -> Settings:
    return Settings.from_env({**BASE, **values})


def secret_expiring_in(days: float) -> CredentialExpiry:
    return CredentialExpiry(
        what=f"the client secret of app {CLIENT}",
        setting="WORK365_CLIENT_SECRET_EXPIRES",
        expires_at=NOW + timedelta(days=days),
        fix="add a new client secret",
    )


# ---- the rule: 31 / 30 / 8 / 7 days -----------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "warned", "failing"),
    [(31, False, False), (30, True, False), (8, True, False), (7, True, True), (-1, True, True)],
)
def test_a_secret_is_warned_from_30_days_and_fails_from_7(
    days: int, warned: bool, failing: bool
) -> None:
    expiry = secret_expiring_in(days)
    assert bool(expiry_warnings([expiry], NOW)) is warned
    assert bool(expiry_failures([expiry], NOW)) is failing
    assert (WARN_DAYS, FAIL_DAYS) == (30, 7)


def test_the_warning_names_the_credential_and_the_date() -> None:
    [warning] = expiry_warnings([secret_expiring_in(12)], NOW)
    assert warning == (
        f"the client secret of app {CLIENT} (WORK365_CLIENT_SECRET_EXPIRES) expires on "
        "2026-06-13 (in 12 days): add a new client secret"
    )
    [expired] = expiry_warnings([secret_expiring_in(-2)], NOW)
    assert "expired on 2026-05-30" in expired


def test_the_soonest_expiry_comes_first() -> None:
    late, soon = secret_expiring_in(20), secret_expiring_in(3)
    assert expiry_warnings([late, soon], NOW) == [soon.sentence(NOW), late.sentence(NOW)]


# ---- the setting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-31", datetime(2026, 12, 31, tzinfo=UTC)),
        ("2026-12-31T17:30:00Z", datetime(2026, 12, 31, 17, 30, tzinfo=UTC)),
    ],
)
def test_the_secret_end_date_is_an_iso_date_or_timestamp(value: str, expected: datetime) -> None:
    loaded = settings(WORK365_CLIENT_SECRET_EXPIRES=value)
    assert loaded.partner_center_credential.secret_expires == expected
    [found] = credential_expiries(loaded).expiries  # one app for both services: listed once
    assert found.expires_at == expected
    assert found.setting == "WORK365_CLIENT_SECRET_EXPIRES"
    assert SECRET not in repr(found) and SECRET not in found.sentence(NOW)


@pytest.mark.parametrize("value", ["next year", "31/12/2026", "2026-13-01", "SECRETISH"])
def test_a_malformed_end_date_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(InvalidSettingError) as caught:
        settings(WORK365_CLIENT_SECRET_EXPIRES=value)
    assert caught.value.key == "WORK365_CLIENT_SECRET_EXPIRES"
    assert "2026-12-31" in str(caught.value)  # the form it expects
    assert value not in str(caught.value)


def test_a_separate_partner_center_secret_has_its_own_end_date() -> None:
    pc_client = "7d3e2f1a-0b9c-4d8e-a7f6-5e4d3c2b1a09"
    loaded = settings(
        WORK365_CLIENT_SECRET_EXPIRES="2026-07-01",
        WORK365_PC_CLIENT_ID=pc_client,
        WORK365_PC_CLIENT_SECRET="another-secret-value",
        WORK365_PC_CLIENT_SECRET_EXPIRES="2026-06-20",
    )
    found = {e.setting: e for e in credential_expiries(loaded).expiries}
    assert set(found) == {"WORK365_CLIENT_SECRET_EXPIRES", "WORK365_PC_CLIENT_SECRET_EXPIRES"}
    assert pc_client in found["WORK365_PC_CLIENT_SECRET_EXPIRES"].what
    # Each fix names the Key Vault secret its setting references in infra/main.bicep.
    assert "(work365-client-secret in the template)" in found["WORK365_CLIENT_SECRET_EXPIRES"].fix
    pc_fix = found["WORK365_PC_CLIENT_SECRET_EXPIRES"].fix
    assert "WORK365_PC_CLIENT_SECRET references (work365-pc-client-secret" in pc_fix


def test_without_an_end_date_the_expiry_is_unknown_and_said_so() -> None:
    known = credential_expiries(settings())
    assert known.expiries == ()
    [note] = known.unknown
    assert "WORK365_CLIENT_SECRET_EXPIRES" in note and SECRET not in note


# ---- the certificate: notAfter from the PEM ---------------------------------------------------


def make_pem(
    folder: Path, not_after: datetime, *, with_certificate: bool = True
) -> tuple[str, str]:
    """(path, SHA-1 thumbprint) of a PEM holding a private key and (optionally) its certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "work365-test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - timedelta(days=365))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if with_certificate:
        pem += cert.public_bytes(serialization.Encoding.PEM)
    path = folder / "app.pem"
    path.write_bytes(pem)
    return str(path), cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303


def test_a_certificate_expiry_is_its_not_after(tmp_path: Path) -> None:
    not_after = datetime(2026, 6, 5, 8, 0, tzinfo=UTC)
    path, thumbprint = make_pem(tmp_path, not_after)
    loaded = Settings.from_env(
        {k: v for k, v in BASE.items() if k != "WORK365_CLIENT_SECRET"}
        | {"WORK365_CERT_PATH": path, "WORK365_CERT_THUMBPRINT": thumbprint}
    )
    [found] = credential_expiries(loaded).expiries
    assert found.expires_at == not_after
    assert found.setting == "WORK365_CERT_PATH"
    assert thumbprint in found.what
    # 3 days and 20 hours left: a warning, and a failure (within 7 days)
    assert expiry_failures([found], NOW) == [found.sentence(NOW)]
    assert "PRIVATE KEY" not in found.sentence(NOW)


def test_a_pem_with_the_key_alone_leaves_the_expiry_unknown(tmp_path: Path) -> None:
    path, thumbprint = make_pem(tmp_path, NOW, with_certificate=False)
    loaded = Settings.from_env(
        {k: v for k, v in BASE.items() if k != "WORK365_CLIENT_SECRET"}
        | {"WORK365_CERT_PATH": path, "WORK365_CERT_THUMBPRINT": thumbprint}
    )
    known = credential_expiries(loaded)
    assert known.expiries == ()
    [note] = known.unknown
    assert "WORK365_CERT_PATH" in note and "CERTIFICATE" in note


def test_a_certificate_given_inline_in_a_setting_has_its_expiry_read_from_it(
    tmp_path: Path,
) -> None:
    """Flex Consumption: no certificate store, read-only content; the PEM comes through a Key
    Vault reference into WORK365_CERT_PEM (newlines kept, or pasted as literal \\n)."""
    not_after = datetime(2026, 6, 5, 8, 0, tzinfo=UTC)
    path, thumbprint = make_pem(tmp_path, not_after)
    one_line = Path(path).read_text(encoding="utf-8").replace("\n", "\\n")
    loaded = Settings.from_env(
        {k: v for k, v in BASE.items() if k != "WORK365_CLIENT_SECRET"}
        | {"WORK365_CERT_PEM": one_line, "WORK365_CERT_THUMBPRINT": thumbprint}
    )
    credential = loaded.dataverse_credential
    assert credential is not None and credential.cert_path is None
    assert credential.cert_pem == Path(path).read_text(encoding="utf-8")
    assert "PRIVATE KEY" not in repr(credential)
    [found] = credential_expiries(loaded).expiries
    assert (found.setting, found.expires_at) == ("WORK365_CERT_PEM", not_after)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"WORK365_CERT_PEM": "-----BEGIN CERTIFICATE-----\nMII\n"}, "private key"),
        ({"WORK365_CERT_PEM": "<pem>", "WORK365_CERT_PATH": "/x.pem"}, "one certificate"),
    ],
)
def test_an_inline_pem_without_a_key_or_beside_a_path_is_refused(
    tmp_path: Path, extra: dict[str, str], expected: str
) -> None:
    path, thumbprint = make_pem(tmp_path, NOW)
    pem = Path(path).read_text(encoding="utf-8")
    values = {k: (pem if v == "<pem>" else v) for k, v in extra.items()}
    with pytest.raises(InvalidSettingError) as caught:
        Settings.from_env(
            {k: v for k, v in BASE.items() if k != "WORK365_CLIENT_SECRET"}
            | values
            | {"WORK365_CERT_THUMBPRINT": thumbprint}
        )
    assert caught.value.key == "WORK365_CERT_PEM"
    assert expected in str(caught.value)
    assert "MII" not in str(caught.value)
