"""The npm package `dynamics-web-api` (2.5.0, pinned in package.json) against the emulator over
loopback HTTPS: a second Dataverse client no one here wrote, beside Microsoft's Python SDK
(tests/integration/sandbox/test_dataverse_sdk.py). Where it and the emulator disagree, the
emulator is wrong until a Microsoft doc says otherwise (DESIGN.md section 4).

One Node run (dynamics_web_api_client.mjs) over the demo scenario with the alternate key on:
queries with $select/$filter/$orderby/$count and paging through @odata.nextLink; a $batch with two
If-Match PATCHes, one with a stale ETag, sent as the library sends it by default (one change set)
and with `inChangeSet: false` + `continueOnError: true`; upserts through the alternate key
`work365_subscriptions(work365_providersubscriptionid='...')`, alone and inside a $batch. The
tests assert on what the library parsed AND on the emulator's rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.batch import ChangeSet, Operation, parse_batch
from work365_fn.sandbox.core import Request, Response
from work365_fn.sandbox.scenario import Scenario

REPO = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("dynamics_web_api_client.mjs")
LIBRARY = REPO / "node_modules" / "dynamics-web-api" / "package.json"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(NODE is None, reason="node is not on PATH: install Node.js 20"),
    pytest.mark.skipif(
        not LIBRARY.is_file(),
        reason="node_modules/dynamics-web-api is missing: run `npm ci` (bash scripts/test does)",
    ),
]

SET = "work365_subscriptions"
# From the built-in demo scenario (work365_fn/sandbox/scenarios/demo.json).
CONTOSO = "acc00001-0000-4000-8000-000000000001"
FABRIKAM = "acc00002-0000-4000-8000-000000000002"
CONTOSO_DEFAULT = "bc000001-0000-4000-8000-000000000001"
FABRIKAM_DEFAULT = "bc000004-0000-4000-8000-000000000004"
CHANGESET = {
    "stale": "5b000001-0000-4000-8000-000000000001",
    "fresh": "5b000004-0000-4000-8000-000000000004",
    "contractId": CONTOSO_DEFAULT,
}
CONTINUE = {
    "stale": "5b000007-0000-4000-8000-000000000007",
    "fresh": "5b000005-0000-4000-8000-000000000005",
    "contractId": FABRIKAM_DEFAULT,
}
NOT_SYNCED = "5ab00006-0000-4000-8000-000000000006"  # Fabrikam's subscription with no record
MISSING = "5ab000fe-0000-4000-8000-0000000000fe"  # no record, and none may be created
IN_BATCH = "5ab000ff-0000-4000-8000-0000000000ff"  # created by a batch upsert
PAGE_SIZE = 5
VERSION_MISMATCH = "0x80060882"
# The $batch requests the script sends, in order.
LONG_GET, CHANGESET_BATCH, CONTINUE_BATCH, UPSERT_BATCH = range(4)


class BatchRecorder:
    """Wraps the emulator's `handle` to keep each `$batch` request as the library sent it."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.batches: list[Request] = []

    def __call__(self, request: Request) -> Response:
        if request.path.endswith("/$batch"):
            self.batches.append(request)
        response: Response = self.handle(request)
        return response


def _token(box: Sandbox) -> str:
    env = box.env
    response = requests.post(
        f"{env['WORK365_AUTHORITY_HOST']}/{env['WORK365_TENANT_ID']}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": env["WORK365_CLIENT_ID"],
            "client_secret": env["WORK365_CLIENT_SECRET"],
            "scope": f"{box.url}/.default",
        },
        verify=box.ca_bundle,
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def _node_env(ca_bundle: str) -> dict[str, str]:
    # The library sends through `https_proxy` when set: loopback must not go through a proxy.
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    env["NODE_EXTRA_CA_CERTS"] = ca_bundle  # Node trusts the sandbox's CA through this only
    return env


