"""Settings: one frozen object, read once. `Settings.from_env` is the only environment reader."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from work365_fn import safe_json
from work365_fn.errors import ConfigError, InvalidSettingError, MissingSettingError
from work365_fn.rules.model import is_guid
from work365_fn.rules.schedule import ScheduleError, schedule_period
from work365_fn.rules.timestamps import parse_timestamp

PUBLIC_AUTHORITY_HOST = "https://login.microsoftonline.com"
PUBLIC_PARTNER_CENTER_URL = "https://api.partnercenter.microsoft.com"
PARTNER_CENTER_SCOPE = "https://api.partnercenter.microsoft.com/.default"
# How the app signs in (docs/identity.md): the app registration's secret or certificate, or no
# secret at all: the Function App's managed identity (Dataverse), a federated identity credential
# that trusts it (Partner Center). The identity's token for this resource is the assertion.
DATAVERSE_AUTH_MODES = ("client-credentials", "managed-identity")
PARTNER_CENTER_AUTH_MODES = ("client-credentials", "federated")
ASSERTION_AUDIENCE = "api://AzureADTokenExchange"
_STORAGE_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_IDENTITY_STORAGE = "AzureWebJobsStorage__"
DEFAULT_SCHEDULE = "0 0 * * * *"  # NCRONTAB, hourly on the hour
MIN_SIGNING_KEY_CHARS = 32
_STORAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
# Numeric settings: ASCII digits (\d and int() take every script's), at most 18 of them (int()
# refuses over 4300 digits with its own ValueError; every range here fits in 7).
_INTEGER = re.compile(r"[0-9]{1,18}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DECIMAL = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,18})?")
_GUID_FORM = "a GUID like 00000000-0000-0000-0000-000000000000"
# Stand-ins for a missing required value, so that every other setting is still read and checked
# and the error lists every missing one at once; never returned in a Settings object.
_MISSING_GUID = "00000000-0000-0000-0000-000000000000"
_MISSING_URL = "https://missing.invalid"


class MissingSettingsError(MissingSettingError):
    """Several required settings are missing: every one in one message (`missing`), so a first
    set-up is not a loop of one error at a time. `key`/`expected` are the first one's."""

    def __init__(self, missing: Sequence[MissingSettingError]) -> None:
        super().__init__(missing[0].key, missing[0].expected)
        self.missing = tuple(missing)
        listed = "; ".join(f"{m.key} (expected {m.expected})" for m in missing)
        self.args = (f"{len(missing)} settings are not set: {listed}",)


@dataclass(frozen=True)
class Credential:
    """An Entra app registration's client credential: a secret, a certificate, or (`federated`)
    a federated identity credential that trusts the app's managed identity (no secret)."""

    tenant_id: str
    client_id: str
    secret: str | None = field(default=None, repr=False)
    cert_path: str | None = None
    # The PEM itself (<prefix>_CERT_PEM), for hosts with no file to point at: Flex Consumption
    # has no certificate store and read-only app content, so it comes through a Key Vault
    # reference. Holds the private key: never shown.
    cert_pem: str | None = field(default=None, repr=False)
    cert_thumbprint: str | None = None
    federated: bool = False
    # The secret's end date (<prefix>_CLIENT_SECRET_EXPIRES), when given: warned from 30 days
    # before (rules/expiry.py). A certificate's is read from the PEM itself.
    secret_expires: datetime | None = None
    # The prefix of the settings it comes from (WORK365 or WORK365_PC), for messages.
    source: str = field(default="WORK365", compare=False)

    def __repr__(self) -> str:  # never show the secret, even by accident
        certificate = self.cert_path or self.cert_pem
        kind = "federated" if self.federated else "certificate" if certificate else "secret"
        return f"Credential(tenant_id={self.tenant_id!r}, client_id={self.client_id!r}, {kind})"


@dataclass(frozen=True)
class StorageIdentity:
    """An identity-based storage connection (`AzureWebJobsStorage__*`, as the Functions host
    reads it): the service URLs and the managed identity (None = the system-assigned one)."""

    blob_url: str
    queue_url: str
    client_id: str | None = None


