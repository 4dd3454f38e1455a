"""The undo's input rules: the HTTP body and the queued job's payload, checked field by field,
and a queued undo of a run without a journal (or of an undo) failing without a retry."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from work365_fn.adapters.dataverse_repository import Repository
from work365_fn.adapters.storage import FileRunStore
from work365_fn.operations.inputs import BadRequest
from work365_fn.operations.run_documents import Journal, load_journals
from work365_fn.operations.undo import UndoDeps, UndoRequest, undo_job

RUN = "11111111-1111-4111-8111-111111111111"
UNDO = "22222222-2222-4222-8222-222222222222"


def deps(tmp_path: Path) -> UndoDeps:
    never = cast(Repository, object())  # nothing here reaches Dataverse
    return UndoDeps(repository=never, run_store=FileRunStore(tmp_path))


def test_the_payload_of_a_queued_undo_reads_back_as_the_request() -> None:
    request = UndoRequest.from_payload(RUN.upper(), {"apply": True, "customerIds": [UNDO]})
    assert request.payload() == {"undoOf": RUN, "apply": True, "customerIds": [UNDO]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"apply": "yes"}, "apply"),
        ({"undo": RUN}, "undo"),
        ({"customerIds": [1]}, "customerIds[0]"),
    ],
)
def test_a_bad_body_names_its_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        UndoRequest.from_payload(RUN, body)
    assert caught.value.field == field


def test_a_run_id_must_be_a_guid() -> None:
    with pytest.raises(ValueError):
        UndoRequest(undo_of="last")


@pytest.mark.parametrize("payload", [{}, {"undoOf": "last"}, {"undoOf": RUN, "dryRun": True}])
def test_a_queued_undo_with_a_bad_payload_is_refused(
    tmp_path: Path, payload: dict[str, Any]
) -> None:
    with pytest.raises(BadRequest):
        undo_job(deps(tmp_path), payload, UNDO)


def test_a_queued_undo_of_a_run_without_a_journal_fails_without_a_retry(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="no journal for run") as caught:
        undo_job(deps(tmp_path), {"undoOf": RUN, "apply": True}, UNDO)
    assert caught.value.field == "undoOf"


def test_a_queued_undo_of_an_undo_is_refused(tmp_path: Path) -> None:
    store = FileRunStore(tmp_path)
    Journal(
        store, RUN, deps(tmp_path).clock, name="journal-0123456789ab", kind="undo-journal"
    ).save()
    assert [j.kind for j in load_journals(store, RUN)] == ["undo-journal"]
    with pytest.raises(BadRequest, match="is an undo"):
        undo_job(deps(tmp_path), {"undoOf": RUN, "apply": True}, UNDO)


def test_only_journal_heads_count_as_journals(tmp_path: Path) -> None:
    store = FileRunStore(tmp_path)
    for name in ("state", "result", "batch-0000", "journal-0123456789ab-0001", "journal-x"):
        store.put(RUN, name, {"entries": [{"state": "assigned"}]})
    with pytest.raises(BadRequest, match="no journal for run"):
        undo_job(deps(tmp_path), {"undoOf": RUN}, UNDO)
