"""Logging of runs: the run id and correlation id on every line of a run, secrets on none.

- `run_context(run_id, correlation_id)` (entered by `run_sync`) puts the ids in context
  variables. Worker threads get them when their task runs in a copy of the caller's context
  (`submit_in_context`), so the lines of the clients (Partner Center, Dataverse, http) carry them
  too.
- `install()` (called when the services are built: the Functions worker's first invocation, a CLI
  command) wraps the log-record factory once, so that whatever handler receives a record (the
  Functions host's, the CLI's, a test's):
  - a line logged inside a run starts with `[run <run id>]` (and `corr <id>` when the correlation
    id differs), the key to find a run in Application Insights;
  - no registered secret (client secret, certificate key, access tokens as they are acquired)
    and nothing shaped like a credential (bearer/basic headers, `access_token`, `client_secret`,
    `client_assertion` values, PEM private keys) survives in the message, its arguments or the
    exception text, whatever logged it (msal and urllib3 at DEBUG included).
  It also adds `RunContextFilter` to the handlers present then, which sets `run_id` and
  `correlation_id` attributes on each record (custom dimensions where a host forwards them).
- `log_summary(summary)`: the run summary as one structured record (counts, requests per
  service, and capped lists of the rows that need someone: `rules.summary.log_record`), with
  one sentence in the run's mood after it ("dry run: nothing written, ...: 6 would be
  assigned, ..."), and the counts and ids as flat `work365.*` attributes of the record
  (`summary_dimensions`), the names infra/workbook.json and infra/alerts/ query as
  customDimensions.
- `count_request(service)`: each HTTP request a run sends, counted per service in the run's
  context (`run_requests()`), for the `work365.requests.<service>` dimensions.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from work365_fn.rules.summary import log_record, run_sentence

if TYPE_CHECKING:
    from work365_fn.rules.summary import RunSummary

log = logging.getLogger("work365_fn")

T = TypeVar("T")

_RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("work365_run_id", default=None)
_CORRELATION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "work365_correlation_id", default=None
)


class _RequestCounts:
    """Requests per service of one run; the run's worker threads share it (their contexts are
    copies of the run's, holding this same object)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def add(self, service: str) -> None:
        with self._lock:
            self._counts[service] = self._counts.get(service, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


_REQUESTS: contextvars.ContextVar[_RequestCounts | None] = contextvars.ContextVar(
    "work365_requests", default=None
)

REDACTED = "<redacted>"
MAX_REMEMBERED = 64  # tokens rotate hourly: a long-lived worker keeps the latest ones
MIN_SECRET_CHARS = 8  # shorter values would only mangle ordinary text

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/]{16,}=*"), rf"\1\2{REDACTED}"),
    (
        re.compile(
            r"""(?i)(["']?(?:access_token|refresh_token|id_token|client_secret|client_assertion"""
            r"""|assertion|private_key)["']?\s*[:=]\s*["']?)[^"'&\s,}]+"""
        ),
        rf"\1{REDACTED}",
    ),
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
        f"{REDACTED} private key",
    ),
)


class Redactor:
    """Known secrets and credential-shaped text, replaced by `<redacted>`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, None] = {}  # insertion-ordered, bounded

    def remember(self, secret: str | None) -> None:
        if not secret or len(secret) < MIN_SECRET_CHARS:
            return
        with self._lock:
            self._secrets.pop(secret, None)
            self._secrets[secret] = None
            while len(self._secrets) > MAX_REMEMBERED:
                self._secrets.pop(next(iter(self._secrets)))
            # PEM keys are also matched line by line (a message may hold a part of the file).
            if "PRIVATE KEY" in secret:
                for line in secret.splitlines():
                    if len(line) >= 40 and "-----" not in line:
                        self._secrets[line.strip()] = None

    def redact(self, text: str) -> str:
        with self._lock:
            known = sorted(self._secrets, key=len, reverse=True)
        for secret in known:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


REDACTOR = Redactor()


def remember_secret(secret: str | None) -> None:
    """Keep this value out of every log record from now on (secrets, keys, tokens)."""
    REDACTOR.remember(secret)


def redact(text: str) -> str:
    return REDACTOR.redact(text)


# ---- run context ------------------------------------------------------------------------------


@contextmanager
def run_context(run_id: str, correlation_id: str | None = None) -> Iterator[None]:
    """Every record logged inside (in this thread, or in tasks submitted with
    `submit_in_context`) carries these ids."""
    run_token = _RUN_ID.set(run_id)
    corr_token = _CORRELATION_ID.set(correlation_id or run_id)
    requests_token = _REQUESTS.set(_RequestCounts())
    try:
        yield
    finally:
        _REQUESTS.reset(requests_token)
        _CORRELATION_ID.reset(corr_token)
        _RUN_ID.reset(run_token)


def count_request(service: str) -> None:
    """One HTTP request sent to `service` by the current run (nothing outside a run)."""
    counts = _REQUESTS.get()
    if counts is not None:
        counts.add(service)


def run_requests() -> dict[str, int]:
    """The current run's requests per service so far ({} outside a run)."""
    counts = _REQUESTS.get()
    return counts.snapshot() if counts is not None else {}


