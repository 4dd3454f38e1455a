"""Signed links: the one signer of the service (status URLs of asynchronous runs, and any other
link the app hands out that must work without the function key).

A link's `sig` is `<kid>.<exp>.<mac>`:

- `kid`: the key id, the first 8 hexadecimal digits of the SHA-256 of the signing key (never the
  key itself): `printf %s "$KEY" | sha256sum | cut -c1-8`;
- `exp`: when the link expires, in Unix seconds (decimal, no leading zero, at most 11 digits);
- `mac`: base64url (no padding, 43 characters) of HMAC-SHA256(key, "<kid>|<exp>|<resource>"),
  where the resource names what the link opens, e.g. `runs/<run id in lower case>`, so a
  signature for one resource (or one kind of link) opens no other.

Verification accepts the current key and, during a rotation, the previous one (chosen by `kid`),
compares the MAC in constant time, and refuses anything else (not ASCII, malformed, unknown key
id, tampered, expired) with a verdict, never an exception. The clock is injected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

KEY_ID_CHARS = 8
# A link whose expiry lies further ahead than the lifetime (say, after the lifetime was
# shortened) is refused; this much clock skew between instances is tolerated.
CLOCK_SKEW_SECONDS = 300
_MAX_SIG_CHARS = 80
_SIG = re.compile(r"([0-9a-f]{8})\.([1-9][0-9]{0,10})\.([A-Za-z0-9_-]{43})", re.ASCII)


class LinkCheck(Enum):
    VALID = "valid"
    INVALID = "invalid"  # missing, not ASCII, malformed, unknown key id, tampered, other resource
    EXPIRED = "expired"  # signed by a key of ours, for this resource, but no longer valid


@dataclass(frozen=True)
class Verdict:
    check: LinkCheck
    # The expiry the link carries, when its MAC was right (EXPIRED: in the past; None when a
    # shorter lifetime cut it before that).
    expires: datetime | None = None

    @property
    def valid(self) -> bool:
        return self.check is LinkCheck.VALID


INVALID = Verdict(LinkCheck.INVALID)


# What each kind of link signs (the resource is inside the MAC, so a link of one kind never
# opens another): a run's status URL `runs/<run id>` (entrypoints/functions/runs.py), and the
# report page of a run, `report-page/<run id>` (the Teams card's "Open the report").
REPORT_PAGE = "report-page"


def report_page_resource(run_id: str) -> str:
    """What a report-page link signs: `report-page/<run id in lower case>`."""
    return f"{REPORT_PAGE}/{run_id.lower()}"


def key_id(key: str) -> str:
    """The id a link carries of the key that signed it: a digest prefix, never the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:KEY_ID_CHARS]


def _mac(secret: bytes, kid: str, exp: int, resource: str) -> str:
    message = f"{kid}|{exp}|{resource}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class LinkSigner:
    """Signs resources with the current key for `lifetime`; verifies with the current or the
    previous key."""

    def __init__(
        self,
        key: str,
        previous: str | None = None,
        *,
        lifetime: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        if not key:
            raise ValueError("a signing key is required")
        self.lifetime_seconds = int(lifetime.total_seconds())
        if self.lifetime_seconds <= 0:
            raise ValueError("the lifetime of a link must be positive")
        self._keys = [(key_id(k), k.encode("utf-8")) for k in (key, previous) if k]
        self._clock = clock

    @property
    def key_id(self) -> str:
        """The id of the key new links are signed with."""
        return self._keys[0][0]

    def _now(self) -> int:
        return int(self._clock().timestamp())

    def sign(self, resource: str) -> str:
        kid, secret = self._keys[0]
        exp = self._now() + self.lifetime_seconds
        return f"{kid}.{exp}.{_mac(secret, kid, exp, resource)}"

    def check(self, resource: str, sig: str | None) -> Verdict:
        """VALID, EXPIRED (a genuine link past its expiry) or INVALID (anything else)."""
        if not sig or len(sig) > _MAX_SIG_CHARS or not sig.isascii():
            return INVALID
        match = _SIG.fullmatch(sig)
        if match is None:
            return INVALID
        kid, exp_text, mac = match.groups()
        exp = int(exp_text)
        genuine = False
        for known, secret in self._keys:  # both keys are tried when their ids collide
            if known == kid:
                expected = _mac(secret, kid, exp, resource)
                genuine |= hmac.compare_digest(expected.encode("ascii"), mac.encode("ascii"))
        if not genuine:
            return INVALID
        expires = datetime.fromtimestamp(exp, UTC)
        now = self._now()
        if exp <= now:
            return Verdict(LinkCheck.EXPIRED, expires)
        if exp > now + self.lifetime_seconds + CLOCK_SKEW_SECONDS:
            return Verdict(LinkCheck.EXPIRED)  # signed for longer than links last now
        return Verdict(LinkCheck.VALID, expires)
