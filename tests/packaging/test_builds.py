"""Telling the pure build from the compiled one, as the image, CI and the benchmark do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmgw_dev import builds

ROOT = Path(__file__).resolve().parents[2]
SO = ".cpython-311-x86_64-linux-gnu.so"


@pytest.mark.parametrize(
    ("files", "build"),
    [
        pytest.param({"p": "/x/p/__init__" + SO, "p.a": "/x/p/a" + SO}, "compiled", id="all-extensions"),
        pytest.param({"p": "/x/p/__init__.py", "p.a": "/x/p/a.py"}, "pure", id="all-sources"),
        pytest.param({"p": "/x/p/__init__" + SO, "p.a": "/x/p/a.py"}, "mixed", id="one-source-left"),
        pytest.param({"p": "/x/p/__init__.abi3.so", "p.a": "/x/p/a.so"}, "compiled", id="other-suffixes"),
    ],
)
def test_names_the_build_by_where_each_module_came_from(files: dict[str, str], build: str) -> None:
    assert builds.build(files) == build


def test_lists_the_modules_that_imported_as_pure_python() -> None:
    files = {"p": "/x/p/__init__" + SO, "p.b": "/x/p/b.py", "p.a": "/x/p/a.py"}
    assert builds.pure_modules(files) == ["p.a", "p.b"]


def test_the_checkout_imports_every_policy_module_from_its_sources() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-m", "llmgw_dev.builds"], capture_output=True, text=True, env=env, check=True
    )
    report = json.loads(proc.stdout)
    sources = {p.stem for p in (ROOT / "proxy" / "llmgw_proxy" / "policies").glob("*.py")}
    expected = {f"{builds.PACKAGE}.{name}" for name in sources - {"__init__"}} | {builds.PACKAGE}
    assert report["build"] == "pure"
    assert set(report["modules"]) == expected
