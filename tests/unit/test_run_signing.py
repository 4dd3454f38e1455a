"""The service's link signer (work365_fn/signing.py) and the status URLs it signs: `sig` is
`<kid>.<exp>.<mac>`, the MAC an HMAC-SHA256 of "<kid>|<exp>|<resource>", verified in constant time
with the current or the previous key until `exp`. The clock is injected: nothing sleeps."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import pytest

from work365_fn.entrypoints.functions.runs import run_resource, status_url
from work365_fn.errors import InvalidSettingError
from work365_fn.settings import Settings
from work365_fn.signing import CLOCK_SKEW_SECONDS, LinkCheck, LinkSigner, Verdict, key_id

KEY = "k" * 40
NEW = "n" * 40
RUN = "5d0c7a59-7f11-4b0e-9d59-6d0f3e7c2a10"
RESOURCE = f"runs/{RUN}"
T0 = datetime(2026, 11, 26, 22, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def signer(*keys: str | None, clock: Clock | None = None, hours: int = 24) -> LinkSigner:
    current, previous = (*keys, None)[:2] if keys else (KEY, None)
    assert current is not None
    return LinkSigner(current, previous, lifetime=timedelta(hours=hours), clock=clock or Clock())


def test_the_sig_is_key_id_expiry_and_the_hmac_of_all_three_with_the_resource() -> None:
    sig = signer().sign(RESOURCE)

    kid, exp, mac = sig.split(".")
    assert kid == hashlib.sha256(KEY.encode()).hexdigest()[:8] == key_id(KEY)
    assert int(exp) == int((T0 + DAY).timestamp())
    expected = hmac.new(KEY.encode(), f"{kid}|{exp}|{RESOURCE}".encode(), hashlib.sha256)
    assert base64.urlsafe_b64decode(mac + "=") == expected.digest()
    assert len(mac) == 43 and "=" not in mac
    assert KEY not in sig


def test_a_link_is_good_until_it_expires_then_says_so() -> None:
    clock = Clock()
    links = signer(clock=clock)
    sig = links.sign(RESOURCE)

    clock.now = T0 + DAY - timedelta(seconds=1)
    assert links.check(RESOURCE, sig).check is LinkCheck.VALID
    clock.now = T0 + DAY
    verdict = links.check(RESOURCE, sig)
    assert verdict.check is LinkCheck.EXPIRED
    assert verdict.expires == T0 + DAY
    clock.now = T0 + 365 * DAY
    assert links.check(RESOURCE, sig).check is LinkCheck.EXPIRED


def test_shortening_the_lifetime_cuts_links_already_handed_out() -> None:
    clock = Clock()
    sig = signer(clock=clock, hours=720).sign(RESOURCE)
    assert signer(clock=clock, hours=720).check(RESOURCE, sig).valid
    assert signer(clock=clock, hours=1).check(RESOURCE, sig) == Verdict(LinkCheck.EXPIRED)
    # a little clock skew between instances is tolerated
    clock.now = T0 - timedelta(seconds=CLOCK_SKEW_SECONDS)
    assert signer(clock=clock, hours=720).check(RESOURCE, sig).valid
    clock.now -= timedelta(seconds=1)
    assert signer(clock=clock, hours=720).check(RESOURCE, sig).check is LinkCheck.EXPIRED


def test_after_a_rotation_the_previous_key_verifies_until_it_is_removed() -> None:
    clock = Clock()
    old = signer(KEY, clock=clock).sign(RESOURCE)

    rotated = signer(NEW, KEY, clock=clock)
    assert rotated.check(RESOURCE, old).valid
    assert rotated.sign(RESOURCE).startswith(key_id(NEW) + ".")  # new links: the new key
    assert rotated.key_id == key_id(NEW)
    clock.now = T0 + DAY
    assert rotated.check(RESOURCE, old).check is LinkCheck.EXPIRED  # and expire as usual

    clock.now = T0 + timedelta(hours=1)
    assert signer(NEW, clock=clock).check(RESOURCE, old).check is LinkCheck.INVALID
    assert signer(NEW, clock=clock).check(RESOURCE, rotated.sign(RESOURCE)).valid


def test_any_change_to_the_sig_is_refused() -> None:
    links = signer()
    sig = links.sign(RESOURCE)
    for i, char in enumerate(sig):
        for other in {"0", "A", "_", "."} - {char}:
            tampered = sig[:i] + other + sig[i + 1 :]
            assert links.check(RESOURCE, tampered).check is LinkCheck.INVALID, tampered
    assert links.check(RESOURCE, sig[:-1]).check is LinkCheck.INVALID
    assert links.check(RESOURCE, sig + "A").check is LinkCheck.INVALID


def test_a_sig_opens_only_its_own_resource() -> None:
    links = signer()
    sig = links.sign(RESOURCE)
    for other in (f"runs/{RUN[:-1]}1", f"report/{RUN}", RUN, f"runs/{RUN}/"):
        assert links.check(other, sig).check is LinkCheck.INVALID
    assert signer("x" * 40).check(RESOURCE, sig).check is LinkCheck.INVALID


@pytest.mark.parametrize(
    "sig",
    [
        None,
        "",
        "\ud800",
        "é" * 43,
        "\x00" * 60,
        f"{key_id(KEY)}.١٧٩٠٠٠٠٠٠٠.{'A' * 43}",
        f"{key_id(KEY)}.1790000000.{'A' * 42}é",
        f"{key_id(KEY)}.{'9' * 12}.{'A' * 43}",  # past any representable date
        f"{key_id(KEY)}.-1.{'A' * 43}",
        f"{key_id(KEY)}.0.{'A' * 43}",
        "a.b.c",
        "...",
        "x" * 1_000_000,
    ],
    ids=range(13),
)
def test_a_malformed_sig_is_invalid_never_an_exception(sig: str | None) -> None:
    assert signer().check(RESOURCE, sig).check is LinkCheck.INVALID


def test_the_mac_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    links = signer()
    sig = links.sign(RESOURCE)
    bad = sig[:-1] + ("A" if sig[-1] != "A" else "B")

    assert links.check(RESOURCE, sig).valid
    assert not links.check(RESOURCE, bad).valid
    assert [b for _, b in compared] == [
        sig.rsplit(".", 1)[1].encode(),
        bad.rsplit(".", 1)[1].encode(),
    ]


def test_a_signer_needs_a_key_and_a_positive_lifetime() -> None:
    with pytest.raises(ValueError, match="key"):
        LinkSigner("", lifetime=DAY, clock=Clock())
    with pytest.raises(ValueError, match="lifetime"):
        LinkSigner(KEY, lifetime=timedelta(0), clock=Clock())


# ---- status URLs ----------------------------------------------------------------------------


def test_the_status_url_is_absolute_on_the_request_host() -> None:
    links = signer()
    req = func.HttpRequest(
        method="POST", url="https://app.azurewebsites.net/api/sync?code=secret", body=b""
    )
    sig = links.sign(run_resource(RUN))
    url = status_url(RUN, links, req)
    assert url == f"https://app.azurewebsites.net/api/runs/{RUN}?sig={sig}"
    assert "code=" not in url  # never the function key
    assert status_url(RUN, links) == f"/api/runs/{RUN}?sig={sig}"
    assert run_resource(RUN.upper()) == RESOURCE  # GUIDs compare case-insensitively


@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("bash", "openssl", "sha256sum", "basenc")),
    reason="needs bash, openssl and coreutils",
)
def test_the_shell_recipe_in_the_docs_signs_links_the_app_accepts() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text("utf-8")
    [script] = re.findall(r"```bash\n(KEY=.*?)```", text, re.DOTALL)
    bash = shutil.which("bash")
    assert bash is not None
    out = subprocess.run(
        [bash, "-c", script.replace("<run id in lower case>", RUN)],
        env={"WORK365_RUN_SIGNING_KEY": KEY, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sig = parse_qs(urlsplit(out.strip()).query)["sig"][0]
    now = Clock(datetime.now(UTC))
    assert signer(clock=now).check(RESOURCE, sig).valid
    now.now += timedelta(hours=1, seconds=1)
    assert signer(clock=now).check(RESOURCE, sig).check is LinkCheck.EXPIRED


# ---- settings -------------------------------------------------------------------------------

BASE = {
    "WORK365_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "WORK365_CLIENT_ID": "00001111-aaaa-2222-bbbb-3333cccc4444",
    "WORK365_CLIENT_SECRET": "Abc8Q~s3cr3t-value-never-shown",
    "WORK365_DATAVERSE_URL": "https://contoso.crm.dynamics.com",
}


def settings(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def test_the_link_settings_and_their_defaults() -> None:
    s = settings()
    assert (s.run_signing_key_previous, s.run_link_hours) == (None, 24)
    s = settings(
        WORK365_RUN_SIGNING_KEY=NEW,
        WORK365_RUN_SIGNING_KEY_PREVIOUS=KEY,
        WORK365_RUN_LINK_HOURS="720",
    )
    assert (s.run_signing_key, s.run_signing_key_previous, s.run_link_hours) == (NEW, KEY, 720)
    assert KEY not in repr(s) and NEW not in repr(s)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("WORK365_RUN_SIGNING_KEY_PREVIOUS", "short-key"),
        ("WORK365_RUN_LINK_HOURS", "0"),
        ("WORK365_RUN_LINK_HOURS", "721"),
        ("WORK365_RUN_LINK_HOURS", "1.5"),
        ("WORK365_RUN_LINK_HOURS", "24h"),
        ("WORK365_RUN_LINK_HOURS", "-1"),
        ("WORK365_RUN_LINK_HOURS", "2_4"),
        ("WORK365_RUN_LINK_HOURS", "٢٤"),  # Arabic-Indic digits: ASCII digits only
    ],
)
def test_malformed_link_settings_are_named(key: str, value: str) -> None:
    with pytest.raises(InvalidSettingError) as caught:
        settings(**{key: value})
    assert caught.value.key == key
    if key == "WORK365_RUN_SIGNING_KEY_PREVIOUS":
        assert value not in str(caught.value)  # a secret is never echoed
