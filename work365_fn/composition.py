"""Wiring: Settings -> session, token providers, clients, repository. Built lazily, once per
worker (Functions) or once per command (CLI). Constructing it does no network I/O."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from work365_fn.adapters.auth import MsalApp, MsalTokenProvider, TokenProvider
from work365_fn.adapters.dataverse import REQUEST_ID_HEADER, DataverseClient
from work365_fn.adapters.dataverse import parse_error as dataverse_error
from work365_fn.adapters.dataverse_metadata import (
    SchemaCheck,
    SubscriptionBindings,
    check_schema,
    propose_schema,
    subscription_bindings,
)
from work365_fn.adapters.dataverse_repository import Repository
from work365_fn.adapters.notify import notify_summary
from work365_fn.adapters.partner_center import PartnerCenterClient
from work365_fn.adapters.partner_center import parse_error as partner_center_error
from work365_fn.adapters.schema import Schema
from work365_fn.adapters.schema_discovery import Proposal
from work365_fn.adapters.storage import AppStorage, FileRunStore, JobQueue, Lease, RunStore
from work365_fn.adapters.transport import (
    HttpOptions,
    RateLimiter,
    RetryPolicy,
    ServiceApi,
    Transport,
    build_session,
)
from work365_fn.errors import MissingSettingError
from work365_fn.logs import install as install_logging
from work365_fn.logs import remember_secret
from work365_fn.operations.backfill import BackfillDeps, backfill_job
from work365_fn.operations.diagnose import DiagnoseDeps, RecordTables
from work365_fn.operations.fanout import (
    FanoutDeps,
    FanoutSettings,
    after_batch,
    refuse_while_fanned_out,
)
from work365_fn.operations.jobs import Job, JobDeps
from work365_fn.operations.reader import ReaderDeps
from work365_fn.operations.report import run_report
from work365_fn.operations.sync import SyncDeps, SyncRequest, run_sync
from work365_fn.rules.summary import RunSummary
from work365_fn.settings import Settings
from work365_fn.signing import LinkSigner

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    schema: Schema
    dataverse: DataverseClient
    partner_center_transport: Transport
    sleep: Callable[[float], None] | None = None
    monotonic: Callable[[], float] = time.monotonic  # run deadlines and rate limits
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # run times, a cutoff in the future

    def __post_init__(self) -> None:
        self._bindings: SubscriptionBindings | None = None
        self._lock = threading.Lock()
        self._storage: AppStorage | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
        dataverse_tokens: TokenProvider | None = None,
        partner_center_tokens: TokenProvider | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Services:
        install_logging()  # run ids on every line, secrets on none (idempotent)
        schema = Schema.load(settings.schema_file)
        session = session or build_session(pool_size=max(16, settings.concurrency * 2))
        if dataverse_tokens is None or partner_center_tokens is None:
            built = _msal_tokens(settings, session)
            dataverse_tokens = dataverse_tokens or built[0]
            partner_center_tokens = partner_center_tokens or built[1]
        retry = RetryPolicy(settings.max_attempts, settings.max_retry_seconds, sleep)
        http = HttpOptions(
            timeout=(settings.connect_timeout, settings.read_timeout),
            verify=settings.ca_bundle or True,
        )
        limiters = _rate_limiters(settings, monotonic, sleep)
        dv_transport = Transport(
            ServiceApi("dataverse", dataverse_error, REQUEST_ID_HEADER),
            session,
            dataverse_tokens,
            retry,
            http=http,
            limiter=limiters[0],
        )
        pc_transport = Transport(
            ServiceApi("partnerCenter", partner_center_error, "MS-RequestId"),
            session,
            partner_center_tokens,
            retry,
            http=http,
            limiter=limiters[1],
        )
        client = DataverseClient(
            settings.dataverse_url, dv_transport, page_size=settings.dataverse_page_size
        )
        return cls(settings, schema, client, pc_transport, sleep, monotonic)

    def repository(self) -> Repository:
        return Repository(self.dataverse, self.schema)

    def partner_center(self, correlation_id: str) -> PartnerCenterClient:
        return PartnerCenterClient(
            self.settings.partner_center_url,
            self.partner_center_transport,
            correlation_id,
            page_size=self.settings.customer_page_size,
        )

    def diagnose_deps(self) -> DiagnoseDeps:
        """What one diagnosis reads with (operations/diagnose.py)."""
        return DiagnoseDeps(
            repository=self.repository(),
            partner_center=self.partner_center,
            tables=RecordTables(
                setting=self.schema.setting.table,
                subscription=self.schema.subscription.table,
                billing_contract=self.schema.billing_contract.table,
                provider_account=self.schema.provider_account.table,
            ),
            associate_since=self.settings.associate_since,
            create_missing=self.settings.create_missing,
            concurrency=self.settings.concurrency,
            monotonic=self.monotonic,
            clock=self.clock,
        )

    def reader_deps(self, monotonic: Callable[[], float] | None = None) -> ReaderDeps:
        """What the one tenant read needs (operations/reader.py)."""
        return ReaderDeps(
            self.repository(),
            self.partner_center,
            self.settings.associate_since,
            self.settings.concurrency,
            monotonic or self.monotonic,
            self.settings.create_missing,
            self.clock,
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
            clock=self.clock,
            monotonic=self.monotonic,
            batch_size=self.settings.batch_size,
            sleep=self.sleep or time.sleep,
            max_attempts=self.settings.max_attempts,
            run_store=self.run_store(),
            overlap_hours=self.settings.incremental_overlap_hours,
            full_every_hours=self.settings.full_sync_every_hours,
        )
        if request.customer_ids or request.dry_run:
            return run_sync(deps, request, run_id)  # scoped or read-only: no lease
        run_id = run_id or str(uuid.uuid4())
        with self.full_sync_lease(run_id):  # raises LeaseTakenError when another run holds it
            return run_sync(deps, request, run_id)

    def link_signer(self) -> LinkSigner:
        """The service's one signer of links (status URLs): WORK365_RUN_SIGNING_KEY, the
        previous key during a rotation, links good for WORK365_RUN_LINK_HOURS."""
        s = self.settings
        if not s.run_signing_key:
            raise MissingSettingError(
                "WORK365_RUN_SIGNING_KEY",
                "a random secret of at least 32 characters (a Key Vault reference) that signs "
                "the status URLs of asynchronous runs",
            )
        remember_secret(s.run_signing_key)  # never on a log line
        remember_secret(s.run_signing_key_previous)
        return LinkSigner(
            s.run_signing_key,
            s.run_signing_key_previous,
            lifetime=timedelta(hours=s.run_link_hours),
            clock=self.clock,
        )

    def app_storage(self) -> AppStorage | None:
        """The app's storage account (WORK365_STORAGE or AzureWebJobsStorage), None without one."""
        with self._lock:
            if self._storage is None and self.settings.storage_connection:
                self._storage = AppStorage(
                    self.settings.storage_connection,
                    container=self.settings.runs_container,
                    queue=self.settings.jobs_queue,
                    setting=self.settings.storage_setting,
                )
            return self._storage

    def job_queue(self) -> JobQueue:
        storage = self.app_storage()
        if storage is None:
            raise MissingSettingError(
                "WORK365_STORAGE",
                "a storage connection string (or AzureWebJobsStorage) for asynchronous runs",
            )
        return storage.jobs()

    @contextlib.contextmanager
    def full_sync_lease(self, run_id: str) -> Iterator[Lease | None]:
        """The lease one whole-tenant sync holds at a time; none without app storage. While a
        fanned-out run's batches are in flight it counts as held by that run (fanout.py)."""
        storage = self.app_storage()
        if storage is None:
            log.info(
                "[run %s] no app storage configured: running without the full-sync lease; "
                "conditional writes keep concurrent runs safe",
                run_id,
                extra={"run_id": run_id},
            )
            yield None
            return
        with storage.lease(run_id) as lease:
            refuse_while_fanned_out(storage.run_store(), run_id)  # raises LeaseTakenError
            yield lease

    def run_store(self) -> RunStore:
        """Where run documents live: the app's storage account when there is one, else a local
        folder (WORK365_STATE_DIR)."""
        storage = self.app_storage()
        if storage is not None:
            return storage.run_store()
        return FileRunStore(self.settings.state_dir)

    # ---- what each operation is given (narrow dependencies) ---------------------------------

    def backfill_deps(self) -> BackfillDeps:
        return BackfillDeps(
            reader=self.reader_deps(),
            repository=self.repository(),
            bindings=self.bindings,
            run_store=self.run_store(),
            table=self.schema.subscription,
            run_deadline_seconds=self.settings.run_deadline_seconds,
        )

    def fanout_deps(self) -> FanoutDeps:
        s = self.settings
        storage = self.app_storage()
        return FanoutDeps(
            settings=FanoutSettings(
                threshold=s.fanout_threshold,
                batch_size=s.fanout_batch_size,
                timeout_minutes=s.fanout_timeout_minutes,
                overlap_hours=s.incremental_overlap_hours,
                full_every_hours=s.full_sync_every_hours,
            ),
            run_store=storage.run_store() if storage is not None else None,
            job_queue=self.job_queue,
            partner_center=self.partner_center,
            full_sync_lease=self.full_sync_lease,
            notify=lambda summary: notify_summary(summary, s, sleep=self.sleep),
        )

    def job_kinds(self) -> dict[str, Job]:
        """The queue jobs, registered as callables: kind -> (payload, run id) -> result JSON.
        A queued run gets the timer's margin below the host's functionTimeout."""
        budget = self.settings.run_deadline_seconds

        def sync(payload: dict[str, Any], run_id: str) -> dict[str, Any]:
            request = SyncRequest.from_payload(payload, budget_seconds=budget)
            return self.sync(request, run_id=run_id).to_json()

        def report(payload: dict[str, Any], run_id: str) -> dict[str, Any]:
            return run_report(self.reader_deps(), run_id, budget_seconds=budget)

        def backfill(payload: dict[str, Any], run_id: str) -> dict[str, Any]:
            return backfill_job(self.backfill_deps(), payload, run_id)

        return {"sync": sync, "report": report, "backfill": backfill}

    def job_deps(self) -> JobDeps:
        return JobDeps(
            run_store=self.run_store(),
            kinds=self.job_kinds(),
            after_batch=lambda run_id, count, clock: after_batch(
                self.fanout_deps(), run_id, count, clock=clock
            ),
        )

    def check_schema(self) -> list[SchemaCheck]:
        return check_schema(self.dataverse, self.schema)

    def propose_schema(self) -> Proposal:
        return propose_schema(self.dataverse, self.schema)