@dataclass(frozen=True)
class Settings:
    dataverse_credential: Credential | None  # None: WORK365_DATAVERSE_AUTH=managed-identity
    partner_center_credential: Credential
    dataverse_url: str
    authority_host: str = PUBLIC_AUTHORITY_HOST
    partner_center_url: str = PUBLIC_PARTNER_CENTER_URL
    partner_center_scope: str = PARTNER_CENTER_SCOPE
    schedule: str = DEFAULT_SCHEDULE
    create_missing: bool = False
    write_notes: bool = False  # a Dataverse note on each record this service assigns or creates
    associate_since: datetime | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 5
    max_retry_seconds: float = 120.0
    concurrency: int = 8
    customer_page_size: int = 500
    dataverse_page_size: int = 5000
    http_budget_seconds: float = 80.0
    # The timer run stops taking new customers after this: a margin below host.json's
    # functionTimeout (10 min), so the host never kills a run mid-write.
    run_deadline_seconds: float = 480.0
    # Client-side request limits per service (0 = off); DESIGN.md section 3.
    dataverse_max_requests_per_5min: int = 5000
    pc_max_requests_per_minute: int = 300
    schema_file: str | None = None
    # WORK365_LANDING_RULES_FILE as given: a path, or the rules as inline JSON (starts with
    # "{"). Read and checked at start by the composition root (rules/landing.py).
    landing_rules: str | None = None
    ca_bundle: str | None = None
    # The app's own storage (run state, job queue, lease); None = none configured (CLI, sandbox).
    storage_connection: str | None = field(default=None, repr=False)
    storage_setting: str = "WORK365_STORAGE"  # which key it came from, for error messages
    # Without a connection string: the account's URLs and the managed identity (no key).
    storage_identity: StorageIdentity | None = None
    # The user-assigned managed identity for Dataverse (managed-identity) and as the assertion of
    # Partner Center's federated credential (docs/identity.md).
    managed_identity_client_id: str | None = None
    run_signing_key: str | None = field(default=None, repr=False)
    # The key before the last rotation: links it signed stay good until they expire (signing.py).
    run_signing_key_previous: str | None = field(default=None, repr=False)
    run_link_hours: int = 24  # how long a signed link (a run's status URL) is good for
    jobs_queue: str = "work365-jobs"
    runs_container: str = "work365-runs"
    state_dir: str = ".work365"
    # Digest after timer runs (notify.py). The URL carries a signature: never shown.
    notify_url: str | None = field(default=None, repr=False)
    notify_format: str = "teams"  # teams | json
    report_url: str | None = None
    # The app's public https address, for the signed report links of the card (None: unknown).
    public_url: str | None = None
    batch_size: int = 100
    incremental_overlap_hours: float = 6.0
    full_sync_every_hours: float = 24.0
    # Fan-out (fanout.py): a timer full run over more customers than the threshold (0 = never)
    # is split into queue messages of `fanout_batch_size` customers; a run not aggregated after
    # `fanout_timeout_minutes` no longer blocks the next full run.
    fanout_threshold: int = 200
    fanout_batch_size: int = 50
    fanout_timeout_minutes: float = 240.0
    # Instances that may run at once (functionAppScaleLimit): each one gets this share of the
    # request limits above, since the APIs count per user across every instance.
    max_instances: int = 1

    def instance_share(self, limit: int) -> int:
        """This instance's part of a request limit shared by `max_instances` (0 stays off)."""
        return 0 if limit <= 0 else max(1, limit // self.max_instances)

    @property
    def dataverse_scope(self) -> str:
        return self.dataverse_url.rstrip("/") + "/.default"

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        overrides: Mapping[str, str] | None = None,
        defaults: Mapping[str, str] | None = None,
    ) -> Settings:
        """Read every WORK365_* setting. `defaults` (the `Values` of a local.settings.json,
        `read_local_settings`) fill in what the environment leaves unset or empty, as Core Tools
        does; `overrides` win over both (the sandbox supplies connections)."""
        source: dict[str, str] = dict(defaults or {})
        environment = os.environ if env is None else env
        source.update({k: v for k, v in environment.items() if v.strip() or k not in source})
        if overrides:
            source.update(overrides)
        r = _Reader(source)
        # One step per group, in this order: the first malformed setting is the one reported;
        # every missing required one is collected and reported together.
        fields = {
            **_credentials(r),
            **_endpoints(r),
            **_sync_rules(r),
            **_http_limits(r),
            **_files(r),
            **_app_state(r),
            **_notifications(r),
            **_run_sizes(r),
        }
        if r.missing:
            raise r.missing[0] if len(r.missing) == 1 else MissingSettingsError(r.missing)
        return cls(**fields)


