"""OData query options as the Dataverse Web API serves them, for the sandbox emulator.

A tokenizer and a recursive-descent parser for the `$filter` subset Dataverse accepts (comparisons,
`and`/`or`/`not`, parentheses, `contains`/`startswith`/`endswith`, `Microsoft.Dynamics.CRM.In` and
`NotIn`, parameter aliases), plus `$select` and `$orderby`. Evaluation follows SQL: comparing a
null column with a value is *unknown*, `not unknown` stays unknown, and a row matches only when
the filter is true. Strings compare case-insensitively (Dataverse's default collation), GUIDs in
any case.

Anything outside the subset raises `ODataError` (400). Errors Dataverse itself would raise carry
its wording; things real Dataverse supports but the sandbox does not say "sandbox" in the message.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

QUERY_ERROR = "0x80060888"  # Dataverse's code for OData URI / payload errors
# "Limitations of query functions": `not` before a query function fails with this message
# (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/use-web-api-functions#limitations-of-query-functions).
# The page gives neither status nor code: 400 with QUERY_ERROR is this emulator's choice, the
# code every OData URI error here carries.
NOT_WITH_QUERY_FUNCTION = (
    "Not operator along with the Custom Named Condition operators is not allowed"
)


class ODataError(Exception):
    """An error answer in Dataverse's shape: `{"error": {"code": ..., "message": ...}}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def bad_request(message: str, code: str = QUERY_ERROR) -> ODataError:
    return ODataError(400, code, message)


def unsupported(what: str) -> ODataError:
    """Real Dataverse may accept this; the sandbox refuses it loudly instead of guessing."""
    return bad_request(f"The sandbox Dataverse emulator does not support {what}.")


class EdmType(enum.StrEnum):
    GUID = "Edm.Guid"
    STRING = "Edm.String"
    BOOLEAN = "Edm.Boolean"
    INT32 = "Edm.Int32"
    INT64 = "Edm.Int64"
    DECIMAL = "Edm.Decimal"
    DATETIME = "Edm.DateTimeOffset"


@dataclass(frozen=True)
class Property:
    """A property a query names: `name` as written, `key` of its value in the row dicts."""

    name: str
    key: str
    type: EdmType


Resolver = Callable[[str], Property]  # raises ODataError for a name the type does not have


# ---------------------------------------------------------------- tokens


class Tok(enum.Enum):
    WORD = "word"
    STRING = "string"
    DQSTRING = "double-quoted string"
    NUMBER = "number"
    GUID = "guid"
    DATETIME = "datetime"
    DATE = "date"
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    LBRACKET = "["
    RBRACKET = "]"
    EQUALS = "="
    EOF = "end of input"


@dataclass(frozen=True)
class Token:
    kind: Tok
    text: str
    value: Any
    pos: int
    alias: str | None = None  # the parameter alias (`@p1`) this token was read from


_PUNCT = {
    "(": Tok.LPAREN,
    ")": Tok.RPAREN,
    ",": Tok.COMMA,
    "[": Tok.LBRACKET,
    "]": Tok.RBRACKET,
    "=": Tok.EQUALS,
}
_HEX = "[0-9A-Fa-f]"
_GUID_RE = re.compile(rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}(?![\w-])")
_DATETIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2})(?![\w:.+-])"
)
_DATETIME_START_RE = re.compile(r"\d{4}-\d{2}-\d{2}T")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?![\w:.-])")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?![\w.])")
_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_ALIAS_RE = re.compile(r"@[A-Za-z_][A-Za-z0-9_]*")


def syntax_error(text: str, pos: int) -> ODataError:
    return bad_request(f"Syntax error at position {pos} in '{text}'.")


