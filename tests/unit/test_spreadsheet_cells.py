"""`spreadsheet_text` and `write_csv`, the one way this service writes CSV: formula triggers get a
leading quote (OWASP CSV injection, ASVS 5 with NUL), every other value is left as it is, and
every field is quoted (RFC 4180)."""

from __future__ import annotations

import csv
import io

import pytest

from work365_fn.operations.report import FORMULA_TRIGGERS, spreadsheet_text, write_csv


@pytest.mark.parametrize("trigger", FORMULA_TRIGGERS)
def test_a_cell_starting_with_a_trigger_gets_a_leading_quote(trigger: str) -> None:
    assert spreadsheet_text(f"{trigger}x") == f"'{trigger}x"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "d0000000-0000-0000-0000-000000000002",
        "Contoso Ltd.",
        "unassigned-subscription",
        "'already quoted",
        "a=b",
        "x\n=y",  # a trigger after the first character is text
    ],
)
def test_other_values_are_left_as_they_are(value: str) -> None:
    assert spreadsheet_text(value) == value


def test_every_field_is_quoted_and_reads_back() -> None:
    text = write_csv(("a", "b"), [{"a": '=1+"2"', "b": ""}, {"a": "plain"}])
    assert text == '"a","b"\n"\'=1+""2""",""\n"plain",""\n'
    assert list(csv.reader(io.StringIO(text))) == [["a", "b"], ['\'=1+"2"', ""], ["plain", ""]]
