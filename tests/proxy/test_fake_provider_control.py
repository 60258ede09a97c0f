"""The fake provider's HTTP control API, which the benchmark and the demo drive from outside."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from llmgw_dev import fake_provider

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_plans_faults_over_http_and_reports_received_requests(
    upstream: str, http: aiohttp.ClientSession
) -> None:
    base = upstream.removesuffix("/v1")
    plan = {"faults": [{"status": 429, "retryAfter": 2, "times": 2}]}
    async with http.post(base + "/_control", json=plan) as resp:
        assert await resp.json() == {"pending": 1}
    statuses = []
    for _ in range(3):
        async with http.post(upstream + "/chat/completions", json=CHAT) as resp:
            statuses.append((resp.status, resp.headers.get("Retry-After")))
    assert statuses == [(429, "2"), (429, "2"), (200, None)]
    async with http.get(base + "/_control/requests") as resp:
        received = await resp.json()
    assert [r["path"] for r in received] == ["/v1/chat/completions"] * 3
    assert received[0]["body"] == CHAT
    async with http.delete(base + "/_control") as resp:
        assert resp.status == 200
    async with http.get(base + "/_control/requests") as resp:
        assert await resp.json() == []


@pytest.mark.parametrize(
    "plan",
    [
        pytest.param({"faults": [{"explode": True}]}, id="unknown-field"),
        pytest.param({"faults": "not-a-list"}, id="not-a-list"),
    ],
)
async def test_refuses_a_bad_fault_plan(
    upstream: str, http: aiohttp.ClientSession, plan: dict[str, Any]
) -> None:
    async with http.post(upstream.removesuffix("/v1") + "/_control", json=plan) as resp:
        assert resp.status == 400


async def test_a_fault_with_times_0_applies_to_every_request(
    upstream: str, http: aiohttp.ClientSession, fake: fake_provider.FakeProvider
) -> None:
    async with http.post(
        upstream.removesuffix("/v1") + "/_control", json={"faults": [{"status": 503, "times": 0}]}
    ):
        pass
    for _ in range(3):
        async with http.post(upstream + "/embeddings", json={"model": "e", "input": "x"}) as resp:
            assert resp.status == 503
    assert len(fake.faults) == 1


def test_the_fake_provider_program_exits_cleanly_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmgw_dev.fake_provider", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["msg"] == "listening"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
