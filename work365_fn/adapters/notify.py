"""A digest after each timer run that left anything unassigned or failed, POSTed to
WORK365_NOTIFY_URL: a Teams Workflows webhook (an Adaptive Card: counts, the unassigned
subscriptions by name with their reasons and fixes, the count of every reason that occurred, a
link to the report) or a Power Automate HTTP trigger (the summary JSON), by WORK365_NOTIFY_FORMAT.

Retried on 429 (honouring Retry-After), 5xx and dropped connections; never fails the run (a
warning is logged); never logs the URL (it carries the trigger's signature).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from work365_fn.adapters.transport import build_session, parse_retry_after
from work365_fn.rules import LISTED
from work365_fn.rules.summary import RunSummary, count_label, run_kind
from work365_fn.settings import Settings

log = logging.getLogger(__name__)

MAX_LISTED = 15  # subscriptions listed in the card; the rest are "and N more"
MAX_ATTEMPTS = 4
MAX_WAIT_SECONDS = 60.0
TIMEOUT = (10.0, 30.0)
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"


class _Retryable(Exception):
    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


def worth_sending(summary: dict[str, Any]) -> bool:
    """Anything left unassigned or failed (a failed or partial run included)."""
    counts = summary.get("counts", {})
    return bool(
        counts.get("unassigned") or counts.get("failed") or summary.get("status") != "succeeded"
    )


def teams_card(summary: dict[str, Any], report_url: str | None = None) -> dict[str, Any]:
    """The message a Teams Workflows "When a Teams webhook request is received" flow posts:
    the headline, the counts, the listed subscriptions (`rules.LISTED`), every reason that
    occurred with its count, and the first error."""
    body = [
        *_headline(summary),
        _counts(summary),
        *_listed(summary),
        *_reasons(summary),
        *_errors(summary),
    ]
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if report_url:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": "Open the report", "url": report_url}
        ]
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }


Block = dict[str, Any]


def _text(text: str, **style: Any) -> Block:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _facts(facts: dict[str, str] | list[tuple[str, str]]) -> Block:
    pairs = facts.items() if isinstance(facts, dict) else facts
    return {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in pairs]}


def _headline(summary: dict[str, Any]) -> list[Block]:
    """ "Work 365: 7 subscription(s) would be left unassigned, 0 failed" in a dry run, "... left
    unassigned ..." in a live one; then the run: dry or live, its id, status and end."""
    counts = summary["counts"]
    dry = bool(summary.get("dryRun"))
    title = (
        f"Work 365: {counts['unassigned']} subscription(s) {count_label('unassigned', dry)}, "
        f"{counts['failed']} {count_label('failed', dry)}"
    )
    run = (
        f"{run_kind(dry)}: run {summary['runId']}, status {summary['status']}, finished "
        f"{summary.get('finishedAt')}"
    )
    return [_text(title, weight="Bolder", size="Medium"), _text(run, isSubtle=True)]


def _counts(summary: dict[str, Any]) -> Block:
    """The summary's `counts`, each under its name in the run's mood ("would be assigned")."""
    dry = bool(summary.get("dryRun"))
    return _facts({count_label(k, dry): str(v) for k, v in summary["counts"].items()})


def _listed(summary: dict[str, Any]) -> list[Block]:
    """The subscriptions an admin acts on, at most MAX_LISTED of them: the customer's and the
    subscription's names (ids where the run has no name) and the fix."""
    rows = [s for s in summary.get("subscriptions", []) if s["reason"] in LISTED]
    if not rows:
        return []
    shown = [(s["reason"], _listed_row(s)) for s in rows[:MAX_LISTED]]
    more = len(rows) - MAX_LISTED
    return [_facts(shown)] + ([_text(f"and {more} more")] if more > 0 else [])


def _listed_row(row: dict[str, Any]) -> str:
    customer = row.get("customerName") or f"customer {row['customerId']}"
    subscription = row.get("subscriptionName") or row["subscriptionId"]
    fix = f" Fix: {row['fix']}" if row.get("fix") else ""
    return f"{customer}: {subscription}.{fix}"


def _reasons(summary: dict[str, Any]) -> list[Block]:
    """Every reason that occurred (`byReason` without its zeros), so none goes unseen."""
    occurred = {k: str(n) for k, n in summary.get("byReason", {}).items() if n}
    return [_text("By reason", weight="Bolder"), _facts(occurred)] if occurred else []


def _errors(summary: dict[str, Any]) -> list[Block]:
    errors = summary.get("errors", [])
    if not errors:
        return []
    first = errors[0]
    return [
        _text(
            f"{len(errors)} error(s); first: {first.get('service')} {first.get('status')} "
            f"{str(first.get('message', ''))[:200]}",
            color="Attention",
        )
    ]


