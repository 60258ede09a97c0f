"""docs/metrics.md lists exactly the metrics the sidecar exports, and those the operator exports."""

from __future__ import annotations

import time

import docskit
import prometheus_client

from llmgw_operator import cache, poll, workqueue
from llmgw_operator import metrics as operator_metrics
from llmgw_operator.render import dataplane
from llmgw_proxy.runtime import state
from llmgw_proxy.telemetry import metrics

METRICS_PAGE = docskit.ROOT / "docs" / "metrics.md"
OPERATOR_HEADING = "## Operator metrics"


def sidecar_part() -> str:
    return METRICS_PAGE.read_text().split(OPERATOR_HEADING)[0]


def operator_part() -> str:
    return METRICS_PAGE.read_text().split(OPERATOR_HEADING)[1]


def exported_names(registry: prometheus_client.CollectorRegistry) -> set[str]:
    """Names as a scrape shows them: a counter gains ``_total``, an info ``_info``."""
    suffix = {"counter": "_total", "info": "_info"}
    return {family.name + suffix.get(family.type, "") for family in registry.collect()}


def documented_names(text: str) -> set[str]:
    """Metric names in the first column of the page's tables whose header says Metric."""
    return {
        name
        for table in docskit.tables(text)
        if table.header and table.header[0].lower() == "metric"
        for cell in table.column(0)
        for name in docskit.code_names(cell)
    }


def _registry() -> prometheus_client.CollectorRegistry:
    return metrics.Metrics(state.Live(time.monotonic)).registry


def test_every_exported_metric_is_documented() -> None:
    missing = exported_names(_registry()) - documented_names(sidecar_part())
    assert sorted(missing) == [], "add these to docs/metrics.md"


def test_every_documented_metric_is_exported() -> None:
    stale = documented_names(sidecar_part()) - exported_names(_registry())
    assert sorted(stale) == [], "docs/metrics.md lists metrics the sidecar does not export"


async def _work(key: object) -> None:
    return None


async def test_the_operator_section_lists_exactly_what_the_operator_exports() -> None:
    m = operator_metrics.Metrics()
    workqueue.WorkQueue(_work, name="llmgateway", metrics=m)  # as handlers.start makes its queues
    poll.register_gauges(m, dataplane.Store(), {})
    cache.register_gauges(m, cache.Store())
    assert documented_names(operator_part()) == exported_names(m.registry)


def test_counters_are_named_as_scraped() -> None:
    registry = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("llmgw_things", "Things.", registry=registry)
    prometheus_client.Gauge("llmgw_level", "Level.", registry=registry)
    prometheus_client.Histogram("llmgw_seconds", "Seconds.", registry=registry)

    assert exported_names(registry) == {"llmgw_things_total", "llmgw_level", "llmgw_seconds"}


def test_only_metric_tables_count() -> None:
    text = (
        "| Metric | Type |\n|---|---|\n| `llmgw_a_total` | counter |\n\n"
        "| Label | Meaning |\n|---|---|\n| `llmgw_b` | not a metric row |\n"
        "```\n| Metric |\n|---|\n| `llmgw_c` |\n```\n"
    )
    assert documented_names(text) == {"llmgw_a_total"}
