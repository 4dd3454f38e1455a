"""Scaled-out instances split the APIs' per-user limits: with WORK365_MAX_INSTANCES = N each
instance keeps to 1/N of the configured request budget (fake clock: nothing sleeps for real)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.conftest import ScenarioBuilder
from tests.integration.reliability import FakeClock, run
from work365_fn.errors import InvalidSettingError
from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.faults import Limits
from work365_fn.settings import Settings


def pc_requests(box: Sandbox) -> int:
    return sum(box.counts()["partnerCenter"].values())


def twelve_customers(world: ScenarioBuilder) -> None:
    account = world.account(1)
    for i in range(1, 13):
        world.new_subscription(i, world.customer(i, account_id=account))


def run_as_one_of_two_instances(world: ScenarioBuilder, tmp_path: Path, max_instances: str) -> int:
    """Partner Center's budget is 10 a minute for the tenant; the other instance uses half of
    it, so this instance finds 5 a minute left. Returns the requests Partner Center served."""
    twelve_customers(world)
    clock = FakeClock(start=time.time())
    limits = Limits(partner_center_requests=5, partner_center_window_seconds=60)
    with Sandbox.start(world.scenario(), enforce_limits=True, limits=limits, clock=clock) as box:
        summary = run(
            box,
            str(tmp_path),
            sleep=clock.sleep,
            monotonic=clock,
            WORK365_PC_MAX_REQUESTS_PER_MINUTE="10",
            WORK365_MAX_INSTANCES=max_instances,
            WORK365_CONCURRENCY="1",
        )
        assert summary.status == "succeeded"
        return pc_requests(box)


def test_each_of_two_instances_keeps_to_half_the_budget(
    world: ScenarioBuilder, tmp_path: Path
) -> None:
    assert run_as_one_of_two_instances(world, tmp_path, "2") == 13  # not one 429


def test_without_the_split_an_instance_overruns_its_share(
    world: ScenarioBuilder, tmp_path: Path
) -> None:
    assert run_as_one_of_two_instances(world, tmp_path, "1") > 13  # 429s, retried


BASE = {
    "WORK365_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "WORK365_CLIENT_ID": "00001111-aaaa-2222-bbbb-3333cccc4444",
    "WORK365_CLIENT_SECRET": "Abc8Q~s3cr3t-value-never-shown",
    "WORK365_DATAVERSE_URL": "https://contoso.crm.dynamics.com",
}


def test_fanout_and_scale_settings_have_documented_defaults() -> None:
    s = Settings.from_env(BASE)
    assert (s.fanout_threshold, s.fanout_batch_size, s.fanout_timeout_minutes) == (200, 50, 240)
    assert s.max_instances == 1
    assert s.instance_share(5000) == 5000


@pytest.mark.parametrize(
    ("instances", "limit", "share"), [("4", 5000, 1250), ("3", 300, 100), ("7", 5, 1), ("4", 0, 0)]
)
def test_the_share_of_a_limit_is_a_whole_part_never_zero_unless_off(
    instances: str, limit: int, share: int
) -> None:
    s = Settings.from_env({**BASE, "WORK365_MAX_INSTANCES": instances})
    assert s.instance_share(limit) == share


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("WORK365_FANOUT_THRESHOLD", "-1"),
        ("WORK365_FANOUT_BATCH_SIZE", "0"),
        ("WORK365_FANOUT_BATCH_SIZE", "1001"),  # a queue message holds at most 1000 ids
        ("WORK365_FANOUT_TIMEOUT_MINUTES", "5"),
        ("WORK365_MAX_INSTANCES", "0"),
        ("WORK365_MAX_INSTANCES", "two"),
    ],
)
def test_bad_fanout_settings_are_named(key: str, value: str) -> None:
    with pytest.raises(InvalidSettingError) as caught:
        Settings.from_env({**BASE, key: value})
    assert caught.value.key == key
