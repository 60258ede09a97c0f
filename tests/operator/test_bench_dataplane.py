"""The data-plane benchmark runs the production poller against real loopback /status servers."""

from __future__ import annotations

import json

import pytest

from llmgw_dev import bench_dataplane


def test_a_small_run_polls_every_server_and_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_dataplane.main(["--pods", "20", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    figures = json.loads(out[: out.rindex("}") + 1])
    assert (figures["pods"], figures["reporting"], figures["unreporting"]) == (20, 20, 0)
    assert figures["status_writes"] == 1  # the second round saw the same reports: nothing to write
    assert "20 pods: one round takes" in out