@dataclass(frozen=True)
class Delivery:
    """How a digest is posted: the CA bundle to trust (`verify`), the attempts, the sleep
    between them (injected in tests)."""

    verify: str | bool = True
    max_attempts: int = MAX_ATTEMPTS
    sleep: Callable[[float], None] = time.sleep


class Notifier:
    def __init__(
        self,
        url: str,
        fmt: str,
        *,
        report_url: str | None = None,
        session: requests.Session | None = None,
        delivery: Delivery = Delivery(),
    ) -> None:
        self._url = url
        self.format = fmt
        self.report_url = report_url
        self._session = session or build_session(pool_size=2)
        self._delivery = delivery

    def __repr__(self) -> str:  # never the URL
        return f"Notifier(format={self.format!r})"

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
        report_url: str | None = None,
    ) -> Notifier | None:
        """`report_url`: the run's signed report page (it wins over WORK365_REPORT_URL)."""
        if not settings.notify_url:
            return None
        return cls(
            settings.notify_url,
            settings.notify_format,
            report_url=report_url or settings.report_url,
            session=session,
            delivery=Delivery(verify=settings.ca_bundle or True, sleep=sleep or time.sleep),
        )

    def payload(self, summary: dict[str, Any]) -> dict[str, Any]:
        return teams_card(summary, self.report_url) if self.format == "teams" else summary

    def send(self, summary: RunSummary) -> bool:
        """POST the digest when the run left something unassigned or failed. True when sent;
        never raises."""
        return self.send_json(summary.to_json())

    def send_json(self, data: dict[str, Any]) -> bool:
        """`send` for a summary in its JSON form (a fanned-out run's aggregate, fanout.py)."""
        run_id = data.get("runId")
        if not worth_sending(data):
            return False
        body = self.payload(data)
        retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            wait=_wait,
            stop=stop_after_attempt(self._delivery.max_attempts),
            sleep=self._delivery.sleep,
            reraise=True,
        )
        try:
            retrying(self._post, body)
        except _Retryable as exc:
            log.warning(
                "[run %s] notification not delivered after %d attempts (%s)",
                run_id,
                self._delivery.max_attempts,
                exc,
            )
            return False
        except _Refused as exc:
            log.warning("[run %s] notification refused (%s)", run_id, exc)
            return False
        except Exception as exc:  # never fail the run for a notification
            log.warning("[run %s] notification failed (%s)", run_id, type(exc).__name__)
            return False
        log.info("[run %s] notification sent (%s)", run_id, self.format)
        return True

    def _post(self, body: dict[str, Any]) -> None:
        try:
            response = self._session.post(
                self._url,
                json=body,
                timeout=TIMEOUT,
                verify=self._delivery.verify,
                allow_redirects=False,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            # The exception text names the URL: only its type is kept.
            raise _Retryable(type(exc).__name__) from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retryable(
                f"HTTP {status}", parse_retry_after(response.headers.get("Retry-After"))
            )
        if not 200 <= status < 300:
            raise _Refused(f"HTTP {status}")


class _Refused(Exception):
    """A 4xx other than 429: retrying cannot help (a revoked or wrong URL)."""


_fallback = wait_random_exponential(multiplier=1, max=MAX_WAIT_SECONDS)


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, _Retryable) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_WAIT_SECONDS)
    return float(_fallback(state))


def notify_run(
    summary: RunSummary,
    settings: Settings,
    *,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] | None = None,
    report_url: str | None = None,
) -> bool:
    """After a timer run: send the digest if a URL is configured. Never raises."""
    try:
        notifier = Notifier.from_settings(
            settings, session=session, sleep=sleep, report_url=report_url
        )
    except Exception as exc:  # pragma: no cover - building it does no I/O
        log.warning("notification not set up (%s)", type(exc).__name__)
        return False
    return notifier.send(summary) if notifier is not None else False


def notify_summary(
    summary: dict[str, Any],
    settings: Settings,
    *,
    sleep: Callable[[float], None] | None = None,
    report_url: str | None = None,
) -> bool:
    """`notify_run` for a summary in its JSON form (after a fanned-out run). Never raises."""
    try:
        notifier = Notifier.from_settings(settings, sleep=sleep, report_url=report_url)
    except Exception as exc:  # pragma: no cover - building it does no I/O
        log.warning("notification not set up (%s)", type(exc).__name__)
        return False
    return notifier.send_json(summary) if notifier is not None else False
