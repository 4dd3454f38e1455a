"""Sandbox.start with the real Dataverse emulator: the built-in demo seeds every service, races
end in 412, and a state file keeps what was written across starts."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from work365_fn.sandbox import Sandbox, Scenario
from work365_fn.sandbox.core import ScenarioError
from work365_fn.sandbox.partner_center import PC_AUDIENCE
from work365_fn.sandbox.runner import serve

pytestmark = pytest.mark.integration

API = "/api/data/v9.2"
RECORD = "5b000001-0000-4000-8000-000000000001"  # demo: Contoso's Microsoft 365 E3 record


def session_for(box: Sandbox) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = box.ca_bundle
    return session


def bearer(box: Sandbox, http: requests.Session, resource: str) -> dict[str, str]:
    answer = http.post(
        f"{box.url}/{box.tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": box.client_id,
            "client_secret": box.env["WORK365_CLIENT_SECRET"],
            "grant_type": "client_credentials",
            "scope": f"{resource}/.default",
        },
    )
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture(scope="module")
def demo() -> Iterator[Sandbox]:
    with Sandbox.start(Scenario.builtin("demo")) as box:
        yield box


def record_row(box: Sandbox, record_id: str) -> dict[str, Any]:
    rows = box.dataverse.rows("work365_subscriptions")
    return next(r for r in rows if r["work365_subscriptionid"] == record_id)


def test_demo_seeds_dataverse_and_partner_center(demo: Sandbox) -> None:
    scenario = Scenario.builtin("demo")
    assert len(demo.dataverse.rows("work365_subscriptions")) == len(scenario.subscriptions)
    assert len(demo.dataverse.rows("work365_billingcontracts")) == len(scenario.billing_contracts)
    with session_for(demo) as http:
        page = http.get(f"{demo.url}/v1/customers", headers=bearer(demo, http, PC_AUDIENCE))
    assert page.json()["totalCount"] == len(scenario.customers)


def test_race_fault_makes_a_stale_if_match_fail_with_412(demo: Sandbox) -> None:
    demo.faults.clear()
    with session_for(demo) as http:
        auth = bearer(demo, http, demo.url)
        url = f"{demo.url}{API}/work365_subscriptions({RECORD})"
        etag = http.get(url, headers=auth).json()["@odata.etag"]
        demo.faults.add(
            {"kind": "race", "method": "PATCH", "set": {"work365_name": "renamed by a colleague"}}
        )
        answer = http.patch(
            url, headers={**auth, "If-Match": etag}, json={"work365_name": "our change"}
        )
    assert answer.status_code == 412
    assert record_row(demo, RECORD)["work365_name"] == "renamed by a colleague"
    assert demo.faults.fired() == [1]


def test_state_file_keeps_writes_across_starts(tmp_path: Path) -> None:
    state = str(tmp_path / "demo.sqlite")
    with Sandbox.start(Scenario.builtin("demo"), state_path=state) as box, session_for(box) as http:
        url = f"{box.url}{API}/work365_subscriptions({RECORD})"
        answer = http.patch(
            url,
            headers={**bearer(box, http, box.url), "If-Match": "*"},
            json={"work365_name": "kept"},
        )
        assert answer.status_code == 204, answer.text
    with Sandbox.start(Scenario.builtin("setting-off"), state_path=state) as box:
        assert record_row(box, RECORD)["work365_name"] == "kept"  # the scenario was ignored
        demo_records = len(Scenario.builtin("demo").subscriptions)
        assert len(box.dataverse.rows("work365_subscriptions")) == demo_records


def test_a_state_path_through_a_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("", encoding="utf-8")
    state = tmp_path / "afile" / "s.sqlite"

    with pytest.raises(
        ScenarioError, match=r"state file .*afile/s\.sqlite: cannot make its folder"
    ):
        Sandbox.start(Scenario.builtin("demo"), state_path=str(state))


def test_serve_prints_the_connection_settings() -> None:
    out = io.StringIO()
    stop = threading.Event()
    stop.set()  # serve returns as soon as it has started and printed
    serve(Scenario.builtin("setting-off"), 0, None, out, stop_event=stop)
    text = out.getvalue()
    assert "work365 sandbox listening on https://127.0.0.1:" in text
    for key in (
        "WORK365_TENANT_ID",
        "WORK365_CLIENT_ID",
        "WORK365_CLIENT_SECRET",
        "WORK365_AUTHORITY_HOST",
        "WORK365_DATAVERSE_URL",
        "WORK365_PARTNER_CENTER_URL",
        "WORK365_CA_BUNDLE",
    ):
        assert f'"{key}"' in text
