"""A real Prometheus (Debian's package) on a free loopback port, for tests that scrape the sidecar
or the operator and run the chart's queries; and promtool for the chart's rules.

The suite starts Prometheus itself with a generated scrape config of static targets, labelled
the way the Prometheus Operator labels what a PodMonitor finds (``namespace``, ``pod``, ``job``),
so the chart's alerts and dashboard see the labels they would see in a cluster.
"""

from __future__ import annotations

import json
import math
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import childkit
import yaml
from childkit import free_port

# How often the test Prometheus scrapes: short, so a test waits a few seconds, not minutes.
SCRAPE_INTERVAL = "1s"
# What the dashboard's $__rate_interval stands for here: Grafana's rule is
# max(4 x scrape interval, query step + scrape interval), so 4 s; a little more leaves room for a
# late scrape on a busy machine.
RATE_INTERVAL = "10s"


def binary(name: str) -> Path:
    """``prometheus`` or ``promtool`` from PATH; Debian's `prometheus` package brings both."""
    found = shutil.which(name)
    if found is None:
        raise AssertionError(
            f"{name} is not on PATH: install Debian's package (`apt-get install -y prometheus`); "
            ".ci/run does it when missing"
        )
    return Path(found)


def scrape_job(
    job: str, url: str, labels: dict[str, str], *, honor_labels: bool = False, path: str = "/metrics"
) -> dict[str, Any]:
    """One static target as a PodMonitor's generated job has it: ``labels`` are the target's."""
    parts = urllib.parse.urlsplit(url)
    return {
        "job_name": job,
        "honor_labels": honor_labels,
        "metrics_path": path,
        "static_configs": [{"targets": [parts.netloc], "labels": {"job": job, **labels}}],
    }


def dashboard_expr(expr: str) -> str:
    """A dashboard query as Grafana sends it, with the variables at their 'All' values."""
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("$namespace", ".*")


class Prometheus(childkit.Child):
    """`prometheus` as a child process; its HTTP API read with urllib (call from a thread in async
    tests, so the event loop keeps serving the scrapes)."""

    def __init__(self, folder: Path, jobs: list[dict[str, Any]]) -> None:
        super().__init__("prometheus", folder / "prometheus.log")
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL},
            "scrape_configs": jobs,
        }
        self.config_file = folder / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config))

    def start(self, timeout: float = 60) -> None:
        argv = [
            str(binary("prometheus")),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.launch(argv)
        self.wait(lambda: self._status("/-/ready") == 200, timeout, "Prometheus ready")

    def _status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:  # noqa: S310 (loopback)
                return int(resp.status)
        except (urllib.error.URLError, OSError):
            return 0

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:  # noqa: S310
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return active

    def targets_up(self) -> bool:
        """Every configured target scraped at least once, and the last scrape succeeded."""
        active = self.targets()
        return bool(active) and all(t["health"] == "up" for t in active)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at now: the vector's samples (``metric`` labels, ``value`` [t, "v"])."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", f"{expr!r} gave a {data['resultType']}"
        result: list[dict[str, Any]] = data["result"]
        return result

    def has_numbers(self, expr: str) -> bool:
        """The query returns a sample that is a number (not NaN, as a quantile of no traffic is)."""
        return any(not math.isnan(float(s["value"][1])) for s in self.query(expr))

    def series_names(self) -> set[str]:
        names: list[str] = self.api("label/__name__/values")
        return set(names)


StartPrometheus = Callable[[list[dict[str, Any]]], Prometheus]
"""The type of the `start_prometheus` fixture (tests/conftest.py)."""
