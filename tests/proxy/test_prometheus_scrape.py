"""A real Prometheus (Debian's) scrapes a real sidecar: the target is up, the series docs/metrics.md
documents arrive, every query of the chart's Grafana dashboard returns numbers after a short load,
and the chart's sidecar alerts find data carrying every label their descriptions name. A renamed
metric, or a label a panel or alert relies on that the sidecar never sets, shows here."""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import subprocess
from typing import TYPE_CHECKING, Any

import openai
import promkit
import yaml
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import binaries, fake_provider

if TYPE_CHECKING:
    from conftest import Pair, StartProxy
    from rediskit import RedisServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm" / "llmgw" / "files" / "dashboard.json"
METRICS_PAGE = ROOT / "docs" / "metrics.md"
# Labels the Prometheus Operator gives a PodMonitor's target; the dashboard groups by some.
TARGET_LABELS = {"namespace": "team-a", "pod": "chat-7d9f-abcde", "container": "llmgw-proxy"}
# Documented series a sidecar exports only after an event this load does not cause; their own
# tests cause them (test_upstream_faults.py, test_http1.py; test_shared_limits.py kills Redis).
NOT_CAUSED_HERE = {
    "llmgw_upstream_bound_violations_total",
    "llmgw_upstream_pool_exhausted_total",
    "llmgw_shared_store_fallbacks_total",
}
# Bounds of the load: rounds of a few requests until every check holds.
MAX_ROUNDS = 200
WITHIN_SECONDS = 90.0
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "same question"}]


def documented_sidecar_series() -> set[str]:
    sidecar = METRICS_PAGE.read_text().split("## Operator metrics")[0]
    return set(re.findall(r"^\| `(llmgw_[a-z_]+)` \|", sidecar, flags=re.M))


def dashboard_queries() -> dict[str, str]:
    """Every panel target's query, by "panel title / refId"."""
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        f"{panel['title']} / {target['refId']}": target["expr"]
        for panel in dashboard["panels"]
        for target in panel["targets"]
    }


