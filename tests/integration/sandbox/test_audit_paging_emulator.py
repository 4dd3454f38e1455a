"""The emulator pages its audit reads at most `audit_page_size` a page, whatever the client asks:
RetrieveAttributeChangeHistory with `MoreRecords` and a `PagingCookie` that resumes after the last
change served, and the `audits` table with `@odata.nextLink`, `$top` or not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from work365_fn.adapters.schema import Schema
from work365_fn.sandbox.core import Headers, Request, TokenIssuer
from work365_fn.sandbox.dataverse import SETTING_ROW_ID, DataverseEmulator
from work365_fn.sandbox.scenario import parse_scenario

BASE = "https://127.0.0.1:8443"
API = "/api/data/v9.2/"
SETTING = Schema().setting
COLUMN = SETTING.associate_default
PAGE = 2


class Box:
    def __init__(self, path: Path) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        tokens = TokenIssuer(b"test-secret")
        self.token, _ = tokens.issue(BASE, "client")
        self.dv = DataverseEmulator(
            str(path), BASE, tokens, clock=lambda: self.now, audit_page_size=PAGE
        )
        self.dv.seed(
            parse_scenario(
                {"settings": {"associateDefaultBillingContract": True, "enabledOn": "2026-01-01"}}
            )
        )

    def call(
        self, method: str, path: str, query: str = "", body: Any = None, prefer: str = ""
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if prefer:
            headers["Prefer"] = prefer
        raw = b"" if body is None else json.dumps(body).encode()
        answer = self.dv.handle(Request(method, API + path, query, Headers(headers), raw))
        assert answer.status in (200, 204), answer.body
        return json.loads(answer.body) if answer.body else None

    def toggle(self, times: int) -> None:
        for i in range(times):
            self.now += timedelta(hours=1)
            self.call("PATCH", f"{SETTING.entity_set}({SETTING_ROW_ID})", body={COLUMN: i % 2 == 1})

    def history(self, paging: dict[str, Any] | None = None) -> dict[str, Any]:
        target = json.dumps({"@odata.id": f"{SETTING.entity_set}({SETTING_ROW_ID})"})
        query = f"@t={quote(target)}&@a={quote(repr(COLUMN))}"
        fn = "RetrieveAttributeChangeHistory(Target=@t,AttributeLogicalName=@a"
        if paging is not None:
            fn += ",PagingInfo=@p"
            query += f"&@p={quote(json.dumps(paging))}"
        collection: dict[str, Any] = self.call("GET", fn + ")", query)["AuditDetailCollection"]
        return collection


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    made = Box(tmp_path / "state.sqlite")
    yield made
    made.dv.close()


def new_values(collection: dict[str, Any]) -> list[bool]:
    return [d["NewValue"][COLUMN] for d in collection["AuditDetails"]]


def test_the_history_is_served_in_pages_of_at_most_the_emulators_size(box: Box) -> None:
    box.toggle(3)  # with the seeded change to Yes: Yes, No, Yes, No (oldest first)

    unpaged = box.history()
    asked_more = box.history({"PageNumber": 1, "Count": 50})

    for first in (unpaged, asked_more):
        assert (first["MoreRecords"], new_values(first)) == (True, [False, True])
        assert first["PagingCookie"].startswith('<cookie page="1">')


def test_the_paging_cookie_resumes_after_the_last_change_served(box: Box) -> None:
    box.toggle(3)
    first = box.history({"PageNumber": 1, "Count": PAGE})
    box.now += timedelta(hours=1)  # a change between two pages, newer than all served so far
    box.call("PATCH", f"{SETTING.entity_set}({SETTING_ROW_ID})", body={COLUMN: True})

    second = box.history({"PageNumber": 2, "Count": PAGE, "PagingCookie": first["PagingCookie"]})

    assert new_values(second) == [False, True]  # the two oldest, neither repeated nor skipped
    assert (second["MoreRecords"], second["PagingCookie"]) == (False, "")


def test_without_a_cookie_the_page_number_says_where(box: Box) -> None:
    box.toggle(3)

    second = box.history({"PageNumber": 2, "Count": PAGE})

    assert (new_values(second), second["MoreRecords"]) == ([False, True], False)


@pytest.mark.parametrize("number", ["1", -1, True])
def test_a_paging_number_that_is_not_a_positive_integer_is_400(box: Box, number: Any) -> None:
    target = json.dumps({"@odata.id": f"{SETTING.entity_set}({SETTING_ROW_ID})"})
    paging = quote(json.dumps({"PageNumber": number, "Count": PAGE}))
    query = f"@t={quote(target)}&@a={quote(repr(COLUMN))}&@p={paging}"
    fn = "RetrieveAttributeChangeHistory(Target=@t,AttributeLogicalName=@a,PagingInfo=@p)"
    headers = Headers({"Authorization": f"Bearer {box.token}", "Accept": "application/json"})
    answer = box.dv.handle(Request("GET", API + fn, query, headers, b""))
    assert answer.status == 400
    assert "PageNumber" in json.loads(answer.body)["error"]["message"]


@pytest.mark.parametrize(
    ("query", "prefer"),
    [("$top=50", ""), ("", "odata.maxpagesize=50")],
    ids=["top", "maxpagesize"],
)
def test_the_audits_table_is_paged_at_the_emulators_size(box: Box, query: str, prefer: str) -> None:
    box.toggle(3)
    flt = quote(f"_objectid_value eq {SETTING_ROW_ID}")
    base = f"$select=auditid,createdon&$filter={flt}&$orderby=createdon%20desc"

    first = box.call("GET", "audits", f"{base}&{query}".rstrip("&"), prefer=prefer)

    assert len(first["value"]) == PAGE
    assert "@odata.nextLink" in first
