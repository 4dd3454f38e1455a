"""Start and stop the whole sandbox: certificate, token issuer, emulators, server, state file.

    with Sandbox.start(Scenario.builtin("demo")) as sandbox:
        settings = Settings.from_env(overrides=sandbox.env)
        ...
        assert sandbox.counts()["dataverse"]["PATCH work365_subscriptions"] == 3

State: with `state_path`, the SQLite file is seeded from the scenario when it does not exist and
reused as it is when it does (its faults, alternateKey, schema and the scenario's fingerprint were
kept in the file's `sandbox_meta` table; `check_reuse` refuses a different scenario, as the CLI
does for `--scenario` with an existing `--state`). Without it, each start gets a temporary
database, removed on stop. The certificate is made afresh on every start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TextIO

from work365_fn.adapters.schema import Schema

from .core import Emulator, Request, TokenIssuer
from .dataverse import DataverseEmulator
from .faults import FaultSet, Limiter, Limits, parse_rules
from .identity import ASSERTION_AUDIENCE, IdentityEmulator, ManagedIdentity
from .partner_center import PC_AUDIENCE, PartnerCenterEmulator
from .provider_sync import FROM_PROVIDER_ACCOUNTS, ProviderSync
from .scenario import Scenario, ScenarioError
from .server import SandboxServer
from .tls import make_certificate
from .token import FederatedCredential, SandboxTokenIssuer, TokenEmulator
from .webhooks import WebhookDelivery

log = logging.getLogger(__name__)

SANDBOX_TENANT_ID = "5a4f0e1c-8b2d-4c3e-9f6a-7b8c9d0e1f2a"
SANDBOX_CLIENT_ID = "3c2b1a09-8f7e-4d6c-b5a4-938271605f4e"
# The Function App's user-assigned managed identity: client id, principal (object) id.
SANDBOX_IDENTITY = ManagedIdentity(
    "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a", "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
)
STATE_FORMAT = 1
# `sandbox serve` uses a fixed secret and certificate folder so that local.settings.json (copied
# from local.settings.sample.json) keeps working across restarts. Loopback only, never real.
SERVE_CLIENT_SECRET = "local-sandbox-secret-not-a-real-credential"  # noqa: S105
SERVE_TLS_DIR = ".sandbox/tls"
DEFAULT_SCHEMA = Schema()
DEFAULT_LIMITS = Limits()


def _make_folder_of(db_path: str) -> None:
    """The state file's folder (the CLI refuses a missing one first: docs/cli.md#files-and-folders);
    a path through a file or a folder that cannot be made is a ScenarioError, one line."""
    try:
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScenarioError(
            f"state file {db_path}: cannot make its folder ({exc.strerror or exc}): "
            "pass another --state path"
        ) from None


class DataverseLike(Emulator, Protocol):
    """What the runner and tests need of the Dataverse emulator (dataverse.DataverseEmulator)."""

    def seed(self, scenario: Scenario) -> None: ...

    def race(self, request: Request, changes: dict[str, object]) -> None: ...

    def rows(self, entity_set: str) -> list[dict[str, Any]]: ...


# (db_path, base_url, tokens, schema, alternate_key) -> emulator
DataverseFactory = Callable[[str, str, TokenIssuer, Schema, bool], DataverseLike]


def _default_dataverse(
    db_path: str, base_url: str, tokens: TokenIssuer, schema: Schema, alternate_key: bool
) -> DataverseLike:
    return DataverseEmulator(db_path, base_url, tokens, schema=schema, alternate_key=alternate_key)


class Sandbox:
    """A running sandbox. Build it with `Sandbox.start(...)`; stop it with `stop()` or `with`."""

    def __init__(
        self,
        *,
        server: SandboxServer,
        tokens: SandboxTokenIssuer,
        dataverse: DataverseLike,
        partner_center: PartnerCenterEmulator,
        env: dict[str, str],
        cleanup: list[str],
    ) -> None:
        self._server = server
        self.tokens = tokens
        self.dataverse = dataverse
        self.partner_center = partner_center
        self.env = env
        self._cleanup = cleanup
        self._stopped = False
        # Dataverse webhooks (webhooks.py): steps registered here are POSTed the rows created.
        self.webhooks = self.use_webhooks(WebhookDelivery(env["WORK365_DATAVERSE_URL"]))

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def start(  # noqa: PLR0913, PLR0915 - independent keyword options; start-up in order
        cls,
        scenario: Scenario,
        *,
        state_path: str | None = None,
        port: int = 0,
        latency_ms: int = 0,
        enforce_limits: bool = False,
        schema: Schema | None = None,
        limits: Limits = DEFAULT_LIMITS,
        token_lifetime_seconds: int = 3600,
        clock: Callable[[], float] = time.time,
        dataverse_factory: DataverseFactory | None = None,
        client_secret: str | None = None,
        tls_dir: str | None = None,
    ) -> Sandbox:
        """Seed (or reuse) the state, start the HTTPS server on 127.0.0.1:`port` (0 = any free
        port) and return the running sandbox. `clock` drives token expiry and the limits.
        `schema` (the org's names) defaults to the scenario's, or the state file's."""
        make_dataverse = dataverse_factory or _default_dataverse
        cleanup: list[str] = []
        work_dir = tempfile.mkdtemp(prefix="work365-sandbox-")
        cleanup.append(work_dir)
        created_state: str | None = None
        try:
            if state_path is None:
                db_path = os.path.join(work_dir, "state.sqlite")
                seed = True
            else:
                db_path = os.path.abspath(state_path)
                seed = not os.path.exists(db_path)
                if seed:
                    _make_folder_of(db_path)
                    created_state = db_path
            if seed:
                rules = parse_rules(scenario.faults, "scenario")
                raw_faults = [dict(r) for r in scenario.faults]
                alternate_key = scenario.alternate_key
                schema = schema or scenario.schema or DEFAULT_SCHEMA
            else:
                raw_faults, alternate_key = _read_meta(db_path)
                rules = parse_rules(raw_faults, f"state {db_path}")
                schema = schema or _read_schema(db_path)

            certificate = make_certificate(tls_dir or os.path.join(work_dir, "tls"))
            faults = FaultSet(rules)
            limiter = Limiter(limits, clock) if enforce_limits else None
            server = SandboxServer(
                certificate.server_context(),
                port=port,
                faults=faults,
                limiter=limiter,
                latency_ms=latency_ms,
            )
            url = server.url
            client_secret = client_secret or secrets.token_urlsafe(32)
            tokens = SandboxTokenIssuer(
                secrets.token_bytes(32), lifetime_seconds=token_lifetime_seconds, clock=clock
            )
            token_emulator = TokenEmulator(
                url,
                SANDBOX_TENANT_ID,
                SANDBOX_CLIENT_ID,
                client_secret,
                tokens,
                resources=[url, PC_AUDIENCE],
            )
            try:
                dataverse = make_dataverse(db_path, url, tokens, schema, alternate_key)
                partner_center = PartnerCenterEmulator(db_path, tokens)
                if seed:
                    dataverse.seed(scenario)
                    partner_center.seed(scenario)
                    _write_meta(db_path, scenario, raw_faults, alternate_key, schema)
            except BaseException:
                server.stop()
                raise
            server.mount(token_emulator)
            identity_header = _identity_header(client_secret)
            server.mount(_identity(url, tokens, token_emulator, identity_header, clock))
            server.mount(partner_center)
            server.mount(dataverse)
            server.start()
        except BaseException:
            for path in cleanup:
                shutil.rmtree(path, ignore_errors=True)
            if created_state is not None:  # never leave a half-seeded state file behind
                for suffix in ("", "-journal", "-wal", "-shm"):
                    Path(created_state + suffix).unlink(missing_ok=True)
            raise
        env = {
            "WORK365_TENANT_ID": SANDBOX_TENANT_ID,
            "WORK365_CLIENT_ID": SANDBOX_CLIENT_ID,
            "WORK365_CLIENT_SECRET": client_secret,
            "WORK365_AUTHORITY_HOST": url,
            "WORK365_DATAVERSE_URL": url,
            "WORK365_PARTNER_CENTER_URL": url,
            "WORK365_CA_BUNDLE": certificate.cert_path,
            # The managed-identity endpoint, as Azure sets it (read only with
            # WORK365_DATAVERSE_AUTH=managed-identity, WORK365_PC_AUTH=federated or storage by
            # identity; MSAL reads the first two from the process environment: docs/identity.md).
            "IDENTITY_ENDPOINT": f"{url}/msi/token",
            "IDENTITY_HEADER": identity_header,
            "WORK365_MANAGED_IDENTITY_CLIENT_ID": SANDBOX_IDENTITY.client_id,
            # The run store (incremental watermark) describes this sandbox's data: it lives with
            # the state file, or in the temporary folder of a throwaway sandbox.
            "WORK365_STATE_DIR": (
                os.path.join(work_dir, "runs") if state_path is None else f"{db_path}.work365"
            ),
        }
        log.info("sandbox listening on %s (%s)", url, "new state" if seed else "reused state")
        return cls(
            server=server,
            tokens=tokens,
            dataverse=dataverse,
            partner_center=partner_center,
            env=env,
            cleanup=cleanup,
        )

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.webhooks.stop()
        self._server.stop()
        for emulator in (self.dataverse, self.partner_center):
            close = getattr(emulator, "close", None)
            if callable(close):
                close()
        for path in self._cleanup:
            shutil.rmtree(path, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what tests use ----------------------------------------------------------------------

    def use_webhooks(self, delivery: WebhookDelivery) -> WebhookDelivery:
        """Deliver the Dataverse emulator's row events through `delivery` (e.g. one with an
        injected sleep, or a `post` that calls the handler directly)."""
        old = getattr(self, "webhooks", None)
        if old is not None:
            old.stop()
        self.webhooks = delivery
        if hasattr(self.dataverse, "on_event"):
            self.dataverse.on_event = delivery.notify
        return delivery

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def ca_bundle(self) -> str:
        return self.env["WORK365_CA_BUNDLE"]

    @property
    def tenant_id(self) -> str:
        return SANDBOX_TENANT_ID

    @property
    def client_id(self) -> str:
        return SANDBOX_CLIENT_ID

    @property
    def faults(self) -> FaultSet:
        return self._server.faults

    def counts(self) -> dict[str, dict[str, int]]:
        """Requests served (faulted and throttled ones included) by service, then kind."""
        return self._server.counts.snapshot()

    def reset_counts(self) -> None:
        self._server.counts.reset()

    def provider_sync(
        self,
        customer_id: str,
        subscription_id: str,
        *,
        record_id: str | None = None,
        account_id: str | None = FROM_PROVIDER_ACCOUNTS,
        created_on: str | None = None,
    ) -> str:
        """Work 365's provider sync for one Partner Center subscription: its Dataverse record
        created through the emulator's Web API create path (the webhook event fires); returns
        the record id. provider_sync.py says what the record carries."""
        sync = ProviderSync(
            self.dataverse,
            self.partner_center,
            self.tokens,
            dataverse_url=self.env["WORK365_DATAVERSE_URL"],
            partner_center_audience=PC_AUDIENCE,
            schema=getattr(self.dataverse, "schema", None) or Schema(),
        )
        return sync.sync(
            customer_id,
            subscription_id,
            record_id=record_id,
            account_id=account_id,
            created_on=created_on,
        )

    def order(
        self,
        customer_id: str,
        item: dict[str, Any],
        *,
        record_id: str | None = None,
        account_id: str | None = FROM_PROVIDER_ACCOUNTS,
        created_on: str | None = None,
    ) -> str:
        """A Partner Center order (`partner_center.add_subscription`), then the provider sync
        that makes its record: returns the record id."""
        self.partner_center.add_subscription(customer_id, item)
        return self.provider_sync(
            customer_id,
            str(item["id"]),
            record_id=record_id,
            account_id=account_id,
            created_on=created_on,
        )

    def expire_tokens(self) -> None:
        """Make every token issued so far invalid (401 "token expired"), as if time had passed."""
        self.tokens.expire_all()

    def __repr__(self) -> str:  # no secret in a repr
        return f"Sandbox(url={self.url!r}, stopped={self._stopped})"


def _identity_header(client_secret: str) -> str:
    """IDENTITY_HEADER, derived from the client secret: fixed for `sandbox serve` (whose secret
    is), so local.settings.json keeps working across restarts."""
    return hashlib.sha256(b"work365 sandbox identity header:" + client_secret.encode()).hexdigest()


def _identity(
    url: str,
    tokens: SandboxTokenIssuer,
    token_emulator: TokenEmulator,
    header: str,
    clock: Callable[[], float],
) -> IdentityEmulator:
    """The managed-identity endpoint, and the app registration's federated identity credential
    that trusts its identity (issuer, principal id as subject, api://AzureADTokenExchange)."""
    jwt_key = secrets.token_bytes(32)
    identity = IdentityEmulator(
        SANDBOX_TENANT_ID,
        [SANDBOX_IDENTITY],
        header,
        tokens,
        [url],
        jwt_key=jwt_key,
        clock=clock,
    )
    token_emulator.trust(
        FederatedCredential(
            issuer=f"https://login.microsoftonline.com/{SANDBOX_TENANT_ID}/v2.0",
            subject=SANDBOX_IDENTITY.principal_id,
            audience=ASSERTION_AUDIENCE,
            key=jwt_key,
            clock=clock,
        )
    )
    return identity


def _write_meta(
    db_path: str,
    scenario: Scenario,
    faults: list[dict[str, Any]],
    alternate_key: bool,
    schema: Schema,
) -> None:
    seeded = {"origin": scenario.origin, "fingerprint": scenario.fingerprint()}
    with sqlite3.connect(db_path, timeout=30) as db:
        db.execute("CREATE TABLE IF NOT EXISTS sandbox_meta (key TEXT PRIMARY KEY, value TEXT)")
        db.executemany(
            "INSERT OR REPLACE INTO sandbox_meta VALUES (?, ?)",
            [
                ("format", json.dumps(STATE_FORMAT)),
                ("faults", json.dumps(faults)),
                ("alternateKey", json.dumps(alternate_key)),
                ("schema", json.dumps(schema.to_json())),
                ("scenario", json.dumps(seeded)),
            ],
        )
    db.close()


def _meta_rows(db_path: str) -> dict[str, str]:
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
        try:
            rows = dict(db.execute("SELECT key, value FROM sandbox_meta").fetchall())
        finally:
            db.close()
    except sqlite3.DatabaseError:
        raise ScenarioError(
            f"state file {db_path} is not a sandbox state file (or cannot be read): delete it, "
            "or pass another --state path, to seed a new one"
        ) from None
    if "format" not in rows:
        raise ScenarioError(f"state file {db_path} was never fully seeded: delete it")
    return rows


def check_reuse(state_path: str, scenario: Scenario) -> None:
    """A scenario given with an existing state file: the state wins, so the scenario must be the
    one the state was seeded with (same content, wherever it came from). Any other is refused
    with a ScenarioError that says what to do: never silently ignored."""
    rows = _meta_rows(os.path.abspath(state_path))
    seeded = json.loads(rows.get("scenario", "{}"))
    if seeded.get("fingerprint") == scenario.fingerprint():
        return
    was = f"seeded from {seeded['origin']}" if seeded.get("origin") else "seeded earlier"
    raise ScenarioError(
        f"--state {state_path} already holds a scenario ({was}), not {scenario.origin}: drop "
        "--scenario to go on with that state, or give a new --state file to seed this scenario"
    )


def _read_meta(db_path: str) -> tuple[list[dict[str, Any]], bool]:
    rows = _meta_rows(db_path)
    faults = json.loads(rows.get("faults", "[]"))
    alternate_key = bool(json.loads(rows.get("alternateKey", "false")))
    return faults, alternate_key


def _read_schema(db_path: str) -> Schema:
    """The names the state file was seeded with (the default map for older files)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        row = db.execute("SELECT value FROM sandbox_meta WHERE key = 'schema'").fetchone()
    finally:
        db.close()
    return DEFAULT_SCHEMA if row is None else Schema.from_json(json.loads(row[0]))


def serve(  # noqa: PLR0913 - Sandbox.start's options, as the CLI passes them
    scenario: Scenario,
    port: int,
    state_path: str | None,
    out: TextIO,
    *,
    latency_ms: int = 0,
    enforce_limits: bool = False,
    schema: Schema | None = None,
    stop_event: threading.Event | None = None,
    client_secret: str = SERVE_CLIENT_SECRET,
    tls_dir: str = SERVE_TLS_DIR,
) -> None:
    """Run the sandbox until KeyboardInterrupt (or `stop_event`), printing the URL and the
    WORK365_* connection settings to paste into local.settings.json."""
    with Sandbox.start(
        scenario,
        state_path=state_path,
        port=port,
        latency_ms=latency_ms,
        enforce_limits=enforce_limits,
        schema=schema,
        client_secret=client_secret,
        tls_dir=tls_dir,
    ) as sandbox:
        out.write(f"work365 sandbox listening on {sandbox.url}\n")
        if state_path:
            out.write(f"state: {os.path.abspath(state_path)}\n")
        out.write(
            "Connection settings (local.settings.sample.json has them for --port 8443). "
            'Paste into local.settings.json under "Values":\n'
        )
        # The state folder is the sandbox's own temporary one: an app started with `func start`
        # keeps its run documents in its storage (Azurite) or its own WORK365_STATE_DIR.
        connection = {k: v for k, v in sandbox.env.items() if k != "WORK365_STATE_DIR"}
        out.write(json.dumps(connection, indent=2) + "\n")
        out.write("Press Ctrl+C to stop.\n")
        out.flush()
        event = stop_event or threading.Event()
        try:
            while not event.wait(0.5):
                pass
        except KeyboardInterrupt:
            out.write("stopping the sandbox\n")
