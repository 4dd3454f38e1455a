"""One exception tree. Messages say what to fix and never carry tokens, secrets or headers."""

from __future__ import annotations


class Work365Error(Exception):
    """Root of every error this service raises on purpose."""


class ConfigError(Work365Error):
    """The app is misconfigured: a setting, the schema map or a file it names."""


class MissingSettingError(ConfigError):
    def __init__(self, key: str, expected: str) -> None:
        self.key = key
        self.expected = expected
        super().__init__(f"{key} is not set: expected {expected}")


class InvalidSettingError(ConfigError):
    """A setting is present but malformed. The value is not echoed: it may be a secret."""

    def __init__(self, key: str, expected: str) -> None:
        self.key = key
        self.expected = expected
        super().__init__(f"{key} is malformed: expected {expected}")


class SchemaError(ConfigError):
    """The schema map does not match the Dataverse organisation's metadata."""


class AuthError(Work365Error):
    """A token could not be acquired. Carries the authority's error code, never the credential.
    `transient`: the authority was unreachable, busy or answered garbage (retried), as opposed to
    refusing the credential (not retried). `configuration`: no request was sent at all (the
    process lacks what the setting needs, e.g. the managed-identity endpoint): status 0 in the
    summary, never an HTTP status that did not happen."""

    def __init__(
        self,
        service: str,
        message: str,
        code: str = "",
        *,
        transient: bool = False,
        configuration: bool = False,
    ) -> None:
        self.service = service
        self.code = code
        self.transient = transient
        self.configuration = configuration
        super().__init__(message)

    @property
    def status(self) -> int:
        """The summary's `status` of this failure: 0 when no request was sent (configuration),
        503 when the authority stayed unreachable, 401 when it refused the credential."""
        if self.configuration:
            return 0
        return 503 if self.transient else 401


class ApiError(Work365Error):
    """An upstream call failed after retries (or was not retryable)."""

    def __init__(
        self,
        service: str,
        status: int,
        code: str,
        message: str,
        request_id: str | None = None,
    ) -> None:
        self.service = service
        self.status = status
        self.code = code
        self.request_id = request_id
        self.detail = message
        where = f" (request id {request_id})" if request_id else ""
        super().__init__(f"{service} answered {status} {code}: {message}{where}")

    def to_json(self, customer_id: str | None = None) -> dict[str, object]:
        return {
            "customerId": customer_id,
            "service": self.service,
            "status": self.status,
            "code": self.code,
            "message": self.detail,
        }


class ThrottledError(ApiError):
    """429 (or 503) with an optional Retry-After in seconds."""

    def __init__(
        self,
        service: str,
        status: int,
        code: str,
        message: str,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(service, status, code, message, request_id)
        self.retry_after = retry_after


class ConflictError(ApiError):
    """412 Precondition Failed: the row changed (If-Match) or already exists (If-None-Match)."""


class NotFoundError(ApiError):
    """404: the row or resource does not exist."""


class ConnectionFailedError(ApiError):
    """No HTTP answer at all (DNS, refused, reset, timeout). Status is 0."""


class InvalidResponseError(ApiError):
    """The service answered 2xx with a body we could not read (e.g. truncated JSON)."""


def error_json(exc: Work365Error, customer_id: str | None) -> dict[str, object]:
    """An `errors` item of the run summary contract, for any upstream failure."""
    if isinstance(exc, ApiError):
        return exc.to_json(customer_id)
    return {
        "customerId": customer_id,
        "service": getattr(exc, "service", "auth"),
        # a refused credential is a 401, an authority that stayed unreachable a 503, a request
        # never sent (configuration) 0
        "status": exc.status if isinstance(exc, AuthError) else 401,
        "code": getattr(exc, "code", "") or "auth",
        "message": str(exc),
    }
