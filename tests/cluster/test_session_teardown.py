"""A pytest run stopped with SIGTERM still stops the control plane its session started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llmgw_dev import binaries
from llmgw_dev import cluster as cluster_mod

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
TESTS = Path(__file__).resolve().parents[1]

# Says when its session cluster is up, then holds it until its stdin closes.
HOLDING_TEST = """
import os, sys

def test_holds_the_session_cluster(cluster):
    print("holding", os.getpid(), flush=True)
    sys.stdin.read()
"""


def test_sigterm_tears_the_session_cluster_down(tmp_path: Path) -> None:
    # The child run starts its own local control plane whatever this run's --cluster is;
    # it only needs the binaries, which it would otherwise spend minutes building.
    missing = [b for b in cluster_mod.BINARIES if binaries.find(b) is None]
    if missing:
        pytest.skip(f"no built {', '.join(missing)} to start a local control plane with: run `make binaries`")
    (tmp_path / "test_hold.py").write_text(HOLDING_TEST)
    # The repository's conftest, loaded as a plugin: its `cluster` fixture and its signal handling.
    pytest_args = ["-q", "-s", "-p", "conftest", "-p", "no:cacheprovider", "--cluster=local", "test_hold.py"]
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", *pytest_args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert run.stdout is not None
    started: cluster_mod.Cluster | None = None
    try:
        seen = []
        for line in run.stdout:  # ends early if the child run fails before holding
            seen.append(line)
            if line.startswith("holding "):
                started = cluster_mod.Cluster.load(f"pytest-{line.split()[1]}")
                break
        assert started is not None, "".join(seen)
        assert all(started.alive().values())

        run.send_signal(signal.SIGTERM)
        rest, _ = run.communicate(timeout=60)

        assert not any(started.alive().values()), rest
        assert not started.data_dir.exists()
        assert run.returncode == pytest.ExitCode.INTERRUPTED, rest
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        if started is not None and any(started.alive().values()):
            cluster_mod.down(started)
