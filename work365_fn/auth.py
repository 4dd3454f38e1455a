"""Token providers. MSAL confidential client, created lazily (no network until the first token)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

import msal
import requests

from .errors import AuthError, ConfigError
from .settings import Credential


class TokenProvider(Protocol):
    def token(self) -> str:
        """A bearer token for the provider's one scope (cached until near expiry)."""
        ...

    def invalidate(self) -> None:
        """Drop the cached token: the next `token()` asks the authority again."""
        ...


class StaticTokenProvider:
    """A fixed token (tests with `responses`)."""

    def __init__(self, value: str) -> None:
        self._value = value
        self.invalidations = 0

    def token(self) -> str:
        return self._value

    def invalidate(self) -> None:
        self.invalidations += 1

    def __repr__(self) -> str:
        return "StaticTokenProvider(<hidden>)"


class MsalApp:
    """One MSAL ConfidentialClientApplication per credential, built on first use."""

    def __init__(
        self, credential: Credential, authority_host: str, session: requests.Session
    ) -> None:
        self._credential = credential
        self._authority = f"{authority_host.rstrip('/')}/{credential.tenant_id}"
        self._session = session
        self._app: Any = None
        self._lock = threading.Lock()

    def _client_credential(self) -> Any:
        c = self._credential
        if c.cert_path:
            try:
                private_key = Path(c.cert_path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the certificate at {c.cert_path} ({exc.strerror or exc}): "
                    "check WORK365_CERT_PATH (a PEM file holding the private key)"
                ) from None
            return {"private_key": private_key, "thumbprint": c.cert_thumbprint}
        return c.secret

    def app(self) -> Any:
        with self._lock:
            if self._app is None:
                self._app = msal.ConfidentialClientApplication(
                    self._credential.client_id,
                    client_credential=self._client_credential(),
                    authority=self._authority,
                    instance_discovery=False,
                    http_client=self._session,
                )
            return self._app

    def __repr__(self) -> str:
        return f"MsalApp(authority={self._authority!r}, client_id={self._credential.client_id!r})"


class MsalTokenProvider:
    def __init__(self, app: MsalApp, scope: str, service: str) -> None:
        self._app = app
        self._scope = scope
        self._service = service

    def token(self) -> str:
        try:
            result = self._app.app().acquire_token_for_client(scopes=[self._scope])
        except ValueError as exc:  # MSAL raises ValueError on an unreachable/invalid authority
            raise AuthError(
                self._service,
                f"could not reach the token authority for {self._service}: {_first_line(exc)}; "
                "check WORK365_AUTHORITY_HOST and WORK365_TENANT_ID",
            ) from None
        except requests.RequestException as exc:
            raise AuthError(
                self._service,
                f"could not reach the token authority for {self._service} "
                f"({type(exc).__name__}); check WORK365_AUTHORITY_HOST and network access",
            ) from None
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            code = str(result.get("error", "unknown")) if isinstance(result, dict) else "unknown"
            description = (
                str(result.get("error_description", "")) if isinstance(result, dict) else ""
            )
            raise AuthError(
                self._service,
                f"token request for {self._service} was refused: {code}: "
                f"{_first_line(description)} (check the client id, secret or certificate, and "
                "that the app is consented in the tenant)",
                code=code,
            )
        return str(token)

    def invalidate(self) -> None:
        # MSAL has no force-refresh for client credentials (DESIGN.md section 6).
        self._app.app().remove_tokens_for_client()

    def __repr__(self) -> str:
        return f"MsalTokenProvider(scope={self._scope!r})"


def _first_line(value: object) -> str:
    text = str(value).strip().splitlines()
    return text[0][:300] if text else ""
