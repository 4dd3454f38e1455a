"""Entra ID (Azure AD v2.0) token emulator: OpenID discovery and the client-credentials grant.

Enough of the real endpoint for MSAL: `GET /{tenant}/v2.0/.well-known/openid-configuration` and
`POST /{tenant}/oauth2/v2.0/token` with `client_secret` (form or HTTP Basic) or a JWT
`client_assertion`: the app's own (a certificate: iss = the client id) or, for a federated
identity credential, a managed identity's token from the sandbox's identity endpoint
(identity.py), checked as Entra does: issuer, signature, lifetime, subject, audience, matched
case-sensitively (https://learn.microsoft.com/entra/workload-id/workload-identity-federation).
Errors follow AAD's shape: `{"error", "error_description": "AADSTS...",
"error_codes", "timestamp", "trace_id", "correlation_id"}`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs, unquote

from .core import Request, Response, TokenIssuer
from .identity import jwt_claims, jwt_signed_by

OPENID_PATH = re.compile(r"/([^/]+)/v2\.0/\.well-known/openid-configuration")
TOKEN_PATH = re.compile(r"/([^/]+)/oauth2/v2\.0/token")
AUTHORIZE_PATH = re.compile(r"/([^/]+)/oauth2/v2\.0/authorize")
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class SandboxTokenIssuer(TokenIssuer):
    """A TokenIssuer whose tokens also carry a generation: `expire_all()` bumps it, so every token
    issued before is refused as expired (clients must acquire a new one), whatever its lifetime."""

    def __init__(
        self,
        secret: bytes,
        lifetime_seconds: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(secret, lifetime_seconds, clock)
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self._generation

    def expire_all(self) -> None:
        with self._lock:
            self._generation += 1

    def issue(self, audience: str, client_id: str) -> tuple[str, int]:
        lifetime = self.lifetime_seconds
        claims = {
            "aud": audience.rstrip("/"),
            "appid": client_id,
            "exp": int(self._clock()) + lifetime,
            "gen": self._generation,
            "jti": uuid.uuid4().hex,
        }
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}", lifetime

    def check(self, authorization: str | None, audience: str) -> str | None:
        why = super().check(authorization, audience)
        if why is not None:
            return why
        assert authorization is not None  # super().check refuses a missing header
        payload = authorization[len("Bearer ") :].partition(".")[0]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        if claims.get("gen") != self._generation:
            return "token expired"
        return None


@dataclass(frozen=True)
class FederatedCredential:
    """A federated identity credential on the sandbox's app registration: an assertion whose
    `iss`, `sub` and `aud` match these exactly, signed with `key` (its issuer's), is taken in
    place of a secret."""

    issuer: str
    subject: str
    audience: str
    key: bytes
    clock: Callable[[], float] = time.time


class TokenEmulator:
    service = "token"

    def __init__(
        self,
        base_url: str,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        issuer: TokenIssuer,
        resources: Iterable[str],
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tenant_id = tenant_id.lower()
        self.client_id = client_id.lower()
        self._client_secret = client_secret
        self.issuer = issuer
        self.resources = {r.rstrip("/").lower(): r.rstrip("/") for r in resources}
        self._federated: list[FederatedCredential] = []

    def trust(self, credential: FederatedCredential) -> None:
        """Add a federated identity credential to the app registration."""
        self._federated.append(credential)

    @staticmethod
    def owns(path: str) -> bool:
        return any(p.fullmatch(path) for p in (OPENID_PATH, TOKEN_PATH, AUTHORIZE_PATH))

    def kind(self, request: Request) -> str:
        if OPENID_PATH.fullmatch(request.path):
            return f"{request.method} openid-configuration"
        if TOKEN_PATH.fullmatch(request.path):
            return f"{request.method} token"
        return f"{request.method} other"

    def handle(self, request: Request) -> Response:
        match = OPENID_PATH.fullmatch(request.path)
        if match:
            if request.method != "GET":
                return _aad_error(405, "invalid_request", 900561, "The endpoint only accepts GET.")
            return self._openid_configuration(match.group(1))
        match = TOKEN_PATH.fullmatch(request.path)
        if match:
            if request.method != "POST":
                return _aad_error(
                    405, "invalid_request", 900561, "The endpoint only accepts POST requests."
                )
            return self._token(match.group(1), request)
        return _aad_error(
            400,
            "unsupported_response_type",
            900144,
            "The sandbox only supports the client credentials grant (no interactive sign-in).",
        )

    def _known_tenant(self, tenant: str) -> bool:
        return tenant.lower() == self.tenant_id

    def _openid_configuration(self, tenant: str) -> Response:
        if not self._known_tenant(tenant):
            return _tenant_not_found(tenant)
        root = f"{self.base_url}/{self.tenant_id}"
        return Response.json(
            200,
            {
                "token_endpoint": f"{root}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{root}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{root}/v2.0",
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "oid"],
                "tenant_region_scope": None,
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
            },
        )

    def _token(  # noqa: PLR0912 - one branch per AADSTS error, in the order Entra checks them
        self, tenant: str, request: Request
    ) -> Response:
        if not self._known_tenant(tenant):
            return _tenant_not_found(tenant)
        try:
            form = {
                k: v[0]
                for k, v in parse_qs(
                    request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False
                ).items()
            }
        except UnicodeDecodeError:
            return _aad_error(400, "invalid_request", 900144, "The request body is not a form.")
        basic_id, basic_secret = _basic_credentials(request.headers.get("Authorization"))
        grant = form.get("grant_type")
        if not grant:
            return _aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        if grant != "client_credentials":
            return _aad_error(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        client_id = (form.get("client_id") or basic_id or "").lower()
        if not client_id:
            return _aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        if client_id != self.client_id:
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant_id}'.",
            )
        secret = form.get("client_secret", basic_secret)
        assertion = form.get("client_assertion")
        if secret is not None:
            if not hmac.compare_digest(secret.encode(), self._client_secret.encode()):
                return _aad_error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request "
                    "is the client secret value, not the client secret ID, for a secret added to "
                    f"app '{self.client_id}'.",
                )
        elif assertion is not None:
            if form.get("client_assertion_type") != JWT_BEARER:
                return _aad_error(
                    400,
                    "invalid_request",
                    70002,
                    f"The client_assertion_type must be '{JWT_BEARER}'.",
                )
            parts = assertion.split(".")
            if len(parts) != 3 or not all(parts[:2]):
                return _aad_error(
                    400, "invalid_request", 50027, "JWT token is invalid or is malformed."
                )
            refused = self._federated_refusal(assertion)
            if refused is not None:
                return refused
        else:
            return _aad_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or "
                "'client_secret'.",
            )
        scope = form.get("scope", "")
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return _aad_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must "
                "have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        resource = unquote(scopes[0][: -len("/.default")]).rstrip("/")
        audience = self.resources.get(resource.lower())
        if audience is None:
            return _aad_error(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named "
                f"{self.tenant_id}. This can happen if the application has not been installed by "
                "the administrator of the tenant or consented to by any user in the tenant.",
            )
        token, lifetime = self.issuer.issue(audience, self.client_id)
        return Response.json(
            200,
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            },
            {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )

    def _federated_refusal(self, assertion: str) -> Response | None:
        """Why an assertion is refused, or None. One whose `iss` is the client id (or whose
        claims cannot be read) is taken as the app's own, signed with its certificate, which the
        sandbox does not verify; any other must match a federated identity credential."""
        claims = jwt_claims(assertion)
        issuer = claims.get("iss") if claims is not None else None
        if claims is None or str(issuer).lower() == self.client_id:
            return None
        check = "Check your federated identity credential Subject, Audience and Issuer against the "
        candidates = [f for f in self._federated if f.issuer == issuer]
        if not candidates:
            return _aad_error(
                401,
                "invalid_client",
                700211,
                f"No matching federated identity record found for presented assertion issuer "
                f"'{issuer}'. {check}presented assertion.",
            )
        if not any(jwt_signed_by(assertion, f.key) for f in candidates):
            return _aad_error(
                401, "invalid_client", 50013, "Assertion failed signature validation."
            )
        now = candidates[0].clock()
        if not float(claims.get("nbf", 0)) <= now < float(claims.get("exp", 0)):
            return _aad_error(
                401,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.",
            )
        candidates = [f for f in candidates if f.subject == claims.get("sub")]
        if not candidates:
            return _aad_error(
                401,
                "invalid_client",
                700213,
                f"No matching federated identity record found for presented assertion subject "
                f"'{claims.get('sub')}'. {check}presented assertion.",
            )
        audiences = claims.get("aud")
        presented = audiences if isinstance(audiences, list) else [audiences]
        if not any(f.audience in presented for f in candidates):
            return _aad_error(
                401,
                "invalid_client",
                700212,
                f"No matching federated identity record found for presented assertion audience "
                f"'{audiences}'. {check}presented assertion.",
            )
        return None


def _basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None, None
    return unquote(user), unquote(password)


def _tenant_not_found(tenant: str) -> Response:
    return _aad_error(
        400,
        "invalid_request",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud.",
    )


def _aad_error(status: int, error: str, code: int, message: str) -> Response:
    trace_id = str(uuid.uuid4())
    correlation_id = str(uuid.uuid4())
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return Response.json(
        status,
        {
            "error": error,
            "error_description": (
                f"AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} "
                f"Timestamp: {now}"
            ),
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
    )


def token_error(status: int, error: str, code: int, message: str) -> Response:
    """An AAD-shaped error, for faults injected on the token service."""
    return _aad_error(status, error, code, message)
