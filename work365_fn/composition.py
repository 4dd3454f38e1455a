"""Wiring: Settings -> session, token providers, clients, repository. Built lazily, once per
worker (Functions) or once per command (CLI). Constructing it does no network I/O."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests

from work365_fn.adapters.auth import (
    ManagedIdentityTokenProvider,
    MsalApp,
    MsalTokenProvider,
    TokenProvider,
    assertion_provider,
)
from work365_fn.adapters.credential_expiry import KnownExpiries, credential_expiries
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
from work365_fn.adapters.landing_rules import (
    landing_column_checks,
    load_landing_rules,
    require_landing_columns,
)
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
from work365_fn.errors import MissingSettingError, Work365Error
from work365_fn.logs import RunLog, remember_secret
from work365_fn.logs import install as install_logging
from work365_fn.operations.backfill import BackfillDeps, backfill_job
from work365_fn.operations.diagnose import DiagnoseDeps, RecordTables
from work365_fn.operations.fanout import (
    FanoutDeps,
    FanoutSettings,
    after_batch,
    refuse_while_fanned_out,
)
from work365_fn.operations.health import PROBE_TIMEOUT, DeepCache, HealthDeps
from work365_fn.operations.jobs import Job, JobDeps
from work365_fn.operations.page_cache import PageCache
from work365_fn.operations.reader import ReaderDeps, read_setting
from work365_fn.operations.records import (
    RecordsDeps,
    RecordsOutcome,
    RecordsRequest,
    SettingCache,
    run_records,
)
from work365_fn.operations.report import run_report
from work365_fn.operations.run_history import recent_runs, remember_run
from work365_fn.operations.sync import SyncDeps, SyncRequest, run_sync
from work365_fn.operations.undo import UndoDeps, undo_job
from work365_fn.rules import Action
from work365_fn.rules.landing import LandingRules
from work365_fn.rules.summary import RunSummary
from work365_fn.settings import Settings
from work365_fn.signing import LinkSigner, report_page_resource

log = logging.getLogger(__name__)

# POST /api/records and the Dataverse webhook (docs/events.md): Dataverse waits 60 s for a
# webhook's answer, so their calls retry for at most this long (a longer Retry-After is answered
# with a 503 at once, and Dataverse tries again), and they read the setting once per
# EVENT_SETTING_SECONDS per worker.
EVENT_RETRY_SECONDS = 10.0
EVENT_MAX_ATTEMPTS = 3
EVENT_SETTING_SECONDS = 60.0


@dataclass
class Services:
    settings: Settings
    schema: Schema
    dataverse: DataverseClient
    partner_center_transport: Transport
    sleep: Callable[[float], None] | None = None
    monotonic: Callable[[], float] = time.monotonic  # run deadlines and rate limits
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # run times, a cutoff in the future
    landing: LandingRules | None = None  # WORK365_LANDING_RULES_FILE, read and checked at build

    def __post_init__(self) -> None:
        self._landing_checked = False
        self._bindings: SubscriptionBindings | None = None
        self._lock = threading.Lock()
        self._storage: AppStorage | None = None
        self._records_deps: RecordsDeps | None = None
        self._expiries: KnownExpiries | None = None
        self._page_cache: PageCache | None = None
        self._deep_cache = DeepCache()  # GET /api/health?deep=true, kept 60 s per worker

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
        landing = load_landing_rules(settings.landing_rules)  # ConfigError naming rule and field
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
        return cls(settings, schema, client, pc_transport, sleep, monotonic, landing=landing)

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
            landing=self.checked_landing(),
            credential_expiries=self.credential_expiries().expiries,
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
            landing=self.checked_landing(),
        )

    def bindings(self) -> SubscriptionBindings:
        with self._lock:
            if self._bindings is None:
                self._bindings = subscription_bindings(
                    self.dataverse, self.schema, notes=self.settings.write_notes
                )
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
            landing=self.checked_landing(),
            write_notes=self.settings.write_notes,
            credential_expiries=self.credential_expiries().expiries,
        )
        if request.customer_ids or request.dry_run:
            summary = run_sync(deps, request, run_id)  # scoped or read-only: no lease
        else:
            run_id = run_id or str(uuid.uuid4())
            with self.full_sync_lease(run_id):  # raises LeaseTakenError when another holds it
                summary = run_sync(deps, request, run_id)
        if not request.dry_run:
            self.remember_run(summary.to_json())
        return summary

    # ---- health: credential expiry, the health check's reads and probes ----------------------

    def credential_expiries(self) -> KnownExpiries:
        """The credentials whose expiry is known (the certificate files are read once per
        worker: a new certificate comes with a restart, as a changed app setting does)."""
        with self._lock:
            if self._expiries is None:
                self._expiries = credential_expiries(self.settings)
            return self._expiries

    def health_deps(self) -> HealthDeps:
        """What `GET /api/health` reads (operations/health.py): the run store, the full-sync
        lease's holder, the schedule, the credentials, and one token and cheap read for each
        service (Dataverse WhoAmI, Partner Center's first customer): nothing is written. The
        probes make one attempt each with a short timeout (`for_probe`), their result kept 60 s
        by this worker."""
        storage = self.app_storage()
        known = self.credential_expiries()

        def dataverse() -> str:
            who = self.dataverse.for_probe(PROBE_TIMEOUT).who_am_i()
            return f"token and WhoAmI: user {str(who.get('UserId')).lower()}"

        def partner_center() -> str:
            found = PartnerCenterClient(
                self.settings.partner_center_url,
                self.partner_center_transport.for_probe(PROBE_TIMEOUT),
                str(uuid.uuid4()),
                page_size=self.settings.customer_page_size,
            ).first_customers(1)
            return f"token and GET /v1/customers?size=1: {len(found)} customer(s)"

        return HealthDeps(
            run_store=self.run_store(),
            schedule=self.settings.schedule,
            clock=self.clock,
            lease_holder=(
                (lambda: storage.lease("health", renew_every=0).holder())
                if storage is not None
                else None
            ),
            expiries=known.expiries,
            unknown_expiries=known.unknown,
            probes={"dataverse": dataverse, "partnerCenter": partner_center},
            monotonic=self.monotonic,
            deep_cache=self._deep_cache,
        )

    # ---- records decided alone: POST /api/records and the Dataverse webhook -------------------

    def records(self, request: RecordsRequest, run_id: str | None = None) -> RecordsOutcome:
        outcome = run_records(self.records_deps(), request, run_id)
        summary = outcome.summary
        if not request.dry_run and any(d.action is not Action.NONE for d in summary.decisions):
            self.remember_run(summary.to_json())  # its own list: never in the syncs' (health)
        return outcome

    def records_deps(self) -> RecordsDeps:
        """Built once per worker: its setting cache lives as long as the worker. The calls use
        the same session, tokens and rate limiters as the sync, with shorter retries."""
        run_store = self.run_store()  # takes the lock itself
        with self._lock:
            if self._records_deps is None:
                retry = RetryPolicy(
                    min(self.settings.max_attempts, EVENT_MAX_ATTEMPTS),
                    min(self.settings.max_retry_seconds, EVENT_RETRY_SECONDS),
                    self.sleep,
                )
                repository = Repository(self.dataverse.with_retry(retry), self.schema)
                pc_transport = self.partner_center_transport.with_retry(retry)
                reader = replace(self._reader_deps_unchecked(), repository=repository)
                self._records_deps = RecordsDeps(
                    repository=repository,
                    partner_center=lambda correlation_id: PartnerCenterClient(
                        self.settings.partner_center_url,
                        pc_transport,
                        correlation_id,
                        page_size=self.settings.customer_page_size,
                    ),
                    bindings=self.bindings,
                    setting=SettingCache(
                        lambda: read_setting(reader, RunLog(log, {})),
                        EVENT_SETTING_SECONDS,
                        self.monotonic,
                    ),
                    clock=self.clock,
                    monotonic=self.monotonic,
                    sleep=self.sleep or time.sleep,
                    batch_size=self.settings.batch_size,
                    max_attempts=self.settings.max_attempts,
                    landing=None,
                    write_notes=self.settings.write_notes,
                    run_store=run_store,
                )
        return replace(self._records_deps, landing=self.checked_landing())

    def _reader_deps_unchecked(self) -> ReaderDeps:
        return ReaderDeps(
            self.repository(),
            self.partner_center,
            self.settings.associate_since,
            clock=self.clock,
        )

    # ---- the report page: run history and signed links ---------------------------------------

    def remember_run(self, summary: dict[str, Any]) -> None:
        """Add a live run to its history (app storage only): a sync's is the one the report
        page and the health check read; a records run's is its own (run_history.py)."""
        storage = self.app_storage()
        if storage is not None:
            remember_run(storage.run_store(), summary)

    def recent_runs(self) -> list[dict[str, Any]] | None:
        """The last sync runs for the report page; None without app storage (or unreadable)."""
        storage = self.app_storage()
        if storage is None:
            return None
        try:
            return recent_runs(storage.run_store())
        except Work365Error as exc:
            log.warning("the run history could not be read: %s", exc)
            return None

    def report_page_link(self, run_id: str) -> str | None:
        """The card's "Open the report": the run's report page, signed, without the function
        key; None when the app cannot sign (no key) or does not know its address."""
        if not self.settings.public_url or not self.settings.run_signing_key:
            return None
        sig = self.link_signer().sign(report_page_resource(run_id))
        return f"{self.settings.public_url}/api/runs/{run_id.lower()}/report?sig={quote(sig)}"

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
            # a connection string, else the identity-based AzureWebJobsStorage__* connection
            account = self.settings.storage_connection or self.settings.storage_identity
            if self._storage is None and account:
                self._storage = AppStorage(
                    account,
                    container=self.settings.runs_container,
                    queue=self.settings.jobs_queue,
                    setting=self.settings.storage_setting,
                    verify=self.settings.ca_bundle,
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

    def page_cache(self) -> PageCache:
        """The kept reports of signed links, one per worker: its locks let one of the opens of
        a link at the same moment read the tenant (operations/page_cache.py)."""
        store = self.run_store()  # app_storage() takes self._lock itself
        with self._lock:
            if self._page_cache is None:
                self._page_cache = PageCache(
                    store,
                    self.clock,
                    # a claim outlives the read it guards: its budget, then its retries' end
                    building=timedelta(seconds=self.settings.http_budget_seconds + 30),
                    sleep=self.sleep or time.sleep,
                )
            return self._page_cache

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

    def undo_deps(self) -> UndoDeps:
        """What an undo uses (operations/undo.py); with notes on, the bindings carry the
        note's navigation property (WORK365_WRITE_NOTES)."""
        return UndoDeps(
            repository=self.repository(),
            run_store=self.run_store(),
            clock=self.clock,
            monotonic=self.monotonic,
            run_deadline_seconds=self.settings.run_deadline_seconds,
            note_bindings=self.bindings if self.settings.write_notes else None,
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
            notify=self._after_fanout,
        )

    def _after_fanout(self, summary: dict[str, Any]) -> bool:
        """A fanned-out run's aggregate: into the run history, then the notification."""
        self.remember_run(summary)
        link = self.report_page_link(str(summary.get("runId") or ""))
        return notify_summary(summary, self.settings, sleep=self.sleep, report_url=link)

    def job_kinds(self) -> dict[str, Job]:
        """The queue jobs, registered as callables: kind -> (payload, run id) -> result JSON.
        A queued run gets the timer's margin below the host's functionTimeout."""
        budget = self.settings.run_deadline_seconds

        def sync(payload: dict[str, Any], run_id: str) -> dict[str, Any]:
            request = SyncRequest.from_payload(payload, budget_seconds=budget, queued=True)
            return self.sync(request, run_id=run_id).to_json()

        def report(payload: dict[str, Any], run_id: str) -> dict[str, Any]:
            return run_report(self.reader_deps(), run_id, budget_seconds=budget)

        def backfill(payload: dict[str, Any], run_id: str) -> dict[str, Any]:
            return backfill_job(self.backfill_deps(), payload, run_id)

        def undo(payload: dict[str, Any], run_id: str) -> dict[str, Any]:
            return undo_job(self.undo_deps(), payload, run_id)

        return {"sync": sync, "report": report, "backfill": backfill, "undo": undo}

    def job_deps(self) -> JobDeps:
        return JobDeps(
            run_store=self.run_store(),
            kinds=self.job_kinds(),
            after_batch=lambda run_id, count, clock: after_batch(
                self.fanout_deps(), run_id, count, clock=clock
            ),
        )

    def check_schema(self) -> list[SchemaCheck]:
        notes = self.settings.write_notes
        return check_schema(self.dataverse, self.schema, notes=notes) + landing_column_checks(
            self.dataverse, self.schema, self.landing
        )

    def checked_landing(self) -> LandingRules | None:
        """The landing rules, their contract columns checked against the org's metadata once
        per worker, before the first run that uses them reads or writes anything (SchemaError
        naming the rule and field). No rules: None, and no request."""
        if self.landing is None or not self.landing.columns:
            return self.landing
        with self._lock:
            if not self._landing_checked:
                require_landing_columns(self.dataverse, self.schema, self.landing)
                self._landing_checked = True
        return self.landing

    def propose_schema(self) -> Proposal:
        return propose_schema(self.dataverse, self.schema)


def _msal_tokens(
    settings: Settings, session: requests.Session
) -> tuple[TokenProvider, TokenProvider]:
    """Token providers for Dataverse and Partner Center (one MSAL app when both use the same
    credential: one discovery; a 401 from one service drops only its own scope's token, see
    `MsalApp.forget_tokens`). WORK365_DATAVERSE_AUTH=managed-identity: MSAL's managed-identity
    client for the org URL; WORK365_PC_AUTH=federated: the confidential client's assertion is
    the identity's token (docs/identity.md). Nothing is requested until the first token."""
    timeout = (settings.connect_timeout, settings.read_timeout)
    if settings.ca_bundle:
        # MSAL sends through our session; requests lets REQUESTS_CA_BUNDLE override
        # Session.verify, so the CA must not come from the environment here.
        session.verify = settings.ca_bundle
        session.trust_env = False
    identity = settings.managed_identity_client_id
    pc_credential = settings.partner_center_credential
    assertion = None
    if pc_credential.federated and identity:
        assertion = assertion_provider(identity, session, timeout).token
    pc_app = MsalApp(
        pc_credential, settings.authority_host, session, timeout=timeout, assertion=assertion
    )
    dataverse: TokenProvider
    if settings.dataverse_credential is None:
        if identity is None:  # Settings.from_env requires it with managed-identity
            raise MissingSettingError("WORK365_MANAGED_IDENTITY_CLIENT_ID", "a GUID")
        dataverse = ManagedIdentityTokenProvider(
            identity, settings.dataverse_url, "dataverse", session, timeout=timeout
        )
    else:
        dv_app = (
            pc_app
            if settings.dataverse_credential == pc_credential
            else MsalApp(
                settings.dataverse_credential, settings.authority_host, session, timeout=timeout
            )
        )
        dataverse = MsalTokenProvider(dv_app, settings.dataverse_scope, "dataverse")
    return dataverse, MsalTokenProvider(pc_app, settings.partner_center_scope, "partnerCenter")


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
