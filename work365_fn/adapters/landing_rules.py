"""The landing rules file (WORK365_LANDING_RULES_FILE): read once at start, through the one JSON
gate (`safe_json`), and checked by `rules.landing.parse_landing_rules`; its contract columns
checked against the organisation's metadata (by `check-schema`, and before a run reads or
writes anything).

Every problem is a ConfigError naming the setting, the rule (number and name) and the field:
the CLI exits 2, the HTTP API answers 500, and nothing is written.
"""

from __future__ import annotations

from pathlib import Path

from work365_fn import safe_json
from work365_fn.adapters.dataverse import DataverseClient
from work365_fn.adapters.dataverse_metadata import SchemaCheck
from work365_fn.adapters.schema import Schema
from work365_fn.errors import ApiError, ConfigError, NotFoundError, SchemaError
from work365_fn.rules.landing import (
    SETTING,
    LandingRules,
    LandingRulesError,
    parse_landing_rules,
    value_type_problem,
)


def load_landing_rules(source: str | None) -> LandingRules | None:
    """The rules the setting gives: None without it; inline JSON when it starts with "{", else
    the path of a JSON file."""
    if not source or not source.strip():
        return None
    text = source.strip()
    data: str | bytes
    if text.startswith("{"):
        what, data = f"{SETTING} (inline JSON)", text
    else:
        what = f"{SETTING} file {text}"
        try:
            data = Path(text).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{SETTING}: cannot read {text}: {exc.strerror or exc}") from None
    try:
        raw = safe_json.loads(data, what)
    except safe_json.JsonInputError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return parse_landing_rules(raw)
    except LandingRulesError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def landing_column_checks(
    client: DataverseClient, schema: Schema, rules: LandingRules | None
) -> list[SchemaCheck]:
    """One check per contract column the rules select by (none without rules), like the
    columns of the schema map: the column exists, and every rule's `equals` fits its type
    (AttributeType from the metadata): "Arrears" against a choice column would otherwise match
    no contract, silently, everywhere."""
    if rules is None or not rules.columns:
        return []
    table = schema.billing_contract.table
    try:
        types = {
            str(a.get("LogicalName", "")).lower(): str(a.get("AttributeType") or "")
            for a in client.attributes(table)
        }
    except NotFoundError:
        types = {}
    except ApiError as exc:
        return [
            SchemaCheck(f"{table}.{c} (landing rules)", False, f"cannot read metadata: {exc}")
            for c in rules.columns
        ]
    return [_column_check(table, column, types, rules) for column in rules.columns]


def _column_check(
    table: str, column: str, types: dict[str, str], rules: LandingRules
) -> SchemaCheck:
    users = rules.rules_using(column)
    name = f"{table}.{column} (landing rules)"
    labels = ", ".join(r.label for r in users)
    if column not in types:
        return SchemaCheck(
            name, False, f"no column {column} on {table}: {labels}, field 'contract.column'"
        )
    problems = []
    for rule in users:
        assert rule.contract is not None
        problem = value_type_problem(types[column], rule.contract.equals)
        if problem:
            problems.append(
                f"{rule.label}, field 'contract.equals': {rule.contract.equals!r} cannot match "
                f"{table}.{column}, {problem}"
            )
    if problems:
        return SchemaCheck(name, False, "; ".join(problems))
    return SchemaCheck(name, True, f"present, {types[column]} (selected by {labels})")


def require_landing_columns(
    client: DataverseClient, schema: Schema, rules: LandingRules | None
) -> None:
    """Before a run with rules reads contracts: every column a rule names exists, or a
    SchemaError naming the rule and the field."""
    missing = [c for c in landing_column_checks(client, schema, rules) if not c.ok]
    if missing:
        raise SchemaError(
            f"{SETTING}: "
            + "; ".join(c.detail for c in missing)
            + ": fix the rules file, or run `python -m work365_fn check-schema`"
        )
