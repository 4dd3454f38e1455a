"""Status links expire and survive a key rotation (issue 12, defect 7), through the real handler
`function_app.run_status` with real `func.HttpRequest`s, over the sandbox and Azurite.

`sig` is `<kid>.<exp>.<mac>` (work365_fn/signing.py); the clock is the services' `clock`,
moved by the tests (nothing sleeps)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import pytest

import function_app
from tests.e2e.async_support import (
    SIGNING_KEY,
    App,
    app,
    body,
    get_status,
    post,
    status_request,
)
from work365_fn.entrypoints.functions.responses import MISCONFIGURED

__all__ = ["app"]  # the fixture

NEW_KEY = "the-next-signing-key-9876543210-zyxwvutsrqpo"
T0 = datetime.now(UTC).replace(microsecond=0)  # the sync itself reads this clock too


def kid(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def sig_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["sig"][0]


def at(when: datetime) -> None:
    """Set the clock of the worker's services (built on first use, like the Functions host)."""
    function_app.services().clock = lambda: when


def restart_worker(monkeypatch: pytest.MonkeyPatch, when: datetime, **env: str | None) -> None:
    """New app settings: the Functions host restarts the worker, which builds new services."""
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    function_app.services.cache_clear()
    at(when)


def start(when: datetime = T0) -> tuple[str, str]:
    at(when)
    resp = function_app.sync_http(post({"async": True, "dryRun": True}))
    assert resp.status_code == 202, resp.get_body()
    return body(resp)["runId"], resp.headers["Location"]


def poll(location: str) -> func.HttpResponse:
    return function_app.run_status(get_status(location))


def refused(resp: func.HttpResponse, run_id: str) -> str:
    assert resp.status_code == 403, resp.get_body()
    data = body(resp)
    assert (data["error"], data["runId"]) == ("forbidden", run_id)
    assert resp.headers["x-ms-correlation-id"] == run_id
    assert "Location" not in resp.headers
    return str(data["message"])


def test_the_status_url_carries_the_key_id_and_the_expiry_and_works_to_the_end(app: App) -> None:
    run_id, location = start()

    key_id, exp, mac = sig_of(location).split(".")
    assert key_id == kid(SIGNING_KEY)
    assert int(exp) == int((T0 + timedelta(hours=24)).timestamp())
    assert len(mac) == 43 and "=" not in mac
    assert SIGNING_KEY not in location
    pending = poll(location)
    assert pending.status_code == 202
    _, decoded = app.receive()
    function_app.run_job(func.QueueMessage(body=decoded))
    at(T0 + timedelta(hours=23, minutes=59))
    done = poll(location)
    assert done.status_code == 200
    assert (body(done)["runId"], body(done)["status"]) == (run_id, "succeeded")


def test_an_expired_link_is_403_and_says_what_to_do(app: App) -> None:
    run_id, location = start()
    at(T0 + timedelta(hours=24))

    message = refused(poll(location), run_id)

    assert "expired" in message
    assert "start a new run" in message
    assert "function key" in message
    assert f"{(T0 + timedelta(hours=24)):%Y-%m-%dT%H:%M:%SZ}" in message  # when it expired


