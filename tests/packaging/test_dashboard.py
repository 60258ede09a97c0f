"""The chart's Grafana dashboard: the fields Grafana needs to import it, and the panels an SRE of an
LLM service looks for. No maintained JSON Schema of Grafana's dashboard model is published as a
package (@grafana/schema ships TypeScript types, grafana-foundation-sdk builders), so the fields
Grafana requires are checked here; tests/proxy/test_prometheus_scrape.py runs every query against
a real Prometheus scraping a real sidecar."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "helm" / "llmgw" / "files" / "dashboard.json"
GRID_COLUMNS = 24


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_has_the_fields_grafana_needs_to_import_it(dashboard: dict[str, Any]) -> None:
    for field, kind in (
        ("uid", str),
        ("title", str),
        ("schemaVersion", int),
        ("panels", list),
        ("time", dict),
        ("templating", dict),
    ):
        assert isinstance(dashboard.get(field), kind), field
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in dashboard["panels"]:
        assert isinstance(panel["id"], int) and panel["type"] and panel["title"], panel
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[x, y]!r}"
                cells[x, y] = panel["title"]


def test_every_variable_a_query_uses_is_defined(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    used = {name for expr in exprs(dashboard) for name in re.findall(r"\$(\w+)", expr)}
    assert used - {"__rate_interval"} <= defined


def test_shows_what_an_sre_of_an_llm_service_looks_for(dashboard: dict[str, Any]) -> None:
    text = "\n".join(exprs(dashboard))
    assert re.search(r"sum by \(model, kind\) \(rate\(llmgw_tokens_total", text), "tokens per second by model"
    assert re.search(r'llmgw_cache_lookups_total\{[^}]*result="hit"', text), "cache hit ratio"
    for quantile in ("0.5", "0.95", "0.99"):
        for histogram in ("llmgw_request_duration_seconds_bucket", "llmgw_upstream_duration_seconds_bucket"):
            query = f"histogram_quantile({quantile}, sum by (le) (rate({histogram}"
            assert query in text, (quantile, histogram)
        ttft = "llmgw_time_to_first_token_seconds_bucket"
        assert f"histogram_quantile({quantile}, sum by (le, route) (rate({ttft}" in text
    for metric in (
        "llmgw_in_flight_requests",
        "llmgw_config_reload_failures_total",
        "llmgw_breaker_state",
        "llmgw_requests_total",
        "llmgw_ratelimit_rejections_total",
    ):
        assert metric in text, metric
