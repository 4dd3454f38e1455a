"""The sandbox's OData query parser: every supported $filter form, and refusals for the rest."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from work365_fn.sandbox.odata import (
    EdmType,
    ODataError,
    Property,
    Tok,
    matches,
    parse_filter,
    parse_orderby,
    parse_select,
    sort_rows,
    tokenize,
)

PROPS = {
    "name": Property("name", "name", EdmType.STRING),
    "quantity": Property("quantity", "quantity", EdmType.INT32),
    "flag": Property("flag", "flag", EdmType.BOOLEAN),
    "_acc_value": Property("_acc_value", "acc", EdmType.GUID),
    "createdon": Property("createdon", "createdon", EdmType.DATETIME),
}
ACC = "8b2c4d6e-0000-4000-8000-00000000abcd"


def resolve(name: str) -> Property:
    if name not in PROPS:
        raise ODataError(400, "0x80060888", f"Could not find a property named '{name}'")
    return PROPS[name]


def row(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": None,
        "quantity": None,
        "flag": None,
        "acc": None,
        "createdon": None,
    }
    base.update(values)
    return base


def hits(text: str, *rows: dict[str, Any]) -> list[int]:
    node = parse_filter(text, resolve)
    return [i for i, r in enumerate(rows) if matches(node, r)]


def refused(text: str) -> ODataError:
    with pytest.raises(ODataError) as caught:
        parse_filter(text, resolve)
    assert caught.value.status == 400
    return caught.value


# ---------------------------------------------------------------- tokens


def test_tokenizer_reads_guids_datetimes_numbers_and_doubled_quotes() -> None:
    tokens = tokenize("_acc_value eq 8B2C4D6E-0000-4000-8000-00000000ABCD and name eq 'O''Brien'")
    kinds = [t.kind for t in tokens]
    assert kinds == [
        Tok.WORD,
        Tok.WORD,
        Tok.GUID,
        Tok.WORD,
        Tok.WORD,
        Tok.WORD,
        Tok.STRING,
        Tok.EOF,
    ]
    assert tokens[2].value == ACC
    assert tokens[6].value == "O'Brien"
    assert tokenize("createdon ge 2026-01-01T00:00:00Z")[2].value == datetime(
        2026, 1, 1, tzinfo=UTC
    )
    assert tokenize("quantity gt -12")[2].value == -12


def test_a_guid_starting_with_digits_is_not_a_number() -> None:
    assert tokenize("12345678-1234-1234-1234-123456789012")[0].kind is Tok.GUID


# ---------------------------------------------------------------- supported forms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("quantity eq 5", [1]),
        ("quantity ne 5", [0, 2]),
        ("quantity gt 5", [2]),
        ("quantity ge 5", [1, 2]),
        ("quantity lt 5", [0]),
        ("quantity le 5", [0, 1]),
    ],
)
def test_comparison_operators(text: str, expected: list[int]) -> None:
    rows = [row(quantity=1), row(quantity=5), row(quantity=9)]
    assert hits(text, *rows) == expected


def test_strings_compare_case_insensitively_and_quotes_are_doubled() -> None:
    rows = [row(name="O'Brien Ltd"), row(name="CONTOSO"), row(name="Fabrikam")]
    assert hits("name eq 'contoso'", *rows) == [1]
    assert hits("name eq 'O''Brien Ltd'", *rows) == [0]
    assert hits("contains(name,'brien')", *rows) == [0]
    assert hits("startswith(name, 'con')", *rows) == [1]
    assert hits("endswith(name,'KAM')", *rows) == [2]


def test_guids_compare_in_any_case_and_bare() -> None:
    rows = [row(acc=ACC), row(acc="00000000-0000-0000-0000-000000000001")]
    assert hits(f"_acc_value eq {ACC.upper()}", *rows) == [0]


def test_null_true_false() -> None:
    rows = [row(flag=True, acc=ACC), row(flag=False), row()]
    assert hits("_acc_value eq null", *rows) == [1, 2]
    assert hits("_acc_value ne null", *rows) == [0]
    assert hits("flag eq true", *rows) == [0]
    assert hits("flag eq false", *rows) == [1]


def test_datetimes_and_dates() -> None:
    rows = [
        row(createdon=datetime(2025, 12, 31, 23, 59, tzinfo=UTC)),
        row(createdon=datetime(2026, 1, 1, tzinfo=UTC)),
    ]
    assert hits("createdon ge 2026-01-01T00:00:00Z", *rows) == [1]
    assert hits("createdon lt 2026-01-01T01:00:00+01:00", *rows) == [0]
    assert hits("createdon ge 2026-01-01", *rows) == [1]


def test_and_binds_tighter_than_or_and_parentheses_group() -> None:
    rows = [row(quantity=1, flag=True), row(quantity=2, flag=False), row(quantity=3, flag=True)]
    assert hits("quantity eq 1 or quantity eq 2 and flag eq true", *rows) == [0]
    assert hits("(quantity eq 1 or quantity eq 2) and flag eq true", *rows) == [0]
    assert hits("(quantity eq 1 or quantity eq 3) and not (flag eq false)", *rows) == [0, 2]


def test_in_and_not_in_with_single_or_double_quoted_values() -> None:
    rows = [row(name="a"), row(name="b"), row(name="c")]
    assert hits(
        "Microsoft.Dynamics.CRM.In(PropertyName='name',PropertyValues=['a','C'])", *rows
    ) == [0, 2]
    assert hits("Microsoft.Dynamics.CRM.In(PropertyName='name',PropertyValues=[\"b\"])", *rows) == [
        1
    ]
    assert hits(
        "Microsoft.Dynamics.CRM.NotIn(PropertyName='name',PropertyValues=['a'])", *rows
    ) == [1, 2]
    guids = [row(acc=ACC), row(acc=None)]
    upper = ACC.upper()
    text = f"Microsoft.Dynamics.CRM.In(PropertyName='_acc_value',PropertyValues=['{upper}'])"
    assert hits(text, *guids) == [0]


def test_null_columns_follow_sql_three_valued_logic() -> None:
    rows = [row(name="x"), row(name="y"), row(name=None)]
    assert hits("name ne 'x'", *rows) == [1]
    assert hits("not (name eq 'x')", *rows) == [1]
    assert hits("not contains(name,'x')", *rows) == [1]
    assert hits("name eq 'x' or name eq null", *rows) == [0, 2]


# ---------------------------------------------------------------- parameter aliases


def test_aliases_stand_for_values_property_names_and_collections() -> None:
    rows = [row(name="a", quantity=1), row(name="b", quantity=2), row(name=None, quantity=3)]

    def aliased(text: str, **given: str) -> list[int]:
        node = parse_filter(text, resolve, aliases={f"@{k}": v for k, v in given.items()})
        return [i for i, r in enumerate(rows) if matches(node, r)]

    assert aliased("name eq @p1", p1="'b'") == [1]
    assert aliased("@p1 gt @p2", p1="quantity", p2="1") == [1, 2]
    assert aliased("name ne @p9") == [0, 1]  # an alias with no value is null
    in_aliased = "Microsoft.Dynamics.CRM.In(PropertyName=@p1,PropertyValues=@p2)"
    assert aliased(in_aliased, p1="'name'", p2='["a","B"]') == [0, 1]
    assert aliased(in_aliased, p1="'name'", p2="['a','c']") == [0]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"@p1": "'name'"}, "The parameter 'PropertyValues' of Microsoft.Dynamics.CRM.In cannot "
         "be null (the parameter alias '@p2' has no value)"),
        ({"@p2": "['a']"}, "'PropertyName' of Microsoft.Dynamics.CRM.In cannot be null"),
        ({"@p1": "'name'", "@p2": ""}, "The parameter alias '@p2' at position"),
        ({"@p1": "'name'", "@p2": "@p3"}, "sandbox"),
    ],
)  # fmt: skip
def test_aliases_the_in_function_cannot_use_are_refused(
    given: dict[str, str], message: str
) -> None:
    text = "Microsoft.Dynamics.CRM.In(PropertyName=@p1,PropertyValues=@p2)"
    with pytest.raises(ODataError) as caught:
        parse_filter(text, resolve, aliases=given)
    assert caught.value.status == 400
    assert message in caught.value.message


def test_orderby_takes_the_property_from_an_alias() -> None:
    order = parse_orderby("@p1 asc,@p2 desc", resolve, {"@p1": "quantity", "@p2": "name"})
    assert [(p.name, d) for p, d in order] == [("quantity", False), ("name", True)]
    with pytest.raises(ODataError, match="'@p3' in \\$orderby has no value"):
        parse_orderby("@p3", resolve, {})


# ---------------------------------------------------------------- not and query functions


@pytest.mark.parametrize(
    "text",
    [
        "not Microsoft.Dynamics.CRM.In(PropertyName='name',PropertyValues=['a'])",
        "not (Microsoft.Dynamics.CRM.NotIn(PropertyName='name',PropertyValues=['a']))",
        "quantity eq 1 or not (name eq 'a' and Microsoft.Dynamics.CRM.Today(PropertyName='x'))",
    ],
)
def test_not_before_a_query_function_is_refused_as_dataverse_refuses_it(text: str) -> None:
    error = refused(text)
    assert error.code == "0x80060888"
    assert error.message == (
        "Not operator along with the Custom Named Condition operators is not allowed"
    )


def test_a_query_function_beside_a_not_is_accepted() -> None:
    rows = [row(name="a", flag=True), row(name="b", flag=False)]
    text = (
        "not (flag eq false) and "
        "Microsoft.Dynamics.CRM.In(PropertyName='name',PropertyValues=['a','b'])"
    )
    assert hits(text, *rows) == [0]


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "text",
    [
        "tolower(name) eq 'x'",
        "name has 'x'",
        "_acc_value/name eq 'x'",
        "Microsoft.Dynamics.CRM.Today(PropertyName='createdon')",
        "name eq quantity",
        "'x' eq name",
        "flag",
        "flag gt false",
        "contains(quantity,'1')",
        "substring(name,1) eq 'x'",
    ],
)
def test_unsupported_forms_are_refused_not_ignored(text: str) -> None:
    refused(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "_acc_value eq '8b2c4d6e-0000-4000-8000-00000000abcd'",
            "Found operand types 'Edm.Guid' and 'Edm.String' for operator kind 'Equal'",
        ),
        ("createdon gt '2026-01-01T00:00:00Z'", "'Edm.DateTimeOffset' and 'Edm.String'"),
        ("quantity eq '1'", "'Edm.Int32' and 'Edm.String'"),
        ("name eq 1", "'Edm.String' and 'Edm.Int32'"),
        ("nope eq 1", "Could not find a property named 'nope'"),
        ("name eq 'unterminated", "unterminated string literal"),
        ("name eq 'x' name", "Syntax error at position 12"),
        ("name eqq 'x'", "Syntax error"),
        ("createdon ge 2026-01-01T00:00:00", "with Z or an offset"),
        ("quantity gt null", "cannot be used with null"),
        ("frobnicate(name)", "An unknown function with name 'frobnicate'"),
        ("", "no expression"),
        ("(name eq 'x'", "Syntax error"),
        (
            "Microsoft.Dynamics.CRM.In(PropertyName='quantity',PropertyValues=['one'])",
            "not a valid Edm.Int32",
        ),
    ],
)
def test_errors_say_what_is_wrong(text: str, message: str) -> None:
    error = refused(text)
    assert message in error.message
    assert error.code == "0x80060888"


def test_sandbox_only_gaps_say_sandbox() -> None:
    assert "sandbox" in refused("tolower(name) eq 'x'").message
    assert "sandbox" not in refused("_acc_value eq 'x'").message


# ---------------------------------------------------------------- $select / $orderby / order


def test_select_and_orderby() -> None:
    assert [p.key for p in parse_select("name, _acc_value", resolve)] == ["name", "acc"]
    order = parse_orderby("quantity desc,name asc, createdon", resolve)
    assert [(p.name, desc) for p, desc in order] == [
        ("quantity", True),
        ("name", False),
        ("createdon", False),
    ]


@pytest.mark.parametrize("text", ["name,", "*", "name sideways", "", "_acc_value/name"])
def test_bad_select_or_orderby(text: str) -> None:
    with pytest.raises(ODataError):
        parse_select(text, resolve) if "sideways" not in text else parse_orderby(text, resolve)


def test_sorting_puts_nulls_first_and_honours_desc() -> None:
    rows = [row(quantity=2, name="b"), row(quantity=None, name="a"), row(quantity=2, name="A")]
    asc = sort_rows(rows, parse_orderby("quantity,name", resolve))
    assert [(r["quantity"], r["name"]) for r in asc] == [(None, "a"), (2, "A"), (2, "b")]
    desc = sort_rows(rows, parse_orderby("quantity desc", resolve))
    assert desc[-1]["quantity"] is None
