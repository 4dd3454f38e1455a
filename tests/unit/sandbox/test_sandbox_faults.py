"""Fault rules and service-protection limits, without sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from work365_fn.sandbox.core import Headers, Request, Response
from work365_fn.sandbox.faults import FaultSet, Limiter, Limits, Slot, parse_rule
from work365_fn.sandbox.scenario import ScenarioError


def a_request(
    method: str = "GET", path: str = "/api/data/v9.2/accounts", query: str = ""
) -> Request:
    return Request(method, path, query, Headers())


def error_of(raw: object) -> str:
    with pytest.raises(ScenarioError) as caught:
        parse_rule(raw, "faults[2]")
    return str(caught.value)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def body(response: Response) -> Any:
    return json.loads(response.body)


# --- rule validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "why"),
    [
        ({"kind": "418"}, "kind", "must be one of 429, 503, 500, slow"),
        ({}, "kind", "must be one of"),
        ({"kind": "429", "service": "graph"}, "service", "must be one of dataverse"),
        ({"kind": "429", "method": "FETCH"}, "method", "must be one of GET"),
        ({"kind": "429", "path": "(unclosed"}, "path", "is not a valid regular expression"),
        ({"kind": "500", "retryAfter": 3}, "retryAfter", "only applies to kinds 429 and 503"),
        ({"kind": "429", "retryAfter": -1}, "retryAfter", "must be a number of seconds"),
        ({"kind": "slow", "delayMs": 1.5}, "delayMs", "must be an integer"),
        ({"kind": "drop", "delayMs": 5}, "delayMs", "only applies to kind slow"),
        ({"kind": "race"}, "set", "must be an object of column values"),
        ({"kind": "race", "service": "token", "set": {"a": 1}}, "service", "must be dataverse"),
        ({"kind": "500", "set": {"a": 1}}, "set", "only applies to kind race"),
        ({"kind": "500", "times": 0}, "times", "must be an integer >= 1"),
        ({"kind": "500", "every": True}, "every", "must be an integer >= 1"),
        ({"kind": "500", "times": 1, "every": 2}, "every", "cannot be combined with times"),
        ({"kind": "500", "count": 2}, "count", "is not a known field"),
        ({"kind": "503", "code": "0x80072321"}, "code", "only applies to kind 429"),
        ({"kind": "429", "code": 7}, "code", "must be a service error code"),
    ],
)
def test_bad_rules_name_the_field(raw: object, field: str, why: str) -> None:
    assert f"'faults[2].{field}' {why}" in error_of(raw)


def test_a_rule_must_be_an_object() -> None:
    assert "'faults[2]' must be an object" in error_of("429")


def test_rule_defaults() -> None:
    rule = parse_rule({"kind": 429})
    assert (rule.kind, rule.retry_after, rule.times, rule.every) == ("429", 1.0, 1, None)


def test_fault_set_add_names_the_rule_by_position() -> None:
    faults = FaultSet()
    faults.add({"kind": "500"})
    with pytest.raises(ScenarioError, match=r"'faults\[1\]\.kind'"):
        faults.add({"kind": "teapot"})


# --- matching --------------------------------------------------------------------------------


def test_times_applies_to_the_first_n_matching_requests() -> None:
    faults = FaultSet()
    faults.add({"kind": "503", "times": 2})
    hits = [faults.match("dataverse", a_request()) is not None for _ in range(4)]
    assert hits == [True, True, False, False]
    assert faults.fired() == [2]


def test_every_applies_to_every_nth_matching_request() -> None:
    faults = FaultSet()
    faults.add({"kind": "503", "every": 3})
    hits = [faults.match("dataverse", a_request()) is not None for _ in range(7)]
    assert hits == [False, False, True, False, False, True, False]


def test_service_method_and_path_filter_requests() -> None:
    faults = FaultSet()
    faults.add(
        {"service": "dataverse", "method": "patch", "path": r"work365_subscriptions\(", "times": 9,
         "kind": "500"}
    )  # fmt: skip
    patch = a_request(
        "PATCH", "/api/data/v9.2/work365_subscriptions(00000000-0000-0000-0000-000000000001)"
    )
    assert faults.match("dataverse", patch) is not None
    assert faults.match("partnerCenter", patch) is None
    assert faults.match("dataverse", a_request("GET", patch.path)) is None
    assert faults.match("dataverse", a_request("PATCH", "/api/data/v9.2/accounts(1)")) is None


def test_path_regex_sees_the_decoded_query() -> None:
    faults = FaultSet()
    faults.add({"kind": "429", "path": r"\$filter=statecode eq 0"})
    request = a_request(query="%24filter=statecode%20eq%200")
    assert faults.match("dataverse", request) is not None


def test_anchored_path_regex_matches_the_path_whatever_the_query() -> None:
    faults = FaultSet()
    faults.add({"kind": "429", "path": "/v1/customers$", "times": 5})
    assert faults.match("partnerCenter", a_request(path="/v1/customers", query="size=500"))
    assert faults.match("partnerCenter", a_request(path="/v1/customers/x/subscriptions")) is None


def test_only_the_first_firing_rule_applies_and_later_rules_keep_their_turns() -> None:
    faults = FaultSet()
    faults.add({"kind": "429"})
    faults.add({"kind": "500"})
    kinds = [getattr(faults.match("token", a_request()), "kind", None) for _ in range(3)]
    assert kinds == ["429", "500", None]


def test_race_rules_only_match_dataverse() -> None:
    faults = FaultSet()
    faults.add({"kind": "race", "set": {"work365_name": "changed"}})
    assert faults.match("partnerCenter", a_request()) is None
    rule = faults.match("dataverse", a_request())
    assert rule is not None and dict(rule.changes) == {"work365_name": "changed"}


def test_clear_removes_every_rule() -> None:
    faults = FaultSet()
    faults.add({"kind": "500", "every": 1})
    faults.clear()
    assert faults.match("dataverse", a_request()) is None
    assert faults.rules() == []


# --- limits ----------------------------------------------------------------------------------


def test_dataverse_request_limit_answers_429_until_the_window_slides() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(dataverse_requests=2, dataverse_window_seconds=300), clock)
    for _ in range(2):
        slot = limiter.acquire("dataverse")
        assert isinstance(slot, Slot)
        limiter.release(slot)
        clock.now += 10
    refused = limiter.acquire("dataverse")
    assert isinstance(refused, Response) and refused.status == 429
    assert body(refused)["error"]["code"] == "0x80072322"
    assert "limit of 2 over time window of 300 seconds" in body(refused)["error"]["message"]
    assert refused.headers["Retry-After"] == "280"  # the first request leaves the window then
    clock.now += 280
    assert isinstance(limiter.acquire("dataverse"), Slot)


def test_dataverse_concurrency_limit() -> None:
    limiter = Limiter(Limits(dataverse_concurrent=1), FakeClock())
    first = limiter.acquire("dataverse")
    refused = limiter.acquire("dataverse")
    assert isinstance(refused, Response)
    assert body(refused)["error"]["code"] == "0x80072326"
    assert isinstance(first, Slot)
    limiter.release(first)
    assert isinstance(limiter.acquire("dataverse"), Slot)


def test_dataverse_execution_time_limit() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(dataverse_execution_seconds=5), clock)
    slot = limiter.acquire("dataverse")
    assert isinstance(slot, Slot)
    clock.now += 6  # the request took 6 s of server time
    limiter.release(slot)
    refused = limiter.acquire("dataverse")
    assert isinstance(refused, Response) and refused.status == 429
    assert body(refused)["error"]["code"] == "0x80072321"
    assert int(refused.headers["Retry-After"]) > 0


def test_partner_center_limit_is_pc_shaped() -> None:
    limiter = Limiter(
        Limits(partner_center_requests=1, partner_center_window_seconds=60), FakeClock()
    )
    assert isinstance(limiter.acquire("partnerCenter"), Slot)
    refused = limiter.acquire("partnerCenter")
    assert isinstance(refused, Response) and refused.status == 429
    # the documented throttling shape, not the {code, description} of other errors
    assert body(refused) == {
        "statusCode": 429,
        "message": "Rate limit is exceeded. Try again in 60 seconds.",
    }
    assert refused.headers["Retry-After"] == "60"


def test_token_service_is_not_limited() -> None:
    limiter = Limiter(Limits(dataverse_requests=1, partner_center_requests=1), FakeClock())
    assert all(isinstance(limiter.acquire("token"), Slot) for _ in range(5))
