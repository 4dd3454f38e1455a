"""infra/ holds together without Azure:

- checkov's Azure policies pass over every Bicep file, and each suppressed check says why (a
  `// checkov:skip=CKV_...:reason` comment inside the resource body);
- the settings parity: under each parameter set below, the app settings infra/main.bicep gives
  the Function App (evaluated from the Bicep that pycep parses) are enough for
  `Settings.from_env` (every setting it needs is set by the template or optional with a
  default), and every one of them is read by the code, apart from the platform's own settings;
- azure-functions-doctor finds no failed check in the deployed package for Flex Consumption,
  fed a JSON rendering of the Function App (it does not parse Bicep) so that its Flex rules run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

import work365_fn.settings as settings_module
from work365_fn.errors import InvalidSettingError, MissingSettingError
from work365_fn.rules.schedule import schedule_period
from work365_fn.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
BIN = Path(sys.executable).parent

GUID = "2f6c1d9e-3b4a-4c5d-8e7f-9a0b1c2d3e4f"
# Values of the parameters without a default (and of the ones whose default Azure computes):
# what an administrator passes to `az deployment group create`.
PARAMETER_SAMPLES: dict[str, str] = {
    "tenantId": "5a4f0e1c-8b2d-4c3e-9f6a-7b8c9d0e1f2a",
    "clientId": "3c2b1a09-8f7e-4d6c-b5a4-938271605f4e",
    "dataverseUrl": "https://contoso.crm.dynamics.com",
}
# Values Azure fills in at deployment (resource properties, generated names), by app setting.
AZURE_FILLED: dict[str, str] = {
    "AzureWebJobsStorage__accountName": "stw365abcdefghijklm",
    "AzureWebJobsStorage__blobServiceUri": "https://stw365abcdefghijklm.blob.core.windows.net",
    "AzureWebJobsStorage__queueServiceUri": "https://stw365abcdefghijklm.queue.core.windows.net",
    "AzureWebJobsStorage__tableServiceUri": "https://stw365abcdefghijklm.table.core.windows.net",
    "AzureWebJobsStorage__clientId": GUID,
    "WORK365_MANAGED_IDENTITY_CLIENT_ID": GUID,
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-"
    "000000000000;IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": f"ClientId={GUID};Authorization=AAD",
}
# What a Key Vault reference resolves to on the instance, by secret name.
SECRETS: dict[str, str] = {
    "work365-client-secret": "app-registration-secret-value",
    "work365-pc-client-secret": "partner-center-secret-value",
    "work365-run-signing-key": "k" * 48,
    "work365-notify-url": "https://prod-00.westeurope.logic.azure.com/workflows/1?sig=abc",
}
# Set by the platform in the process environment (never by the template).
PLATFORM_RUNTIME: dict[str, str] = {
    "IDENTITY_ENDPOINT": "http://localhost:8081/msi/token",
    "IDENTITY_HEADER": "platform-header-secret",
    "WEBSITE_HOSTNAME": "work365-abc.azurewebsites.net",
}
# App settings the template sets for the platform, not for the code: the Functions host's and
# Application Insights' own (the host reads AzureWebJobsStorage__* too; the code reads the rest).
PLATFORM_SETTINGS = frozenset(
    {
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        "AzureWebJobsStorage__tableServiceUri",
    }
)
# Flex Consumption refuses or ignores these; the issue (15) says never to set them.
FLEX_FORBIDDEN = (
    "FUNCTIONS_WORKER_RUNTIME",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_LOAD_CERTIFICATES",
    "TZ",
    "WEBSITE_TIME_ZONE",
    "AzureWebJobsStorage",  # a connection string: the account key
)
# Parameter sets a deployment may use: the secretless default, secrets, a separate Partner Center
# registration, every optional feature on, existing resources.
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults (managed identity, federated)": {},
    "client secrets": {
        "dataverseAuth": "client-credentials",
        "partnerCenterAuth": "client-credentials",
        "clientSecretExpires": "2027-01-31",
    },
    "separate Partner Center app with a secret": {
        "partnerCenterAuth": "client-credentials",
        "partnerCenterClientId": "7d3e2f1a-0b9c-4d8e-a7f6-5e4d3c2b1a09",
        "partnerCenterTenantId": "1b2c3d4e-5f60-4718-829a-0b1c2d3e4f50",
        "partnerCenterClientSecretExpires": "2027-02-28",
    },
    "every option": {
        "createMissing": True,
        "writeNotes": True,
        "associateSince": "2026-01-01T00:00:00Z",
        "landingRules": '{"version": 1, "rules": []}',
        "schemaFile": "schema.json",
        "notify": True,
        "notifyFormat": "json",
        "reportUrl": "https://contoso.sharepoint.com/sites/billing/report",
        "maximumInstanceCount": 4,
    },
    "existing resources": {
        "existingStorageAccountName": "contosostorage",
        "existingKeyVaultName": "contoso-vault",
        "existingLogAnalyticsWorkspaceId": "/subscriptions/x/resourceGroups/y/providers/"
        "Microsoft.OperationalInsights/workspaces/z",
    },
}


class _AzureValue(Exception):
    """A value only Azure knows at deployment (a resource property, a generated name)."""


class BicepTemplate:
    """Just enough of Bicep's expression language to evaluate infra/main.bicep's app settings
    from pycep's parse: literals, parameters, variables, interpolation, `==`, `&&`, `||`, `!`,
    `?:`, and the functions `empty`, `string`, `union`, `replace`."""

    def __init__(self, parsed: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        self.parameters: Mapping[str, Any] = parsed["parameters"]
        self.variables: Mapping[str, Any] = parsed["variables"]
        self.resources: Mapping[str, Any] = parsed["resources"]
        unknown = set(params) - set(self.parameters)
        assert not unknown, f"no such parameter in infra/main.bicep: {sorted(unknown)}"
        self.params = dict(params)

    def app_settings(self) -> dict[str, Any]:
        """The Function App's app settings: name -> value (an `_AzureValue` where Azure decides)."""
        configs = [
            r["config"]
            for r in self.resources.values()
            if r["type"] == "Microsoft.Web/sites/config"
            and r["config"].get("name") == "appsettings"
        ]
        assert len(configs) == 1, "infra/main.bicep should set the app settings in one config"
        settings = self.value(configs[0]["properties"])
        assert isinstance(settings, dict)
        return settings

    def parameter(self, name: str) -> Any:
        if name in self.params:
            return self.params[name]
        default = self.parameters[name].get("default")
        if isinstance(default, (str, bool, int, dict)) and not _is_expression(default):
            return default
        if name in PARAMETER_SAMPLES:
            return PARAMETER_SAMPLES[name]
        raise AssertionError(
            f"parameter {name} of infra/main.bicep has no literal default: add a sample value "
            "to PARAMETER_SAMPLES in tests/unit/test_infra.py"
        )

    def value(self, node: Any) -> Any:
        if isinstance(node, bool | int) or node is None:
            return node
        if isinstance(node, str):
            return self._text(node)
        if isinstance(node, dict) and "operator" in node:
            return self._operator(node["operator"])
        if isinstance(node, dict) and "function" in node:
            return self._function(node["function"])
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, item in node.items():
                try:
                    out[key] = self.value(item)
                except _AzureValue as exc:
                    out[key] = exc
            return out
        raise AssertionError(f"cannot evaluate {node!r}")

    def _text(self, text: str) -> Any:
        # pycep gives identifiers and string literals alike as strings: a name is a reference.
        if text in self.parameters:
            return self.parameter(text)
        if text in self.variables:
            return self.value(self.variables[text]["value"])
        if text.startswith("@Microsoft.KeyVault("):
            match = re.search(r"/secrets/([A-Za-z0-9-]+)/?\)$", text)
            assert match, f"a Key Vault reference without a secret name: {text}"
            return KeyVaultReference(match.group(1))
        return re.sub(r"\$\{([^}]*)\}", lambda m: str(self._reference(m.group(1))), text)

    def _reference(self, expression: str) -> Any:
        if expression in self.parameters or expression in self.variables:
            result = self._text(expression)
            if isinstance(result, _AzureValue):
                raise result
            return result
        raise _AzureValue(expression)

    def _operator(self, op: Mapping[str, Any]) -> Any:
        kind, operands = op["type"], op["operands"]
        if kind == "conditional":
            branch = "true_value" if self.value(operands["condition"]) else "false_value"
            return self.value(operands[branch])
        if kind == "not":
            return not self.value(operands["bool_value"])
        if kind in ("equals", "and", "or"):
            left, right = self.value(operands["operand_1"]), self.value(operands["operand_2"])
            return {"equals": left == right, "and": left and right, "or": left or right}[kind]
        raise _AzureValue(kind)  # property access and the like: a resource's property

    def _function(self, fn: Mapping[str, Any]) -> Any:
        kind, args = fn["type"], list((fn.get("parameters") or {}).values())
        if kind == "empty":
            return not self.value(args[0])
        if kind == "string":
            return str(self.value(args[0]))  # as ARM's string(): True, False, 3
        if kind == "union":
            merged: dict[str, Any] = {}
            for arg in args:
                part = self.value(arg)
                assert isinstance(part, dict), f"union() of a non-object: {arg!r}"
                merged.update(part)
            return merged
        raise _AzureValue(kind)


