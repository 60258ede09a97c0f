"""The version has one source, the package metadata (pyproject's `version`); all that states it agrees.

`make generate` writes it where metadata cannot be read (the chart, the Dockerfiles); code reads it
with importlib.metadata. These checks read each file the way its own tool would, not through the
generator, so a generator that wrote the wrong line would fail here too.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
import yaml

import llmgw_operator
import llmgw_proxy
from llmgw_operator import cli as operator_cli
from llmgw_operator import handlers
from llmgw_proxy import cli as proxy_cli

ROOT = Path(__file__).resolve().parents[2]
VERSION = metadata.version("llmgw")


def test_the_installed_metadata_is_pyprojects_version() -> None:
    # An editable install keeps the version it was installed with; `make` reinstalls on any
    # pyproject change, so a mismatch means the venv was made some other way.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == VERSION


def test_both_packages_report_the_metadata_version() -> None:
    assert llmgw_proxy.__version__ == VERSION
    assert llmgw_operator.__version__ == VERSION


def test_the_charts_version_and_app_version_are_the_packages() -> None:
    chart = yaml.safe_load((ROOT / "helm/llmgw/Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION)


@pytest.mark.parametrize("dockerfile", ["Dockerfile.proxy", "Dockerfile.operator"])
def test_each_images_version_label_defaults_to_the_packages(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    assert 'org.opencontainers.image.version="${VERSION}"' in text
    assert re.findall(r"^ARG VERSION=(\S+)$", text, re.MULTILINE) == [VERSION]


@pytest.mark.parametrize(
    ("main", "prog"),
    [
        pytest.param(proxy_cli.main, "llmgw-proxy", id="proxy"),
        pytest.param(operator_cli.main, "llmgw-operator", id="operator"),
    ],
)
def test_the_command_prints_its_version_and_exits_0(
    main: Callable[[list[str]], int], prog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out == f"{prog} {VERSION}\n"


def test_the_operator_defaults_to_the_sidecar_image_of_its_own_version() -> None:
    repository, _, tag = handlers.DEFAULT_PROXY_IMAGE.rpartition(":")
    assert (repository, tag) == ("ghcr.io/llmgw/llmgw-proxy", VERSION)
