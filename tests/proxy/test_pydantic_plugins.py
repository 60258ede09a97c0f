"""pydantic's plugins off in the sidecar process, without importlib.metadata (server/pydantic_plugins.py).

Each case runs in a fresh interpreter: ``install`` acts before pydantic builds
its first model, and this test process built many long ago.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

BUILD_A_MODEL = (
    "import json, os, sys\n"
    "from llmgw_proxy.server import pydantic_plugins\n"
    "installed = pydantic_plugins.install()\n"
    "import pydantic\n"
    "class M(pydantic.BaseModel):\n"
    "    x: int\n"
    "from pydantic.plugin import _loader\n"
    "switch = os.environ.get('PYDANTIC_DISABLE_PLUGINS')\n"
    "print(json.dumps({'installed': installed, 'x': M(x='3').x, 'plugins': list(_loader.get_plugins()),"
    " 'metadata': 'importlib.metadata' in sys.modules, 'switch': switch}))\n"
)


def _run(code: str, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**clean, **env}
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_models_build_and_validate_with_no_plugins_and_no_importlib_metadata() -> None:
    assert _run(BUILD_A_MODEL) == {
        "installed": True,
        "x": 3,
        "plugins": [],
        "metadata": False,
        "switch": "__all__",
    }


@pytest.mark.parametrize("value", ["1", "true"])
def test_the_other_all_off_values_are_honoured_the_same_way(value: str) -> None:
    out = _run(BUILD_A_MODEL, PYDANTIC_DISABLE_PLUGINS=value)
    assert (out["installed"], out["metadata"], out["switch"]) == (True, False, value)


def test_a_switch_that_lets_plugins_load_keeps_pydantics_own_loader() -> None:
    out = _run(BUILD_A_MODEL, PYDANTIC_DISABLE_PLUGINS="")
    # pydantic's loader scanned the installed distributions' entry points, as it does by default.
    assert (out["installed"], out["x"], out["metadata"], out["switch"]) == (False, 3, True, "")


def test_pydantics_own_loader_answers_the_same_when_the_switch_is_on() -> None:
    code = (
        "import json\nfrom pydantic.plugin import _loader\nprint(json.dumps(list(_loader.get_plugins())))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__"},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