@pytest.fixture(scope="module")
def run() -> Iterator[SimpleNamespace]:
    scenario = dataclasses.replace(Scenario.builtin("demo"), alternate_key=True)
    with Sandbox.start(scenario) as box:
        before = {r["work365_subscriptionid"]: r for r in box.dataverse.rows(SET)}
        plan = {
            "url": box.url,
            "token": _token(box),
            "accountId": CONTOSO,
            "namePrefix": "Contoso",
            "pageSize": PAGE_SIZE,
            "batches": {"changeset": CHANGESET, "continue": CONTINUE},
            "upsert": {
                "providerSubscriptionId": NOT_SYNCED,
                "accountId": FABRIKAM,
                "contractId": FABRIKAM_DEFAULT,
                "missingProviderSubscriptionId": MISSING,
                "batchProviderSubscriptionId": IN_BATCH,
            },
        }
        recorder = BatchRecorder(box.dataverse.handle)
        box.dataverse.handle = recorder  # type: ignore[method-assign]
        assert NODE is not None
        done = subprocess.run(
            [NODE, str(SCRIPT)],
            input=json.dumps(plan),
            capture_output=True,
            text=True,
            env=_node_env(box.ca_bundle),
            cwd=REPO,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, f"the Node client failed:\n{done.stderr}"
        after = {r["work365_subscriptionid"]: r for r in box.dataverse.rows(SET)}
        yield SimpleNamespace(
            out=json.loads(done.stdout), before=before, after=after, batches=recorder.batches
        )


def _is_failure(value: Any, status: int, code: str | None = None) -> bool:
    """Whether `value` is how the script shows a failed request (or batch part) the library
    parsed: {"failed": true, "status", "code", "message"}."""
    if not (isinstance(value, dict) and value.get("failed") and value.get("status") == status):
        return False
    return code is None or value.get("code") == code


def _by_provider_id(rows: dict[str, dict[str, Any]], provider_id: str) -> list[dict[str, Any]]:
    return [r for r in rows.values() if r["work365_providersubscriptionid"] == provider_id]


# ------------------------------------------------------------------------------------ queries


def test_select_filter_orderby_and_count(run: SimpleNamespace) -> None:
    queries = run.out["queries"]
    expected = sorted(
        (r for r in run.before.values() if r["_work365_account_value"] == CONTOSO),
        key=lambda r: r["work365_name"].lower(),
    )
    assert queries["filtered"] == [
        {
            "name": r["work365_name"],
            "providerSubscriptionId": r["work365_providersubscriptionid"],
            "billingContractId": r["_work365_billingcontract_value"],
            "etag": r["@odata.etag"],
        }
        for r in expected
    ]
    assert queries["filteredCount"] == len(expected) == 3
    assert queries["filteredNextLink"] is None
    # count(): `GET .../$count` (text/plain) without a filter, `$count=true` with one
    # (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/count-rows).
    assert queries["counts"] == {"all": len(run.before), "filtered": len(expected)}
    assert sorted(queries["startsWith"]) == sorted(
        r["work365_name"] for r in run.before.values() if r["work365_name"].startswith("Contoso")
    )


def test_a_query_too_long_for_a_url_goes_in_a_batch(run: SimpleNamespace) -> None:
    assert len(run.batches) == 4
    request = run.batches[LONG_GET]
    [part] = parse_batch(request.headers.get("Content-Type"), request.body)
    assert isinstance(part, Operation) and part.method == "GET"
    long = run.out["queries"]["longFilter"]
    assert long["length"] > 2000  # the library's limit for a GET's URL
    assert sorted(long["ids"]) == sorted(run.before)


def test_conditional_retrieval(run: SimpleNamespace) -> None:
    conditional = run.out["queries"]["conditional"]
    row = run.before[conditional["key"]]
    assert conditional["etag"] == row["@odata.etag"]
    # If-None-Match with the current ETag: 304 Not Modified, no body (the library's null).
    assert conditional["notModified"] is None
    # ...but never 304 when annotations are asked for: they may carry related rows' values
    # (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/perform-conditional-operations-using-web-api#query-must-not-include-annotations).
    assert conditional["withAnnotations"]["work365_name"] == row["work365_name"]
    assert conditional["withAnnotations"]["@odata.etag"] == row["@odata.etag"]


def test_paging_follows_every_next_link(run: SimpleNamespace) -> None:
    pages = run.out["queries"]["pages"]
    total = len(run.before)
    full, rest = divmod(total, PAGE_SIZE)
    assert [len(p["ids"]) for p in pages] == [PAGE_SIZE] * full + ([rest] if rest else [])
    assert [p["hasNextLink"] for p in pages] == [True] * (len(pages) - 1) + [False]
    ids = [i for p in pages for i in p["ids"]]
    assert len(ids) == len(set(ids)) == total
    assert set(ids) == set(run.before)
    assert run.out["queries"]["retrieveAll"] == ids


# ------------------------------------------------------------------------------------ $batch


def test_the_library_sends_one_change_set_by_default_and_it_rolls_back(
    run: SimpleNamespace,
) -> None:
    request = run.batches[CHANGESET_BATCH]
    parts = parse_batch(request.headers.get("Content-Type"), request.body)
    assert [type(p) for p in parts] == [ChangeSet, Operation]
    changeset, read = parts
    assert isinstance(changeset, ChangeSet) and isinstance(read, Operation)
    stale, fresh = changeset.operations
    step = run.out["batchInChangeSet"]
    assert (stale.method, stale.headers.get("If-Match")) == ("PATCH", step["staleEtag"])
    assert (fresh.method, fresh.headers.get("If-Match")) == ("PATCH", step["freshEtag"])
    assert stale.url.endswith(f"/{SET}({CHANGESET['stale']})")
    assert read.method == "GET"
    assert "odata.continue-on-error" not in (request.headers.get("Prefer") or "")

    # Dataverse answers the failed change set with the failing request's error alone and stops
    # (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api#handling-errors);
    # the library rejects with that one part, its 412 parsed.
    assert step["meanwhile"] is True
    [part] = step["result"]["batchParts"]
    assert _is_failure(part, 412, VERSION_MISMATCH)

    stale_row, fresh_row = run.after[CHANGESET["stale"]], run.after[CHANGESET["fresh"]]
    assert stale_row["work365_name"] == "changeset: changed meanwhile"
    # The fresh PATCH came first to no harm: the change set is atomic, nothing of it stayed.
    assert fresh_row == run.before[CHANGESET["fresh"]]


def test_continue_on_error_applies_the_fresh_write_and_parses_the_412(
    run: SimpleNamespace,
) -> None:
    request = run.batches[CONTINUE_BATCH]
    assert "odata.continue-on-error" in (request.headers.get("Prefer") or "")
    parts = parse_batch(request.headers.get("Content-Type"), request.body)
    assert [(type(p), getattr(p, "method", None)) for p in parts] == [
        (Operation, "PATCH"),
        (Operation, "PATCH"),
        (Operation, "GET"),
    ]

    stale_part, fresh_part, read_part = run.out["batchContinueOnError"]["result"]
    assert _is_failure(stale_part, 412, VERSION_MISMATCH)
    assert fresh_part is True  # 204, no content
    assert read_part["work365_name"] == "continue: fresh write"

    stale_row, fresh_row = run.after[CONTINUE["stale"]], run.after[CONTINUE["fresh"]]
    assert stale_row["work365_name"] == "continue: changed meanwhile"
    assert stale_row["_work365_billingcontract_value"] is None
    assert fresh_row["work365_name"] == "continue: fresh write"
    assert fresh_row["_work365_billingcontract_value"] == FABRIKAM_DEFAULT
    assert read_part["@odata.etag"] == fresh_row["@odata.etag"]


# ------------------------------------------------------------------------ alternate-key upsert


def test_upsert_through_the_alternate_key(run: SimpleNamespace) -> None:
    upsert = run.out["upsert"]
    [row] = _by_provider_id(run.after, NOT_SYNCED)
    record_id = row["work365_subscriptionid"]
    assert not _by_provider_id(run.before, NOT_SYNCED)

    # Prefer: return=representation gives the record (201 created, then 200 updated).
    assert upsert["created"]["work365_subscriptionid"] == record_id
    assert upsert["created"]["_work365_billingcontract_value"] == FABRIKAM_DEFAULT
    assert upsert["updated"]["work365_subscriptionid"] == record_id
    assert upsert["updated"]["work365_name"] == "Updated through the alternate key"
    assert upsert["byKey"]["work365_subscriptionid"] == record_id
    assert upsert["byKey"]["work365_name"] == "Upserted again"
    # Without it the library reads the id out of OData-EntityId. For a row addressed by its key
    # Dataverse writes the key there, not the id ("Create with upsert" in
    # https://learn.microsoft.com/power-apps/developer/data-platform/use-upsert-insert-update-record):
    # the library then has no id (null); it must never take the key's GUID for the record's.
    assert upsert["withoutRepresentation"] is None

    # If-None-Match: * on an existing key: 412, which the library answers with null.
    assert upsert["createOnly"] is None
    # If-Match: * on a key no row has: 404 (the library's null), and nothing was created.
    assert upsert["updateOnlyMissing"] is None
    assert not _by_provider_id(run.after, MISSING)

    # The key's value comes from the URL (the body does not repeat it); lookups were bound.
    assert row["_work365_account_value"] == FABRIKAM
    assert row["work365_name"] == "Upserted again"
    # ...and the last step cleared the contract with "<nav>@odata.bind": null under If-Match.
    assert upsert["cleared"] is True
    assert row["_work365_billingcontract_value"] is None


def test_create_only_upserts_through_the_key_in_a_batch(run: SimpleNamespace) -> None:
    request = run.batches[UPSERT_BATCH]
    parts = parse_batch(request.headers.get("Content-Type"), request.body)
    assert all(isinstance(p, Operation) for p in parts)
    operations = [p for p in parts if isinstance(p, Operation)]
    assert [(o.method, o.headers.get("If-None-Match")) for o in operations] == [
        ("PATCH", "*"),
        ("PATCH", "*"),
    ]
    assert operations[0].url.endswith(f"/{SET}(work365_providersubscriptionid='{IN_BATCH}')")

    [row] = _by_provider_id(run.after, IN_BATCH)
    created, refused = run.out["upsert"]["batch"]
    # The part's OData-EntityId holds the key, not the id: the library finds no id in it (and
    # must not take the key's GUID for one).
    assert created is None
    assert _is_failure(refused, 412)
    assert row["_work365_account_value"] == FABRIKAM
    assert row["work365_name"] == "Created in a batch through the alternate key"
    [existing] = _by_provider_id(run.after, NOT_SYNCED)
    assert existing["work365_name"] == "Upserted again"  # the refused part changed nothing
