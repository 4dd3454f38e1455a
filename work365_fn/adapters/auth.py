"""Token providers: MSAL's confidential client (a secret, a certificate, or a federated
credential whose assertion is the managed identity's token) and MSAL's managed-identity client.
Created lazily: no network until the first token. docs/identity.md says which is used when."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import msal
import requests

from work365_fn.errors import AuthError, ConfigError
from work365_fn.logs import remember_secret
from work365_fn.settings import ASSERTION_AUDIENCE, Credential

# Token errors that say "not now" rather than "not you": retried like a 503.
TRANSIENT_TOKEN_ERRORS = frozenset({"temporarily_unavailable", "server_error"})


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


class _TimedHttpClient:
    """What MSAL needs of an HTTP client (`post`, `get`, `close`), over our session with our
    timeouts: MSAL passes none, and a token call must not hang a run."""

    def __init__(self, session: requests.Session, timeout: tuple[float, float]) -> None:
        self._session = session
        self._timeout = timeout

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return self._session.post(url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return self._session.get(url, **kwargs)

    def close(self) -> None:  # the session is shared with the clients: theirs to close
        pass


class _NoHttpCache(dict[str, Any]):
    """MSAL's `http_cache` that keeps nothing. MSAL otherwise replays a token endpoint's 429/5xx
    answer for its Retry-After (5 s by default, on the wall clock) without asking again, so
    our retries (which already honour Retry-After, on the injected clock) would only meet the
    replayed error. Tokens stay cached in MSAL's token cache, which this is not."""

    def __setitem__(self, key: str, value: Any) -> None:
        pass