def test_the_lifetime_is_a_setting(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    restart_worker(monkeypatch, T0, WORK365_RUN_LINK_HOURS="1")
    run_id, location = start()
    assert int(sig_of(location).split(".")[1]) == int((T0 + timedelta(hours=1)).timestamp())

    at(T0 + timedelta(minutes=59))
    assert poll(location).status_code == 202
    at(T0 + timedelta(minutes=60))
    assert "expired" in refused(poll(location), run_id)


def test_shortening_the_lifetime_cuts_links_already_handed_out(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, location = start()  # good for 24 hours
    restart_worker(monkeypatch, T0 + timedelta(minutes=5), WORK365_RUN_LINK_HOURS="1")

    message = refused(poll(location), run_id)

    assert message.startswith("this status link expired (links last")
    assert "start a new run" in message


def test_a_pending_run_answers_a_fresh_link(app: App) -> None:
    """Power Automate follows the Location of every 202: a run that is polled outlives its
    first link; once it is done (200) no new link is handed out."""
    run_id, location = start()
    at(T0 + timedelta(hours=20))

    pending = poll(location)

    fresh = pending.headers["Location"]
    assert body(pending)["statusUrl"] == fresh
    assert int(sig_of(fresh).split(".")[1]) == int((T0 + timedelta(hours=44)).timestamp())
    at(T0 + timedelta(hours=30))
    refused(poll(location), run_id)
    assert poll(fresh).status_code == 202


def test_a_rotation_keeps_links_in_flight_until_they_expire(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, old = start()
    later = T0 + timedelta(hours=1)
    restart_worker(
        monkeypatch,
        later,
        WORK365_RUN_SIGNING_KEY=NEW_KEY,
        WORK365_RUN_SIGNING_KEY_PREVIOUS=SIGNING_KEY,
    )

    pending = poll(old)  # signed with the previous key: still good

    assert pending.status_code == 202, pending.get_body()
    fresh = pending.headers["Location"]
    assert sig_of(fresh).split(".")[0] == kid(NEW_KEY)  # new links use the current key
    _, new = start(later)
    assert sig_of(new).split(".")[0] == kid(NEW_KEY)
    at(T0 + timedelta(hours=24))  # a previous-key link expires like any other
    assert "expired" in refused(poll(old), run_id)

    restart_worker(monkeypatch, later, WORK365_RUN_SIGNING_KEY_PREVIOUS=None)

    assert "expired" not in refused(poll(old), run_id)  # its key is gone: refused at once
    assert poll(fresh).status_code == 202


def _tampered(sig: str) -> list[str]:
    key_id, exp, mac = sig.split(".")
    flip = "A" if mac[0] != "A" else "B"
    return [
        f"{key_id}.{exp}.{flip}{mac[1:]}",  # the MAC
        f"{key_id}.{int(exp) + 3600}.{mac}",  # a longer life
        f"{key_id}.0{exp}.{mac}",  # the same expiry, written otherwise
        f"{'0' * 8 if key_id != '0' * 8 else '1' * 8}.{exp}.{mac}",  # an unknown key id
        f"{kid(NEW_KEY)}.{exp}.{mac}",
        f"{key_id.upper()}.{exp}.{mac}",
        f"{key_id}.{exp}.{mac}=",
        f"{key_id}.{exp}",
        mac,
        f" {sig}",
        f"{sig}\n",
    ]


def test_a_tampered_link_is_refused(app: App) -> None:
    run_id, location = start()
    at(T0 + timedelta(minutes=1))
    for sig in _tampered(sig_of(location)):
        message = refused(function_app.run_status(status_request(run_id, sig)), run_id)
        assert "expired" not in message, sig


def test_a_link_of_another_run_is_refused(app: App) -> None:
    run_id, _ = start()
    _other, location = start()
    at(T0 + timedelta(minutes=1))
    refused(function_app.run_status(status_request(run_id, sig_of(location))), run_id)


BAD_SIGS: list[str | None] = [
    None,
    "",
    "\ud800",  # a lone surrogate: cannot even be encoded as UTF-8
    "é" * 43,
    "\x00",
    "١٢٣٤٥٦٧٨.١٧٩٠٠٠٠٠٠٠.abc",  # Arabic-Indic digits
    "abcdef01.1790000000." + "ﬀ" * 43,
    "a.b.c.d",
    "..",
    "x" * 100_000,
    f"{'a' * 8}.{'9' * 400}.{'A' * 43}",  # an expiry too large for any clock
]


@pytest.mark.parametrize("sig", BAD_SIGS, ids=range(len(BAD_SIGS)))
def test_a_malformed_or_non_ascii_sig_is_403_never_an_exception(app: App, sig: str | None) -> None:
    run_id, _ = start()
    refused(function_app.run_status(status_request(run_id, sig)), run_id)


def test_the_status_handler_reads_the_clock_of_the_services(app: App) -> None:
    """Nothing else tells the time: a link is good at its signing instant whatever the real
    clock says."""
    run_id, location = start(T0 - timedelta(days=3650))
    assert poll(location).status_code == 202
    at(datetime.now(UTC))
    refused(poll(location), run_id)


def test_a_misconfigured_app_names_the_setting_in_its_log_never_to_the_link(
    app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run_id, location = start()
    restart_worker(monkeypatch, T0, WORK365_RUN_SIGNING_KEY=None)

    resp = function_app.run_status(get_status(location))

    answer = body(resp)
    assert (resp.status_code, answer["error"]) == (500, "configuration")
    assert answer["message"] == f"{MISCONFIGURED} (run {run_id})"
    assert f"[run {run_id}] configuration error" in caplog.text
    assert "WORK365_RUN_SIGNING_KEY" in caplog.text and "WORK365_RUN_SIGNING_KEY" not in str(answer)
