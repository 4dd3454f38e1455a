"""Notes (WORK365_WRITE_NOTES) on the wire, with `responses`: the exact `$batch` change set of a
write and its note, how a change set's answers decide the write, and the questions asked before
a run (HasNotes, the note's navigation property, the application user's privileges).

Shapes from Microsoft's pages: "Execute batch operations using the Web API" (change sets),
https://learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api
the Note (annotation) table reference, and RetrieveUserPrivilegeByPrivilegeName.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import responses
from responses import matchers

from tests.builders import (
    ACCOUNT,
    a_contract,
    a_provider_account,
    a_record,
    a_setting,
    a_subscription,
)
from work365_fn.adapters.dataverse_metadata import (
    NotesUnavailableError,
    SubscriptionBindings,
    notes_checks,
    subscription_bindings,
)
from work365_fn.adapters.dataverse_repository import Repository
from work365_fn.adapters.odata_batch import BatchOperation, ChangeSet, encode_batch
from work365_fn.adapters.schema import Schema
from work365_fn.errors import ConflictError
from work365_fn.operations.notes import SUBJECT_SET, note_for_undo
from work365_fn.operations.writer import BatchWriter, WriteLimits
from work365_fn.rules import Reason, World, plan
from work365_fn.rules.summary import RunSummary

from .clients import dv_client, policy
from .shapes import API, DV_VERSION_MISMATCH

NAV = "objectid_work365_subscription"
NOTED = SubscriptionBindings("work365_BillingContract", "work365_Account", False, NAV)
SUBS = ["55555550-5555-5555-5555-555555555555", "55555551-5555-5555-5555-555555555555"]
RECORDS = ["f0000000-0000-0000-0000-000000000000", "f0000001-0000-0000-0000-000000000000"]
CONTRACT = "cccccccc-0000-0000-0000-000000000001"
USER = "0c4e9a3b-7d21-4f6e-8a5b-1c2d3e4f5a6b"


def world() -> World:
    return World(
        setting=a_setting(),
        subscriptions=[a_subscription(id=s) for s in SUBS],
        records=[
            a_record(provider_subscription_id=s, id=r) for s, r in zip(SUBS, RECORDS, strict=True)
        ],
        provider_accounts=[a_provider_account()],
        contracts=[a_contract(id=CONTRACT, name="Contoso Licences")],
    )


def noted_writer(w: World, summary: RunSummary) -> BatchWriter:
    repo = Repository(dv_client(policy([])), Schema())
    return BatchWriter(
        repo,
        w,
        NOTED,
        summary,
        logging.LoggerAdapter(logging.getLogger("test")),
        WriteLimits(batch_size=100, deadline=None, monotonic=lambda: 0.0, sleep=lambda _: None),
    )


def account_names(rsps: responses.RequestsMock) -> None:
    rsps.get(
        re.compile(re.escape(f"{API}accounts?$select=accountid,name&$filter=")),
        json={"value": [{"accountid": ACCOUNT, "name": "Contoso Ltd"}]},
    )


def changeset_answer(*answers: tuple[int, str, str]) -> str:
    """A successful change set's answer: (status, Content-ID, ETag) per operation."""
    lines = [
        "--batchresponse_1",
        "Content-Type: multipart/mixed; boundary=changesetresponse_1",
        "",
    ]
    for status, content_id, etag in answers:
        lines += [
            "--changesetresponse_1",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            f"Content-ID: {content_id}",
            "",
            f"HTTP/1.1 {status} No Content",
            "OData-Version: 4.0",
            f"ETag: {etag}",
            "",
            "",
        ]
    lines.append("--changesetresponse_1--")
    return "\r\n".join(lines)


def failed_part(status: int, content_id: str, error: dict[str, Any]) -> str:
    """A rolled-back change set's answer: the failure alone."""
    return "\r\n".join(
        [
            "--batchresponse_1",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            f"Content-ID: {content_id}",
            "",
            f"HTTP/1.1 {status} Error",
            "Content-Type: application/json; odata.metadata=minimal",
            "OData-Version: 4.0",
            "",
            json.dumps(error),
        ]
    )