@dataclass(frozen=True)
class KeyVaultReference:
    """`@Microsoft.KeyVault(SecretUri=.../secrets/<name>/)`: the platform puts the secret there."""

    secret: str


def _is_expression(node: Any) -> bool:
    return isinstance(node, dict) and ("function" in node or "operator" in node)


@pytest.fixture(scope="module")
def parsed() -> dict[str, Any]:
    result: dict[str, Any] = BicepParser().parse(file_path=MAIN)
    return result


def instance_environment(settings: Mapping[str, Any]) -> dict[str, str]:
    """What the code sees on an instance: Key Vault references resolved, Azure's values filled
    in, and the platform's own variables."""
    env = dict(PLATFORM_RUNTIME)
    for key, value in settings.items():
        if isinstance(value, KeyVaultReference):
            assert value.secret in SECRETS, f"{key}: a reference to an unknown secret"
            env[key] = SECRETS[value.secret]
        elif isinstance(value, _AzureValue):
            assert key in AZURE_FILLED, (
                f"{key}: a value Azure fills in ({value}); add a sample to AZURE_FILLED"
            )
            env[key] = AZURE_FILLED[key]
        else:
            env[key] = value if isinstance(value, str) else json.dumps(value)
    return env


class _ReadLog(Mapping[str, str]):
    """The environment as `Settings.from_env` reads it, noting every key it asks for."""

    def __init__(self, env: Mapping[str, str], asked: set[str]) -> None:
        self._env, self._asked = env, asked

    def __getitem__(self, key: str) -> str:
        self._asked.add(key)
        return self._env[key]

    def get(self, key: str, default: Any = None) -> Any:
        self._asked.add(key)
        return self._env.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self._asked.add(key)
        return key in self._env

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


