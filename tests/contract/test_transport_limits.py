"""The Transport with its service's RateLimiter, against `responses`: a Retry-After seen by one
worker holds the others, the request limit spaces calls out, and a 2xx write answer that claims
JSON but is cut off is retried like any unreadable body."""

from __future__ import annotations

import threading

import requests
import responses

from work365_fn.adapters.auth import StaticTokenProvider
from work365_fn.adapters.dataverse import parse_error as dataverse_error
from work365_fn.adapters.transport import RateLimiter, RetryPolicy, ServiceApi, Transport

from .clients import TOKEN
from .shapes import ORG


class Clock:
    """Moves only when slept on; records who slept how long."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        self.during_sleep: list[object] = []  # callables run (once) inside the next sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append((threading.current_thread().name, seconds))
            hooks, self.during_sleep = self.during_sleep, []
        for hook in hooks:  # what other threads do while this one sleeps
            hook()  # type: ignore[operator]
        with self.lock:
            self.now += seconds


def transport(clock: Clock, max_requests: int = 0, window: float = 300.0) -> Transport:
    limiter = RateLimiter("dataverse", max_requests, window, clock=clock, sleep=clock.sleep)
    return Transport(
        ServiceApi("dataverse", dataverse_error),
        requests.Session(),
        StaticTokenProvider(TOKEN),
        RetryPolicy(max_attempts=3, max_seconds=600, sleep=clock.sleep),
        limiter=limiter,
    )


def test_a_429_makes_every_worker_of_the_service_wait_until_retry_after(
    rsps: responses.RequestsMock,
) -> None:
    clock = Clock()
    dv = transport(clock)
    url_a, url_b = f"{ORG}/api/data/v9.2/a", f"{ORG}/api/data/v9.2/b"
    rsps.get(
        url_a, status=429, json={"error": {"code": "0x80072322"}}, headers={"Retry-After": "7"}
    )
    rsps.get(url_a, json={"value": []})
    rsps.get(url_b, json={"value": []})
    sent_b: list[float] = []

    def worker_b() -> None:  # starts while worker A waits out its Retry-After
        dv.send_json("GET", url_b)
        sent_b.append(clock.now)

    b = threading.Thread(target=worker_b, name="B")
    clock.during_sleep.append(lambda: (b.start(), b.join()))
    a = threading.Thread(target=lambda: dv.send_json("GET", url_a), name="A")
    a.start()
    a.join()

    # A slept its Retry-After through its retry; B, which never saw a 429, waited for it too,
    # and sent nothing before the moment the service named.
    assert ("A", 7.0) in clock.sleeps
    assert ("B", 7.0) in clock.sleeps
    assert sent_b == [7.0]
    assert dv.limiter is not None and dv.limiter.pauses == 1


def test_the_worker_told_does_not_wait_twice(rsps: responses.RequestsMock) -> None:
    clock = Clock()
    dv = transport(clock)
    url = f"{ORG}/api/data/v9.2/a"
    rsps.get(url, status=429, json={"error": {"code": "0x80072322"}}, headers={"Retry-After": "4"})
    rsps.get(url, json={"value": []})
    dv.send_json("GET", url)
    assert [s for _, s in clock.sleeps] == [4.0]


def test_the_request_limit_spaces_calls_out(rsps: responses.RequestsMock) -> None:
    clock = Clock()
    dv = transport(clock, max_requests=2, window=300.0)
    url = f"{ORG}/api/data/v9.2/a"
    for _ in range(5):
        rsps.get(url, json={"value": []})
    for _ in range(5):
        dv.send_json("GET", url)
    # 2 per 5 minutes: requests 3-4 wait for the window to move on, request 5 for the next one.
    assert [s for _, s in clock.sleeps] == [300.0, 300.0]
    assert clock.now == 600.0


def test_a_cut_off_json_answer_to_a_write_is_retried(rsps: responses.RequestsMock) -> None:
    clock = Clock()
    dv = transport(clock)
    url = f"{ORG}/api/data/v9.2/work365_subscriptions(f0000000-0000-0000-0000-000000000001)"
    rsps.patch(url, status=200, body=b'{"value": [{"id": "tru', content_type="application/json")
    rsps.patch(url, status=204)
    response = dv.send("PATCH", url, body=b"{}")
    assert response.status_code == 204
    assert len(clock.sleeps) == 1  # one retry, with the exponential backoff
