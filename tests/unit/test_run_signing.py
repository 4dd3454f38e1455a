"""Signed status URLs: HMAC-SHA256 of the run id, base64url, compared in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac

import azure.functions as func

from work365_fn.entrypoints.functions.runs import sign, signature_ok, status_url

KEY = "k" * 40
RUN = "5d0c7a59-7f11-4b0e-9d59-6d0f3e7c2a10"


def test_the_signature_is_the_base64url_hmac_of_the_run_id() -> None:
    expected = hmac.new(KEY.encode(), RUN.encode(), hashlib.sha256).digest()
    sig = sign(RUN, KEY)
    assert base64.urlsafe_b64decode(sig + "=") == expected
    assert len(sig) == 43 and "=" not in sig
    assert sign(RUN.upper(), KEY) == sig  # GUIDs compare case-insensitively


def test_only_the_exact_signature_passes() -> None:
    sig = sign(RUN, KEY)
    assert signature_ok(RUN, sig, KEY)
    assert not signature_ok(RUN, None, KEY)
    assert not signature_ok(RUN, "", KEY)
    assert not signature_ok(RUN, sig[:-1], KEY)
    assert not signature_ok(RUN, sig + "A", KEY)
    assert not signature_ok(RUN, "é" * 43, KEY)  # not ASCII: refused, no exception
    assert not signature_ok(RUN, sign(RUN, "other-" + KEY), KEY)


def test_the_status_url_is_absolute_on_the_request_host() -> None:
    req = func.HttpRequest(
        method="POST", url="https://app.azurewebsites.net/api/sync?code=secret", body=b""
    )
    url = status_url(RUN, KEY, req)
    assert url == f"https://app.azurewebsites.net/api/runs/{RUN}?sig={sign(RUN, KEY)}"
    assert "code=" not in url  # never the function key
    assert status_url(RUN, KEY) == f"/api/runs/{RUN}?sig={sign(RUN, KEY)}"