def batch_of(*parts: str) -> str:
    return "\r\n".join([*parts, "--batchresponse_1--", ""])


def normalised(body: bytes) -> str:
    text = body.decode()
    text = re.sub(r"batch_[0-9a-f-]{36}", "batch_B", text)
    return re.sub(r"changeset_[0-9a-f-]{36}", "changeset_C", text)


def test_encode_batch_writes_a_change_set_with_content_ids() -> None:
    write = BatchOperation("PATCH", f"{API}work365_subscriptions({RECORDS[0]})", {"If-Match": "e"})
    note = BatchOperation("POST", f"{API}annotations", {}, {"subject": "s"})
    body = encode_batch([ChangeSet((write, note))], "batch_x", "changeset_y").decode()

    assert body == (
        "--batch_x\r\n"
        "Content-Type: multipart/mixed; boundary=changeset_y\r\n"
        "\r\n"
        "--changeset_y\r\n"
        "Content-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "Content-ID: 1\r\n"
        "\r\n"
        f"PATCH {API}work365_subscriptions({RECORDS[0]}) HTTP/1.1\r\n"
        "If-Match: e\r\n"
        "\r\n"
        "\r\n"
        "--changeset_y\r\n"
        "Content-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "Content-ID: 2\r\n"
        "\r\n"
        f"POST {API}annotations HTTP/1.1\r\n"
        "Content-Type: application/json; type=entry\r\n"
        "\r\n"
        '{"subject": "s"}\r\n'
        "--changeset_y--\r\n"
        "--batch_x--\r\n"
    )


def test_each_assignment_and_its_note_go_in_one_change_set(rsps: responses.RequestsMock) -> None:
    w = world()
    s = RunSummary(run_id="run-1", started_at=datetime.now(UTC))
    account_names(rsps)
    sent: list[str] = []

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        sent.append(normalised(request.body))
        body = batch_of(
            changeset_answer((204, "1", 'W/"2"'), (204, "2", 'W/"3"')),
            changeset_answer((204, "3", 'W/"4"'), (204, "4", 'W/"5"')),
        )
        return 200, {"Content-Type": "multipart/mixed; boundary=batchresponse_1"}, body

    rsps.add_callback(
        responses.POST,
        f"{API}$batch",
        callback=answer,
        match=[matchers.header_matcher({"Prefer": "odata.continue-on-error"}, strict_match=False)],
    )

    final = noted_writer(w, s).write(plan(w))

    assert [d.reason for d in final] == [Reason.DEFAULT_CONTRACT, Reason.DEFAULT_CONTRACT]
    (body,) = sent
    parts = body.split("--changeset_C\r\n")
    assert body.startswith(
        "--batch_B\r\nContent-Type: multipart/mixed; boundary=changeset_C\r\n\r\n"
    )
    assert body.count("Content-Type: multipart/mixed; boundary=changeset_C") == 2
    patch, note = parts[1], parts[2]
    assert "Content-ID: 1\r\n" in patch
    assert f"PATCH {API}work365_subscriptions({RECORDS[0]}) HTTP/1.1\r\n" in patch
    assert "Content-ID: 2\r\n" in note
    assert f"POST {API}annotations HTTP/1.1\r\n" in note
    payload = json.loads(next(line for line in note.split("\r\n") if line.startswith("{")))
    assert set(payload) == {"subject", "notetext", f"{NAV}@odata.bind"}
    # Bound to the record's id, not to $1 (documented for rows created by POST only).
    assert payload[f"{NAV}@odata.bind"] == f"/work365_subscriptions({RECORDS[0]})"
    assert payload["subject"] == SUBJECT_SET
    assert f"Contoso Licences ({CONTRACT})" in payload["notetext"]
    assert f"Account: Contoso Ltd ({ACCOUNT})" in payload["notetext"]
    assert "Run: run-1" in payload["notetext"]
    assert "Content-ID: 3\r\n" in parts[3] and "Content-ID: 4\r\n" in parts[4]