def submit_in_context(pool: Executor, fn: Callable[..., T], *args: Any) -> Future[T]:
    """`pool.submit` in a copy of the caller's context (one copy per task: a context cannot be
    entered by two threads at once), so the task's log lines carry the run's ids."""
    return pool.submit(contextvars.copy_context().run, fn, *args)


def _prefix() -> str | None:
    run_id = _RUN_ID.get()
    if run_id is None:
        return None
    correlation = _CORRELATION_ID.get()
    if correlation and correlation != run_id:
        return f"[run {run_id} corr {correlation}]"
    return f"[run {run_id}]"


class RunContextFilter(logging.Filter):
    """Sets `run_id` and `correlation_id` on a record (when the caller did not) from the run
    context; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is None:
            setattr(record, "run_id", _RUN_ID.get())  # noqa: B010 - LogRecord has no such field
        if getattr(record, "correlation_id", None) is None:
            corr = _CORRELATION_ID.get() or getattr(record, "run_id", None)
            setattr(record, "correlation_id", corr)  # noqa: B010
        # The same under the names infra/workbook.json queries (docs/operations.md#monitoring).
        for dimension, value in (
            ("work365.runId", record.run_id),  # type: ignore[attr-defined]
            ("work365.correlationId", record.correlation_id),  # type: ignore[attr-defined]
        ):
            if value is not None and getattr(record, dimension, None) is None:
                setattr(record, dimension, value)
        return True


# ---- installation -----------------------------------------------------------------------------

_install_lock = threading.Lock()


def install(handler: logging.Handler | None = None) -> None:
    """Idempotent: wrap the record factory once; add `RunContextFilter` to `handler` (or to
    the root logger's handlers)."""
    with _install_lock:
        current = logging.getLogRecordFactory()
        if not getattr(current, "work365", False):
            logging.setLogRecordFactory(_factory(current))
        handlers = [handler] if handler is not None else list(logging.getLogger().handlers)
        for h in handlers:
            if not any(isinstance(f, RunContextFilter) for f in h.filters):
                h.addFilter(RunContextFilter())


def _factory(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            _scrub(record)
        except Exception:  # logging must never break the caller
            record.msg, record.args = "<log record dropped: it could not be redacted>", None
        return record

    make.work365 = True  # type: ignore[attr-defined]
    return make


def _scrub(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a bad format/args pair: keep the parts, scrubbed
        message = f"{record.msg} {record.args!r}"
    clean = REDACTOR.redact(message)
    prefix = _prefix()
    if prefix and not clean.startswith("[run "):
        clean = f"{prefix} {clean}"
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = REDACTOR.redact(text)
    if record.stack_info:
        record.stack_info = REDACTOR.redact(record.stack_info)


class RunLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the run id (the correlation id sent to Partner Center):
    `RunLog(log, {"run_id": run_id})`."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs.setdefault("extra", {}).update(extra)
        return f"[run {extra.get('run_id')}] {msg}", kwargs


# ---- the summary record -----------------------------------------------------------------------


def log_summary(summary: RunSummary, logger: logging.Logger | None = None) -> None:
    """One structured record: `[run <id>] summary {...}; <sentence>`, with the dict as the
    `summary` attribute. The JSON is `rules.summary.log_record`'s: the counts, the run's HTTP
    requests per service, and capped lists (the unassigned and failed rows with their names and
    fixes, the errors, the skipped customers), so the message stays far below Application
    Insights' 32 KB. The sentence (`rules.summary.run_sentence`) says a dry run's counts in the
    conditional: "dry run: nothing written, status succeeded: ... 6 would be assigned, ..."."""
    log_summary_json(summary.to_json(), logger, requests=summary.requests)


def log_summary_json(
    summary: dict[str, Any],
    logger: logging.Logger | None = None,
    *,
    requests: dict[str, int] | None = None,
) -> None:
    """`log_summary` of a summary in its JSON form (with or without `subscriptions`);
    `requests`: the run's HTTP requests per service, when counted."""
    given = summary.get("requests")
    sent: dict[str, int] = requests or (given if isinstance(given, dict) else {})
    line = log_record({**summary, "requests": dict(sorted(sent.items()))})
    run_id = line.get("runId")
    level = logging.INFO if line.get("status") == "succeeded" else logging.WARNING
    (logger or log).log(
        level,
        "[run %s] summary %s; %s%s",
        run_id,
        json.dumps(line, separators=(",", ":")),
        run_sentence(line),
        _not_logged(line),
        extra={"run_id": run_id, "summary": line, **summary_dimensions(line, sent)},
    )


_LIST_WORDS = {
    "needsAttention": "unassigned or failed subscriptions",
    "skippedCustomers": "skipped customers",
}


def _not_logged(line: dict[str, Any]) -> str:
    """ "; and 80 more errors, 12 more unassigned or failed subscriptions not logged (...)"
    when a list was cut."""
    left_out = line.get("notLogged") or {}
    if not left_out:
        return ""
    parts = ", ".join(f"{n} more {_LIST_WORDS.get(name, name)}" for name, n in left_out.items())
    return f"; and {parts} not logged (the run's summary and report list them all)"


def summary_dimensions(
    line: dict[str, Any], requests: dict[str, int] | None = None
) -> dict[str, str | int]:
    """The run's counts and ids as flat record attributes named `work365.<field>`: what
    infra/workbook.json and infra/alerts/*.kql read as customDimensions["work365.status"] etc.

    The Functions Python worker's own log forwarding sends the message only: `extra` fields do
    not become customDimensions there
    (https://github.com/Azure/azure-functions-python-worker/issues/1327, #1681); with
    OpenTelemetry on (https://learn.microsoft.com/azure/azure-functions/opentelemetry-howto,
    azure-monitor-opentelemetry), a record's extra attributes are exported as custom
    properties (https://learn.microsoft.com/azure/azure-monitor/app/opentelemetry-add-modify).
    So: flat names with scalar values (an attribute must be a string, number or boolean), and
    the workbook falls back to the JSON in the message, which every record carries.
    Booleans are "true"/"false" (customDimensions values are strings; KQL compares text)."""
    counts = line.get("counts") or {}
    dims: dict[str, str | int] = {
        "work365.runId": str(line.get("runId") or ""),
        "work365.status": str(line.get("status") or ""),
        "work365.mode": str(line.get("mode") or ""),
        "work365.dryRun": "true" if line.get("dryRun") else "false",
    }
    for name in SUMMARY_COUNTS:
        value = counts.get(name, 0)
        dims[f"work365.{name}"] = value if isinstance(value, int) else 0
    left_out = line.get("notLogged") or {}
    for name in ("errors", "skippedCustomers", "warnings"):
        listed = line.get(name)
        dims[f"work365.{name}"] = (len(listed) if isinstance(listed, list) else 0) + int(
            left_out.get(name, 0)
        )
    by_reason = line.get("byReason")
    for reason, count in by_reason.items() if isinstance(by_reason, dict) else ():
        dims[f"work365.reason.{reason}"] = count if isinstance(count, int) else 0
    for service, sent in sorted((requests or {}).items()):
        dims[f"work365.requests.{service}"] = sent
    return dims


# The counts of the summary's `counts` object, in its order (rules/summary.py).
SUMMARY_COUNTS = (
    "customers",
    "subscriptions",
    "assigned",
    "unassigned",
    "unchanged",
    "failed",
    "created",
)