class MsalApp:
    """One MSAL ConfidentialClientApplication per credential, built on first use, shared by the
    token providers of that credential (one per scope)."""

    def __init__(
        self,
        credential: Credential,
        authority_host: str,
        session: requests.Session,
        *,
        timeout: tuple[float, float] = (10.0, 60.0),
        assertion: Callable[[], str] | None = None,
    ) -> None:
        """`assertion`: for a federated credential, what returns the managed identity's token
        for api://AzureADTokenExchange (MSAL calls it whenever it needs a new token)."""
        self._credential = credential
        self._authority = f"{authority_host.rstrip('/')}/{credential.tenant_id}"
        self._session = session
        self._timeout = timeout
        self._assertion = assertion
        self._app: Any = None
        self._lock = threading.Lock()
        remember_secret(credential.secret)

    def _client_credential(self) -> Any:
        c = self._credential
        if c.federated:
            if self._assertion is None:
                raise ConfigError(
                    "WORK365_PC_AUTH=federated needs the managed identity "
                    "(WORK365_MANAGED_IDENTITY_CLIENT_ID) for its assertion"
                )
            # https://learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity
            return {"client_assertion": self._assertion}
        if c.cert_pem:
            remember_secret(c.cert_pem)
            return {"private_key": c.cert_pem, "thumbprint": c.cert_thumbprint}
        if c.cert_path:
            try:
                private_key = Path(c.cert_path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the certificate at {c.cert_path} ({exc.strerror or exc}): "
                    "check WORK365_CERT_PATH (a PEM file holding the private key)"
                ) from None
            remember_secret(private_key)
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
                    http_client=_TimedHttpClient(self._session, self._timeout),
                    http_cache=_NoHttpCache(),
                )
            return self._app

    def forget_tokens(self, scope: str) -> None:
        """Drop the cached access tokens of `scope`, and only those.

        MSAL has no force-refresh for client credentials, and its `remove_tokens_for_client()`
        drops the tokens of EVERY scope of the app: with Dataverse and Partner Center on one
        credential (one app), a 401 from one service would cost the other its token too. This
        removes the entries `acquire_token_for_client(scopes=[scope])` would serve from the
        cache (its lookup: this client id, `scope` among the token's targets; here across
        authorities and accounts too), through the TokenCache's public `search` and
        `remove_at`, as `remove_tokens_for_client()` itself does for all scopes. The next token
        for `scope` is asked of the authority; other scopes' tokens stay cached.
        https://learn.microsoft.com/python/api/msal/msal.token_cache.tokencache
        https://github.com/AzureAD/microsoft-authentication-library-for-python/blob/dev/msal/application.py
        (`remove_tokens_for_client`, `_acquire_token_silent_from_cache_and_possibly_refresh_it`)"""
        app = self.app()
        cache = app.token_cache
        entries = cache.search(
            msal.TokenCache.CredentialType.ACCESS_TOKEN,
            target=[scope],
            query={"client_id": app.client_id},
        )
        for entry in list(entries):  # a snapshot: search holds the cache's lock while it runs
            cache.remove_at(entry)

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
        except json.JSONDecodeError:  # the answer was cut off or is not JSON: ask again
            raise AuthError(
                self._service,
                f"the token authority for {self._service} answered a body that is not JSON",
                code="invalid-json",
                transient=True,
            ) from None
        except ValueError as exc:  # MSAL raises ValueError on an unreachable/invalid authority
            raise AuthError(
                self._service,
                f"could not reach the token authority for {self._service}: {_first_line(exc)}; "
                "check WORK365_AUTHORITY_HOST and WORK365_TENANT_ID",
                code="discovery",
                transient=_passing_discovery_failure(exc),
            ) from None
        except requests.RequestException as exc:
            raise AuthError(
                self._service,
                f"could not reach the token authority for {self._service} "
                f"({type(exc).__name__}); check WORK365_AUTHORITY_HOST and network access",
                code="timeout" if isinstance(exc, requests.Timeout) else "connection",
                transient=True,
            ) from None
        except msal.exceptions.MsalServiceError as exc:  # a 5xx: MSAL raises for the status
            raise AuthError(
                self._service,
                f"the token authority for {self._service} failed ({_first_line(exc)})",
                code="server_error",
                transient=True,
            ) from None
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            code = str(result.get("error", "unknown")) if isinstance(result, dict) else "unknown"
            description = (
                str(result.get("error_description", "")) if isinstance(result, dict) else ""
            )
            if code in TRANSIENT_TOKEN_ERRORS:
                raise AuthError(
                    self._service,
                    f"the token authority for {self._service} is busy or failing: {code}: "
                    f"{_first_line(description)}",
                    code=code,
                    transient=True,
                )
            raise AuthError(
                self._service,
                f"token request for {self._service} was refused: {code}: "
                f"{_first_line(description)} (check the client id, secret or certificate, and "
                "that the app is consented in the tenant)",
                code=code,
            )
        remember_secret(str(token))
        return str(token)

    def invalidate(self) -> None:
        # MSAL has no force-refresh for client credentials (DESIGN.md section 6); dropping the
        # cached token of this scope alone keeps the other service's token of a shared app.
        self._app.forget_tokens(self._scope)

    def __repr__(self) -> str:
        return f"MsalTokenProvider(scope={self._scope!r})"