def read_settings(
    monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]
) -> tuple[Settings, set[str]]:
    """`Settings.from_env(env)` and the names of every setting it asked for."""
    asked: set[str] = set()

    class RecordingReader(settings_module._Reader):
        def __init__(self, source: Mapping[str, str]) -> None:
            super().__init__(_ReadLog(source, asked))

    with monkeypatch.context() as patch:
        patch.setattr(settings_module, "_Reader", RecordingReader)
        return Settings.from_env(env), asked


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_template_sets_what_the_code_reads(
    scenario: str, parsed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = BicepTemplate(parsed, SCENARIOS[scenario]).app_settings()
    env = instance_environment(settings)
    try:
        _, asked = read_settings(monkeypatch, env)
    except MissingSettingError as exc:
        missing = [m.key for m in getattr(exc, "missing", (exc,))]
        pytest.fail(
            f"[{scenario}] Settings.from_env needs {', '.join(missing)}, which infra/main.bicep "
            "does not set: add each to the app settings of infra/main.bicep (a parameter, or a "
            "Key Vault reference for a secret), or give it a default in work365_fn/settings.py"
        )
    except InvalidSettingError as exc:
        pytest.fail(f"[{scenario}] infra/main.bicep sets a value the code refuses: {exc}")
    unread = sorted(set(settings) - asked - PLATFORM_SETTINGS)
    assert not unread, (
        f"[{scenario}] infra/main.bicep sets {', '.join(unread)}, which Settings.from_env never "
        "reads: remove it from the template, or (a platform setting) add it to PLATFORM_SETTINGS"
    )


def test_the_template_sets_no_setting_flex_consumption_refuses(parsed: dict[str, Any]) -> None:
    for scenario, params in SCENARIOS.items():
        settings = BicepTemplate(parsed, params).app_settings()
        assert not set(FLEX_FORBIDDEN) & set(settings), scenario


def test_the_no_success_alert_window_covers_the_default_schedule(parsed: dict[str, Any]) -> None:
    """scheduleIntervalHours is given by hand (Bicep cannot read NCRONTAB): its default must be
    the longest gap of syncSchedule's default, as the health check computes it."""
    schedule = parsed["parameters"]["syncSchedule"]["default"]
    hours = parsed["parameters"]["scheduleIntervalHours"]["default"]
    assert schedule_period(schedule) <= timedelta(hours=hours), (schedule, hours)
    assert schedule_period("0 0 6 * * 1-5") > timedelta(hours=24)  # the documented limit


def test_secretless_by_default_and_secrets_only_as_key_vault_references(
    parsed: dict[str, Any],
) -> None:
    default = BicepTemplate(parsed, {}).app_settings()
    assert default["WORK365_DATAVERSE_AUTH"] == "managed-identity"
    assert default["WORK365_PC_AUTH"] == "federated"
    assert default["AzureWebJobsStorage__credential"] == "managedidentity"
    assert "WORK365_CLIENT_SECRET" not in default
    for scenario, params in SCENARIOS.items():
        settings = BicepTemplate(parsed, params).app_settings()
        for key in settings:
            if key.endswith(("_SECRET", "_SIGNING_KEY", "NOTIFY_URL")):
                assert isinstance(settings[key], KeyVaultReference), (scenario, key)


def test_the_scale_limit_and_the_request_budget_split_agree(parsed: dict[str, Any]) -> None:
    settings = BicepTemplate(parsed, {"maximumInstanceCount": 3}).app_settings()
    assert settings["WORK365_MAX_INSTANCES"] == "3"


def test_each_key_vault_reference_names_a_secret_the_template_can_write(
    parsed: dict[str, Any],
) -> None:
    written = set()
    for module in parsed["modules"].values():
        if module["detail"]["path"] == "secret.bicep":
            body = module["config"].get("config", module["config"])  # conditional: nested
            written.add(body["params"]["name"])
    referenced = {
        value.secret
        for params in SCENARIOS.values()
        for value in BicepTemplate(parsed, params).app_settings().values()
        if isinstance(value, KeyVaultReference)
    }
    assert referenced and referenced <= written


def test_the_secretless_scenario_fails_without_the_identity_endpoint(
    parsed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parity check can fail: without the platform's identity endpoint the default
    (secretless) settings are not enough, and the error names what is missing."""
    env = instance_environment(BicepTemplate(parsed, {}).app_settings())
    del env["IDENTITY_ENDPOINT"]
    with pytest.raises(MissingSettingError, match="IDENTITY_ENDPOINT"):
        read_settings(monkeypatch, env)


# ---- checkov ----------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is not installed: pip install -r requirements-dev.txt"
    return found


def run_checkov(directory: Path) -> dict[str, Any]:
    """checkov's Bicep checks over `directory`, offline (--skip-download: no policy download,
    no call to its vendor)."""
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_TELEMETRY": "TRUE"}
    done = subprocess.run(
        [
            _tool("checkov"),
            "-d",
            str(directory),
            "--framework",
            "bicep",
            "--skip-download",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    (bicep,) = [r for r in reports if r.get("check_type") == "bicep"]
    result: dict[str, Any] = bicep
    return result


# A storage account with TLS 1.0 and an open firewall, scanned beside infra/ (one checkov run):
# proves the checks run and can fail.
INSECURE_PROBE = (
    "resource probe 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n"
    "  name: 'insecureprobe'\n  location: 'westeurope'\n  kind: 'StorageV2'\n"
    "  sku: { name: 'Standard_LRS' }\n"
    "  properties: { allowBlobPublicAccess: true, minimumTlsVersion: 'TLS1_0' }\n}\n"
)


@pytest.fixture(scope="module")
def checkov_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """checkov's results of infra/ and of the insecure probe, by file name."""
    scan = tmp_path_factory.mktemp("checkov") / "infra"
    shutil.copytree(INFRA, scan)
    (scan / "zz_insecure_probe.bicep").write_text(INSECURE_PROBE)
    report = run_checkov(scan)
    assert report["summary"]["parsing_errors"] == 0, report["results"].get("parsing_errors")
    probe = {
        kind: [c for c in checks if Path(c["file_path"]).name == "zz_insecure_probe.bicep"]
        for kind, checks in report["results"].items()
    }
    infra = {
        kind: [c for c in checks if Path(c["file_path"]).name != "zz_insecure_probe.bicep"]
        for kind, checks in report["results"].items()
    }
    return {"infra": infra, "probe": probe}


@pytest.fixture(scope="module")
def checkov_report(checkov_reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"results": checkov_reports["infra"]}


def test_checkov_passes_every_bicep_file(checkov_report: dict[str, Any]) -> None:
    results = checkov_report["results"]
    failed = [
        f"{c['check_id']} {c['check_name']} ({c['file_path']}: {c['resource']})"
        for c in results.get("failed_checks", [])
    ]
    assert not failed, (
        "checkov failed (fix it, or skip it in the resource body with a reason):\n"
        + "\n".join(failed)
    )
    scanned = {
        Path(c["file_path"]).name
        for kind in ("passed_checks", "skipped_checks")
        for c in results.get(kind, [])
    }
    assert {"main.bicep", "storage.bicep", "keyvault.bicep", "secret.bicep"} <= scanned
    assert len(results.get("passed_checks", [])) >= 20


def test_every_suppressed_check_says_why(checkov_report: dict[str, Any]) -> None:
    skipped = checkov_report["results"].get("skipped_checks", [])
    assert skipped, "expected the documented skips (Flex Consumption without a VNet)"
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.split()) >= 5, f"{check['check_id']} in {check['file_path']}: no reason"


