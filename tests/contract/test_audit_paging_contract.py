"""The cutoff's audit reads are paged, as "Retrieve the history of audited data changes" says:
RetrieveAttributeChangeHistory with `PagingInfo` (the next page asked with the `PagingCookie` of
the one before, while `MoreRecords` is true), and the `audits` table through `@odata.nextLink`.
https://learn.microsoft.com/power-apps/developer/data-platform/auditing/retrieve-audit-data

Each mock of a first page also answers an unpaged request, so that a client that does not page
reads that first page and gives a wrong cutoff, rather than failing on an unregistered URL."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses
from requests import PreparedRequest

from work365_fn.adapters.dataverse_repository import AUDIT_MAX_PAGES, Repository
from work365_fn.adapters.schema import Schema
from work365_fn.rules.model import AssociationSetting

from .clients import dv_client, policy
from .shapes import API, dv_attribute_change_history, dv_audit_detail, dv_audit_rows

SETTING = "5e7a1c2b-0d3f-4e8a-9b6c-1f2e3d4c5b6a"
COLUMN = "work365_associatedefaultbillingcontract"
TABLE = "work365_adminhubsetting"
MODIFIED_ON = "2026-02-10T09:15:00Z"
SETTING_ROW = {"work365_adminhubsettingid": SETTING, COLUMN: True, "modifiedon": MODIFIED_ON}
HISTORY_URL = (
    f"{API}RetrieveAttributeChangeHistory(Target=@t,AttributeLogicalName=@a,PagingInfo=@p)"
)
UNPAGED_HISTORY_URL = f"{API}RetrieveAttributeChangeHistory(Target=@t,AttributeLogicalName=@a)"
AUDITS_URL = f"{API}audits"
PAGE_SIZE = 2  # rows per audit page, so that a few rows make several pages

# A paging cookie as Microsoft's example prints one (quotes and entities included): the client
# hands it back verbatim inside the PagingInfo JSON.
COOKIE_1 = (
    '<cookie page="1"><cookieExtensions ContinuationToken="{&quot;pageNumber&quot;:2,'
    "&quot;continuationToken&quot;:&quot;[{\\&quot;rid\\&quot;:\\&quot;CVoNAJIidnNsmz0A\\&quot;}]"
    '&quot;}" /></cookie>'
)


def query(request: PreparedRequest) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}


def paging_info(number: int, cookie: str | None = None) -> Callable[..., tuple[bool, str]]:
    """Matches the PagingInfo of page `number` (Count = PAGE_SIZE, with `cookie`). Page 1 also
    matches a request without PagingInfo: what an unpaged client sends."""

    def match(request: PreparedRequest) -> tuple[bool, str]:
        sent = query(request)
        if sent.get("@t") != json.dumps({"@odata.id": f"work365_adminhubsettings({SETTING})"}):
            return False, f"Target {sent.get('@t')!r}"
        if "@p" not in sent:
            return number == 1, "no PagingInfo"
        expected: dict[str, Any] = {"PageNumber": number, "Count": PAGE_SIZE}
        if cookie is not None:
            expected["PagingCookie"] = cookie
        got = json.loads(sent["@p"])
        return got == expected, f"PagingInfo {got!r} != {expected!r}"

    return match


def audits_page(first: bool) -> Callable[..., tuple[bool, str]]:
    """The setting row's audits query, newest first; the first page also as an unpaged client
    asks for it ($top, no odata.maxpagesize)."""

    def match(request: PreparedRequest) -> tuple[bool, str]:
        sent = query(request)
        if first and "$top" in sent:
            return True, ""
        wanted = f"odata.maxpagesize={PAGE_SIZE}"
        if request.headers.get("Prefer") != wanted:
            return False, f"Prefer {request.headers.get('Prefer')!r} != {wanted!r}"
        if first:
            ok = sent.get("$orderby") == "createdon desc" and SETTING in sent.get("$filter", "")
            return ok, f"first page query {sent!r}"
        return "$skiptoken" in sent, "a next page is read through its nextLink"

    return match


def history_page(
    *changes: tuple[object, object, str | None], more: bool, cookie: str = ""
) -> dict[str, Any]:
    body = dv_attribute_change_history(COLUMN, TABLE, *changes)
    body["AuditDetailCollection"]["MoreRecords"] = more
    body["AuditDetailCollection"]["PagingCookie"] = cookie
    return body


def audit_id(n: int) -> str:
    return f"12869c65-d7d3-ec11-b656-{n:012d}"


def rows_page(*rows: tuple[int, str], next_link: str | None) -> dict[str, Any]:
    body = dv_audit_rows(TABLE, SETTING, *((audit_id(n), 2, when) for n, when in rows))
    if next_link is not None:
        body["@odata.nextLink"] = next_link
    return body


def detail_of(n: int) -> str:
    return f"{API}audits({audit_id(n)})/Microsoft.Dynamics.CRM.RetrieveAuditDetails"


def read_setting(rsps: responses.RequestsMock) -> tuple[AssociationSetting, list[str]]:
    rsps.get(f"{API}work365_adminhubsettings", json={"value": [SETTING_ROW]})
    client = dv_client(policy([], max_attempts=1))
    client.audit_page_size = PAGE_SIZE
    return Repository(client, Schema()).read_setting(override=None)


def test_the_latest_change_to_yes_on_the_last_page_of_the_history_is_the_cutoff(
    rsps: responses.RequestsMock,
) -> None:
    for url in (HISTORY_URL, UNPAGED_HISTORY_URL):  # page 1, whichever way it is asked for
        rsps.get(
            url,
            match=[paging_info(1)],
            json=history_page(
                (False, True, "2025-11-03T08:00:00Z"),
                (True, False, "2025-12-01T10:30:00Z"),
                more=True,
                cookie=COOKIE_1,
            ),
        )
    rsps.get(
        HISTORY_URL,
        match=[paging_info(2, COOKIE_1)],
        json=history_page((False, True, "2026-01-05T14:45:00Z"), more=False),
    )
    rsps.assert_all_requests_are_fired = False  # one of the two page-1 mocks stays unused

    setting, warnings = read_setting(rsps)

    assert (setting.since, setting.since_source) == (
        datetime(2026, 1, 5, 14, 45, tzinfo=UTC),
        "audit",
    )
    assert warnings == []
    assert [c.request.url.split("?")[0] for c in rsps.calls[1:]] == [HISTORY_URL, HISTORY_URL]


def test_undated_history_finds_the_date_on_a_later_page_of_the_audit_table(
    rsps: responses.RequestsMock,
) -> None:
    # The documented Web API shape (no AuditRecord): the audit table, newest first, dates it.
    rsps.get(
        HISTORY_URL,
        match=[paging_info(1)],
        json=history_page((True, False, None), (False, True, None), more=False),
    )
    next_link = f"{API}audits?$skiptoken=%3Ccookie%20pagenumber%3D%222%22%20%2F%3E"
    rsps.get(
        AUDITS_URL,
        match=[audits_page(first=True)],
        json=rows_page(
            (4, "2026-02-01T00:00:00Z"), (3, "2026-01-20T00:00:00Z"), next_link=next_link
        ),
    )
    rsps.get(
        AUDITS_URL,
        match=[audits_page(first=False)],
        json=rows_page((2, "2026-01-10T00:00:00Z"), (1, "2026-01-05T14:45:00Z"), next_link=None),
    )
    # The two newest rows changed another column (the setting row holds other settings), the
    # third turned the setting off, the fourth (on the second page) turned it on.
    rsps.get(
        detail_of(4), json=dv_audit_detail(TABLE, {"work365_name": "a"}, {"work365_name": "b"})
    )
    rsps.get(
        detail_of(3), json=dv_audit_detail(TABLE, {"work365_name": "b"}, {"work365_name": "c"})
    )
    rsps.get(detail_of(2), json=dv_audit_detail(TABLE, {COLUMN: True}, {COLUMN: False}))
    rsps.get(detail_of(1), json=dv_audit_detail(TABLE, {COLUMN: False}, {COLUMN: True}))

    setting, warnings = read_setting(rsps)

    assert (setting.since, setting.since_source) == (
        datetime(2026, 1, 5, 14, 45, tzinfo=UTC),
        "audit",
    )
    assert warnings == []


def test_a_history_longer_than_the_page_bound_is_dated_by_the_audit_table_and_says_so(
    rsps: responses.RequestsMock,
) -> None:
    cookies = [f'<cookie page="{n}" />' for n in range(1, AUDIT_MAX_PAGES + 1)]
    for n in range(1, AUDIT_MAX_PAGES + 1):
        rsps.get(
            HISTORY_URL,
            match=[paging_info(n, cookies[n - 2] if n > 1 else None)],
            json=history_page(
                (False, True, f"2025-01-{n:02d}T00:00:00Z"), more=True, cookie=cookies[n - 1]
            ),
        )
    rsps.get(
        AUDITS_URL,
        match=[audits_page(first=True)],
        json=rows_page((1, "2026-01-05T14:45:00Z"), next_link=None),
    )
    rsps.get(detail_of(1), json=dv_audit_detail(TABLE, {COLUMN: False}, {COLUMN: True}))

    setting, warnings = read_setting(rsps)

    # Never the latest of the pages read: with the rest unread, it may not be the latest.
    assert (setting.since, setting.since_source) == (
        datetime(2026, 1, 5, 14, 45, tzinfo=UTC),
        "audit",
    )
    (warning,) = warnings
    assert f"AUDIT_MAX_PAGES={AUDIT_MAX_PAGES}" in warning
    assert "audit table" in warning


def test_an_audit_table_longer_than_the_page_bound_falls_back_to_modifiedon_and_says_so(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(
        HISTORY_URL, match=[paging_info(1)], json=history_page((False, True, None), more=False)
    )
    for n in range(AUDIT_MAX_PAGES):  # other columns' changes, page after page
        rows = ((2 * n + 2, "2026-02-01T00:00:00Z"), (2 * n + 1, "2026-02-01T00:00:00Z"))
        rsps.get(
            AUDITS_URL,
            match=[audits_page(first=n == 0)],
            json=rows_page(*rows, next_link=f"{API}audits?$skiptoken={n + 2}"),
        )
        for row, _ in rows:
            rsps.get(detail_of(row), json=dv_audit_detail(TABLE, {}, {"work365_name": str(row)}))

    setting, warnings = read_setting(rsps)

    assert setting.since_source == "modifiedon"
    assert any(
        f"the newest {AUDIT_MAX_PAGES * PAGE_SIZE} audit rows of the setting row" in w
        and f"AUDIT_MAX_PAGES={AUDIT_MAX_PAGES}" in w
        for w in warnings
    )
    assert len(rsps.calls) == 2 + 3 * AUDIT_MAX_PAGES  # no 11th page asked for


def test_a_repeated_paging_cookie_is_refused_not_followed_forever(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(
        HISTORY_URL,
        match=[paging_info(1)],
        json=history_page((True, False, None), more=True, cookie=COOKIE_1),
    )
    rsps.get(
        HISTORY_URL,
        match=[paging_info(2, COOKIE_1)],
        json=history_page((True, False, None), more=True, cookie=COOKIE_1),
    )

    setting, warnings = read_setting(rsps)

    assert setting.since_source == "modifiedon"
    assert any("paging-loop" in w for w in warnings)
