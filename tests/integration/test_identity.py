"""No secrets, end to end: Dataverse with the managed identity, Partner Center with a federated
credential whose assertion is the identity's token, and the app's storage by identity (Azurite
over HTTPS with OAuth), each against the sandbox's managed-identity endpoint over loopback.

MSAL and azure-identity read IDENTITY_ENDPOINT and IDENTITY_HEADER from the process environment
themselves (docs/identity.md): the tests set them with monkeypatch around the calls that need
them, and pass the same values to `Settings.from_env`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.storage.blob import BlobServiceClient

from tests.azurite import OAuthAzurite
from tests.integration.conftest import ScenarioBuilder, by_subscription, contract_of, gid
from work365_fn.composition import Services
from work365_fn.errors import ApiError, MissingSettingError
from work365_fn.operations.sync import SyncRequest
from work365_fn.sandbox import Sandbox
from work365_fn.sandbox import identity as identity_module
from work365_fn.sandbox.identity import STORAGE_AUDIENCE, sign_jwt
from work365_fn.settings import Settings

pytestmark = pytest.mark.integration

SECRETLESS = {"WORK365_DATAVERSE_AUTH": "managed-identity", "WORK365_PC_AUTH": "federated"}


def one_new_subscription(world: ScenarioBuilder) -> tuple[str, str]:
    """(record id, the Account's default contract) of one new unassigned subscription."""
    account = world.account(1)
    customer = world.customer(1, account_id=account)
    world.new_subscription(1, customer)
    return gid("rec", 1), gid("con", 10)


def without_secret(box: Sandbox, **extra: str) -> dict[str, str]:
    """The sandbox's connection settings minus the client secret, plus `extra`."""
    env = {k: v for k, v in box.env.items() if k != "WORK365_CLIENT_SECRET"}
    return {**env, **extra}


@contextmanager
def identity_environment(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, header: str
) -> Iterator[None]:
    """What Azure puts in the process environment when the app has an identity."""
    with monkeypatch.context() as m:
        m.setenv("IDENTITY_ENDPOINT", endpoint)
        m.setenv("IDENTITY_HEADER", header)
        yield


def test_sync_runs_without_any_secret(
    world: ScenarioBuilder, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    record, default_contract = one_new_subscription(world)
    box: Sandbox = start(world.scenario())
    settings = Settings.from_env({}, overrides=without_secret(box, **SECRETLESS))
    assert settings.dataverse_credential is None
    assert settings.partner_center_credential.federated

    with identity_environment(
        monkeypatch, box.env["IDENTITY_ENDPOINT"], box.env["IDENTITY_HEADER"]
    ):
        summary = Services.build(settings, sleep=lambda _s: None).sync(SyncRequest())

    assert summary.status == "succeeded"
    assert [row["reason"] for row in by_subscription(summary).values()] == ["default-contract"]
    assert contract_of(box, record) == default_contract
    counts = box.counts()
    # one identity token for the org, one as Partner Center's assertion; both cached afterwards
    assert counts["identity"] == {"GET token": 2}
    assert counts["token"]["POST token"] == 1  # Partner Center's, with the assertion


def test_a_second_run_reuses_the_identity_tokens(
    world: ScenarioBuilder, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_new_subscription(world)
    box: Sandbox = start(world.scenario())
    settings = Settings.from_env({}, overrides=without_secret(box, **SECRETLESS))
    with identity_environment(
        monkeypatch, box.env["IDENTITY_ENDPOINT"], box.env["IDENTITY_HEADER"]
    ):
        services = Services.build(settings, sleep=lambda _s: None)
        services.sync(SyncRequest(dry_run=True))
        services.sync(SyncRequest(dry_run=True))
    assert box.counts()["identity"] == {"GET token": 2}


def test_an_expired_dataverse_token_is_asked_of_the_identity_again(
    world: ScenarioBuilder, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_new_subscription(world)
    box: Sandbox = start(world.scenario())
    settings = Settings.from_env({}, overrides=without_secret(box, **SECRETLESS))
    with identity_environment(
        monkeypatch, box.env["IDENTITY_ENDPOINT"], box.env["IDENTITY_HEADER"]
    ):
        services = Services.build(settings, sleep=lambda _s: None)
        services.sync(SyncRequest(dry_run=True))
        box.expire_tokens()  # Dataverse now answers 401 to the cached token
        summary = services.sync(SyncRequest(dry_run=True))
    assert summary.status == "succeeded"
    assert box.counts()["identity"]["GET token"] >= 3


def test_a_wrong_identity_header_is_a_clear_error(
    world: ScenarioBuilder, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_new_subscription(world)
    box: Sandbox = start(world.scenario())
    overrides = without_secret(box, **SECRETLESS, IDENTITY_HEADER="not-the-header")
    services = Services.build(Settings.from_env({}, overrides=overrides), sleep=lambda _s: None)
    with identity_environment(monkeypatch, box.env["IDENTITY_ENDPOINT"], "not-the-header"):
        summary = services.sync(SyncRequest(dry_run=True))
    assert summary.status == "failed"
    [error] = summary.to_json()["errors"]
    assert error["service"] == "dataverse"
    message = str(error["message"])
    assert "managed-identity endpoint refused" in message
    assert "401" in message and "IDENTITY_HEADER does not match" in message
    assert box.env["IDENTITY_HEADER"] not in message
    assert box.counts()["identity"] == {"GET token": 1}  # refused: not retried
    assert "POST token" not in box.counts()["token"]  # nothing reached Entra


def test_an_identity_not_assigned_to_the_app_is_refused(
    world: ScenarioBuilder, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_new_subscription(world)
    box: Sandbox = start(world.scenario())
    stranger = str(uuid.uuid4())
    overrides = without_secret(box, **SECRETLESS, WORK365_MANAGED_IDENTITY_CLIENT_ID=stranger)
    services = Services.build(Settings.from_env({}, overrides=overrides), sleep=lambda _s: None)
    with identity_environment(
        monkeypatch, box.env["IDENTITY_ENDPOINT"], box.env["IDENTITY_HEADER"]
    ):
        summary = services.sync(SyncRequest(dry_run=True))
    assert summary.status == "failed"
    [error] = summary.to_json()["errors"]
    assert "No User Assigned" in str(error["message"])
    assert "check WORK365_MANAGED_IDENTITY_CLIENT_ID" in str(error["message"])


def test_a_process_without_the_identity_endpoint_never_falls_back_to_imds(
    world: ScenarioBuilder, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_new_subscription(world)
    box: Sandbox = start(world.scenario())
    services = Services.build(
        Settings.from_env({}, overrides=without_secret(box, **SECRETLESS)), sleep=lambda _s: None
    )
    monkeypatch.delenv("IDENTITY_ENDPOINT", raising=False)
    monkeypatch.delenv("IDENTITY_HEADER", raising=False)
    summary = services.sync(SyncRequest(dry_run=True))
    assert summary.status == "failed"
    [error] = summary.to_json()["errors"]
    assert error["code"] == "no-identity-endpoint"
    assert error["status"] == 0  # a configuration error: no HTTP request, so no 401
    assert "configuration error, no request sent" in str(error["message"])
    assert "IDENTITY_ENDPOINT" in str(error["message"])
    assert "identity" not in box.counts()  # never asked


def test_the_cli_reports_a_missing_identity_endpoint_without_an_http_status(
    tmp_path: Path,
) -> None:
    """`WORK365_DATAVERSE_AUTH=managed-identity sync --dry-run --sandbox` outside Azure."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("WORK365_", "IDENTITY", "MSI_"))
    }
    env |= {"WORK365_DATAVERSE_AUTH": "managed-identity", "WORK365_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "work365_fn", "sync", "--dry-run", "--sandbox"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    [line] = [x for x in done.stdout.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: dataverse no-identity-endpoint: configuration error"), line
    assert " 401 " not in line
    assert "Traceback" not in done.stdout + done.stderr


def test_a_missing_identity_endpoint_fails_at_start_naming_it(start: Any) -> None:
    box: Sandbox = start(ScenarioBuilder().scenario())
    overrides = {
        k: v for k, v in without_secret(box, **SECRETLESS).items() if not k.startswith("IDENTITY_")
    }
    with pytest.raises(MissingSettingError) as missing:
        Settings.from_env({}, overrides=overrides)
    assert "IDENTITY_ENDPOINT" in str(missing.value)


def test_federated_partner_center_with_a_secret_for_dataverse(
    world: ScenarioBuilder, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_new_subscription(world)
    box: Sandbox = start(world.scenario())
    settings = Settings.from_env({}, overrides={**box.env, "WORK365_PC_AUTH": "federated"})
    with identity_environment(
        monkeypatch, box.env["IDENTITY_ENDPOINT"], box.env["IDENTITY_HEADER"]
    ):
        summary = Services.build(settings, sleep=lambda _s: None).sync(SyncRequest(dry_run=True))
    assert summary.status == "succeeded"
    assert box.counts()["identity"] == {"GET token": 1}  # the assertion only
    assert box.counts()["token"]["POST token"] == 2  # Dataverse by secret, Partner Center federated


# ---- storage by identity: Azurite over HTTPS with OAuth ---------------------------------------


def trust_both(tmp_path: Path, azurite: OAuthAzurite, box: Sandbox) -> str:
    """One CA bundle with Azurite's certificate and the sandbox's (WORK365_CA_BUNDLE)."""
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_text(Path(azurite.ca_bundle).read_text() + Path(box.ca_bundle).read_text())
    return str(bundle)


def identity_storage(azurite: OAuthAzurite, box: Sandbox, bundle: str, **extra: str) -> Settings:
    suffix = uuid.uuid4().hex[:12]
    return Settings.from_env(
        {},
        overrides={
            **without_secret(box, **SECRETLESS),
            "WORK365_CA_BUNDLE": bundle,
            "AzureWebJobsStorage__blobServiceUri": azurite.blob_url,
            "AzureWebJobsStorage__queueServiceUri": azurite.queue_url,
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": box.env["WORK365_MANAGED_IDENTITY_CLIENT_ID"],
            "WORK365_RUNS_CONTAINER": f"runs-{suffix}",
            "WORK365_JOBS_QUEUE": f"jobs-{suffix}",
            **extra,
        },
    )


def test_storage_by_identity_round_trips_documents_queue_and_lease(
    azurite_oauth: OAuthAzurite, start: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box: Sandbox = start(ScenarioBuilder().scenario())
    settings = identity_storage(azurite_oauth, box, trust_both(tmp_path, azurite_oauth, box))
    assert settings.storage_connection is None and settings.storage_identity is not None
    with identity_environment(
        monkeypatch, box.env["IDENTITY_ENDPOINT"], box.env["IDENTITY_HEADER"]
    ):
        storage = Services.build(settings).app_storage()
        assert storage is not None
        store = storage.run_store()
        store.put("run-1", "state", {"status": "queued"})
        assert store.get("run-1", "state") == {"status": "queued"}
        assert store.put_new("run-1", "claim", {"by": "me"}) is True
        assert store.names("run-1") == ["claim", "state"]
        assert storage.jobs().send({"kind": "sync"})
        with storage.lease("run-1", renew_every=0) as lease:
            assert lease.holder() == (True, "run-1")
    assert box.counts()["identity"]["GET token"] == 1  # one storage token, cached by the SDK


def test_a_whole_tenant_sync_holds_its_lease_in_storage_by_identity(
    world: ScenarioBuilder,
    azurite_oauth: OAuthAzurite,
    start: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record, default_contract = one_new_subscription(world)
    box: Sandbox = start(world.scenario())
    settings = identity_storage(azurite_oauth, box, trust_both(tmp_path, azurite_oauth, box))
    with identity_environment(
        monkeypatch, box.env["IDENTITY_ENDPOINT"], box.env["IDENTITY_HEADER"]
    ):
        services = Services.build(settings, sleep=lambda _s: None)
        summary = services.sync(SyncRequest())  # whole tenant, writing: takes the lease
        storage = services.app_storage()
        assert storage is not None
        assert storage.lease("probe").holder() == (False, None)  # released at the end
    assert summary.status == "succeeded"
    assert contract_of(box, record) == default_contract
    # Dataverse, Partner Center's assertion and storage: three resources, one token each
    assert box.counts()["identity"] == {"GET token": 3}


def test_storage_by_an_identity_the_endpoint_refuses_names_the_identity(
    azurite_oauth: OAuthAzurite, start: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box: Sandbox = start(ScenarioBuilder().scenario())
    settings = identity_storage(
        azurite_oauth,
        box,
        trust_both(tmp_path, azurite_oauth, box),
        AzureWebJobsStorage__clientId=str(uuid.uuid4()),
    )
    with identity_environment(
        monkeypatch, box.env["IDENTITY_ENDPOINT"], box.env["IDENTITY_HEADER"]
    ):
        storage = Services.build(settings).app_storage()
        assert storage is not None
        with pytest.raises(ApiError) as failed:
            storage.run_store().put("run-1", "state", {})
    assert failed.value.code == "authentication"
    assert "managed identity" in str(failed.value)


class _Fixed:
    """A TokenCredential with a token of our making."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, 2_000_000_000)


def test_azurite_checks_the_token_it_is_given(azurite_oauth: OAuthAzurite) -> None:
    """The fixture is no pushover: a token for another audience is refused, so the tests above
    pass because the identity endpoint's token is right."""
    now = 1_700_000_000
    wrong = sign_jwt(
        {"aud": "https://example.com", "iss": "https://sts.windows.net/t/", "iat": now,
         "nbf": now, "exp": 4_000_000_000},
        b"k" * 32,
    )  # fmt: skip
    right = sign_jwt(
        {"aud": STORAGE_AUDIENCE, "iss": "https://sts.windows.net/t/", "iat": now, "nbf": now,
         "exp": 4_000_000_000},
        b"k" * 32,
    )  # fmt: skip
    name = f"probe-{uuid.uuid4().hex[:8]}"

    def container(token: str) -> Any:
        client = BlobServiceClient(
            azurite_oauth.blob_url, _Fixed(token), connection_verify=azurite_oauth.ca_bundle
        )
        return client.get_container_client(name)

    with pytest.raises(ClientAuthenticationError):
        container(wrong).create_container()
    container(right).create_container()
    assert container(right).exists()


def test_no_identity_token_or_header_reaches_a_log_line(
    world: ScenarioBuilder,
    start: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    one_new_subscription(world)
    box: Sandbox = start(world.scenario())
    issued: list[str] = []
    original = box.tokens.issue

    def recording(audience: str, client_id: str) -> tuple[str, int]:
        token, lifetime = original(audience, client_id)
        issued.append(token)
        return token, lifetime

    monkeypatch.setattr(box.tokens, "issue", recording)

    def signing(claims: Any, key: bytes) -> str:
        issued.append(sign_jwt(claims, key))
        return issued[-1]

    monkeypatch.setattr(identity_module, "sign_jwt", signing)  # the assertion's JWT
    settings = Settings.from_env({}, overrides=without_secret(box, **SECRETLESS))
    caplog.set_level("DEBUG")
    with identity_environment(
        monkeypatch, box.env["IDENTITY_ENDPOINT"], box.env["IDENTITY_HEADER"]
    ):
        summary = Services.build(settings, sleep=lambda _s: None).sync(SyncRequest())
    assert summary.status == "succeeded"
    assert len(issued) == 3  # the org token, the assertion, Partner Center's token
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "msi/token" in text  # the identity calls were logged (urllib3 at DEBUG) ...
    for secret in [*issued, box.env["IDENTITY_HEADER"]]:
        assert secret not in text  # ... without a token or the header
