"""The config rewritten every 100 ms under load, through a real ``llmgw-proxy`` process.

``llmgw_dev.reload_load`` for about 12 s (``make soak`` runs it for 60 s):
concurrent ``openai`` callers, plain and streamed, against an unchanged
provider while the config file is replaced every 100 ms and the sidecar polls
it every 50 ms. No request may fail. Providers left unchanged keep their
state across every reload: ``broken``'s breaker stays open since the same
moment, ``limited``'s request bucket stays as drained as it was. ``changed``,
whose breaker settings differ in every config, gets a fresh (closed) breaker.
"""

from __future__ import annotations

import pathlib

import pytest

from llmgw_dev import reload_load

pytestmark = pytest.mark.slow

DURATION = 12.0


async def test_reloads_every_100ms_fail_no_request_and_keep_unchanged_providers_state(
    tmp_path: pathlib.Path,
) -> None:
    result = await reload_load.run(DURATION, tmp_path)
    before, after = result.before["providers"], result.after["providers"]
    assert before["broken"]["breaker"] == before["changed"]["breaker"] == "open"
    assert before["limited"]["remainingShare"] == pytest.approx(0.5, abs=0.02)

    assert not result.failed, result.failed[:10]
    assert len(result.outcomes) >= reload_load.CALLERS
    # The reloads were served, not coalesced into a few.
    assert result.after["generation"] - result.before["generation"] > 10, result.lines()
    assert "lastReloadError" not in result.after
    assert after["broken"]["breaker"] == "open"
    # The same moment (a report converts the monotonic clock to wall time, to within microseconds).
    assert result.breaker_moved < 0.1, result.lines()
    # Refilled by at most a request a minute meanwhile; a fresh bucket would be full (1.0).
    assert after["limited"]["remainingShare"] < 0.8
    assert after["changed"]["breaker"] == "closed"
    assert "Traceback" not in result.log
