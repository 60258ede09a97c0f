"""`make demo` is the main job: CI runs it whole, as the README's user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from clusterkit import ClusterHandle

from llmgw_dev import demo

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FIXED_PORTS = (
    demo.PROXY_PORT,
    demo.ADMIN_PORT,
    *demo.PROVIDERS.values(),
    demo.ANTHROPIC_PORT,
    demo.WEBHOOK_PORT,
    demo.INJECTED_PROXY_PORT,
    demo.INJECTED_ADMIN_PORT,
)


def test_the_demo_runs_every_step_and_stops_everything_it_started(cluster: ClusterHandle) -> None:
    if cluster.kind != "local":
        pytest.skip("the demo brings up its own local control plane; nothing to run against another cluster")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip(
            "the demo mounts the rendered files in a private mount namespace: it needs root and unshare"
        )
    busy = [p for p in FIXED_PORTS if not demo.port_free(p)]
    assert not busy, f"the demo's fixed ports are in use: {busy}"

    proc = subprocess.run(
        [sys.executable, "-m", "llmgw_dev.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    for shown in (
        "ok: llmgw/chat is Ready",
        "ok: served by the primary provider",
        "ok: the answer arrived as several chunks",
        "ok: a Responses API answer",
        "ok: served by the anthropic policy",
        "ok: answered from the sidecar's cache",
        "ok: every answer came from the fallback",
        "ok: the primary's breaker is open",
        "ok: new config generation loaded without a restart",
        "ok: the sidecar refused with 429",
        "ok: llmgw/chat-injected",
        "ok: the webhook injected the native sidecar into every pod",
        "ok: the injected sidecar answers as the owned mode's did",
        "demo finished",
    ):
        assert shown in out, f"missing {shown!r} in:\n{out[-3000:]}"
    assert "sk-sample-not-a-real-key" not in out + proc.stderr
    assert [p for p in FIXED_PORTS if not demo.port_free(p)] == [], "the demo left a listener behind"
