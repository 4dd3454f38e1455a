"""Fixtures of the conformance tests: a strict `responses` mock for the clients, and one sandbox
(over loopback HTTPS, real tokens) for the emulators, reseeded before each test that uses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import responses

from work365_fn.sandbox import Sandbox
from work365_fn.sandbox.partner_center import PC_AUDIENCE
from work365_fn.sandbox.scenario import Scenario

from .fixtures.dataverse import ODATA_HEADERS
from .seed import Service, conformance_scenario, token_for

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that drive the sandbox are integration tests (the `integration` marker)."""
    for item in items:
        if HERE in item.path.parents and "sandbox" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


# ---- clients through `responses` ---------------------------------------------------------------


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    """What the retry policy slept, instead of sleeping."""
    return []


# ---- the sandbox ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def scenario() -> Scenario:
    return conformance_scenario()


@pytest.fixture(scope="session")
def sandbox(scenario: Scenario) -> Iterator[Sandbox]:
    with Sandbox.start(scenario) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_sandbox(request: pytest.FixtureRequest) -> None:
    """Each test that uses the sandbox starts from the scenario: rows, faults and counts."""
    if "sandbox" not in request.fixturenames:
        return
    running: Sandbox = request.getfixturevalue("sandbox")
    seeded: Scenario = request.getfixturevalue("scenario")
    running.faults.clear()
    running.dataverse.seed(seeded)
    running.partner_center.seed(seeded)
    running.reset_counts()


@pytest.fixture(scope="session")
def http(sandbox: Sandbox) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify
        session.verify = sandbox.ca_bundle
        yield session


@pytest.fixture(scope="session")
def dataverse(sandbox: Sandbox, http: requests.Session) -> Service:
    return Service(
        http,
        f"{sandbox.url}/api/data/v9.2/",
        token_for(sandbox, http, sandbox.url),
        ODATA_HEADERS,
    )


@pytest.fixture(scope="session")
def partner_center(sandbox: Sandbox, http: requests.Session) -> Service:
    return Service(
        http,
        f"{sandbox.url}/v1/",
        token_for(sandbox, http, PC_AUDIENCE),
        {"Accept": "application/json"},
    )
