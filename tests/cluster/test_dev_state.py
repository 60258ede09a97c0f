"""`llmgw-dev cluster` answers a broken or foreign state file with a message, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize(
    "state",
    [
        pytest.param({"name": "x", "components": [{"name": "etcd", "pid": 1}]}, id="older-version"),
        pytest.param("not json", id="garbage"),
    ],
)
def test_status_on_an_unreadable_state_file_names_the_file_and_exits_1(
    tmp_path: Path, state: dict[str, Any] | str
) -> None:
    cache = tmp_path / "cache"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "state.json").write_text(state if isinstance(state, str) else json.dumps(state))
    (cache / "clusters").mkdir(parents=True)
    pointer = cache / "clusters" / "broken.json"
    pointer.write_text(json.dumps({"data_dir": str(data_dir)}))

    proc = subprocess.run(
        [sys.executable, "-m", "llmgw_dev.cli", "cluster", "status", "--name", "broken"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "LLMGW_CACHE": str(cache)},
    )  # fmt: skip

    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert str(pointer) in proc.stderr
    assert "unreadable or from another version" in proc.stderr
