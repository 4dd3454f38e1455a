"""The client-side rate limiter of http.py with a fake clock: the sliding-window limit, the
shared pause after a Retry-After, and the excuse of the worker that was told."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from work365_fn.adapters.transport import RateLimiter


class FakeClock:
    """A clock that only moves when someone sleeps on it (thread-safe); records the sleeps."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[tuple[str, float]] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append((threading.current_thread().name, seconds))
            self.now += seconds


def limiter(clock: FakeClock, max_requests: int = 3, window: float = 10.0) -> RateLimiter:
    return RateLimiter("dataverse", max_requests, window, clock=clock, sleep=clock.sleep)


def test_requests_under_the_limit_go_at_once() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    assert [lim.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert clock.sleeps == []


def test_the_request_over_the_limit_waits_for_the_oldest_to_leave_the_window() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    for _ in range(3):
        lim.acquire()
    clock.now += 4
    assert lim.acquire() == 6.0  # the first left the 10 s window at 1010
    assert clock.now == 1010.0


def test_zero_turns_the_limit_off() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_requests=0)
    for _ in range(1000):
        lim.acquire()
    assert clock.sleeps == []
    assert lim.requests == 1000


@settings(max_examples=200, deadline=None)
@given(
    max_requests=st.integers(1, 6),
    gaps=st.lists(st.floats(0, 7, allow_nan=False), min_size=1, max_size=40),
)
def test_no_window_ever_holds_more_than_the_limit(max_requests: int, gaps: list[float]) -> None:
    clock = FakeClock()
    lim = limiter(clock, max_requests=max_requests, window=10.0)
    sent: list[float] = []
    for gap in gaps:
        clock.now += gap
        lim.acquire()
        sent.append(clock.now)  # the moment the request leaves
    assert sent == sorted(sent)
    for i, start in enumerate(sent):
        in_window = [t for t in sent[i:] if t < start + 10.0]
        assert len(in_window) <= max_requests


def test_many_threads_share_one_limit() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_requests=4, window=1.0)
    sent: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            lim.acquire()
            with lock:
                sent.append(clock())

    threads = [threading.Thread(target=worker, name=f"w{i}") for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert lim.requests == 30
    # 30 requests at 4 a second: the last one cannot leave before 7 s have passed.
    assert clock.now - 1000.0 >= 7.0


def test_a_retry_after_pauses_every_worker_not_only_the_one_told() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_requests=0)
    told = threading.Thread(target=lim.throttled, args=(5.0,), name="told")
    told.start()
    told.join()
    waited = lim.acquire()  # another worker (this thread) wants to send
    assert waited == 5.0
    assert clock.sleeps == [("MainThread", 5.0)]
    assert lim.pauses == 1


def test_the_worker_told_waits_once_through_its_retry_and_the_pause_is_then_over() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_requests=0)
    lim.throttled(5.0)  # this worker got the 429; its retry sleeps the Retry-After itself
    assert lim.acquire() == 0.0
    # it came back from a whole Retry-After: nobody else has to wait for that pause any more
    other: list[float] = []
    t = threading.Thread(target=lambda: other.append(lim.acquire()))
    t.start()
    t.join()
    assert other == [0.0]


def test_a_newer_pause_set_while_waiting_is_waited_out_too() -> None:
    clock = FakeClock()
    first = True

    def sleep_and_meet_another_429(seconds: float) -> None:
        nonlocal first
        clock.sleep(seconds)
        if first:  # while this worker slept, another one was told to wait 7 s more
            first = False
            t = threading.Thread(target=lim.throttled, args=(7.0,))
            t.start()
            t.join()

    lim = RateLimiter("dataverse", 0, 10.0, clock=clock, sleep=sleep_and_meet_another_429)
    lim.throttled(3.0)
    t = threading.Thread(target=lim.acquire, name="waiter")
    t.start()
    t.join()
    assert [s for name, s in clock.sleeps if name == "waiter"] == [3.0, 7.0]
    assert lim.pauses == 2


def test_a_shorter_retry_after_does_not_shorten_a_pause() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_requests=0)
    t = threading.Thread(target=lambda: (lim.throttled(10.0), lim.throttled(2.0)))
    t.start()
    t.join()
    assert lim.acquire() == 10.0
    assert lim.pauses == 1


def test_a_retry_after_is_capped() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_requests=0)
    t = threading.Thread(target=lim.throttled, args=(86400.0,))
    t.start()
    t.join()
    assert lim.acquire() == 300.0  # MAX_RETRY_AFTER_SECONDS