def test_a_rolled_back_change_set_fails_its_write_and_says_the_note_failed(
    rsps: responses.RequestsMock,
) -> None:
    w = world()
    s = RunSummary(run_id="run-1", started_at=datetime.now(UTC))
    account_names(rsps)
    denied = {"error": {"code": "0x80040220", "message": "missing prvAppendNote privilege"}}
    rsps.post(
        f"{API}$batch",
        body=batch_of(
            failed_part(403, "2", denied), changeset_answer((204, "3", "e"), (204, "4", "f"))
        ),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )

    final = noted_writer(w, s).write(plan(w))

    assert [d.reason for d in final] == [Reason.ERROR, Reason.DEFAULT_CONTRACT]
    assert "missing prvAppendNote privilege" in final[0].message
    assert "its note failed" in final[0].message
    assert s.errors[0]["code"] == "0x80040220"


def test_a_412_on_the_write_re_reads_and_sends_a_new_change_set(
    rsps: responses.RequestsMock,
) -> None:
    w = World(
        setting=a_setting(),
        subscriptions=[a_subscription(id=SUBS[0])],
        records=[a_record(provider_subscription_id=SUBS[0], id=RECORDS[0])],
        provider_accounts=[a_provider_account()],
        contracts=[a_contract(id=CONTRACT)],
    )
    s = RunSummary(run_id="run-1", started_at=datetime.now(UTC))
    account_names(rsps)
    rsps.post(
        f"{API}$batch",
        body=batch_of(failed_part(412, "1", DV_VERSION_MISMATCH)),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )
    rsps.get(
        f"{API}work365_subscriptions({RECORDS[0]})",
        json={
            "@odata.etag": 'W/"9"',
            "work365_subscriptionid": RECORDS[0],
            "work365_providersubscriptionid": SUBS[0],
            "_work365_account_value": ACCOUNT,
            "_work365_billingcontract_value": None,
            "createdon": "2026-03-01T00:00:00Z",
        },
    )
    rsps.post(
        f"{API}$batch",
        body=batch_of(changeset_answer((204, "1", "a"), (204, "2", "b"))),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )

    (final,) = noted_writer(w, s).write(plan(w))

    assert final.reason is Reason.DEFAULT_CONTRACT
    second = rsps.calls[-1].request.body
    assert b'If-Match: W/"9"' in second and b"POST " + API.encode() + b"annotations" in second


def metadata_answers(
    rsps: responses.RequestsMock,
    *,
    has_notes: bool = True,
    held: dict[str, str] | None = None,
    relationship: bool = True,
) -> None:
    held = held if held is not None else {}
    rsps.get(
        f"{API}EntityDefinitions(LogicalName='work365_subscription')?$select=HasNotes,Privileges",
        json={
            "HasNotes": has_notes,
            "Privileges": [
                {"Name": "prvCreatework365_Subscription", "PrivilegeType": "Create"},
                {"Name": "prvAppendTowork365_Subscription", "PrivilegeType": "AppendTo"},
            ],
        },
    )
    relationships = [
        {
            "ReferencingAttribute": "objectid",
            "ReferencedEntity": "account",
            "ReferencingEntityNavigationPropertyName": "objectid_account",
        }
    ]
    if relationship:
        relationships.append(
            {
                "ReferencingAttribute": "objectid",
                "ReferencedEntity": "work365_subscription",
                "ReferencingEntityNavigationPropertyName": NAV,
            }
        )
    rsps.get(
        f"{API}EntityDefinitions(LogicalName='annotation')/ManyToOneRelationships"
        "?$select=ReferencingAttribute,ReferencedEntity,ReferencingEntityNavigationPropertyName",
        json={"value": relationships},
    )
    rsps.get(f"{API}WhoAmI", json={"UserId": USER, "BusinessUnitId": USER})
    for name in ("prvCreateNote", "prvAppendNote", "prvAppendTowork365_Subscription"):
        depth = held.get(name)
        rsps.get(
            f"{API}systemusers({USER})/Microsoft.Dynamics.CRM."
            f"RetrieveUserPrivilegeByPrivilegeName(PrivilegeName='{name}')",
            json={"RolePrivileges": [{"Depth": depth, "PrivilegeName": name}] if depth else []},
        )