class ManagedIdentityTokenProvider:
    """Tokens of the Function App's user-assigned managed identity for one resource, from MSAL's
    `ManagedIdentityClient` over our session (a resource, not scopes: the org URL for Dataverse,
    api://AzureADTokenExchange for a federated credential's assertion).

    MSAL finds the endpoint itself: on App Service and Functions it reads IDENTITY_ENDPOINT and
    IDENTITY_HEADER from os.environ on every token request (msal/managed_identity.py,
    `_obtain_token`); no parameter takes them. `Settings.from_env` checks they are set, so a
    missing one fails at start; here a process without them gets an AuthError, never MSAL's
    fallback to the VM metadata address (IMDS, 169.254.169.254), which would only time out."""

    def __init__(
        self,
        client_id: str,
        resource: str,
        service: str,
        session: requests.Session,
        *,
        timeout: tuple[float, float] = (10.0, 60.0),
    ) -> None:
        self._client_id = client_id
        self._resource = resource.rstrip("/") if resource.startswith("https://") else resource
        self._service = service
        self._http = _TimedHttpClient(session, timeout)
        self._cache = msal.TokenCache()  # this provider's alone: invalidate() empties it
        self._client: Any = None
        self._lock = threading.Lock()

    def _msal(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = msal.ManagedIdentityClient(
                    msal.UserAssignedManagedIdentity(client_id=self._client_id),
                    http_client=self._http,
                    token_cache=self._cache,
                    http_cache=_NoHttpCache(),
                )
            return self._client

    def token(self) -> str:
        from msal import managed_identity

        if managed_identity.get_managed_identity_source() is not managed_identity.APP_SERVICE:
            raise AuthError(
                self._service,
                f"configuration error, no request sent: {self._service} is set to use the "
                "managed identity, but IDENTITY_ENDPOINT and IDENTITY_HEADER are not in this "
                "process's environment (Azure sets them when the Function App has an identity; "
                "MSAL reads them from there alone): run it on Azure, or use a client secret or "
                "certificate here (docs/identity.md)",
                code="no-identity-endpoint",
                configuration=True,
            )
        try:
            result = self._msal().acquire_token_for_client(resource=self._resource)
        except json.JSONDecodeError:
            raise self._failure("answered a body that is not JSON", "invalid-json") from None
        except requests.RequestException as exc:
            raise self._failure(
                f"could not be reached ({type(exc).__name__}); check IDENTITY_ENDPOINT",
                "timeout" if isinstance(exc, requests.Timeout) else "connection",
            ) from None
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            raise self._refused(result if isinstance(result, dict) else {})
        remember_secret(str(token))
        return str(token)

    def _failure(self, what: str, code: str) -> AuthError:
        return AuthError(
            self._service,
            f"the managed-identity endpoint for {self._service} {what}",
            code=code,
            transient=True,
        )

    def _refused(self, result: dict[str, Any]) -> AuthError:
        """MSAL turns the endpoint's error into {"error": "invalid_scope", "error_description":
        "<statusCode>, <message>"}: the status says whether to try again."""
        description = _first_line(result.get("error_description", ""))
        status = re.match(r"\s*(\d{3})\b", description)
        code = status.group(1) if status else str(result.get("error", "unknown"))
        if code == "429" or code.startswith("5"):
            return self._failure(f"is busy or failing: {description}", code)
        hint = (
            "IDENTITY_HEADER does not match the endpoint's: Azure sets it with IDENTITY_ENDPOINT, "
            "never set or copy either yourself"
            if code in ("401", "403")
            else "check WORK365_MANAGED_IDENTITY_CLIENT_ID: the client id of a user-assigned "
            "identity assigned to the Function App"
        )
        return AuthError(
            self._service,
            f"the managed-identity endpoint refused a token for {self._resource} "
            f"({self._service}): {description} ({hint})",
            code=code,
        )

    def invalidate(self) -> None:
        for entry in list(
            self._cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN, target=[self._resource])
        ):
            self._cache.remove_at(entry)

    def __repr__(self) -> str:
        return (
            f"ManagedIdentityTokenProvider(client_id={self._client_id!r}, "
            f"resource={self._resource!r})"
        )


def assertion_provider(
    client_id: str, session: requests.Session, timeout: tuple[float, float]
) -> ManagedIdentityTokenProvider:
    """The managed identity's token for api://AzureADTokenExchange: the client assertion of a
    federated identity credential (its `token` is what `MsalApp(assertion=...)` takes)."""
    return ManagedIdentityTokenProvider(
        client_id, ASSERTION_AUDIENCE, "partnerCenter", session, timeout=timeout
    )


def _passing_discovery_failure(exc: BaseException) -> bool:
    """MSAL wraps every failed authority discovery in one ValueError. Worth another try: an
    answer cut off (not JSON) or throttled (429); not: an unknown tenant (400), a bad URL."""
    seen = 0
    cause = exc.__cause__ or exc.__context__
    while cause is not None and seen < 10:
        if isinstance(cause, json.JSONDecodeError) or "HTTP status: 429" in str(cause):
            return True
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return False


def _first_line(value: object) -> str:
    text = str(value).strip().splitlines()
    return text[0][:300] if text else ""