def sidecar_alerts() -> list[dict[str, Any]]:
    """The chart's alerts over the sidecars' metrics, rendered by the pinned helm."""
    proc = subprocess.run(
        [
            str(binaries.ensure("helm")),
            "template",
            "r",
            str(ROOT / "helm" / "llmgw"),
            "--set",
            "monitoring.prometheusRule.enabled=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    groups = yaml.safe_load(proc.stdout)["spec"]["groups"]
    rules: list[dict[str, Any]] = next(g for g in groups if g["name"] == "llmgw.sidecar")["rules"]
    return rules


def config(pair: Pair, key_file: pathlib.Path, redis_url: str) -> dict[str, Any]:
    doc = pair.doc(
        key_file,
        primary={
            "retry": {"attempts": 2},
            "circuitBreaker": {"consecutiveFailures": 2, "openDuration": 0.5},
            "cache": {"enabled": True, "ttl": 60},
        },
    )
    # A route whose only target allows one request a minute: the second is refused locally.
    doc["providers"]["limited"] = {
        **doc["providers"]["fallback"],
        "rateLimit": {"requestsPerMinute": 1, "requestBurst": 1, "maxWait": 0},
    }
    doc["routes"].insert(0, {"model": "limited", "targets": [{"provider": "limited"}]})
    # A token budget far from spent puts a real Redis behind the shared-store series.
    doc["sharedStore"] = {"url": redis_url, "timeout": 2}
    doc["providers"]["limited"].update(sharedId="team-a/limited", budget={"tokensPerDay": 10**9})
    # A route whose first target refuses connections (nothing listens on port 1) and may retry
    # more often than a request's maxAttempts (5) allows: the fallback is never tried, the
    # caller gets a 502.
    doc["providers"]["down"] = {
        **doc["providers"]["fallback"],
        "baseUrl": "http://127.0.0.1:1/v1",
        "retry": {"attempts": 10, "budgetMinPerSecond": 100},
    }
    capped = {"model": "capped", "targets": [{"provider": "down"}, {"provider": "fallback"}]}
    doc["routes"].insert(0, capped)
    return doc


async def one_round(client: openai.AsyncOpenAI) -> None:
    """Cacheable asks (a miss, then hits), a stream with usage, one to the limited route and one to
    the capped route."""
    for _ in range(2):
        await client.chat.completions.create(model="m", messages=ASK, temperature=0)
    stream = await client.chat.completions.create(
        model="m", messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    async for _ in stream:
        pass
    try:
        await client.chat.completions.create(model="limited", messages=ASK)
    except openai.APIStatusError as e:
        assert e.status_code == 429, e
    try:
        await client.chat.completions.create(model="capped", messages=ASK)
    except openai.APIStatusError as e:
        assert e.status_code == 502, e
    else:
        raise AssertionError("the capped route answered without its fallback")


async def test_prometheus_scrapes_the_documented_series_and_every_dashboard_query_has_numbers(
    start_proxy: StartProxy,
    pair: Pair,
    key_file: pathlib.Path,
    start_prometheus: promkit.StartPrometheus,
    redis_server: RedisServer,
) -> None:
    proxy = await start_proxy(config(pair, key_file, redis_server.url))
    prometheus = await asyncio.to_thread(
        start_prometheus,
        [promkit.scrape_job("llmgw-sidecars", proxy.admin_url, TARGET_LABELS)],
    )
    await asyncio.to_thread(prometheus.wait, prometheus.targets_up, 30, "sidecar target up")
    (target,) = await asyncio.to_thread(prometheus.targets)
    assert target["labels"]["namespace"] == "team-a"

    # Two 500s trip the primary's breaker (a retry, then a fallback); a 429 later pauses it.
    pair.primary.plan(fake_provider.Fault(status=500, times=2), fake_provider.Fault(status=429))
    expected = documented_sidecar_series() - NOT_CAUSED_HERE
    queries = dashboard_queries()
    client = proxy.async_client()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHIN_SECONDS

    def missing_series() -> set[str]:
        scraped = {re.sub(r"_(bucket|sum|count)$", "", n) for n in prometheus.series_names()}
        return {name for name in expected if re.sub(r"_(bucket|sum|count)$", "", name) not in scraped}

    def queries_without_numbers() -> list[str]:
        return [
            name for name, expr in queries.items() if not prometheus.has_numbers(promkit.dashboard_expr(expr))
        ]

    missing: set[str] = expected
    empty: list[str] = list(queries)
    for _ in range(MAX_ROUNDS):
        await one_round(client)
        missing = await asyncio.to_thread(missing_series)
        empty = await asyncio.to_thread(queries_without_numbers)
        if (not missing and not empty) or loop.time() > deadline:
            break
    assert not missing, f"documented series Prometheus never scraped: {sorted(missing)}"
    assert not empty, f"dashboard queries without numbers: {empty}"
    # A provider that served callers without a 5xx has a ratio of 0, not a gap in the panel.
    ratio = promkit.dashboard_expr(queries["Error ratio (5xx) by provider / A"])
    served = f"sum by (provider) (rate(llmgw_requests_total[{promkit.RATE_INTERVAL}])) > 0"
    hidden = await asyncio.to_thread(prometheus.query, f"({served}) unless on (provider) ({ratio})")
    assert hidden == [], "providers with traffic missing from the error ratio panel"
    # The events above really happened, as Prometheus saw them.
    for expr in (
        'llmgw_breaker_transitions_total{provider="primary",to="open"}',
        'llmgw_fallbacks_total{from="primary",to="fallback"}',
        'llmgw_ratelimit_rejections_total{provider="limited",kind="requests"}',
        'llmgw_cache_lookups_total{result="hit"}',
        'llmgw_retries_denied_total{provider="fallback",reason="max_attempts"}',
    ):
        result = await asyncio.to_thread(prometheus.query, expr)
        assert result and float(result[0]["value"][1]) >= 1, expr

    # Each sidecar alert's expression without its threshold, on the real series: it has data, and
    # every label its description names is set (the synthetic series of the promtool tests could
    # carry a label the sidecar does not export).
    for alert in await asyncio.to_thread(sidecar_alerts):
        core = re.sub(r"\s*(>|==)\s*[0-9.]+\s*$", "", alert["expr"].strip())
        used = set(re.findall(r"\$labels\.(\w+)", alert["annotations"]["description"]))
        result = await asyncio.to_thread(prometheus.query, core)
        assert result, f"{alert['alert']}: no data on a loaded sidecar"
        for sample in result:
            assert all(sample["metric"].get(label) for label in used), (alert["alert"], sample["metric"])