def read_local_settings(path: str) -> dict[str, str]:
    """The `Values` of a local.settings.json (the file Azure Functions Core Tools reads for
    `func start`), for `Settings.from_env(defaults=...)`. A ConfigError naming the file and the
    fix when it cannot be read, is not JSON, is encrypted or has no string `Values`.
    https://learn.microsoft.com/azure/azure-functions/functions-develop-local#local-settings-file"""
    try:
        with open(path, "rb") as handle:
            data = handle.read(1_000_001)
    except OSError as exc:
        raise ConfigError(f"--settings {path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > 1_000_000:
        raise ConfigError(f"--settings {path}: over 1 MB, not a local.settings.json")
    try:
        document = safe_json.loads(data, f"--settings {path}")
    except safe_json.JsonInputError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(document, dict) or not isinstance(document.get("Values"), dict):
        raise ConfigError(
            f'--settings {path}: expected a local.settings.json, an object with "Values": {{...}}'
        )
    if document.get("IsEncrypted") is True:
        raise ConfigError(
            f"--settings {path}: its Values are encrypted (IsEncrypted: true): run "
            "`func settings decrypt` first"
        )
    values: dict[str, str] = document["Values"]
    bad = [key for key, value in values.items() if not isinstance(value, str)]
    if bad:  # Core Tools takes strings only; the value is not echoed (it may be a secret)
        raise ConfigError(f"--settings {path}: Values.{bad[0]} must be a string")
    return values


def _credentials(r: _Reader) -> dict[str, Any]:
    """The app registrations (Partner Center's defaults to Dataverse's), the managed identity
    and the storage connection: every secret the app holds, or the identity that replaces it."""
    dv_auth = r.choice("WORK365_DATAVERSE_AUTH", DATAVERSE_AUTH_MODES, DATAVERSE_AUTH_MODES[0])
    pc_auth = r.choice("WORK365_PC_AUTH", PARTNER_CENTER_AUTH_MODES, PARTNER_CENTER_AUTH_MODES[0])
    tenant = r.guid("WORK365_TENANT_ID")
    client = r.guid("WORK365_CLIENT_ID")
    pc_tenant = r.optional_guid("WORK365_PC_TENANT_ID") or tenant
    pc_client = r.optional_guid("WORK365_PC_CLIENT_ID")
    secret_needed = dv_auth == "client-credentials" or (pc_auth != "federated" and not pc_client)
    shared = r.credential("WORK365", tenant, client) if secret_needed else None
    if pc_auth == "federated":
        pc_credential = Credential(pc_tenant, pc_client or client, federated=True)
    elif pc_client:
        pc_credential = r.credential("WORK365_PC", pc_tenant, pc_client)
    else:
        pc_credential = replace(shared or Credential(tenant, client), tenant_id=pc_tenant)
    storage_key, storage = r.storage_connection()
    storage_identity = None if storage else r.storage_identity()
    uses_identity = dv_auth == "managed-identity" or pc_auth == "federated"
    identity_client = (
        r.guid("WORK365_MANAGED_IDENTITY_CLIENT_ID")
        if uses_identity
        else r.optional_guid("WORK365_MANAGED_IDENTITY_CLIENT_ID")
    )
    if uses_identity or storage_identity is not None:
        r.identity_endpoint()
    return {
        "dataverse_credential": shared if dv_auth == "client-credentials" else None,
        "partner_center_credential": pc_credential,
        "storage_connection": storage,
        "storage_setting": storage_key,
        "storage_identity": storage_identity,
        "managed_identity_client_id": identity_client,
    }


def _endpoints(r: _Reader) -> dict[str, Any]:
    """The services' URLs (the authority and Partner Center default to the public cloud)."""
    return {
        "dataverse_url": r.https_url("WORK365_DATAVERSE_URL", "https://<org>.crm.dynamics.com"),
        "authority_host": r.https_url(
            "WORK365_AUTHORITY_HOST", "https://login.microsoftonline.com", PUBLIC_AUTHORITY_HOST
        ),
        "partner_center_url": r.https_url(
            "WORK365_PARTNER_CENTER_URL",
            "https://api.partnercenter.microsoft.com",
            PUBLIC_PARTNER_CENTER_URL,
        ),
    }


def _sync_rules(r: _Reader) -> dict[str, Any]:
    """When the sync runs and what it may do."""
    return {
        "schedule": r.schedule("WORK365_SYNC_SCHEDULE", DEFAULT_SCHEDULE),
        "create_missing": r.boolean("WORK365_CREATE_MISSING", False),
        "write_notes": r.boolean("WORK365_WRITE_NOTES", False),
        "associate_since": r.timestamp("WORK365_ASSOCIATE_SINCE"),
    }


def _http_limits(r: _Reader) -> dict[str, Any]:
    """Timeouts, retries, concurrency, page sizes, time budgets and request limits."""
    return {
        "connect_timeout": r.number("WORK365_HTTP_CONNECT_TIMEOUT", 10.0, 1, 300),
        "read_timeout": r.number("WORK365_HTTP_READ_TIMEOUT", 60.0, 0.1, 600),
        "max_attempts": r.integer("WORK365_MAX_ATTEMPTS", 5, 1, 20),
        "max_retry_seconds": r.number("WORK365_MAX_RETRY_SECONDS", 120.0, 0, 3600),
        "concurrency": r.integer("WORK365_CONCURRENCY", 8, 1, 64),
        "customer_page_size": r.integer("WORK365_PC_PAGE_SIZE", 500, 1, 500),
        "dataverse_page_size": r.integer("WORK365_DATAVERSE_PAGE_SIZE", 5000, 1, 5000),
        "http_budget_seconds": r.number("WORK365_HTTP_BUDGET_SECONDS", 80.0, 5, 88),
        "run_deadline_seconds": r.number("WORK365_RUN_DEADLINE_SECONDS", 480.0, 10, 3600),
        "dataverse_max_requests_per_5min": r.integer(
            "WORK365_DATAVERSE_MAX_REQUESTS_PER_5MIN", 5000, 0, 6000
        ),
        "pc_max_requests_per_minute": r.integer(
            "WORK365_PC_MAX_REQUESTS_PER_MINUTE", 300, 0, 100000
        ),
    }


def _files(r: _Reader) -> dict[str, Any]:
    """Local files: a schema override, the landing rules and a CA bundle."""
    return {
        "schema_file": r.optional("WORK365_SCHEMA_FILE"),
        "landing_rules": r.optional("WORK365_LANDING_RULES_FILE"),
        "ca_bundle": r.existing_file("WORK365_CA_BUNDLE"),
    }


def _app_state(r: _Reader) -> dict[str, Any]:
    """Where the app keeps its own state: run links' signing keys and lifetime, job queue,
    runs container, local folder."""
    return {
        "run_signing_key": r.signing_key("WORK365_RUN_SIGNING_KEY"),
        "run_signing_key_previous": r.signing_key("WORK365_RUN_SIGNING_KEY_PREVIOUS"),
        "run_link_hours": r.integer("WORK365_RUN_LINK_HOURS", 24, 1, 720),
        # the host moves failed messages to "<queue>-poison": 63 characters at most
        "jobs_queue": r.storage_name("WORK365_JOBS_QUEUE", "work365-jobs", 56),
        "runs_container": r.storage_name("WORK365_RUNS_CONTAINER", "work365-runs"),
        "state_dir": r.optional("WORK365_STATE_DIR") or ".work365",
    }


def _notifications(r: _Reader) -> dict[str, Any]:
    """The digest after timer runs, and the report link it carries."""
    return {
        "notify_url": r.link("WORK365_NOTIFY_URL", "a Teams Workflows or Power Automate URL"),
        "notify_format": r.choice("WORK365_NOTIFY_FORMAT", ("teams", "json"), "teams"),
        "report_url": r.link("WORK365_REPORT_URL", "the URL admins open to see the report"),
        "public_url": _public_url(r),
    }


def _public_url(r: _Reader) -> str | None:
    """WORK365_PUBLIC_URL, else the https address App Service gives the app (WEBSITE_HOSTNAME,
    set by the platform), else None."""
    configured = r.link(
        "WORK365_PUBLIC_URL", "the Function App's address, https://<app>.azurewebsites.net"
    )
    if configured is not None:
        return configured.rstrip("/")
    host = r.optional("WEBSITE_HOSTNAME")
    if host is None or not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?", host):
        return None
    return f"https://{host}"


def _run_sizes(r: _Reader) -> dict[str, Any]:
    """Write batches, incremental and full runs, fan-out, scale-out."""
    return {
        "batch_size": r.integer("WORK365_BATCH_SIZE", 100, 1, 1000),
        "incremental_overlap_hours": r.number("WORK365_INCREMENTAL_OVERLAP_HOURS", 6.0, 0, 72),
        "full_sync_every_hours": r.number("WORK365_FULL_SYNC_EVERY_HOURS", 24.0, 1, 2160),
        "fanout_threshold": r.integer("WORK365_FANOUT_THRESHOLD", 200, 0, 1_000_000),
        "fanout_batch_size": r.integer("WORK365_FANOUT_BATCH_SIZE", 50, 1, 1000),
        "fanout_timeout_minutes": r.number("WORK365_FANOUT_TIMEOUT_MINUTES", 240.0, 10, 10080),
        "max_instances": r.integer("WORK365_MAX_INSTANCES", 1, 1, 200),
    }


_UNRESOLVED_REFERENCE = "@Microsoft.KeyVault("
_UNRESOLVED_HINT = (
    "a value, not an unresolved Key Vault reference (check that the vault holds the secret "
    "and that keyVaultReferenceIdentity has Key Vault Secrets User on it)"
)


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.missing: list[MissingSettingError] = []

    def optional(self, key: str) -> str | None:
        value = self._env.get(key, "").strip()
        if value.startswith(_UNRESOLVED_REFERENCE):
            # App Service passes the reference text through when it cannot resolve it
            # ("If a reference isn't resolved properly, the reference string is used instead",
            # https://learn.microsoft.com/azure/app-service/app-service-key-vault-references):
            # taken as a value it would be a 40-character "signing key" anyone can read.
            raise InvalidSettingError(key, _UNRESOLVED_HINT)
        return value or None

    def lack(self, key: str, expected: str) -> None:
        """A required setting is not set: noted, reported with every other one at the end."""
        self.missing.append(MissingSettingError(key, expected))

    def guid(self, key: str) -> str:
        value = self.optional(key)
        if value is None:
            self.lack(key, _GUID_FORM)
            return _MISSING_GUID
        if not is_guid(value):
            raise InvalidSettingError(key, _GUID_FORM)
        return value.lower()

    def optional_guid(self, key: str) -> str | None:
        return self.guid(key) if self.optional(key) else None

    def credential(self, prefix: str, tenant: str, client: str) -> Credential:
        secret = self.optional(f"{prefix}_CLIENT_SECRET")
        cert_path = self.optional(f"{prefix}_CERT_PATH")
        cert_pem = self.certificate_pem(f"{prefix}_CERT_PEM")
        if cert_path and cert_pem:
            raise InvalidSettingError(
                f"{prefix}_CERT_PEM", f"one certificate: {prefix}_CERT_PATH is set too"
            )
        thumbprint = self.optional(f"{prefix}_CERT_THUMBPRINT")
        if cert_path or cert_pem or thumbprint:
            if not ((cert_path or cert_pem) and thumbprint):
                missing = (
                    f"{prefix}_CERT_PATH"
                    if not (cert_path or cert_pem)
                    else f"{prefix}_CERT_THUMBPRINT"
                )
                self.lack(
                    missing,
                    f"both the certificate ({prefix}_CERT_PATH, or the PEM in {prefix}_CERT_PEM) "
                    "and its SHA-1 thumbprint",
                )
                return Credential(tenant, client)
            clean = thumbprint.replace(":", "")
            if len(clean) != 40 or any(c not in "0123456789abcdefABCDEF" for c in clean):
                raise InvalidSettingError(
                    f"{prefix}_CERT_THUMBPRINT", "40 hexadecimal digits (SHA-1 thumbprint)"
                )
            return Credential(
                tenant,
                client,
                cert_path=cert_path,
                cert_pem=cert_pem,
                cert_thumbprint=clean.upper(),
                source=prefix,
            )
        if secret is None:
            self.lack(
                f"{prefix}_CLIENT_SECRET",
                f"the app registration's client secret (or set {prefix}_CERT_PATH and "
                f"{prefix}_CERT_THUMBPRINT for a certificate)",
            )
        expires = self.end_date(f"{prefix}_CLIENT_SECRET_EXPIRES")
        return Credential(tenant, client, secret=secret, secret_expires=expires, source=prefix)

    def certificate_pem(self, key: str) -> str | None:
        """A PEM given as a setting's value: a private key is required (MSAL signs with it).
        A PEM pasted on one line (a portal field, a secret set from a shell) may carry its
        newlines as the two characters "\\n": they are turned back into newlines."""
        value = self.optional(key)
        if value is None:
            return None
        pem = value.replace("\\n", "\n")
        if "PRIVATE KEY-----" not in pem:
            raise InvalidSettingError(key, "a PEM holding the private key (and the certificate)")
        return pem

    def end_date(self, key: str) -> datetime | None:
        """A credential's end date: an ISO date (2026-12-31, taken as that day's first moment
        in UTC, so the warning never comes late) or an ISO timestamp."""
        value = self.optional(key)
        if value is None:
            return None
        day = _DATE.fullmatch(value)
        parsed = parse_timestamp(value + "T00:00:00Z" if day else value)
        if parsed is None:
            raise InvalidSettingError(
                key,
                "the client secret's end date as an ISO date like 2026-12-31 (or a timestamp "
                "like 2026-12-31T00:00:00Z), as the app registration shows it",
            )
        return parsed

    def https_url(self, key: str, example: str, default: str | None = None) -> str:
        value = self.optional(key) or default
        if value is None:
            self.lack(key, f"an https URL like {example}")
            return _MISSING_URL
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            raise InvalidSettingError(key, f"an https URL like {example}")
        return value.rstrip("/")

    def link(self, key: str, what: str) -> str | None:
        """An optional https URL that may carry a query (a signature): never echoed."""
        value = self.optional(key)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise InvalidSettingError(key, f"an https URL ({what})")
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default: str) -> str:
        value = (self.optional(key) or default).lower()
        if value not in allowed:
            raise InvalidSettingError(key, " or ".join(allowed))
        return value

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
        """ASCII digits only (and one '.' for a number): not `1_000`, `+5`, ` 5`, `1e3` or
        other scripts' digits, which int() and float() would take."""
        value = self._env.get(key, "")
        if not value.strip():
            return default
        form = _INTEGER if integer else _DECIMAL
        expected = (
            f"an integer from {low:g} to {high:g} (the digits 0-9 only)"
            if integer
            else f"a number from {low:g} to {high:g} (like 60 or 0.5)"
        )
        if not form.fullmatch(value):
            raise InvalidSettingError(key, expected)
        number = int(value) if integer else float(value)
        if not low <= number <= high:
            raise InvalidSettingError(key, expected)
        return number

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        return int(self.number(key, default, low, high, integer=True))

    def schedule(self, key: str, default: str) -> str:
        """Six NCRONTAB fields that rules/schedule.py can read (the health check measures the
        runs' age against the schedule's longest gap)."""
        value = self.optional(key) or default
        try:
            schedule_period(value)
        except ScheduleError as exc:
            raise InvalidSettingError(
                key, f"a six-field NCRONTAB expression like '0 0 * * * *' (hourly): {exc}"
            ) from None
        return value

    def existing_file(self, key: str) -> str | None:
        value = self.optional(key)
        if value is not None and not os.path.isfile(value):
            raise InvalidSettingError(key, "the path of an existing PEM file")
        return value

    def storage_connection(self) -> tuple[str, str | None]:
        """WORK365_STORAGE, else AzureWebJobsStorage (the Function App's own account), else None.

        `UseDevelopmentStorage=true` (any case) means Azurite on its default local ports."""
        for key in ("WORK365_STORAGE", "AzureWebJobsStorage"):
            value = self.optional(key)
            if value is None:
                continue
            if value.rstrip(";").replace(" ", "").lower() == "usedevelopmentstorage=true":
                return key, "UseDevelopmentStorage=true"
            items = [item.partition("=") for item in value.rstrip(";").split(";")]
            parts = {k.strip().lower(): v.strip() for k, _, v in items}
            has_key = parts.get("accountname") and parts.get("accountkey")
            has_sas = parts.get("sharedaccesssignature") and (
                parts.get("blobendpoint") or parts.get("queueendpoint")
            )
            if any(not sep or not v.strip() for _, sep, v in items) or not (has_key or has_sas):
                raise InvalidSettingError(
                    key,
                    "a storage connection string like DefaultEndpointsProtocol=https;"
                    "AccountName=<name>;AccountKey=<key>;EndpointSuffix=core.windows.net "
                    "(or UseDevelopmentStorage=true for Azurite)",
                )
            return key, value
        return "WORK365_STORAGE", None

    def storage_identity(self) -> StorageIdentity | None:
        """`AzureWebJobsStorage__accountName` or `__blobServiceUri` + `__queueServiceUri`, with
        `__credential=managedidentity` and `__clientId`: the Functions host's identity-based
        connection (https://learn.microsoft.com/azure/azure-functions/functions-reference
        #connecting-to-host-storage-with-an-identity). None when none of them is set."""
        p = _IDENTITY_STORAGE
        keys = ("accountName", "blobServiceUri", "queueServiceUri", "credential", "clientId")
        if not any(self.optional(p + k) for k in keys):
            return None
        credential = self.optional(p + "credential")
        if credential is not None and credential.lower() != "managedidentity":
            raise InvalidSettingError(
                p + "credential", "managedidentity (the app uses its managed identity for storage)"
            )
        account = self.optional(p + "accountName")
        if account is not None and not _STORAGE_ACCOUNT.fullmatch(account):
            raise InvalidSettingError(p + "accountName", "3-24 lower-case letters and digits")
        urls = []
        for service in ("blob", "queue"):
            url = self._service_url(p + f"{service}ServiceUri")
            if url is None and account is not None:
                url = f"https://{account}.{service}.core.windows.net"
            urls.append(url)
        if urls[0] is None or urls[1] is None:
            self.lack(
                p + "accountName",
                f"the storage account name (or both {p}blobServiceUri and {p}queueServiceUri)",
            )
            return None
        return StorageIdentity(urls[0], urls[1], self.optional_guid(p + "clientId"))

    def _service_url(self, key: str) -> str | None:
        value = self.optional(key)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            # a token is never sent over http (the storage SDK refuses it too)
            raise InvalidSettingError(
                key, "an https URL like https://<account>.blob.core.windows.net"
            )
        return value.rstrip("/")

    def identity_endpoint(self) -> None:
        """The managed-identity endpoint that App Service and Functions set in the process
        environment when an identity is assigned. MSAL and azure-identity read IDENTITY_ENDPOINT
        and IDENTITY_HEADER from os.environ themselves (no parameter takes them): checked here so
        that a missing one fails at start, naming it, rather than at the first token."""
        endpoint = self.optional("IDENTITY_ENDPOINT")
        expected = (
            "the managed-identity endpoint Azure sets when the Function App has an identity "
            "(assign the user-assigned identity to the app; locally, `sandbox serve` prints one)"
        )
        if endpoint is None:
            self.lack("IDENTITY_ENDPOINT", expected)
        else:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InvalidSettingError("IDENTITY_ENDPOINT", expected)
        if self.optional("IDENTITY_HEADER") is None:
            self.lack(
                "IDENTITY_HEADER", "the header secret Azure sets with the managed-identity endpoint"
            )

    def signing_key(self, key: str) -> str | None:
        value = self.optional(key)
        if value is not None and len(value) < MIN_SIGNING_KEY_CHARS:
            raise InvalidSettingError(
                key,
                f"at least {MIN_SIGNING_KEY_CHARS} characters of random text "
                "(e.g. the output of: openssl rand -base64 48)",
            )
        return value

    def storage_name(self, key: str, default: str, longest: int = 63) -> str:
        """Queue and container names: lower-case letters, digits and single hyphens."""
        value = self.optional(key) or default
        if not _STORAGE_NAME.match(value) or "--" in value or len(value) > longest:
            raise InvalidSettingError(
                key, f"3-{longest} lower-case letters, digits and single hyphens, like {default}"
            )
        return value
