"""Secrets never leave: whole sandbox syncs (a good one, with a certificate, with a wrong
secret, with upstream 500s, with a 401) at DEBUG level, msal and urllib3 included. No client
secret, bearer token the sandbox issued, or certificate content appears in any log record
(message, arguments, exception text), the summary, an error message, or an HTTP response."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.integration.conftest import ScenarioBuilder
from work365_fn.composition import Services
from work365_fn.entrypoints.functions import handlers as triggers
from work365_fn.logs import install
from work365_fn.operations.sync import SyncRequest
from work365_fn.sandbox import Sandbox
from work365_fn.settings import Settings

WRONG_SECRET = "Wr0ng~Secret.Value_9f8e7d6c5b4a3210"


class Everything(logging.Handler):
    """Every record, at every level, as a handler of the app would get it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> list[str]:
        out = []
        formatter = logging.Formatter()
        for r in self.records:
            out.append(r.getMessage())
            out.append(repr(r.args))
            if r.exc_info:
                out.append(r.exc_text or formatter.formatException(r.exc_info))
            out.append(repr({k: v for k, v in vars(r).items() if k not in ("msg", "args")}))
        return out


@pytest.fixture
def logs() -> Iterator[Everything]:
    handler = Everything()
    install(handler)
    root = logging.getLogger()
    saved = (root.level, {n: logging.getLogger(n).level for n in ("urllib3", "msal")})
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in ("urllib3", "msal", "work365_fn"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(saved[0])
    for name, level in saved[1].items():
        logging.getLogger(name).setLevel(level)


@dataclass
class Secrets:
    values: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return [*self.values, *self.tokens]


def watch_tokens(box: Sandbox, secrets: Secrets) -> None:
    """Record every bearer token the sandbox issues."""
    issue = box.tokens.issue

    def recording(audience: str, client_id: str) -> tuple[str, int]:
        token, lifetime = issue(audience, client_id)
        secrets.tokens.append(token)
        return token, lifetime

    box.tokens.issue = recording  # type: ignore[method-assign]


def scenario() -> Any:
    world = ScenarioBuilder()
    account = world.account(1)
    customer = world.customer(1, account_id=account)
    world.new_subscription(1, customer)
    world.pc_subscription(2, customer)
    return world.scenario()


def http_sync(built: Services, body: bytes = b"{}") -> func.HttpResponse:
    request = func.HttpRequest(
        method="POST", url="http://localhost:7071/api/sync", body=body, headers={}
    )
    return triggers.sync_http(request, lambda: built)


def build(box: Sandbox, tmp_path: Path, **settings: str) -> Services:
    env = {**box.env, "WORK365_STATE_DIR": str(tmp_path), "WORK365_CREATE_MISSING": "true"}
    env.update(settings)
    env = {k: v for k, v in env.items() if v != "<unset>"}
    return Services.build(Settings.from_env({}, overrides=env), sleep=lambda _s: None)


def assert_nothing_leaks(secrets: Secrets, logs: Everything, *outputs: str) -> None:
    assert secrets.all(), "nothing to look for"
    texts = [*logs.texts(), *outputs]
    for secret in secrets.all():
        for text in texts:
            assert secret not in text, f"a secret leaked into: {text[:300]}"


def test_a_whole_sync_leaks_no_secret_or_token(logs: Everything, tmp_path: Path) -> None:
    secrets = Secrets()
    with Sandbox.start(scenario()) as box:
        watch_tokens(box, secrets)
        secrets.values.append(box.env["WORK365_CLIENT_SECRET"])
        built = build(box, tmp_path)
        response = http_sync(built)
        box.expire_tokens()  # the next run meets 401s and acquires new tokens
        again = built.sync(SyncRequest())

    assert response.status_code == 200
    assert len(secrets.tokens) >= 4  # two services, twice
    assert logs.records, "DEBUG logging captured nothing"
    assert any(r.name.startswith(("msal", "urllib3")) for r in logs.records)
    assert_nothing_leaks(
        secrets,
        logs,
        response.get_body().decode(),
        str(again.to_json()),
        repr(built.settings),
        repr(built),
    )


def test_a_certificate_credential_leaks_no_key(logs: Everything, tmp_path: Path) -> None:
    pem, thumbprint, key_lines = certificate(tmp_path)
    secrets = Secrets(values=key_lines)
    with Sandbox.start(scenario()) as box:
        watch_tokens(box, secrets)
        built = build(
            box,
            tmp_path,
            WORK365_CLIENT_SECRET="<unset>",
            WORK365_CERT_PATH=str(pem),
            WORK365_CERT_THUMBPRINT=thumbprint,
        )
        response = http_sync(built)
    assert response.status_code == 200, response.get_body()
    assert secrets.tokens
    assert_nothing_leaks(secrets, logs, response.get_body().decode(), repr(built.settings))


@pytest.mark.parametrize("failure", ["wrong-secret", "upstream-500", "expired-401", "token-junk"])
def test_a_failing_sync_leaks_no_secret_or_token(
    logs: Everything, tmp_path: Path, failure: str
) -> None:
    secrets = Secrets()
    with Sandbox.start(scenario()) as box:
        watch_tokens(box, secrets)
        secrets.values.append(box.env["WORK365_CLIENT_SECRET"])
        settings: dict[str, str] = {"WORK365_MAX_ATTEMPTS": "2"}
        if failure == "wrong-secret":
            settings["WORK365_CLIENT_SECRET"] = WRONG_SECRET
            secrets.values.append(WRONG_SECRET)
        elif failure == "upstream-500":
            box.faults.add({"service": "dataverse", "method": "GET", "kind": "500", "every": 1})
        elif failure == "expired-401":
            box.faults.add({"service": "partnerCenter", "kind": "401", "every": 1})
        else:
            box.faults.add({"service": "token", "kind": "malformed-json", "times": 1})
        built = build(box, tmp_path, **settings)
        response = http_sync(built)

    body = response.get_body().decode()
    if failure == "token-junk":
        assert response.status_code == 200  # retried
    else:
        assert response.status_code == 502
        assert "error" in body
    if failure != "wrong-secret":
        assert secrets.tokens
    assert_nothing_leaks(secrets, logs, body)


def test_msal_logging_a_token_answer_it_cannot_parse_is_redacted(logs: Everything) -> None:
    """MSAL logs the raw body of a token answer that is not JSON (at ERROR): a cut-off answer
    holds a part of the access token."""
    partial = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsIng1dCI6Ik1yNS1BVWliZkJpaTdOZDFq"
    text = '{"token_type": "Bearer", "expires_in": 3599, "access_token": "' + partial
    logging.getLogger("msal.oauth2cli.oauth2").error("Token response is not json: %s", text)
    headers = {"Authorization": f"Bearer {partial}"}
    logging.getLogger("urllib3.connectionpool").debug("headers: %s", headers)
    assert_nothing_leaks(Secrets(tokens=[partial]), logs)


def certificate(tmp_path: Path) -> tuple[Path, str, list[str]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "work365-test")])
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = tmp_path / "app.pem"
    pem.write_bytes(key_pem + cert.public_bytes(serialization.Encoding.PEM))
    thumbprint = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()  # noqa: S324
    body = [line for line in key_pem.decode().splitlines() if "-----" not in line]
    return pem, thumbprint.upper(), body
