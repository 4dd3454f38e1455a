"""Settings: one frozen object, read once. `Settings.from_env` is the only environment reader."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from .errors import InvalidSettingError, MissingSettingError
from .model import is_guid

PUBLIC_AUTHORITY_HOST = "https://login.microsoftonline.com"
PUBLIC_PARTNER_CENTER_URL = "https://api.partnercenter.microsoft.com"
PARTNER_CENTER_SCOPE = "https://api.partnercenter.microsoft.com/.default"
DEFAULT_SCHEDULE = "0 0 * * * *"  # NCRONTAB, hourly on the hour


@dataclass(frozen=True)
class Credential:
    """An Entra app registration's client credential: a secret, or a certificate."""

    tenant_id: str
    client_id: str
    secret: str | None = field(default=None, repr=False)
    cert_path: str | None = None
    cert_thumbprint: str | None = None

    def __repr__(self) -> str:  # never show the secret, even by accident
        kind = "certificate" if self.cert_path else "secret"
        return f"Credential(tenant_id={self.tenant_id!r}, client_id={self.client_id!r}, {kind})"


@dataclass(frozen=True)
class Settings:
    dataverse_credential: Credential
    partner_center_credential: Credential
    dataverse_url: str
    authority_host: str = PUBLIC_AUTHORITY_HOST
    partner_center_url: str = PUBLIC_PARTNER_CENTER_URL
    partner_center_scope: str = PARTNER_CENTER_SCOPE
    schedule: str = DEFAULT_SCHEDULE
    create_missing: bool = False
    associate_since: datetime | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 5
    max_retry_seconds: float = 120.0
    concurrency: int = 8
    customer_page_size: int = 500
    dataverse_page_size: int = 5000
    http_budget_seconds: float = 90.0
    schema_file: str | None = None
    ca_bundle: str | None = None
    state_dir: str = ".work365"

    @property
    def dataverse_scope(self) -> str:
        return self.dataverse_url.rstrip("/") + "/.default"

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        overrides: Mapping[str, str] | None = None,
    ) -> Settings:
        """Read every WORK365_* setting. `overrides` win (the sandbox supplies connections)."""
        source: dict[str, str] = dict(os.environ if env is None else env)
        if overrides:
            source.update(overrides)
        r = _Reader(source)
        tenant = r.guid("WORK365_TENANT_ID")
        client = r.guid("WORK365_CLIENT_ID")
        shared = r.credential("WORK365", tenant, client)
        pc_tenant = r.optional_guid("WORK365_PC_TENANT_ID") or tenant
        pc_client = r.optional_guid("WORK365_PC_CLIENT_ID")
        pc_credential = (
            r.credential("WORK365_PC", pc_tenant, pc_client)
            if pc_client
            else Credential(
                tenant_id=pc_tenant,
                client_id=client,
                secret=shared.secret,
                cert_path=shared.cert_path,
                cert_thumbprint=shared.cert_thumbprint,
            )
        )
        return cls(
            dataverse_credential=shared,
            partner_center_credential=pc_credential,
            dataverse_url=r.https_url("WORK365_DATAVERSE_URL", "https://<org>.crm.dynamics.com"),
            authority_host=r.https_url(
                "WORK365_AUTHORITY_HOST", "https://login.microsoftonline.com", PUBLIC_AUTHORITY_HOST
            ),
            partner_center_url=r.https_url(
                "WORK365_PARTNER_CENTER_URL",
                "https://api.partnercenter.microsoft.com",
                PUBLIC_PARTNER_CENTER_URL,
            ),
            schedule=r.schedule("WORK365_SYNC_SCHEDULE", DEFAULT_SCHEDULE),
            create_missing=r.boolean("WORK365_CREATE_MISSING", False),
            associate_since=r.timestamp("WORK365_ASSOCIATE_SINCE"),
            connect_timeout=r.number("WORK365_HTTP_CONNECT_TIMEOUT", 10.0, 1, 300),
            read_timeout=r.number("WORK365_HTTP_READ_TIMEOUT", 60.0, 1, 600),
            max_attempts=int(r.number("WORK365_MAX_ATTEMPTS", 5, 1, 20, integer=True)),
            max_retry_seconds=r.number("WORK365_MAX_RETRY_SECONDS", 120.0, 0, 3600),
            concurrency=int(r.number("WORK365_CONCURRENCY", 8, 1, 64, integer=True)),
            customer_page_size=int(r.number("WORK365_PC_PAGE_SIZE", 500, 1, 500, integer=True)),
            dataverse_page_size=int(
                r.number("WORK365_DATAVERSE_PAGE_SIZE", 5000, 1, 5000, integer=True)
            ),
            http_budget_seconds=r.number("WORK365_HTTP_BUDGET_SECONDS", 90.0, 5, 100),
            schema_file=r.optional("WORK365_SCHEMA_FILE"),
            ca_bundle=r.existing_file("WORK365_CA_BUNDLE"),
            state_dir=r.optional("WORK365_STATE_DIR") or ".work365",
        )


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def optional(self, key: str) -> str | None:
        value = self._env.get(key, "").strip()
        return value or None

    def required(self, key: str, expected: str) -> str:
        value = self.optional(key)
        if value is None:
            raise MissingSettingError(key, expected)
        return value

    def guid(self, key: str) -> str:
        value = self.required(key, "a GUID like 00000000-0000-0000-0000-000000000000")
        if not is_guid(value):
            raise InvalidSettingError(key, "a GUID like 00000000-0000-0000-0000-000000000000")
        return value.lower()

    def optional_guid(self, key: str) -> str | None:
        return self.guid(key) if self.optional(key) else None

    def credential(self, prefix: str, tenant: str, client: str) -> Credential:
        secret = self.optional(f"{prefix}_CLIENT_SECRET")
        cert_path = self.optional(f"{prefix}_CERT_PATH")
        thumbprint = self.optional(f"{prefix}_CERT_THUMBPRINT")
        if cert_path or thumbprint:
            if not (cert_path and thumbprint):
                missing = f"{prefix}_CERT_PATH" if not cert_path else f"{prefix}_CERT_THUMBPRINT"
                raise MissingSettingError(
                    missing, "both the certificate PEM path and its SHA-1 thumbprint"
                )
            clean = thumbprint.replace(":", "")
            if len(clean) != 40 or any(c not in "0123456789abcdefABCDEF" for c in clean):
                raise InvalidSettingError(
                    f"{prefix}_CERT_THUMBPRINT", "40 hexadecimal digits (SHA-1 thumbprint)"
                )
            return Credential(tenant, client, cert_path=cert_path, cert_thumbprint=clean.upper())
        if secret is None:
            raise MissingSettingError(
                f"{prefix}_CLIENT_SECRET",
                f"the app registration's client secret (or set {prefix}_CERT_PATH and "
                f"{prefix}_CERT_THUMBPRINT for a certificate)",
            )
        return Credential(tenant, client, secret=secret)

    def https_url(self, key: str, example: str, default: str | None = None) -> str:
        value = self.optional(key) or default
        if value is None:
            raise MissingSettingError(key, f"an https URL like {example}")
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            raise InvalidSettingError(key, f"an https URL like {example}")
        return value.rstrip("/")

    def boolean(self, key: str, default: bool) -> bool:
        value = self.optional(key)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in {"true", "1", "yes", "on"}:
            return True
        if lowered in {"false", "0", "no", "off"}:
            return False
        raise InvalidSettingError(key, "true or false")

    def timestamp(self, key: str) -> datetime | None:
        value = self.optional(key)
        if value is None:
            return None
        parsed = parse_timestamp(value)
        if parsed is None:
            raise InvalidSettingError(key, "an ISO-8601 timestamp like 2026-01-01T00:00:00Z")
        return parsed

    def number(
        self, key: str, default: float, low: float, high: float, *, integer: bool = False
    ) -> float:
        value = self.optional(key)
        if value is None:
            return default
        kind = "an integer" if integer else "a number"
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            raise InvalidSettingError(key, f"{kind} from {low:g} to {high:g}") from None
        if not low <= number <= high:
            raise InvalidSettingError(key, f"{kind} from {low:g} to {high:g}")
        return number

    def schedule(self, key: str, default: str) -> str:
        value = self.optional(key) or default
        if len(value.split()) != 6:
            raise InvalidSettingError(
                key, "a six-field NCRONTAB expression like '0 0 * * * *' (hourly)"
            )
        return value

    def existing_file(self, key: str) -> str | None:
        value = self.optional(key)
        if value is not None and not os.path.isfile(value):
            raise InvalidSettingError(key, "the path of an existing PEM file")
        return value


def parse_timestamp(value: str) -> datetime | None:
    """ISO-8601 to an aware UTC datetime; a naive value is taken as UTC. None if unreadable."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
