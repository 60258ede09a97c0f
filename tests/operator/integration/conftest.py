"""One operator process for the folder, a fresh namespace per test, the log tail on failure."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Generator, Iterator

import operatorkit
import pytest
from clusterkit import ClusterHandle

from llmgw_operator import kube, login

CRD_NAMES = ("crd/llmgateways.llmgateway.io", "crd/providerpolicies.llmgateway.io")


@pytest.fixture(scope="module")
def crds(cluster: ClusterHandle) -> None:
    # Other folders apply the same CRDs to the shared cluster; apply is idempotent.
    cluster.kubectl("apply", "-f", str(operatorkit.CRDS))
    cluster.kubectl("wait", "--for=condition=Established", *CRD_NAMES, "--timeout=60s")


@pytest.fixture(scope="module")
def operator_args() -> tuple[str, ...]:
    """Flags beyond the namespace and verbosity; a module overrides this to start its operator so."""
    return ()


@pytest.fixture(scope="module")
def namespace_prefix() -> str:
    """The prefix of the test namespaces, which the operator watches by pattern. A module whose
    counts must not include other modules' leftovers (namespaces still terminating) overrides it."""
    return operatorkit.NAMESPACE_PREFIX


@pytest.fixture(scope="module")
def operator_process(
    cluster: ClusterHandle,
    crds: None,
    tmp_path_factory: pytest.TempPathFactory,
    operator_args: tuple[str, ...],
    namespace_prefix: str,
) -> Iterator[operatorkit.OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = operatorkit.OperatorProcess(
        cluster.kubeconfig, log, namespaces=f"{namespace_prefix}*", extra_args=operator_args
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def ns(
    cluster: ClusterHandle, operator_process: operatorkit.OperatorProcess, namespace_prefix: str
) -> Iterator[operatorkit.Namespace]:
    name = f"{namespace_prefix}{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield operatorkit.Namespace(cluster, name)
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def bare_namespace(cluster: ClusterHandle) -> Iterator[str]:
    """A fresh namespace no operator watches (its name is outside every module's pattern)."""
    name = f"bare-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def api(cluster: ClusterHandle) -> AsyncIterator[kube.Client]:
    """The operator's API client, logged in with the cluster's kubeconfig."""
    client = kube.Client(connect=lambda: login.from_kubeconfig(cluster.kubeconfig))
    try:
        yield client
    finally:
        await client.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    funcargs = getattr(item, "funcargs", {})
    process = funcargs.get("operator_process")
    if report.failed and isinstance(process, operatorkit.OperatorProcess):
        report.sections.append(("operator log (tail)", process.tail(80)))
    namespace = funcargs.get("ns")
    if report.failed and isinstance(namespace, operatorkit.Namespace):
        report.sections.append(("namespace state", namespace.describe()))
        if isinstance(process, operatorkit.OperatorProcess):
            # The tail above is often another namespace's noise; this is the failing test's own.
            own = [line for line in process.text().splitlines() if namespace.name in line]
            report.sections.append((f"operator log lines naming {namespace.name}", "\n".join(own[-60:])))
    return report
