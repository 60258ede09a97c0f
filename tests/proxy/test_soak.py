"""The fault soak (``llmgw_dev.soak``) for 60 s: every request ends readably, none hangs, RSS holds.

5xx, resets, stalls and mid-stream cuts mixed, streamed and plain requests
through a real ``llmgw-proxy`` process with a 3 s deadline; ``make soak`` runs
the same core for 10 minutes and prints its figures. What is asserted are
outcomes: no request cut without an error, ended short, answered without an
OpenAI-shaped error, or left without an end (30 s past its deadline). The
sidecar's memory growth is printed against its 5 % target, as ``make soak`` does.
"""

from __future__ import annotations

import pathlib

import pytest

from llmgw_dev import soak

pytestmark = pytest.mark.slow

DURATION = 60.0


async def test_a_minute_of_mixed_upstream_faults_ends_every_request_readably_and_rss_holds(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = await soak.soak(DURATION, tmp_path)
    with capsys.disabled():
        print("\n" + "\n".join(figures.lines()))
    assert figures.failed == 0, figures.lines()
    assert set(figures.outcomes) <= {soak.OK, soak.ERROR_ANSWER, soak.IN_BAND}, figures.lines()
    # The mix reached every way of ending, or the soak proved less than it says.
    assert all(figures.outcomes[o] > 0 for o in (soak.OK, soak.ERROR_ANSWER, soak.IN_BAND)), figures.lines()
    # RSS growth is printed above against its target, not asserted: a memory target is a
    # benchmark figure (make soak runs it for 10 minutes), and a loaded machine moves it.
    assert figures.rss_end_kb > 0 and figures.rss_trend, figures.lines()
