"""The rules and the model: pure, no I/O, importing nothing outside this package.

The one owner of every rule of DESIGN.md. Everything else (sync, report, diagnose, the
notification, fan-out) imports what it needs from here and never re-derives a rule.
"""

from work365_fn.rules.association import (
    AccountResolution,
    Decision,
    World,
    active_defaults,
    by_customer,
    decide,
    decide_for_record,
    is_eligible,
    is_existing,
    landing_contract,
    landing_outcome,
    landing_trail,
    parent_contract,
    plan,
    resolve_account,
)
from work365_fn.rules.landing import LandingRules, LandingRulesError, parse_landing_rules
from work365_fn.rules.reasons import (
    GROUP_OF,
    LANDS,
    LISTED,
    ON_A_CONTRACT,
    UNASSIGNED,
    UNCHANGED,
    Action,
    Group,
    Reason,
    count_groups,
    count_reasons,
    group_of,
)

__all__ = [
    "GROUP_OF",
    "LANDS",
    "LISTED",
    "ON_A_CONTRACT",
    "UNASSIGNED",
    "UNCHANGED",
    "AccountResolution",
    "Action",
    "Decision",
    "Group",
    "LandingRules",
    "LandingRulesError",
    "Reason",
    "World",
    "active_defaults",
    "by_customer",
    "count_groups",
    "count_reasons",
    "decide",
    "decide_for_record",
    "group_of",
    "is_eligible",
    "is_existing",
    "landing_contract",
    "landing_outcome",
    "landing_trail",
    "parent_contract",
    "parse_landing_rules",
    "plan",
    "resolve_account",
]
