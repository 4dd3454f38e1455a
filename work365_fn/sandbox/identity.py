"""The App Service / Azure Functions managed-identity endpoint (IDENTITY_ENDPOINT), as MSAL's
`ManagedIdentityClient` and azure-identity's `ManagedIdentityCredential` call it.

https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference

    GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<resource>&client_id=<identity>
    X-IDENTITY-HEADER: {IDENTITY_HEADER}
    -> 200 {"access_token", "expires_on": "<epoch seconds, a string>", "resource",
            "token_type": "Bearer", "client_id"}

Errors carry `{"statusCode", "message", "correlationId"}` (what MSAL reads of a failed answer);
their wording is ours: Microsoft does not document it. The token depends on the resource:

- the sandbox's Dataverse org: the sandbox's own token (`TokenIssuer`), `appid` = the identity's
  client id, which the Dataverse emulator accepts like the app registration's;
- `api://AzureADTokenExchange`: a JWT as Entra issues a managed identity (iss
  `https://login.microsoftonline.com/{tenant}/v2.0`, sub and oid = the identity's principal
  (object) id), signed with the sandbox's key: the assertion the token endpoint takes for a
  federated identity credential (token.py);
- `https://storage.azure.com`: a JWT with iss `https://sts.windows.net/{tenant}/`, aud, nbf, iat,
  exp: what Azurite's `--oauth basic` checks (it does not check signatures).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .core import Request, Response, TokenIssuer

IDENTITY_PATH = re.compile(r"/msi/token/?", re.IGNORECASE)
API_VERSION = "2019-08-01"
ASSERTION_AUDIENCE = "api://AzureADTokenExchange"
STORAGE_AUDIENCE = "https://storage.azure.com"


@dataclass(frozen=True)
class ManagedIdentity:
    """A user-assigned identity: its client (application) id and principal (object) id."""

    client_id: str
    principal_id: str


def sign_jwt(claims: Mapping[str, Any], key: bytes) -> str:
    """A compact JWT signed with HS256 (the sandbox's own key; never a real credential)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(dict(claims)).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a compact JWT, unverified (None when it is not one)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def jwt_signed_by(token: str, key: bytes) -> bool:
    """True when the JWT carries the HS256 signature of `key`."""
    header, _, rest = token.partition(".")
    payload, _, signature = rest.partition(".")
    expected = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(signature, _b64(expected))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class IdentityEmulator:
    service = "identity"

    def __init__(  # noqa: PLR0913 - what the platform knows: tenant, identities, header, keys
        self,
        tenant_id: str,
        identities: Iterable[ManagedIdentity],
        header: str,
        issuer: TokenIssuer,
        resources: Iterable[str],
        *,
        jwt_key: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant_id = tenant_id.lower()
        self.identities = {i.client_id.lower(): i for i in identities}
        self._header = header
        self._issuer = issuer
        self._resources = {r.rstrip("/").lower(): r.rstrip("/") for r in resources}
        self._jwt_key = jwt_key
        self._clock = clock

    @staticmethod
    def owns(path: str) -> bool:
        return IDENTITY_PATH.fullmatch(path) is not None

    def kind(self, request: Request) -> str:
        return f"{request.method} token"

    def handle(self, request: Request) -> Response:
        if request.method != "GET":
            return _error(405, "The managed identity endpoint only accepts GET.")
        presented = request.headers.get("X-IDENTITY-HEADER") or ""
        if not hmac.compare_digest(presented.encode(), self._header.encode()):
            return _error(401, "X-IDENTITY-HEADER is missing or does not match IDENTITY_HEADER.")
        if request.param("api-version") != API_VERSION:
            return _error(400, f"api-version must be {API_VERSION}.")
        resource = (request.param("resource") or "").rstrip("/")
        if not resource:
            return _error(400, "The resource parameter is required.")
        wanted = (request.param("client_id") or "").lower()
        identity = self.identities.get(wanted) if wanted else None
        if identity is None:  # the sandbox's app has no system-assigned identity
            return _error(
                400,
                "No User Assigned or Delegated Managed Identity found for specified ClientId/"
                "ResourceId/PrincipalId.",
            )
        token, expires_on = self._token(resource, identity)
        if token is None:
            return _error(400, f"The resource '{resource}' is not known in the tenant.")
        return Response.json(
            200,
            {
                "access_token": token,
                "expires_on": str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": identity.client_id,
            },
        )

    def _token(self, resource: str, identity: ManagedIdentity) -> tuple[str | None, int]:
        now = int(self._clock())
        lifetime = self._issuer.lifetime_seconds
        if resource.lower() == ASSERTION_AUDIENCE.lower():
            issuer = f"https://login.microsoftonline.com/{self.tenant_id}/v2.0"
            audience = ASSERTION_AUDIENCE
        elif resource.lower() in (STORAGE_AUDIENCE, STORAGE_AUDIENCE + "/.default"):
            issuer = f"https://sts.windows.net/{self.tenant_id}/"
            audience = STORAGE_AUDIENCE
        else:
            known = self._resources.get(resource.lower())
            if known is None:
                return None, 0
            token, lifetime = self._issuer.issue(known, identity.client_id)
            return token, now + lifetime
        claims = {
            "aud": audience,
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "appid": identity.client_id,
            "azp": identity.client_id,
            "oid": identity.principal_id,
            "sub": identity.principal_id,
            "tid": self.tenant_id,
            "idtyp": "app",
            "jti": uuid.uuid4().hex,
        }
        return sign_jwt(claims, self._jwt_key), now + lifetime


def _error(status: int, message: str) -> Response:
    return Response.json(
        status,
        {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())},
    )