def test_checkov_catches_an_insecure_template(
    checkov_reports: dict[str, dict[str, Any]],
) -> None:
    """The checkov test can fail: the probe's TLS 1.0 and open firewall are reported."""
    failed = {c["check_id"] for c in checkov_reports["probe"].get("failed_checks", [])}
    assert {"CKV_AZURE_44", "CKV_AZURE_35"} <= failed


# ---- azure-functions-doctor -------------------------------------------------------------------


# The doctor's Flex Consumption rules (azure-functions-doctor 0.23.1, assets/rules/v2.json).
# It reads JSON infra files only (ARM templates, parameters); of a .bicep file it only greps
# `name: '...'\n value: '...'` pairs, so without a JSON rendering its runtime and deployment
# storage rules SKIP and its deprecated-settings rule passes on an empty list.
DOCTOR_FLEX_RULES = (
    "check_flex_runtime_config",
    "check_flex_deprecated_settings",
    "check_flex_deployment_storage",
)


def render_for_doctor(parsed: dict[str, Any], extra_settings: Mapping[str, str]) -> dict[str, Any]:
    """The Function App of infra/main.bicep as an ARM resource: its `functionAppConfig`
    (runtime, deployment storage and its authentication) and its app settings (the default
    parameter set), evaluated from pycep's parse; what only Azure knows becomes a sample."""
    template = BicepTemplate(parsed, {})
    (site,) = [r for r in parsed["resources"].values() if r["type"] == "Microsoft.Web/sites"]
    config = template.value(site["config"]["properties"]["functionAppConfig"])

    def concrete(node: Any) -> Any:
        if isinstance(node, _AzureValue):
            return f"https://azure.example/{node}"  # a URL or resource id Azure fills in
        if isinstance(node, dict):
            return {k: concrete(v) for k, v in node.items()}
        return node

    settings = {**instance_environment(template.app_settings()), **extra_settings}
    return {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "resources": [
            {
                "type": "Microsoft.Web/sites",
                "kind": "functionapp,linux",
                "properties": {
                    "functionAppConfig": concrete(config),
                    "siteConfig": {
                        "appSettings": [{"name": k, "value": v} for k, v in settings.items()]
                    },
                },
            }
        ],
    }