def tokenize(  # noqa: PLR0912 - one branch per OData token kind
    text: str, aliases: Mapping[str, str] | None = None, *, _in_alias: str | None = None
) -> list[Token]:
    """The tokens of `text`; a parameter alias (`@p1`) is replaced by the tokens of its value
    in `aliases` (the query string's `@name=value` pairs), or by `null` when it has none."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            tokens.append(Token(Tok.EOF, "", None, n))
            return tokens
        ch = text[i]
        if ch in _PUNCT:
            tokens.append(Token(_PUNCT[ch], ch, ch, i))
            i += 1
            continue
        if ch == "'":
            value, end = _single_quoted(text, i)
            tokens.append(Token(Tok.STRING, text[i:end], value, i))
            i = end
            continue
        if ch == '"':
            value, end = _double_quoted(text, i)
            tokens.append(Token(Tok.DQSTRING, text[i:end], value, i))
            i = end
            continue
        if ch == "@":
            if _in_alias is not None:
                raise unsupported(f"the parameter alias '{_in_alias}' naming another alias")
            if (m := _ALIAS_RE.match(text, i)) is None:
                raise syntax_error(text, i)
            tokens.extend(_alias_tokens(text, m.group(), i, aliases or {}))
            i = m.end()
            continue
        if ch == "/":
            raise unsupported(f"navigation paths in $filter (found at position {i} in '{text}')")
        if m := _GUID_RE.match(text, i):
            tokens.append(Token(Tok.GUID, m.group(), m.group().lower(), i))
        elif m := _DATETIME_RE.match(text, i):
            tokens.append(Token(Tok.DATETIME, m.group(), _parse_datetime(text, m.group(), i), i))
        elif _DATETIME_START_RE.match(text, i):
            raise bad_request(
                f"Unrecognized 'Edm.DateTimeOffset' literal at position {i} in '{text}': "
                "write it as 2026-01-01T00:00:00Z (with Z or an offset)."
            )
        elif m := _DATE_RE.match(text, i):
            tokens.append(Token(Tok.DATE, m.group(), _parse_date(text, m.group(), i), i))
        elif m := _NUMBER_RE.match(text, i):
            raw = m.group()
            number: int | Decimal = Decimal(raw) if "." in raw else int(raw)
            tokens.append(Token(Tok.NUMBER, raw, number, i))
        elif m := _WORD_RE.match(text, i):
            tokens.append(Token(Tok.WORD, m.group(), m.group(), i))
        else:
            raise syntax_error(text, i)
        i = m.end()


def _alias_tokens(text: str, name: str, pos: int, aliases: Mapping[str, str]) -> list[Token]:
    """The tokens a parameter alias stands for, each placed at the alias. Aliases hold any
    expression: a literal, a JSON-style collection (`@p2=["a","b"]`), a property name.
    "If the alias isn't assigned a value, it's assumed to be null."
    https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/overview#use-parameter-aliases-with-query-options
    The In page's own syntax is aliased:
    https://learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/in"""
    raw = aliases.get(name)
    if raw is None:
        return [Token(Tok.WORD, "null", None, pos, name)]
    inner = tokenize(raw, _in_alias=name)[:-1]  # without its EOF
    if not inner:
        raise bad_request(f"The parameter alias '{name}' at position {pos} in '{text}' is empty.")
    return [Token(t.kind, t.text, t.value, pos, name) for t in inner]


