"""The local sandbox: emulators of Entra ID tokens, Partner Center and the Dataverse Web API,
served over loopback HTTPS with fault injection. Start it with `Sandbox.start(scenario)`.

Package data: the built-in scenarios (scenarios/*.json) are read with importlib.resources, so
they must ship inside the package. The Functions deployment copies the source tree as it is; if
the project is ever built as a wheel, list `work365_fn/sandbox/scenarios/*.json` as package data.
"""

from .runner import Sandbox
from .scenario import Scenario, ScenarioError

__all__ = ["Sandbox", "Scenario", "ScenarioError"]