def run_doctor(tmp_path: Path, parsed: dict[str, Any], **extra_settings: str) -> dict[str, Any]:
    """The doctor over the package `scripts/package` builds (what gets deployed), with infra/
    and its JSON rendering beside it so the doctor reads the Flex Consumption configuration."""
    zip_path = tmp_path / "app.zip"
    subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(ROOT / "scripts" / "package"), str(zip_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    app = tmp_path / "app"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(app)
    shutil.copytree(INFRA, app / "infra")
    rendering = render_for_doctor(parsed, extra_settings)
    (app / "infra" / "main.rendered.json").write_text(json.dumps(rendering, indent=2))
    out = tmp_path / "doctor.json"
    done = subprocess.run(
        [
            _tool("azure-functions-doctor"),
            "doctor",
            "--path",
            str(app),
            "--hosting-plan",
            "flex-consumption",
            "--target-python",
            "3.11",
            "--format",
            "json",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.exists(), done.stdout[-2000:] + done.stderr[-2000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def doctor_items(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["rule_id"]: i for section in report["results"] for i in section.get("items", [])}


def test_azure_functions_doctor_finds_nothing_wrong_for_flex_consumption(
    tmp_path: Path, parsed: dict[str, Any]
) -> None:
    report = run_doctor(tmp_path, parsed)
    items = doctor_items(report)
    assert len(items) > 20
    failed = [f"{k}: {i.get('value')}" for k, i in items.items() if i["status"] == "fail"]
    assert not failed, "\n".join(failed)
    assert report["metadata"]["hosting_plan"] == "flex-consumption"
    # Each Flex rule ran on the rendering (none skipped) and passed.
    assert {rule: items[rule]["status"] for rule in DOCTOR_FLEX_RULES} == dict.fromkeys(
        DOCTOR_FLEX_RULES, "pass"
    ), {rule: items[rule].get("value") for rule in DOCTOR_FLEX_RULES}


def test_azure_functions_doctor_flags_a_setting_flex_consumption_ignores(
    tmp_path: Path, parsed: dict[str, Any]
) -> None:
    """The doctor's check can fail: the same rendering plus FUNCTIONS_WORKER_RUNTIME."""
    items = doctor_items(run_doctor(tmp_path, parsed, FUNCTIONS_WORKER_RUNTIME="python"))
    flagged = items["check_flex_deprecated_settings"]
    # A non-gating finding: the doctor reports it as "warn", which the test above refuses.
    assert flagged["status"] == "warn" and "FUNCTIONS_WORKER_RUNTIME" in flagged["value"]
