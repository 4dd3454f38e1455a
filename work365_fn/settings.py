"""Settings: one frozen object, read once. `Settings.from_env` is the only environment reader."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from work365_fn.errors import InvalidSettingError, MissingSettingError
from work365_fn.rules.model import is_guid
from work365_fn.rules.timestamps import parse_timestamp

PUBLIC_AUTHORITY_HOST = "https://login.microsoftonline.com"
PUBLIC_PARTNER_CENTER_URL = "https://api.partnercenter.microsoft.com"
PARTNER_CENTER_SCOPE = "https://api.partnercenter.microsoft.com/.default"
DEFAULT_SCHEDULE = "0 0 * * * *"  # NCRONTAB, hourly on the hour
MIN_SIGNING_KEY_CHARS = 32
_STORAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
# Numeric settings: ASCII digits (\d and int() take every script's), at most 18 of them (int()
# refuses over 4300 digits with its own ValueError; every range here fits in 7).
_INTEGER = re.compile(r"[0-9]{1,18}")
_DECIMAL = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,18})?")


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
    http_budget_seconds: float = 80.0
    # The timer run stops taking new customers after this: a margin below host.json's
    # functionTimeout (10 min), so the host never kills a run mid-write.
    run_deadline_seconds: float = 480.0
    # Client-side request limits per service (0 = off); DESIGN.md section 3.
    dataverse_max_requests_per_5min: int = 5000
    pc_max_requests_per_minute: int = 300
    schema_file: str | None = None
    ca_bundle: str | None = None
    # The app's own storage (run state, job queue, lease); None = none configured (CLI, sandbox).
    storage_connection: str | None = field(default=None, repr=False)
    storage_setting: str = "WORK365_STORAGE"  # which key it came from, for error messages
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
    ) -> Settings:
        """Read every WORK365_* setting. `overrides` win (the sandbox supplies connections)."""
        source: dict[str, str] = dict(os.environ if env is None else env)
        if overrides:
            source.update(overrides)
        r = _Reader(source)
        # One step per group, in this order (the first bad setting is the one reported).
        return cls(
            **_credentials(r),
            **_endpoints(r),
            **_sync_rules(r),
            **_http_limits(r),
            **_files(r),
            **_app_state(r),
            **_notifications(r),
            **_run_sizes(r),
        )


def _credentials(r: _Reader) -> dict[str, Any]:
    """The app registrations (Partner Center's defaults to Dataverse's) and the storage
    connection: every secret the app holds."""
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
    storage_key, storage = r.storage_connection()
    return {
        "dataverse_credential": shared,
        "partner_center_credential": pc_credential,
        "storage_connection": storage,
        "storage_setting": storage_key,
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
    """Local files: a schema override and a CA bundle."""
    return {
        "schema_file": r.optional("WORK365_SCHEMA_FILE"),
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
    }


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
