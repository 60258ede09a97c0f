"""The chart's PrometheusRule through Prometheus's own promtool: `check rules`, then one unit-test
file per alert (tests/packaging/promrules/<alert>.yaml) that fires it with synthetic series, keeps
it quiet for others, and expects its annotations rendered word for word."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

# As tests/packaging/conftest.py's `render` fixture: values in, the chart's objects out.
Render = Callable[[dict[str, Any]], list[dict[str, Any]]]
UNIT_TESTS = Path(__file__).with_name("promrules")
ALERT_FILES = sorted(UNIT_TESTS.glob("*.yaml"))


@pytest.fixture(scope="module")
def rule_groups(render: Render) -> list[dict[str, Any]]:
    """The rule groups of the PrometheusRule the chart renders with its default thresholds."""
    docs = render({"monitoring": {"prometheusRule": {"enabled": True}}})
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


@pytest.fixture(scope="module")
def rules_folder(rule_groups: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rules.yaml (what the Prometheus Operator hands Prometheus) beside the unit-test files."""
    folder = tmp_path_factory.mktemp("promrules")
    (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
    for path in ALERT_FILES:
        shutil.copy(path, folder / path.name)
    return folder


def alerts(groups: list[dict[str, Any]]) -> set[str]:
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def promtool_run(promtool: Path, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], cwd=folder, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_accepts_the_rules(promtool: Path, rules_folder: Path) -> None:
    proc = promtool_run(promtool, rules_folder, "check", "rules", "rules.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_unit_test_file_that_fires_it_and_keeps_it_quiet(
    rule_groups: list[dict[str, Any]],
) -> None:
    assert {p.stem for p in ALERT_FILES} == alerts(rule_groups)
    for path in ALERT_FILES:
        cases = [
            case
            for test in yaml.safe_load(path.read_text())["tests"]
            for case in test["alert_rule_test"]
            if case["alertname"] == path.stem
        ]
        fired = [alert for case in cases for alert in case["exp_alerts"]]
        assert any(not case["exp_alerts"] for case in cases), f"{path.name}: no case where it stays quiet"
        assert fired, f"{path.name}: no case where it fires"
        for alert in fired:
            assert set(alert["exp_annotations"]) == {"summary", "description"}, path.name


@pytest.mark.parametrize("unit_test", [p.name for p in ALERT_FILES])
def test_promtool_unit_test(promtool: Path, rules_folder: Path, unit_test: str) -> None:
    proc = promtool_run(promtool, rules_folder, "test", "rules", unit_test)
    assert proc.returncode == 0, proc.stdout + proc.stderr