def _msal_tokens(
    settings: Settings, session: requests.Session
) -> tuple[TokenProvider, TokenProvider]:
    """Token providers for Dataverse and Partner Center (one MSAL app when both use the same
    credential: one discovery; a 401 from one service drops only its own scope's token, see
    `MsalApp.forget_tokens`). Nothing is requested until the first token."""
    timeout = (settings.connect_timeout, settings.read_timeout)
    dv_app = MsalApp(
        settings.dataverse_credential, settings.authority_host, session, timeout=timeout
    )
    pc_app = (
        dv_app
        if settings.partner_center_credential == settings.dataverse_credential
        else MsalApp(
            settings.partner_center_credential, settings.authority_host, session, timeout=timeout
        )
    )
    if settings.ca_bundle:
        # MSAL sends through our session; requests lets REQUESTS_CA_BUNDLE override
        # Session.verify, so the CA must not come from the environment here.
        session.verify = settings.ca_bundle
        session.trust_env = False
    return (
        MsalTokenProvider(dv_app, settings.dataverse_scope, "dataverse"),
        MsalTokenProvider(pc_app, settings.partner_center_scope, "partnerCenter"),
    )


def _rate_limiters(
    settings: Settings,
    monotonic: Callable[[], float],
    sleep: Callable[[float], None] | None,
) -> tuple[RateLimiter, RateLimiter]:
    """One limiter per service, shared by every thread of this worker (DESIGN.md section 3);
    scaled-out instances split the budget (WORK365_MAX_INSTANCES, docs/operations.md)."""
    dataverse = RateLimiter(
        "dataverse",
        settings.instance_share(settings.dataverse_max_requests_per_5min),
        300.0,
        clock=monotonic,
        sleep=sleep,
    )
    partner_center = RateLimiter(
        "partnerCenter",
        settings.instance_share(settings.pc_max_requests_per_minute),
        60.0,
        clock=monotonic,
        sleep=sleep,
    )
    return dataverse, partner_center