ALL_GLOBAL = {
    "prvCreateNote": "Global",
    "prvAppendNote": "Global",
    "prvAppendTowork365_Subscription": "Global",
}


def test_notes_checks_read_the_navigation_property_and_the_privileges(
    rsps: responses.RequestsMock,
) -> None:
    metadata_answers(rsps, held=ALL_GLOBAL)

    checks, nav = notes_checks(dv_client(policy([])), Schema())

    assert nav == NAV
    assert all(c.ok for c in checks)
    assert [c.name for c in checks] == [
        "notes on subscription records",
        "note navigation property",
        "privilege prvCreateNote",
        "privilege prvAppendNote",
        "privilege prvAppendTowork365_Subscription",
    ]


def test_append_to_at_user_depth_only_is_not_enough(rsps: responses.RequestsMock) -> None:
    metadata_answers(rsps, held={**ALL_GLOBAL, "prvAppendTowork365_Subscription": "Basic"})

    checks, _ = notes_checks(dv_client(policy([])), Schema())

    (failed,) = [c for c in checks if not c.ok]
    assert failed.name == "privilege prvAppendTowork365_Subscription"
    assert "Basic" in failed.detail and "Organization" in failed.detail


def test_bindings_with_notes_refuse_naming_every_missing_piece(
    rsps: responses.RequestsMock,
) -> None:
    metadata_answers(rsps, has_notes=False, relationship=False, held={"prvAppendNote": "Global"})

    with pytest.raises(NotesUnavailableError) as caught:
        subscription_bindings(dv_client(policy([])), Schema(), notes=True)

    message = str(caught.value)
    assert "WORK365_WRITE_NOTES" in message
    assert "HasNotes is false" in message
    assert "no Regarding (objectid) relationship" in message
    assert "lacks prvCreateNote" in message
    assert "lacks prvAppendTowork365_Subscription" in message
    assert "prvAppendNote" not in message


def test_an_undo_clears_and_notes_in_one_change_set(rsps: responses.RequestsMock) -> None:
    repo = Repository(dv_client(policy([])), Schema())
    note = note_for_undo(undone_run_id="run-1", run_id="run-2", contract_id=CONTRACT)
    write = repo.clear_operation(RECORDS[0], "work365_BillingContract", etag='W/"4"')
    noted = repo.note_operation(RECORDS[0], note.subject, note.text, NOTED)
    rsps.post(
        f"{API}$batch",
        body=batch_of(changeset_answer((204, "1", 'W/"5"'), (204, "2", "x"))),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )
    rsps.post(
        f"{API}$batch",
        body=batch_of(failed_part(412, "1", DV_VERSION_MISMATCH)),
        content_type="multipart/mixed; boundary=batchresponse_1",
    )

    assert repo.write_with_note(write, noted) == 'W/"5"'
    body = rsps.calls[0].request.body
    assert b'"work365_BillingContract@odata.bind": null' in body
    assert b"Billing contract cleared by undo of run run-1" in body
    with pytest.raises(ConflictError):
        repo.write_with_note(write, noted)


def test_with_notes_a_batch_holds_at_most_500_writes() -> None:
    w = world()
    s = RunSummary(run_id="run-1", started_at=datetime.now(UTC))
    repo = Repository(dv_client(policy([])), Schema())
    limits = WriteLimits(batch_size=1000, deadline=None, monotonic=lambda: 0.0, sleep=print)
    log = logging.LoggerAdapter(logging.getLogger("test"))
    plain = SubscriptionBindings("work365_BillingContract", "work365_Account", False)

    assert BatchWriter(repo, w, NOTED, s, log, limits).batch_size == 500
    assert BatchWriter(repo, w, plain, s, log, limits).batch_size == 1000
