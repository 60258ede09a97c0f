"""Session fixtures shared by every test folder: the Kubernetes cluster.

`--cluster=local` (default) starts a real control plane on loopback from the
pinned binaries; `--cluster=existing` uses $KUBECONFIG; `--cluster=kind` uses
pytest-kind where a Docker engine answers and skips with the reason otherwise.
The same tests run against all three.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import promkit
import pytest
import tracekit
from clusterkit import ClusterHandle

from llmgw_dev import binaries
from llmgw_dev import cluster as local_cluster


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM (a CI job's timeout, a `kill` from another shell) ends the run the way Ctrl-C
    # does: session fixtures tear down, so the session's control plane, whose processes run
    # in their own sessions and outlive a killed pytest, is stopped instead of left running.
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# Hypothesis's per-example deadline (200 ms) is a timed assertion: on a shared, loaded machine it fails
# healthy property tests (a rendered config parsed back took longer under a loaded `make unit`).
hypothesis.settings.register_profile("llmgw", deadline=None)
hypothesis.settings.load_profile("llmgw")

LOOPBACK_NO_PROXY = ("127.0.0.0/8", "127.0.0.1", "localhost", "::1")


def pytest_sessionstart(session: pytest.Session) -> None:
    # The sidecar honours HTTPS_PROXY and HTTP_PROXY. On a machine that sets them (a CI runner
    # behind a proxy), sidecars the suite starts in other processes must still reach the fake
    # providers on loopback directly, while pip and go keep using the proxy for the internet.
    if any(os.environ.get(n) for n in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")):
        for name in ("NO_PROXY", "no_proxy"):
            os.environ[name] = ",".join(filter(None, [os.environ.get(name, ""), *LOOPBACK_NO_PROXY]))


# Fixtures that fetch or build a pinned binary (tests/packaging/conftest.py has helm and kubeconform),
# or need one from Debian (prometheus, promtool; .ci/run installs them) or the trace store.
BINARY_FIXTURES = frozenset({"cluster", "helm", "kubeconform", "promtool", "start_prometheus", "jaeger"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `make unit` deselects `binaries`; marking by fixture keeps a new chart or cluster test out
    # of it without anyone remembering a marker. The few tests that call `llmgw_dev.binaries`
    # themselves start a control plane too, and carry `cluster`.
    for item in items:
        if BINARY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.binaries)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        choices=("local", "kind", "existing"),
        default="local",
        help="which Kubernetes the cluster tests run against (default: local control plane)",
    )


def _docker_engine_problem() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client on PATH"
    proc = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return f"`docker info` failed: {last[0]}"
    return None


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[ClusterHandle]:
    mode = request.config.getoption("--cluster")
    if mode == "existing":
        kubeconfig = os.environ.get("KUBECONFIG")
        if not kubeconfig:
            raise pytest.UsageError("--cluster=existing needs KUBECONFIG to name a kubeconfig file")
        yield ClusterHandle("existing", Path(kubeconfig))
    elif mode == "kind":
        problem = _docker_engine_problem()
        if problem:
            pytest.skip(f"--cluster=kind needs a Docker engine and none answers here: {problem}")
        from pytest_kind import KindCluster  # imported late: it downloads kind on first use

        kind_bin = shutil.which("kind")
        kind = KindCluster(
            "llmgw-pytest",
            kind_path=Path(kind_bin) if kind_bin else None,
            kubectl_path=binaries.ensure("kubectl"),
        )
        kind.create()
        try:
            yield ClusterHandle("kind", Path(kind.kubeconfig_path))
        finally:
            kind.delete()
    else:
        c = local_cluster.up(name=f"pytest-{os.getpid()}")
        try:
            yield ClusterHandle("local", c.kubeconfig)
        finally:
            local_cluster.down(c)


@pytest.fixture(scope="session")
def promtool() -> Path:
    return promkit.binary("promtool")


@pytest.fixture
def start_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[promkit.StartPrometheus]:
    """Start Prometheus on a free loopback port with the given scrape jobs (promkit.scrape_job);
    every one started is stopped after the test."""
    started: list[promkit.Prometheus] = []

    def start(jobs: list[dict[str, Any]]) -> promkit.Prometheus:
        server = promkit.Prometheus(tmp_path_factory.mktemp("prometheus"), jobs)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tracekit.Jaeger]:
    """Jaeger v2 on free loopback ports (the pinned binary, built once into the cache)."""
    store = tracekit.Jaeger(binaries.ensure("jaeger"), tmp_path_factory.mktemp("jaeger"))
    try:
        store.start()
        yield store
    finally:
        store.stop()
