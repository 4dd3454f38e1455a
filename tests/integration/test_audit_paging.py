"""The cutoff from a long audit history, against the sandbox paging its audit reads in small
pages: a setting toggled many times, then the setting row edited many times more, still gives the
LATEST change to Yes, and the subscriptions created after it are new."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.conftest import ScenarioBuilder, by_subscription, services_for, sync
from work365_fn.adapters.dataverse_repository import AUDIT_MAX_PAGES
from work365_fn.adapters.schema import Schema
from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.core import TokenIssuer
from work365_fn.sandbox.dataverse import SETTING_ROW_ID, DataverseEmulator
from work365_fn.sandbox.runner import DataverseLike

SETTING = Schema().setting
EMULATOR_PAGE = 10  # the most the emulator serves per audit page, whatever the client asks
TOGGLES = 20  # No then Yes, 20 times: 40 changes of the column, after the seeded one
EDITS = 55  # later edits of another column of the setting row: more than 5 pages of `audits`
FIRST_TOGGLE = datetime(2026, 1, 2, tzinfo=UTC)
LATEST_YES = FIRST_TOGGLE + timedelta(hours=2 * TOGGLES - 1)
FIRST_EDIT = datetime(2026, 2, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def paging_dataverse(
    clock: Clock, **options: Any
) -> Callable[[str, str, TokenIssuer, Schema, bool], DataverseLike]:
    def make(
        db_path: str, base_url: str, tokens: TokenIssuer, schema: Schema, alternate_key: bool
    ) -> DataverseLike:
        return DataverseEmulator(
            db_path,
            base_url,
            tokens,
            schema=schema,
            alternate_key=alternate_key,
            clock=clock,
            audit_page_size=EMULATOR_PAGE,
            **options,
        )

    return make


def edit_setting_row(box: Sandbox, clock: Clock) -> None:
    """Toggle the setting TOGGLES times (ending on Yes at LATEST_YES), then edit the row's name
    EDITS times, each change an hour or a minute after the one before."""
    dataverse = services_for(box).dataverse

    def patch(when: datetime, body: dict[str, Any]) -> None:
        clock.now = when
        dataverse.update(SETTING.entity_set, SETTING_ROW_ID, body, etag="*")

    for i in range(2 * TOGGLES):
        patch(FIRST_TOGGLE + timedelta(hours=i), {SETTING.associate_default: i % 2 == 1})
    for i in range(EDITS):
        patch(FIRST_EDIT + timedelta(minutes=i), {"work365_name": f"Admin Hub, edit {i}"})


def a_world_with_a_subscription_made_after_the_latest_yes(world: ScenarioBuilder) -> str:
    account = world.account(1)
    customer = world.customer(1, account_id=account)
    made = (LATEST_YES + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return world.new_subscription(1, customer, created_on=made)


def test_the_latest_change_to_yes_is_found_through_every_page_of_a_long_audit_history(
    world: ScenarioBuilder, start: Any
) -> None:
    subscription = a_world_with_a_subscription_made_after_the_latest_yes(world)
    clock = Clock()
    box = start(world.scenario(), dataverse_factory=paging_dataverse(clock))
    edit_setting_row(box, clock)
    box.reset_counts()

    run = sync(box)

    summary = run.to_json()
    assert summary["setting"]["since"] == LATEST_YES.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert summary["setting"]["sinceSource"] == "audit"
    assert summary["warnings"] == []
    assert by_subscription(run)[subscription]["reason"] == "default-contract"
    counts = box.counts()["dataverse"]
    changes = 1 + 2 * TOGGLES  # the seeded change to Yes, then the toggles
    assert counts["GET RetrieveAttributeChangeHistory"] == -(-changes // EMULATOR_PAGE)
    rows_read = EDITS + 1  # newest first: every edit, then the latest change to Yes
    # `audits` pages, then one RetrieveAuditDetails per row read (the same entity set).
    assert counts["GET audits"] == -(-rows_read // EMULATOR_PAGE) + rows_read


def test_dated_history_pages_give_the_latest_change_to_yes_without_the_audit_table(
    world: ScenarioBuilder, start: Any
) -> None:
    # Details carrying AuditRecord (what some live orgs send): the function alone dates them.
    a_world_with_a_subscription_made_after_the_latest_yes(world)
    clock = Clock()
    box = start(world.scenario(), dataverse_factory=paging_dataverse(clock, audit_record=True))
    edit_setting_row(box, clock)
    box.reset_counts()

    summary = sync(box).to_json()

    assert summary["setting"]["since"] == LATEST_YES.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "GET audits" not in box.counts()["dataverse"]


def test_a_history_past_the_page_bound_warns_naming_the_bound(
    world: ScenarioBuilder, start: Any
) -> None:
    clock = Clock()
    box = start(world.scenario(), dataverse_factory=paging_dataverse(clock))
    dataverse = services_for(box).dataverse
    for i in range(AUDIT_MAX_PAGES * EMULATOR_PAGE + 1):  # one change more than the pages hold
        clock.now = FIRST_TOGGLE + timedelta(minutes=i)
        body = {SETTING.associate_default: i % 2 == 1}
        dataverse.update(SETTING.entity_set, SETTING_ROW_ID, body, etag="*")

    summary = sync(box).to_json()

    # The last change was to No; the one before it, to Yes, is the cutoff (from the table).
    latest_yes = FIRST_TOGGLE + timedelta(minutes=AUDIT_MAX_PAGES * EMULATOR_PAGE - 1)
    assert summary["setting"]["since"] == latest_yes.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert any(f"AUDIT_MAX_PAGES={AUDIT_MAX_PAGES}" in w for w in summary["warnings"])
