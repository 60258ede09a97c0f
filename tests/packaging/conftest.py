"""Fixtures for the image and chart tests: pinned helm and kubeconform, a chart renderer,
and kubeconform schemas written from the API server under test."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubeschemas
import pytest
import yaml
from clusterkit import ClusterHandle

from llmgw_dev import binaries

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "llmgw"
RELEASE = "r"
NAMESPACE = "llmgw-system"

Render = Callable[[dict[str, Any]], list[dict[str, Any]]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: builds a venv or renders the chart; still in the default suite")


@pytest.fixture(scope="session")
def helm() -> Path:
    return binaries.ensure("helm")


@pytest.fixture(scope="session")
def kubeconform() -> Path:
    return binaries.ensure("kubeconform")


@pytest.fixture(scope="session")
def helm_template(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """`helm template` of the chart with the given values; the text, or AssertionError on failure."""
    folder = tmp_path_factory.mktemp("values")

    def template(values: dict[str, Any], *extra: str, check: bool = True) -> str:
        values_file = folder / f"values-{len(list(folder.iterdir()))}.yaml"
        values_file.write_text(yaml.safe_dump(values))
        proc = subprocess.run(
            [
                str(helm),
                "template",
                RELEASE,
                str(CHART),
                "--namespace",
                NAMESPACE,
                "-f",
                str(values_file),
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check:
            assert proc.returncode == 0, proc.stderr
            return proc.stdout
        assert proc.returncode != 0, "helm template accepted values it should refuse"
        return proc.stderr

    return template


@pytest.fixture(scope="session")
def render(helm_template: Callable[..., str]) -> Render:
    """The chart's objects for the given values, parsed."""

    def render(values: dict[str, Any]) -> list[dict[str, Any]]:
        return [doc for doc in yaml.safe_load_all(helm_template(values)) if doc]

    return render


@pytest.fixture(scope="session")
def kubeconform_schemas(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> str:
    """kubeconform's -schema-location for the cluster's own API plus the chart's CRDs."""
    proc: subprocess.CompletedProcess[str] = cluster.kubectl("get", "--raw", "/openapi/v2")
    schemas = kubeschemas.from_openapi_v2(json.loads(proc.stdout))
    files = sorted((CHART / "crds").glob("*.yaml"))
    crds = [doc for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]
    schemas.update(kubeschemas.from_crds(crds))
    folder = kubeschemas.write(schemas, tmp_path_factory.mktemp("kubeconform-schemas"))
    return str(kubeschemas.location_template(folder))