def _single_quoted(text: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    i = start + 1
    while i < len(text):
        if text[i] == "'":
            if i + 1 < len(text) and text[i + 1] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        out.append(text[i])
        i += 1
    raise bad_request(f"There is an unterminated string literal at position {start} in '{text}'.")


def _double_quoted(text: str, start: int) -> tuple[str, int]:
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            try:
                value = json.loads(text[start : i + 1])
            except ValueError:
                raise syntax_error(text, start) from None
            return str(value), i + 1
        i += 1
    raise bad_request(f"There is an unterminated string literal at position {start} in '{text}'.")


def _parse_datetime(text: str, raw: str, pos: int) -> datetime:
    value = raw[:-1] + "+00:00" if raw.endswith("Z") else raw
    if "." in value:  # Python takes at most 6 fractional digits
        head, _, tail = value.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        value = f"{head}.{digits[:6]}{tail[len(digits) :]}"
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        raise bad_request(
            f"Unrecognized 'Edm.DateTimeOffset' literal '{raw}' at position {pos} in '{text}'."
        ) from None


def _parse_date(text: str, raw: str, pos: int) -> datetime:
    try:
        return datetime.fromisoformat(raw).replace(tzinfo=UTC)
    except ValueError:
        raise bad_request(
            f"Unrecognized 'Edm.Date' literal '{raw}' at position {pos} in '{text}'."
        ) from None


# ---------------------------------------------------------------- syntax tree


class Op(enum.StrEnum):
    EQ = "eq"
    NE = "ne"
    GT = "gt"
    GE = "ge"
    LT = "lt"
    LE = "le"


_OP_KIND = {
    Op.EQ: "Equal",
    Op.NE: "NotEqual",
    Op.GT: "GreaterThan",
    Op.GE: "GreaterThanOrEqual",
    Op.LT: "LessThan",
    Op.LE: "LessThanOrEqual",
}


@dataclass(frozen=True)
class Compare:
    op: Op
    prop: Property
    value: Any  # typed like the property's values; None for the null literal


@dataclass(frozen=True)
class TextMatch:
    function: str  # contains | startswith | endswith
    prop: Property
    value: str


@dataclass(frozen=True)
class InList:
    prop: Property
    values: tuple[Any, ...]
    negate: bool


@dataclass(frozen=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    operand: Node


Node = Compare | TextMatch | InList | And | Or | Not

_KEYWORDS = {"and", "or", "not", *Op, "null", "true", "false"}
_TEXT_FUNCTIONS = {"contains", "startswith", "endswith"}
# Standard OData functions and operators Dataverse has but the sandbox does not.
_OTHER_ODATA_FUNCTIONS = {
    "tolower", "toupper", "length", "indexof", "substring", "trim", "concat", "year", "month",
    "day", "hour", "minute", "second", "fractionalseconds", "date", "time", "now", "round",
    "floor", "ceiling", "cast", "isof", "any", "all", "matchesPattern", "totaloffsetminutes",
    "mindatetime", "maxdatetime", "geo.distance", "geo.intersects", "geo.length",
}  # fmt: skip
_OTHER_OPERATORS = {"has", "in", "add", "sub", "mul", "div", "divby", "mod"}
_CRM = "Microsoft.Dynamics.CRM."


@dataclass(frozen=True)
class _Literal:
    type: EdmType | None  # None: the null literal
    value: Any
    edm_name: str  # the literal's type as OData names it in errors


class _Parser:
    def __init__(
        self,
        text: str,
        resolve: Resolver,
        resolve_attribute: Resolver | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.text = text
        self.tokens = tokenize(text, aliases)
        self.i = 0
        self.resolve = resolve
        self.resolve_attribute = resolve_attribute or resolve
        self.negations = 0  # how many `not` the expression being parsed is under

    # -- token helpers
    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return tok

    def expect(self, kind: Tok) -> Token:
        tok = self.peek()
        if tok.kind is not kind:
            raise syntax_error(self.text, tok.pos)
        return self.advance()

    def at_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind is Tok.WORD and tok.text in words

    # -- grammar
    def parse(self) -> Node:
        if self.peek().kind is Tok.EOF:
            raise bad_request("The $filter query option has no expression.")
        node = self.or_expr()
        if self.peek().kind is not Tok.EOF:
            raise syntax_error(self.text, self.peek().pos)
        return node

    def or_expr(self) -> Node:
        node = self.and_expr()
        while self.at_word("or"):
            self.advance()
            node = Or(node, self.and_expr())
        return node

    def and_expr(self) -> Node:
        node = self.unary()
        while self.at_word("and"):
            self.advance()
            node = And(node, self.unary())
        return node

    def unary(self) -> Node:
        if self.at_word("not"):
            self.advance()
            self.negations += 1
            operand = self.unary()
            self.negations -= 1
            return Not(operand)
        return self.primary()

    def primary(self) -> Node:
        tok = self.peek()
        if tok.kind is Tok.LPAREN:
            self.advance()
            node = self.or_expr()
            self.expect(Tok.RPAREN)
            return node
        if tok.kind is Tok.WORD and self.peek(1).kind is Tok.LPAREN:
            return self.function()
        if tok.kind is Tok.WORD and tok.text not in _KEYWORDS:
            return self.comparison()
        if tok.kind in (Tok.STRING, Tok.NUMBER, Tok.GUID, Tok.DATETIME, Tok.DATE) or (
            tok.kind is Tok.WORD and tok.text in ("null", "true", "false")
        ):
            raise unsupported(
                f"a literal on the left of a comparison (position {tok.pos} in '{self.text}'): "
                "write 'property op value'"
            )
        raise syntax_error(self.text, tok.pos)

    def comparison(self) -> Node:
        name_tok = self.advance()
        prop = self.resolve(name_tok.text)
        op_tok = self.peek()
        if op_tok.kind is Tok.WORD and op_tok.text in _OTHER_OPERATORS:
            raise unsupported(f"the '{op_tok.text}' operator in $filter")
        if op_tok.kind is not Tok.WORD or op_tok.text not in set(Op):
            if op_tok.kind is Tok.EOF or op_tok.text in ("and", "or") or op_tok.kind is Tok.RPAREN:
                raise unsupported(
                    f"a bare property as a condition ('{name_tok.text}'): "
                    f"compare it, e.g. {name_tok.text} eq true"
                )
            raise syntax_error(self.text, op_tok.pos)
        self.advance()
        op = Op(op_tok.text)
        literal = self.literal()
        return _typed_compare(op, prop, literal)

    def literal(self) -> _Literal:
        tok = self.advance()
        match tok.kind:
            case Tok.STRING:
                return _Literal(EdmType.STRING, tok.value, "Edm.String")
            case Tok.GUID:
                return _Literal(EdmType.GUID, tok.value, "Edm.Guid")
            case Tok.DATETIME:
                return _Literal(EdmType.DATETIME, tok.value, "Edm.DateTimeOffset")
            case Tok.DATE:
                return _Literal(EdmType.DATETIME, tok.value, "Edm.Date")
            case Tok.NUMBER:
                if isinstance(tok.value, Decimal):
                    return _Literal(EdmType.DECIMAL, tok.value, "Edm.Decimal")
                wide = not -(2**31) <= tok.value < 2**31
                return _Literal(
                    EdmType.INT64 if wide else EdmType.INT32,
                    tok.value,
                    "Edm.Int64" if wide else "Edm.Int32",
                )
            case Tok.WORD if tok.text == "null":
                return _Literal(None, None, "null")
            case Tok.WORD if tok.text in ("true", "false"):
                return _Literal(EdmType.BOOLEAN, tok.text == "true", "Edm.Boolean")
            case Tok.WORD if tok.text not in _KEYWORDS:
                raise unsupported(f"comparing a column with another column ('{tok.text}')")
        raise syntax_error(self.text, tok.pos)

    def function(self) -> Node:
        name_tok = self.advance()
        name = name_tok.text
        if name in _TEXT_FUNCTIONS:
            return self.text_function(name)
        if name.startswith(_CRM) and self.negations:
            # Refused under any `not`, parenthesised or not: Dataverse turns `not` into the
            # negated condition operator, and a query function has none to turn into.
            raise bad_request(NOT_WITH_QUERY_FUNCTION)
        if name in (f"{_CRM}In", f"{_CRM}NotIn"):
            return self.in_function(negate=name.endswith("NotIn"))
        if name.startswith(_CRM):
            raise unsupported(f"the query function '{name}'")
        if name in _OTHER_ODATA_FUNCTIONS:
            raise unsupported(f"the '{name}' function in $filter")
        raise bad_request(
            f"An unknown function with name '{name}' was found. This may also be a function "
            "import or a key lookup on a navigation property, which is not allowed."
        )

    def text_function(self, name: str) -> Node:
        self.expect(Tok.LPAREN)
        arg = self.peek()
        if arg.kind is not Tok.WORD or arg.text in _KEYWORDS:
            raise unsupported(f"'{name}' whose first argument is not a column")
        self.advance()
        prop = self.resolve(arg.text)
        self.expect(Tok.COMMA)
        value = self.peek()
        if value.kind is not Tok.STRING:
            raise bad_request(
                f"The second argument of '{name}' must be a string literal "
                f"(position {value.pos} in '{self.text}')."
            )
        self.advance()
        self.expect(Tok.RPAREN)
        if prop.type is not EdmType.STRING:
            raise bad_request(
                f"No function signature for the function with name '{name}' matches the "
                f"specified arguments. The function signatures considered are: "
                f"{name}(Edm.String Nullable=true, Edm.String Nullable=true)."
            )
        return TextMatch(name, prop, value.value)

    def in_function(self, *, negate: bool) -> Node:
        self.expect(Tok.LPAREN)
        params: dict[str, Any] = {}
        while True:
            key = self.expect(Tok.WORD)
            if key.text not in ("PropertyName", "PropertyValues") or key.text in params:
                raise bad_request(
                    f"The parameter '{key.text}' is not valid for Microsoft.Dynamics.CRM."
                    f"{'NotIn' if negate else 'In'} (expected PropertyName and PropertyValues)."
                )
            self.expect(Tok.EQUALS)
            self.refuse_null(key.text, negate=negate)
            if key.text == "PropertyName":
                params[key.text] = self.expect(Tok.STRING).value
            else:
                params[key.text] = self.string_list()
            if self.peek().kind is Tok.COMMA:
                self.advance()
                continue
            self.expect(Tok.RPAREN)
            break
        if set(params) != {"PropertyName", "PropertyValues"}:
            raise bad_request("Microsoft.Dynamics.CRM.In needs PropertyName and PropertyValues.")
        # Query functions name the attribute (logical name), not the Web API property.
        prop = self.resolve_attribute(str(params["PropertyName"]))
        raw_values: list[str] = params["PropertyValues"]
        if not raw_values:
            raise bad_request("PropertyValues of Microsoft.Dynamics.CRM.In must not be empty.")
        values = tuple(_convert_string(prop, v) for v in raw_values)
        return InList(prop, values, negate)

    def refuse_null(self, parameter: str, *, negate: bool) -> None:
        """In's parameters are not nullable (Nullable False on the In page); an alias with no
        value reads as null, so a forgotten `@p2=` lands here."""
        tok = self.peek()
        if tok.kind is Tok.WORD and tok.text == "null":
            given = f" (the parameter alias '{tok.alias}' has no value)" if tok.alias else ""
            raise bad_request(
                f"The parameter '{parameter}' of Microsoft.Dynamics.CRM."
                f"{'NotIn' if negate else 'In'} cannot be null{given}."
            )

    def string_list(self) -> list[str]:
        self.expect(Tok.LBRACKET)
        out: list[str] = []
        if self.peek().kind is Tok.RBRACKET:
            self.advance()
            return out
        while True:
            tok = self.advance()
            if tok.kind not in (Tok.STRING, Tok.DQSTRING):
                raise syntax_error(self.text, tok.pos)
            out.append(str(tok.value))
            if self.peek().kind is Tok.COMMA:
                self.advance()
                continue
            self.expect(Tok.RBRACKET)
            return out


_COMPATIBLE: dict[EdmType, set[EdmType]] = {
    EdmType.GUID: {EdmType.GUID},
    EdmType.STRING: {EdmType.STRING},
    EdmType.BOOLEAN: {EdmType.BOOLEAN},
    EdmType.INT32: {EdmType.INT32, EdmType.INT64, EdmType.DECIMAL},
    EdmType.INT64: {EdmType.INT32, EdmType.INT64, EdmType.DECIMAL},
    EdmType.DECIMAL: {EdmType.INT32, EdmType.INT64, EdmType.DECIMAL},
    EdmType.DATETIME: {EdmType.DATETIME},
}


def _typed_compare(op: Op, prop: Property, literal: _Literal) -> Compare:
    if literal.type is None:
        if op not in (Op.EQ, Op.NE):
            raise bad_request(
                f"The operator '{op}' cannot be used with null; use eq null or ne null."
            )
        return Compare(op, prop, None)
    if literal.type not in _COMPATIBLE[prop.type]:
        raise bad_request(
            "A binary operator with incompatible types was detected. Found operand types "
            f"'{prop.type}' and '{literal.edm_name}' for operator kind '{_OP_KIND[op]}'."
        )
    if prop.type is EdmType.BOOLEAN and op not in (Op.EQ, Op.NE):
        raise unsupported(f"the '{op}' operator on Edm.Boolean columns")
    return Compare(op, prop, literal.value)


def _convert_string(prop: Property, raw: str) -> Any:
    """A PropertyValues item (always a string on the wire) as a value of the property's type."""
    try:
        return parse_value(prop.type, raw)
    except ValueError:
        raise bad_request(
            f"The value '{raw}' in PropertyValues is not a valid {prop.type} for '{prop.name}'."
        ) from None


def parse_value(edm: EdmType, raw: str) -> Any:
    """A string as a typed value of `edm` (ValueError when it is not one)."""
    match edm:
        case EdmType.STRING:
            return raw
        case EdmType.GUID:
            if not _GUID_RE.fullmatch(raw):
                raise ValueError(raw)
            return raw.lower()
        case EdmType.BOOLEAN:
            if raw not in ("true", "false"):
                raise ValueError(raw)
            return raw == "true"
        case EdmType.INT32 | EdmType.INT64:
            return int(raw)
        case EdmType.DECIMAL:
            try:
                return Decimal(raw)
            except InvalidOperation:
                raise ValueError(raw) from None
        case EdmType.DATETIME:
            text = raw[:-1] + "+00:00" if raw.endswith("Z") else raw
            parsed = datetime.fromisoformat(text)
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def parse_filter(
    text: str,
    resolve: Resolver,
    resolve_attribute: Resolver | None = None,
    aliases: Mapping[str, str] | None = None,
) -> Node:
    """`resolve` names the properties of comparisons and `contains` & co. (lookups as
    `_x_value`); `resolve_attribute` the `PropertyName` of query functions (`In`, `NotIn`),
    which take logical names, lookups included. Without it, both use `resolve`. `aliases`:
    the request's parameter aliases (`@p1` -> its value as written in the query string)."""
    return _Parser(text, resolve, resolve_attribute, aliases).parse()


# ---------------------------------------------------------------- $select, $orderby


def parse_select(text: str, resolve: Resolver) -> list[Property]:
    props: list[Property] = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            raise bad_request(f"Syntax error in $select: '{text}' has an empty item.")
        if name == "*":
            raise unsupported("$select=*: list the columns")
        if "/" in name or "(" in name:
            raise unsupported(f"'{name}' in $select (navigation paths, $expand-like selects)")
        prop = resolve(name)
        if prop not in props:
            props.append(prop)
    return props


def parse_orderby(
    text: str, resolve: Resolver, aliases: Mapping[str, str] | None = None
) -> list[tuple[Property, bool]]:
    """[(property, descending)] in the given order; `@p1 asc` takes the property from the
    alias, as in the page's own example (`$orderby=@p1 asc,@p2 desc&@p1=revenue&@p2=name`,
    https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/overview#use-parameter-aliases-with-query-options)."""
    out: list[tuple[Property, bool]] = []
    for raw in text.split(","):
        parts = raw.split()
        if parts and parts[0].startswith("@"):
            value = (aliases or {}).get(parts[0], "").strip()
            if not value:  # null: there is nothing to order by
                raise bad_request(f"The parameter alias '{parts[0]}' in $orderby has no value.")
            parts[0] = value
        if not parts or len(parts) > 2:
            raise bad_request(f"Syntax error in $orderby: '{text}'.")
        if len(parts) == 2 and parts[1] not in ("asc", "desc"):
            raise bad_request(f"Syntax error in $orderby: '{parts[1]}' is neither asc nor desc.")
        if "/" in parts[0] or "(" in parts[0]:
            raise unsupported(f"'{parts[0]}' in $orderby (navigation paths, functions)")
        out.append((resolve(parts[0]), len(parts) == 2 and parts[1] == "desc"))
    return out


# ---------------------------------------------------------------- evaluation


def sql_guid_key(value: str) -> tuple[str, ...]:
    """SQL Server orders uniqueidentifiers by the last group first; so does Dataverse."""
    v = value.lower()
    return (v[24:36], v[19:23], v[14:18], v[9:13], v[0:8])


def compare_values(edm: EdmType, a: Any, b: Any) -> int:
    """Three-way comparison of two non-null values of one type."""
    if edm is EdmType.STRING:
        a, b = str(a).casefold(), str(b).casefold()
    elif edm is EdmType.GUID:
        a, b = sql_guid_key(str(a)), sql_guid_key(str(b))
    return int((a > b) - (a < b))


def _in_key(edm: EdmType, value: Any) -> Any:
    """What compare_values compares: equal keys <=> compare_values(...) == 0."""
    if edm is EdmType.STRING:
        return str(value).casefold()
    if edm is EdmType.GUID:
        return sql_guid_key(str(value))
    return value


@functools.lru_cache(maxsize=256)
def _in_keys(edm: EdmType, values: tuple[Any, ...]) -> frozenset[Any]:
    """The keys of an In list, built once per list (an In over 100 ids, 100k rows)."""
    return frozenset(_in_key(edm, v) for v in values)


def compare_nullable(edm: EdmType, a: Any, b: Any) -> int:
    """Sort order: null first (SQL Server), then by value."""
    if a is None or b is None:
        return (a is not None) - (b is not None)
    return compare_values(edm, a, b)


def evaluate(  # noqa: PLR0912 - one case per $filter node, with OData's three-valued logic
    node: Node, row: Mapping[str, Any]
) -> bool | None:
    """True, False, or None for unknown (SQL's three-valued logic)."""
    match node:
        case Compare(op=op, prop=prop, value=value):
            actual = row.get(prop.key)
            if value is None:
                return (actual is None) if op is Op.EQ else (actual is not None)
            if actual is None:
                return None
            c = compare_values(prop.type, actual, value)
            return {
                Op.EQ: c == 0,
                Op.NE: c != 0,
                Op.GT: c > 0,
                Op.GE: c >= 0,
                Op.LT: c < 0,
                Op.LE: c <= 0,
            }[op]
        case TextMatch(function=function, prop=prop, value=value):
            actual = row.get(prop.key)
            if actual is None:
                return None
            hay, needle = str(actual).casefold(), value.casefold()
            if function == "contains":
                return needle in hay
            if function == "startswith":
                return hay.startswith(needle)
            return hay.endswith(needle)
        case InList(prop=prop, values=values, negate=negate):
            actual = row.get(prop.key)
            if actual is None:
                return None
            found = _in_key(prop.type, actual) in _in_keys(prop.type, values)
            return found != negate
        case And(left=left, right=right):
            a, b = evaluate(left, row), evaluate(right, row)
            if a is False or b is False:
                return False
            return None if a is None or b is None else True
        case Or(left=left, right=right):
            a, b = evaluate(left, row), evaluate(right, row)
            if a is True or b is True:
                return True
            return None if a is None or b is None else False
        case Not(operand=operand):
            inner = evaluate(operand, row)
            return None if inner is None else not inner
    raise TypeError(f"not a filter node: {node!r}")


def matches(node: Node | None, row: Mapping[str, Any]) -> bool:
    return node is None or evaluate(node, row) is True


def row_comparator(
    order: Sequence[tuple[Property, bool]],
) -> Callable[[Mapping[str, Any], Mapping[str, Any]], int]:
    """A cmp function over rows for `order` ((property, descending) pairs, tie-breakers last)."""

    def cmp(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
        for prop, descending in order:
            c = compare_nullable(prop.type, a.get(prop.key), b.get(prop.key))
            if c:
                return -c if descending else c
        return 0

    return cmp


def sort_rows(
    rows: Iterable[Mapping[str, Any]], order: Sequence[tuple[Property, bool]]
) -> list[Mapping[str, Any]]:
    """`rows` in `order` (what row_comparator says), by stable key sorts from the last key to
    the first: a key per row instead of a comparison function (100k rows: 12 s -> 0.3 s)."""
    out = list(rows)
    for prop, descending in reversed(order):
        out.sort(key=functools.partial(_sort_key, prop), reverse=descending)
    return out


def _sort_key(prop: Property, row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Orders like compare_nullable: null first, then by the value compare_values compares."""
    value = row.get(prop.key)
    return (0,) if value is None else (1, _in_key(prop.type, value))
