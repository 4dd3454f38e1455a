"""Which credentials' expiry is known, read from the settings and the certificate files: a
client secret's end date (`WORK365_CLIENT_SECRET_EXPIRES`, `WORK365_PC_CLIENT_SECRET_EXPIRES`)
and a certificate's `notAfter`, parsed with `cryptography` (which msal depends on) from the PEM
of `WORK365_CERT_PATH` / `WORK365_PC_CERT_PATH`. The private key in that file is never read
here, logged or kept: only its CERTIFICATE blocks are parsed.

What is decided from them (warn from 30 days, fail from 7) is in rules/expiry.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from work365_fn.rules.expiry import CredentialExpiry
from work365_fn.settings import Credential, Settings

MAX_PEM_BYTES = 1_000_000


@dataclass(frozen=True)
class KnownExpiries:
    """The credentials whose expiry is known, and a sentence for each whose expiry is not."""

    expiries: tuple[CredentialExpiry, ...] = ()
    unknown: tuple[str, ...] = field(default=())


def credential_expiries(settings: Settings) -> KnownExpiries:
    """Every app-registration credential the settings hold (once each, when Dataverse and
    Partner Center share one); managed identities and federated credentials have no expiry."""
    expiries: list[CredentialExpiry] = []
    unknown: list[str] = []
    seen: set[tuple[str, str]] = set()
    for credential in (settings.dataverse_credential, settings.partner_center_credential):
        if credential is None or credential.federated:
            continue
        if (credential.source, credential.client_id) in seen:
            continue
        seen.add((credential.source, credential.client_id))
        found = _expiry(credential)
        if isinstance(found, CredentialExpiry):
            expiries.append(found)
        else:
            unknown.append(found)
    return KnownExpiries(tuple(expiries), tuple(unknown))


def _expiry(credential: Credential) -> CredentialExpiry | str:
    """The credential's expiry, or the sentence that says why it is not known."""
    prefix = credential.source
    app = f"app {credential.client_id}"
    if credential.cert_path or credential.cert_pem:
        return _certificate_expiry(credential, prefix, app)
    setting = f"{prefix}_CLIENT_SECRET_EXPIRES"
    if credential.secret_expires is None:
        return (
            f"the expiry of the client secret of {app} is not known: set {setting} to its "
            "end date (the app registration's Certificates & secrets page shows it) to be "
            "warned 30 days before"
        )
    return CredentialExpiry(
        what=f"the client secret of {app}",
        setting=setting,
        expires_at=credential.secret_expires,
        fix=(
            # On Azure the secret setting is a Key Vault reference (infra/main.bicep): the new
            # value goes into the Key Vault secret, not over the reference.
            f"add a new client secret to {app}, then put it in the Key Vault secret that "
            f"{prefix}_CLIENT_SECRET references ({_vault_secret(prefix)} in the template), or "
            f"in the setting itself, and set {setting} to its end date"
        ),
    )


def _vault_secret(prefix: str) -> str:
    """The Key Vault secret infra/main.bicep keeps a client secret in: WORK365 ->
    work365-client-secret, WORK365_PC -> work365-pc-client-secret."""
    return f"{prefix.lower().replace('_', '-')}-client-secret"


def _certificate_expiry(credential: Credential, prefix: str, app: str) -> CredentialExpiry | str:
    if credential.cert_pem:
        setting, pem = f"{prefix}_CERT_PEM", credential.cert_pem.encode("utf-8")
    else:
        setting = f"{prefix}_CERT_PATH"
        assert credential.cert_path is not None
        try:
            with open(Path(credential.cert_path), "rb") as handle:
                pem = handle.read(MAX_PEM_BYTES)
        except OSError as exc:
            return f"the certificate of {app} ({setting}) cannot be read: {exc.strerror or exc}"
    try:
        certificates = x509.load_pem_x509_certificates(pem) if b"CERTIFICATE-----" in pem else []
    except ValueError:
        certificates = []
    if not certificates:
        return (
            f"the expiry of the certificate of {app} is not known: the PEM of {setting} holds "
            "no readable CERTIFICATE block (only the key?); add the certificate to it to be "
            "warned 30 days before it expires"
        )
    thumbprint = (credential.cert_thumbprint or "").upper()
    # The thumbprint Entra shows (and MSAL sends) is the SHA-1 of the certificate.
    matching = [c for c in certificates if _sha1(c) == thumbprint]
    certificate = (matching or certificates)[0]
    return CredentialExpiry(
        what=f"the certificate {thumbprint or '(no thumbprint)'} of {app}",
        setting=setting,
        expires_at=certificate.not_valid_after_utc,
        fix=(
            f"upload a new certificate to {app}, then give its PEM (key and certificate) in "
            f"{setting} and set {prefix}_CERT_THUMBPRINT to its thumbprint"
        ),
    )


def _sha1(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - a thumbprint
