"""`diagnose` never contradicts itself (issue 13): a check is not `ok` while a later one fails
for the same records, and a customer Partner Center cannot serve is said first, with no advice
to map it to a Provider Account."""

from __future__ import annotations

import io
from typing import Any

import pytest

from tests.integration import demo
from tests.integration.conftest import ScenarioBuilder, services_for
from work365_fn.entrypoints.cli.main import main
from work365_fn.operations.diagnose import DiagnoseRequest, failed_checks, run_diagnose


def test_coho_winery_fails_its_contracts_check_as_well_as_multiple_defaults(
    clean_env: None,
) -> None:
    out = io.StringIO()
    code = main(["-q", "diagnose", "--sandbox", "--customer", demo.COHO], out=out)
    lines = out.getvalue().splitlines()
    assert code == 1
    [contracts] = [line for line in lines if " contracts: " in line]
    [several] = [line for line in lines if " multiple-defaults: " in line]
    assert "FAIL" in contracts and "2 active defaults" in contracts
    assert "FAIL" in several
    assert not any(line.split(". ", 1)[-1].startswith("ok   contracts") for line in lines)


@pytest.mark.parametrize("with_provider_account", [False, True])
def test_a_customer_without_reseller_relationship_is_said_first_and_never_mapped(
    world: ScenarioBuilder, start: Any, with_provider_account: bool
) -> None:
    if with_provider_account:
        customer = world.customer(1, account_id=world.account(1), relationship=False)
    else:
        customer = world.customer_without_provider_account(1)
        world.raw["partnerCenter"]["customers"][-1]["relationship"] = False
    box = start(world.scenario())
    result = run_diagnose(services_for(box).diagnose_deps(), DiagnoseRequest(customer))
    first = result["checks"][0]
    assert (first["check"], first["ok"]) == ("partner-center", False)
    assert "no reseller relationship" in first["detail"]
    assert failed_checks(result)[0] is first
    later_fixes = " ".join(c["fix"] for c in result["checks"][1:])
    assert "Create a Provider Account" not in later_fixes
    if not with_provider_account:
        provider_account = next(c for c in result["checks"] if c["check"] == "provider-account")
        assert provider_account["skipped"] is True
        assert provider_account["detail"] == f"not checked: {first['detail']}"
