"""Wiring: Settings -> session, token providers, clients, repository. Built lazily, once per
worker (Functions) or once per command (CLI). Constructing it does no network I/O."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import requests

from .auth import MsalApp, MsalTokenProvider, TokenProvider
from .dataverse import REQUEST_ID_HEADER, DataverseClient
from .dataverse import parse_error as dataverse_error
from .http import RetryPolicy, Transport, build_session
from .metadata import Check, SubscriptionBindings, check_schema, subscription_bindings
from .partner_center import PartnerCenterClient
from .partner_center import parse_error as partner_center_error
from .repository import Repository
from .schema import Schema
from .settings import Settings
from .storage import FileRunStore, RunStore
from .summary import RunSummary
from .sync import SyncDeps, SyncRequest, run_sync


@dataclass
class Services:
    settings: Settings
    schema: Schema
    dataverse: DataverseClient
    partner_center_transport: Transport
    sleep: Callable[[float], None] | None = None

    def __post_init__(self) -> None:
        self._bindings: SubscriptionBindings | None = None
        self._lock = threading.Lock()

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
        dataverse_tokens: TokenProvider | None = None,
        partner_center_tokens: TokenProvider | None = None,
    ) -> Services:
        schema = Schema.load(settings.schema_file)
        session = session or build_session(pool_size=max(16, settings.concurrency * 2))
        verify: str | bool = settings.ca_bundle or True
        if dataverse_tokens is None or partner_center_tokens is None:
            dv_app = MsalApp(settings.dataverse_credential, settings.authority_host, session)
            pc_app = (
                dv_app
                if settings.partner_center_credential == settings.dataverse_credential
                else MsalApp(settings.partner_center_credential, settings.authority_host, session)
            )
            if settings.ca_bundle:
                # MSAL sends through our session; requests lets REQUESTS_CA_BUNDLE override
                # Session.verify, so the CA must not come from the environment here.
                session.verify = settings.ca_bundle
                session.trust_env = False
            dataverse_tokens = dataverse_tokens or MsalTokenProvider(
                dv_app, settings.dataverse_scope, "dataverse"
            )
            partner_center_tokens = partner_center_tokens or MsalTokenProvider(
                pc_app, settings.partner_center_scope, "partnerCenter"
            )
        retry = RetryPolicy(settings.max_attempts, settings.max_retry_seconds, sleep)
        timeout = (settings.connect_timeout, settings.read_timeout)
        dv_transport = Transport(
            "dataverse",
            session,
            dataverse_tokens,
            retry,
            dataverse_error,
            timeout=timeout,
            verify=verify,
            request_id_header=REQUEST_ID_HEADER,
        )
        pc_transport = Transport(
            "partnerCenter",
            session,
            partner_center_tokens,
            retry,
            partner_center_error,
            timeout=timeout,
            verify=verify,
            request_id_header="MS-RequestId",
        )
        client = DataverseClient(
            settings.dataverse_url, dv_transport, page_size=settings.dataverse_page_size
        )
        return cls(settings, schema, client, pc_transport, sleep)

    def repository(self) -> Repository:
        return Repository(self.dataverse, self.schema)

    def partner_center(self, correlation_id: str) -> PartnerCenterClient:
        return PartnerCenterClient(
            self.settings.partner_center_url,
            self.partner_center_transport,
            correlation_id,
            page_size=self.settings.customer_page_size,
        )

    def bindings(self) -> SubscriptionBindings:
        with self._lock:
            if self._bindings is None:
                self._bindings = subscription_bindings(self.dataverse, self.schema)
            return self._bindings

    def sync(self, request: SyncRequest, run_id: str | None = None) -> RunSummary:
        deps = SyncDeps(
            repository=self.repository(),
            partner_center=self.partner_center,
            bindings=self.bindings,
            create_missing=self.settings.create_missing,
            associate_since=self.settings.associate_since,
            concurrency=self.settings.concurrency,
        )
        return run_sync(deps, request, run_id)

    def run_store(self) -> RunStore:
        """Where run documents live: a local folder (WORK365_STATE_DIR)."""
        return FileRunStore(self.settings.state_dir)

    def check_schema(self) -> list[Check]:
        return check_schema(self.dataverse, self.schema)
