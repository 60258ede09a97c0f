"""docs/runbook.md explains every condition reason the operator can set and every alert the chart ships."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docskit
import pytest
import yaml
from clusterkit import ClusterHandle, eventually
from dataplanekit import FakeProviderProcess, Kubelet, ensure_node, pod_template

from llmgw_dev import binaries
from llmgw_dev import cluster as local_cluster
from llmgw_operator.render import conditions

RUNBOOK = docskit.ROOT / "docs" / "runbook.md"
REASON_SOURCES = [
    docskit.ROOT / "operator/llmgw_operator/render/conditions.py",
    docskit.ROOT / "operator/llmgw_operator/render/resolve.py",
    docskit.ROOT / "operator/llmgw_operator/reconcile.py",
    docskit.ROOT / "operator/llmgw_operator/render/dataplane.py",
]
RULES = docskit.ROOT / "helm/llmgw/templates/prometheusrule.yaml"
CONDITION_TYPES = [
    conditions.READY,
    conditions.RECONCILED,
    conditions.POLICIES_RESOLVED,
    conditions.ACCEPTED,
    conditions.SECRET_RESOLVED,
    conditions.PROVIDERS_HEALTHY,
    conditions.CONFIG_APPLIED,
]


def operator_reasons() -> set[str]:
    found: set[str] = set()
    for path in REASON_SOURCES:
        found |= docskit.verdict_reasons(path.read_text(), str(path))
    return found


def chart_alerts() -> set[str]:
    # The file is a template, not YAML until rendered; alert names are plain text in it.
    return set(re.findall(r"^\s*-\s*alert:\s*(\w+)\s*$", RULES.read_text(), re.MULTILINE))


def first_column(text: str, header: str) -> set[str]:
    return {
        name
        for table in docskit.tables(text)
        if table.header and table.header[0].lower() == header.lower()
        for cell in table.column(0)
        for name in docskit.code_names(cell)
    }


def test_the_code_sets_reasons_at_all() -> None:
    # Guards the scan: if it read nothing, the next tests would pass vacuously.
    assert {"Available", "Applied", "Resolved", "SecretFound", "PolicyNotFound"} <= operator_reasons()


def test_every_reason_the_operator_sets_is_in_a_runbook_table() -> None:
    missing = operator_reasons() - first_column(RUNBOOK.read_text(), "Reason")
    assert sorted(missing) == [], "add these reasons to docs/runbook.md"


def test_every_reason_in_the_runbook_is_one_the_operator_sets() -> None:
    stale = first_column(RUNBOOK.read_text(), "Reason") - operator_reasons()
    assert sorted(stale) == [], "docs/runbook.md lists reasons the operator never sets"


@pytest.mark.parametrize("condition_type", CONDITION_TYPES)
def test_every_condition_type_has_a_section(condition_type: str) -> None:
    headings = [line for _, line in docskit.unfenced_lines(RUNBOOK.read_text()) if line.startswith("#")]
    assert any(re.search(rf"`{condition_type}`", h) for h in headings)


def test_every_alert_in_the_chart_is_in_the_runbook_and_no_other() -> None:
    assert chart_alerts()
    assert first_column(RUNBOOK.read_text(), "Alert") == chart_alerts()


# -- the reason scanner itself ------------------------------------------------------------------


def test_reads_literal_reasons_positional_and_keyword() -> None:
    source = "a = Verdict(TRUE, 'One', 'm')\nb = conditions.Verdict(FALSE, reason='Two')\n"
    assert docskit.verdict_reasons(source) == {"One", "Two"}


def test_reads_reasons_from_a_loop_over_a_literal_table() -> None:
    source = (
        "for reason, what in (('Missing', 'x'), ('Broken', 'y')):\n"
        "    if what:\n"
        "        return Verdict(FALSE, reason, what)\n"
    )
    assert docskit.verdict_reasons(source) == {"Missing", "Broken"}


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("v = Verdict(FALSE, compute(), 'm')\n", id="call"),
        pytest.param("v = Verdict(FALSE, f'{kind}Missing')\n", id="f-string"),
        pytest.param("for reason in names():\n    Verdict(FALSE, reason)\n", id="loop-over-a-call"),
    ],
)
def test_refuses_a_reason_it_cannot_read(source: str) -> None:
    with pytest.raises(docskit.UnreadableReason):
        docskit.verdict_reasons(source)


# -- each reason, caused with kubectl, seen where the runbook looks, cleared by its fix ----------
#
# A real operator process watches namespaces named rbk-*; each case makes its own namespace from
# the samples, causes its reason, runs the runbook's own commands (read out of the page, with the
# page's placeholders filled in) and checks they show it, then applies the documented fix and
# waits for the condition to clear.

SAMPLES = docskit.ROOT / "samples"
CRDS = docskit.ROOT / "crds"
POLICY_CRD = CRDS / "llmgateway.io_providerpolicies.yaml"
PREFIX = "rbk-"
GW = "chat"
SECRET = "llm-provider-keys"
WAIT = 90  # seconds for the operator to act on a change (the NameConflict backoff included)
PERIOD = 1.0  # the operator's --data-plane-period

# Reasons no kubectl command can cause on demand: transient states the operator passes through
# between two watch events, or a bug. Each says why; the guard below keeps this list honest.
NOT_CAUSED = {
    "DeploymentNotFound": "only between the Deployment's deletion and the pass that recreates it",
    "RolloutPending": "only until kube-controller-manager observes a new template (milliseconds here)",
    "RenderFailed": "the CRD and the proxy config disagreeing: a bug, not a state a user can reach",
    # The shared store's reasons are covered without a cluster: the verdicts by
    # tests/operator/render/test_render_shared_store.py, the sidecar's report of a killed Redis by
    # tests/proxy/test_shared_limits.py.
    "SharedStoreUnreachable": "needs a sidecar losing a real Redis, which the kwok pods here cannot run",
    "SharedStoreUnresolved": "a pure resolve verdict, tested in test_render_shared_store.py",
    "SharedStoreConflict": "a pure resolve verdict, tested in test_render_shared_store.py",
}


@dataclasses.dataclass
class Kube:
    kubeconfig: Path
    namespace: str

    def env(self) -> dict[str, str]:
        kubectl = binaries.ensure("kubectl")
        # HOME for kubectl's cache: without one it writes .kube/ into the working directory.
        home = str(self.kubeconfig.parent)
        return {"PATH": f"{kubectl.parent}:/usr/bin:/bin", "KUBECONFIG": str(self.kubeconfig), "HOME": home}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> str:
        proc = local_cluster.run_kubectl(
            self.kubeconfig, "-n", self.namespace, *args, input=input, check=check, timeout=timeout
        )
        return proc.stdout + proc.stderr

    def apply(self, *documents: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in documents))

    def get(self, ref: str, *extra: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.kubectl("get", ref, "-o", "json", *extra))
        return found

    def condition(self, type_: str) -> dict[str, Any]:
        conditions = self.get(f"llmgw/{GW}").get("status", {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == type_), {})

    def events(self) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind=LLMGateway,involvedObject.name={GW}"
        items: list[dict[str, Any]] = self.get("events", "--field-selector", selector)["items"]
        return items

    def wait_up_to_date(self, pods: int) -> None:
        """Until ``pods`` sidecars report the rendered config (each pod's first report counts)."""
        jsonpath = f"jsonpath={{.status.config.upToDate}}={pods}"
        self.kubectl("wait", f"llmgw/{GW}", f"--for={jsonpath}", f"--timeout={WAIT}s", timeout=WAIT + 10)

    def wait_reason(self, ref: str, type_: str, reason: str) -> None:
        jsonpath = f'jsonpath={{.status.conditions[?(@.type=="{type_}")].reason}}={reason}'
        self.kubectl("wait", ref, f"--for={jsonpath}", f"--timeout={WAIT}s", timeout=WAIT + 10)

    def shell(self, command: str, **names: str) -> str:
        """A command from the runbook, its placeholders (NS, GW, NAME, KEY, ...) filled in, run by bash."""
        filled = re.sub(r"\bNS\b", self.namespace, command.replace("\\|", "|"))
        filled = re.sub(r"\bGW\b", GW, filled)
        for placeholder, value in names.items():
            filled = re.sub(rf"\b{placeholder}\b", value, filled)
        proc = subprocess.run(
            ["bash", "-c", filled], capture_output=True, text=True, timeout=60, env=self.env(), check=False
        )
        return proc.stdout + proc.stderr


def samples() -> dict[str, dict[str, Any]]:
    return {
        (d := yaml.safe_load(p.read_text()))["metadata"]["name"]: d for p in sorted(SAMPLES.glob("*.yaml"))
    }


def section(heading: str) -> str:
    """The runbook's text under ``heading`` (a ``## `` or ``### `` line), up to the next heading."""
    text = RUNBOOK.read_text()
    start = text.index(heading + "\n")
    following = re.search(r"^#{2,3} ", text[start + len(heading) :], re.MULTILINE)
    return text[start : start + len(heading) + (following.start() if following else len(text))]


def row(condition_type: str, reason: str) -> str:
    """The runbook table row of ``reason`` under the condition's heading, as one string."""
    for table in docskit.tables(section(f"### `{condition_type}`")):
        for cells in table.rows:
            if f"`{reason}`" == cells[0]:
                return " | ".join(cells)
    raise AssertionError(f"docs/runbook.md has no row for {condition_type} {reason}")


def documented(condition_type: str, reason: str, command: str) -> str:
    """``command`` as the row writes it (as inline code); fails when the row does not say it."""
    spans = [s.replace("\\|", "|") for s in re.findall(r"`([^`]+)`", row(condition_type, reason))]
    assert command in spans, f"the runbook's {condition_type} {reason} row does not say `{command}`"
    return command


def first_look(kube: Kube) -> str:
    """The output of the runbook's First look commands, as an SRE runs them."""
    block = next(b for b in docskit.code_blocks(section("## First look")) if b.language == "sh")
    return "\n".join(kube.shell(line.split("  #")[0]) for line in block.code.splitlines() if line.strip())


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cluster.kubectl("apply", "-f", str(CRDS))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/llmgateways.llmgateway.io",
        "crd/providerpolicies.llmgateway.io",
        "--timeout=60s",
    )
    log = tmp_path_factory.mktemp("runbook") / "operator.log"
    env = os.environ | {"KUBECONFIG": str(cluster.kubeconfig), "LLMGW_PROXY_IMAGE": "llmgw-proxy:runbook"}
    # Polling the data plane every second (15 s by default), with a short timeout for pods that
    # nothing answers behind (kwok's pods, unless a test runs a sidecar on their IP).
    argv = [
        sys.executable, "-m", "llmgw_operator.cli", "--standalone", "-n", f"{PREFIX}*",
        f"--data-plane-period={PERIOD}", "--data-plane-timeout=1",
        "--metrics-port=0",  # none: 0.0.0.0:8080 may be any other operator's on this machine
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while "llmgw-operator started" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)  # polling the operator's log for its start line: nothing to await
        yield log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def kube(cluster: ClusterHandle, operator: Path) -> Iterator[Kube]:
    name = f"{PREFIX}{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield Kube(cluster.kubeconfig, name)
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def apply_samples(kube: Kube, *, without: tuple[str, ...] = (), **specs: dict[str, Any]) -> dict[str, Any]:
    documents = samples()
    for name, spec in specs.items():
        documents[name]["spec"] |= spec
    kube.apply(*(d for name, d in documents.items() if name not in without))
    return documents


def wait_available(kube: Kube) -> None:
    kube.wait_reason(f"llmgw/{GW}", "Ready", "Available")


CAUSED: set[str] = set()


def caused(*reasons: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Marks a test as the one that causes ``reasons``; the guard checks every reason has one."""
    CAUSED.update(reasons)

    def mark(test: Callable[..., None]) -> Callable[..., None]:
        marked: Callable[..., None] = pytest.mark.cluster(test)
        return marked

    return mark


def test_every_reason_in_the_runbook_is_caused_by_a_test_or_says_why_not() -> None:
    reasons = first_column(RUNBOOK.read_text(), "Reason")
    assert sorted(reasons - CAUSED - set(NOT_CAUSED)) == []
    assert CAUSED.isdisjoint(NOT_CAUSED)
    assert set(NOT_CAUSED) <= reasons


@caused("Resolved", "Applied", "Available", "Valid", "SecretFound", "NoSecretNeeded")
def test_a_healthy_gateway_shows_every_good_reason_where_the_runbook_looks(kube: Kube) -> None:
    apply_samples(kube)
    wait_available(kube)
    kube.wait_reason("llmpp/primary", "SecretResolved", "SecretFound")
    seen = first_look(kube)
    for shown in ("PoliciesResolved=True Resolved", "Reconciled=True Applied", "Ready=True Available"):
        assert shown in seen
    wide = kube.shell("kubectl -n NS get llmpp -o wide")
    for name, secret in (("primary", "SecretFound"), ("fallback", "NoSecretNeeded")):
        shown = rf"^{name}\s+openai-compatible\s+True\s+Valid\s+True\s+{secret}"
        assert re.search(shown, wide, re.M), wide


@caused("InjectionReady")
def test_a_gateway_without_a_template_is_ready_for_injection_with_no_deployment(kube: Kube) -> None:
    documents = samples()
    del documents[GW]["spec"]["template"], documents[GW]["spec"]["replicas"]
    kube.apply(*documents.values())
    kube.wait_reason(f"llmgw/{GW}", "Ready", "InjectionReady")
    seen = first_look(kube)
    assert "Ready=True InjectionReady" in seen and "Reconciled=True Applied" in seen
    assert f"configmap/{GW}-proxy-config" in seen and f"deployment.apps/{GW}" not in seen


@caused("PolicyNotFound", "PoliciesUnresolved")
def test_policy_not_found(kube: Kube) -> None:
    documents = apply_samples(kube, without=("primary",))
    kube.wait_reason(f"llmgw/{GW}", "PoliciesResolved", "PolicyNotFound")
    seen = first_look(kube)
    missing = f"ProviderPolicy not found in namespace {kube.namespace}: primary"
    assert f"PoliciesResolved=False PolicyNotFound: {missing}" in seen
    assert "Reconciled=False PoliciesUnresolved" in seen and "Ready=False PoliciesUnresolved" in seen
    listed = kube.shell(documented("PoliciesResolved", "PolicyNotFound", "kubectl -n NS get llmpp"))
    assert "fallback" in listed and "primary" not in listed

    kube.apply(documents["primary"])  # the fix: create it
    wait_available(kube)


@caused("SecretNotFound")
def test_secret_not_found(kube: Kube) -> None:
    documents = apply_samples(kube, without=(SECRET,))
    kube.wait_reason(f"llmgw/{GW}", "PoliciesResolved", "SecretNotFound")
    kube.wait_reason("llmpp/primary", "SecretResolved", "SecretNotFound")
    seen = first_look(kube)
    assert "PoliciesResolved=False SecretNotFound" in seen and SECRET in seen
    assert re.search(r"^(?:\S+/)?primary\s+\S+\s+True\s+Valid\s+False\s+SecretNotFound", seen, re.M), seen
    looked = kube.shell(
        documented("PoliciesResolved", "SecretNotFound", "kubectl -n NS get secret NAME"), NAME=SECRET
    )
    assert "not found" in looked

    kube.apply(documents[SECRET])
    wait_available(kube)
    kube.wait_reason("llmpp/primary", "SecretResolved", "SecretFound")


@caused("SecretNotMarked")
def test_secret_not_marked(kube: Kube) -> None:
    unmarked = samples()[SECRET]
    del unmarked["metadata"]["labels"]
    kube.apply(unmarked)
    apply_samples(kube, without=(SECRET,))
    kube.wait_reason(f"llmgw/{GW}", "PoliciesResolved", "SecretNotMarked")
    kube.wait_reason("llmpp/primary", "SecretResolved", "SecretNotMarked")
    seen = first_look(kube)
    assert "PoliciesResolved=False SecretNotMarked" in seen
    assert re.search(r"^(?:\S+/)?primary\s+\S+\s+True\s+Valid\s+False\s+SecretNotMarked", seen, re.M), seen

    fix = "kubectl -n NS label secret NAME llmgateway.io/provider-key=true"
    kube.shell(documented("PoliciesResolved", "SecretNotMarked", fix), NAME=SECRET)
    wait_available(kube)
    kube.wait_reason("llmpp/primary", "SecretResolved", "SecretFound")


@caused("SecretKeyMissing")
def test_secret_key_missing(kube: Kube) -> None:
    wrong = samples()[SECRET]
    wrong["stringData"] = {"other": "sk-not-the-key-asked-for"}
    kube.apply(wrong)
    apply_samples(kube, without=(SECRET,))
    kube.wait_reason(f"llmgw/{GW}", "PoliciesResolved", "SecretKeyMissing")
    kube.wait_reason("llmpp/primary", "SecretResolved", "SecretKeyMissing")
    assert "PoliciesResolved=False SecretKeyMissing" in first_look(kube)
    described = kube.shell(
        documented("PoliciesResolved", "SecretKeyMissing", "kubectl -n NS describe secret NAME"), NAME=SECRET
    )
    assert "other:" in described and "primary:" not in described
    assert "sk-not-the-key-asked-for" not in described

    kube.kubectl("patch", f"secret/{SECRET}", "--type", "merge", "-p", '{"stringData": {"primary": "sk-x"}}')
    wait_available(kube)


@caused("InvalidKey")
def test_invalid_key(kube: Kube, tmp_path: Path) -> None:
    broken = samples()[SECRET]
    broken["stringData"] = {"primary": "sk-half\nsk-other-half"}
    kube.apply(broken)
    apply_samples(kube, without=(SECRET,))
    kube.wait_reason(f"llmgw/{GW}", "PoliciesResolved", "InvalidKey")
    kube.wait_reason("llmpp/primary", "SecretResolved", "InvalidKey")
    seen = first_look(kube)
    assert "PoliciesResolved=False InvalidKey" in seen and "sk-half" not in seen

    # The fix as written: a clean file, then the Secret written again with its label kept.
    (tmp_path / "key.txt").write_text("sk-clean-key\r\n")
    clean = documented("PoliciesResolved", "InvalidKey", "tr -d '\\r\\n' < key.txt > clean.txt")
    write = documented(
        "PoliciesResolved",
        "InvalidKey",
        "kubectl -n NS create secret generic NAME --from-file=KEY=clean.txt --dry-run=client -o yaml "
        "| kubectl label --local -f - llmgateway.io/provider-key=true -o yaml | kubectl apply -f -",
    )
    out = kube.shell(f"cd {tmp_path} && {clean} && {write}", NAME=SECRET, KEY="primary")
    assert "configured" in out, out
    wait_available(kube)
    kube.wait_reason("llmpp/primary", "SecretResolved", "SecretFound")


@caused("ModelNotAllowed")
def test_model_not_allowed(kube: Kube) -> None:
    apply_samples(kube, primary={"models": ["some-other-model"]})
    kube.wait_reason(f"llmgw/{GW}", "PoliciesResolved", "ModelNotAllowed")
    assert (
        "PoliciesResolved=False ModelNotAllowed: model not in the policy's models: gpt-4o-mini via primary"
        in first_look(kube)
    )

    # The fix: add the model to the policy's models.
    kube.kubectl(
        "patch",
        "llmpp/primary",
        "--type",
        "merge",
        "-p",
        '{"spec": {"models": ["some-other-model", "gpt-4o-mini"]}}',
    )
    wait_available(kube)


@caused("InvalidSpec")
def test_invalid_spec(kube: Kube) -> None:
    template = samples()[GW]["spec"]["template"]
    template["spec"]["containers"][0]["name"] = "llmgw-proxy"
    apply_samples(kube, chat={"template": template})
    kube.wait_reason(f"llmgw/{GW}", "Ready", "InvalidSpec")
    seen = first_look(kube)
    for type_ in ("PoliciesResolved", "Reconciled", "Ready"):
        assert f"{type_}=False InvalidSpec: " in seen
    assert "the container name llmgw-proxy is reserved" in seen

    template["spec"]["containers"][0]["name"] = "app"  # the fix: the field the message names
    kube.kubectl(
        "patch", f"llmgw/{GW}", "--type", "merge", "-p", json.dumps({"spec": {"template": template}})
    )
    wait_available(kube)


@caused("PodTemplateRefused", "NotReconciled")
def test_pod_template_refused(kube: Kube) -> None:
    template = samples()[GW]["spec"]["template"]
    template["spec"]["hostPID"] = True
    apply_samples(kube, chat={"template": template})
    kube.wait_reason(f"llmgw/{GW}", "Reconciled", "PodTemplateRefused")
    seen = first_look(kube)
    assert "Reconciled=False PodTemplateRefused: nothing applied: template.spec.hostPID" in seen
    assert "Ready=False NotReconciled" in seen
    assert "PodTemplateRefused" in kube.shell(
        "kubectl -n NS get events --field-selector involvedObject.name=GW"
    )

    kube.kubectl(
        "patch",
        f"llmgw/{GW}",
        "--type",
        "json",
        "-p",
        '[{"op": "remove", "path": "/spec/template/spec/hostPID"}]',
    )
    wait_available(kube)


@caused("NameConflict")
def test_name_conflict(kube: Kube) -> None:
    kube.kubectl("create", "configmap", f"{GW}-proxy-config", "--from-literal=made=by-hand")
    apply_samples(kube)
    kube.wait_reason(f"llmgw/{GW}", "Reconciled", "NameConflict")
    seen = first_look(kube)
    assert "Reconciled=False NameConflict" in seen and f"ConfigMap {GW}-proxy-config" in seen

    kube.kubectl("delete", "configmap", f"{GW}-proxy-config")  # the fix: remove the object
    wait_available(kube)


@caused("ScaledToZero")
def test_scaled_to_zero(kube: Kube) -> None:
    apply_samples(kube, chat={"replicas": 0})
    kube.wait_reason(f"llmgw/{GW}", "Ready", "ScaledToZero")
    # No pod to ask either: the PROVIDERS column, between REASON and REPLICAS, says so once polled.
    kube.wait_reason(f"llmgw/{GW}", "ProvidersHealthy", "NoReadyPods")
    shown = rf"^llmgateway\S*/{GW}\s+False\s+ScaledToZero\s+NoReadyPods\s+0\s"
    assert re.search(shown, first_look(kube), re.M)

    kube.kubectl("patch", f"llmgw/{GW}", "--type", "merge", "-p", '{"spec": {"replicas": 2}}')
    wait_available(kube)


UNSCHEDULABLE = {"nodeSelector": {"llmgateway.io/no-such-node": "true"}}


@caused("RolloutInProgress")
def test_rollout_in_progress(kube: Kube) -> None:
    apply_samples(kube)
    wait_available(kube)
    template = samples()[GW]["spec"]["template"]
    template["spec"] |= UNSCHEDULABLE  # the new pods can never be scheduled: the rollout stalls
    kube.kubectl(
        "patch", f"llmgw/{GW}", "--type", "merge", "-p", json.dumps({"spec": {"template": template}})
    )
    kube.wait_reason(f"llmgw/{GW}", "Ready", "RolloutInProgress")
    assert "Ready=False RolloutInProgress" in first_look(kube)
    status = kube.shell(
        documented("Ready", "RolloutInProgress", "kubectl -n NS rollout status deploy/GW --watch=false")
    )
    assert "new replicas have been updated" in status
    pods = kube.shell(
        documented("Ready", "RolloutInProgress", "kubectl -n NS get pods -l llmgateway.io/gateway=GW")
    )
    assert "Pending" in pods

    kube.kubectl(
        "patch",
        f"llmgw/{GW}",
        "--type",
        "json",
        "-p",
        '[{"op": "remove", "path": "/spec/template/spec/nodeSelector"}]',
    )
    wait_available(kube)


@caused("ReplicasUnavailable")
def test_replicas_unavailable(kube: Kube) -> None:
    template = samples()[GW]["spec"]["template"]
    template["spec"] |= UNSCHEDULABLE
    apply_samples(kube, chat={"template": template})
    kube.wait_reason(f"llmgw/{GW}", "Ready", "ReplicasUnavailable")
    assert "Ready=False ReplicasUnavailable: 0 of 2 pods are available" in first_look(kube)
    pods = kube.shell(
        documented("Ready", "ReplicasUnavailable", "kubectl -n NS get pods -l llmgateway.io/gateway=GW")
    )
    assert pods.count("Pending") == 2

    kube.kubectl(
        "patch",
        f"llmgw/{GW}",
        "--type",
        "json",
        "-p",
        '[{"op": "remove", "path": "/spec/template/spec/nodeSelector"}]',
    )
    wait_available(kube)


@caused("PolicyInvalid", "Invalid")
def test_policy_invalid_after_a_crd_that_lags_the_operator(kube: Kube, cluster: ClusterHandle) -> None:
    # Every rule of the operator's model has a CEL twin in the CRD, so only an installed CRD older
    # than the operator lets such a policy in, as the runbook says. Stand one in: drop the rules.
    rules = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/x-kubernetes-validations"
    cluster.kubectl(
        "patch",
        "crd/providerpolicies.llmgateway.io",
        "--type",
        "json",
        "-p",
        json.dumps([{"op": "remove", "path": rules}]),
    )
    try:
        apply_samples(kube, primary={"provider": "azure-openai"})
        kube.wait_reason("llmpp/primary", "Accepted", "Invalid")
        kube.wait_reason(f"llmgw/{GW}", "PoliciesResolved", "PolicyInvalid")
        kube.wait_reason("llmpp/primary", "SecretResolved", "PolicyInvalid")
        seen = first_look(kube)
        assert "PoliciesResolved=False PolicyInvalid" in seen
        assert re.search(
            r"^(?:\S+/)?primary\s+azure-openai\s+False\s+Invalid\s+Unknown\s+PolicyInvalid", seen, re.M
        ), seen
        policy = kube.shell(
            documented("PoliciesResolved", "PolicyInvalid", "kubectl -n NS get llmpp NAME -o yaml"),
            NAME="primary",
        )
        assert "apiVersion is required when provider is azure-openai" in policy
        installed = kube.shell(
            documented("Accepted", "Invalid", "kubectl get crd providerpolicies.llmgateway.io -o yaml")
        )
        # The clue: the installed CRD lacks the rules the operator's model has.
        spec_schema = yaml.safe_load(installed)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert "x-kubernetes-validations" not in spec_schema["properties"]["spec"]
    finally:
        cluster.kubectl("apply", "-f", str(POLICY_CRD))  # the fix's first half: the CRD that matches
    kube.kubectl("patch", "llmpp/primary", "--type", "merge", "-p", '{"spec": {"apiVersion": "2024-06-01"}}')
    kube.wait_reason("llmpp/primary", "Accepted", "Valid")
    wait_available(kube)


@pytest.mark.cluster
def test_the_rbac_check_answers_yes_for_the_charts_service_account(cluster: ClusterHandle) -> None:
    release, system = "llmgw", f"{PREFIX}system-{secrets.token_hex(3)}"
    cluster.helm(
        "install",
        release,
        str(docskit.ROOT / "helm" / "llmgw"),
        "-n",
        system,
        "--create-namespace",
        "--skip-crds",
    )
    try:
        block = next(
            b for b in docskit.code_blocks(section("## The operator is not acting")) if b.language == "sh"
        )
        line = next(x for x in block.code.splitlines() if "auth can-i" in x)
        kube = Kube(cluster.kubeconfig, "default")
        answer = kube.shell(line.replace("llmgw-system", system)).strip()
        assert answer == "yes", line
    finally:
        cluster.helm("uninstall", release, "-n", system, check=False)
        cluster.kubectl("delete", "namespace", system, "--wait=false", check=False)


@caused("ApplyRefused")
def test_apply_refused(kube: Kube) -> None:
    template = samples()[GW]["spec"]["template"]
    # The operator's model and the CRD take any label map; the API refuses this value in a Deployment.
    template["metadata"]["labels"]["tier"] = "not a valid label value!"
    apply_samples(kube, chat={"template": template})
    kube.wait_reason(f"llmgw/{GW}", "Reconciled", "ApplyRefused")
    seen = first_look(kube)
    assert "Reconciled=False ApplyRefused: the API refused the Deployment: " in seen
    assert "Invalid value" in seen  # the API's own message
    assert "Ready=False NotReconciled" in seen

    template["metadata"]["labels"]["tier"] = "web"  # the fix: spec.template
    kube.kubectl(
        "patch", f"llmgw/{GW}", "--type", "merge", "-p", json.dumps({"spec": {"template": template}})
    )
    wait_available(kube)


# -- the data plane: real sidecars behind the pods' IPs --------------------------------------------
#
# ProvidersHealthy and ConfigApplied come from the sidecars' own reports. As in the operator's
# data-plane tests (tests/dataplanekit.py), the gateway's pods land on a fake node whose pod IPs
# are loopback addresses, and a real sidecar runs on each pod's IP with the config the operator
# rendered, in front of fake providers that fail on demand. This node and CIDR are this file's
# own, so its pods never share an IP with the data-plane tests' pods in the same session.

NODE = "kwok-runbook"
POD_CIDR = "127.0.101.0/24"
ADMIN_PORT = 9090  # the sample's: what the runbook's `port-forward pod/POD 9090:9090` reaches


@pytest.fixture(scope="module")
def providers() -> Iterator[dict[str, FakeProviderProcess]]:
    started = {"primary": FakeProviderProcess(), "fallback": FakeProviderProcess()}
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture
def kubelet(kube: Kube, cluster: ClusterHandle, tmp_path: Path) -> Iterator[Kubelet]:
    ensure_node(cluster, NODE, POD_CIDR)
    kit = Kubelet(kube, tmp_path, GW, ADMIN_PORT, POD_CIDR)
    yield kit
    kit.stop()


def data_plane_samples(providers: dict[str, FakeProviderProcess]) -> dict[str, dict[str, Any]]:
    """The samples, their pods on the loopback node and their policies pointed at the fakes.

    The primary goes without its key: in a pod the key file is at /etc/llmgw/keys, where no
    process here can have one, and the config names that path.
    """
    documents = samples()
    primary = documents["primary"]["spec"]
    del primary["apiKeySecretRef"], primary["cache"]  # a cached answer would spare the provider
    primary |= {
        "baseURL": providers["primary"].url + "/v1",
        "retry": {"attempts": 1},
        # Open at the first failure, and long enough for the checks to see it open, not half-open.
        "circuitBreaker": {"consecutiveFailures": 1, "openDuration": 10, "maxOpenDuration": 10},
    }
    documents["fallback"]["spec"]["baseURL"] = providers["fallback"].url + "/v1"
    pinned = pod_template(NODE)["spec"]
    documents[GW]["spec"]["template"]["spec"] |= {
        "nodeSelector": pinned["nodeSelector"],
        "tolerations": pinned["tolerations"],
    }
    del documents[SECRET]
    return documents


def deploy_data_plane(kube: Kube, kubelet: Kubelet, providers: dict[str, FakeProviderProcess]) -> None:
    """The samples with a sidecar behind each pod; every provider healthy, every pod up to date."""
    for fake in providers.values():
        fake.clear()
    kube.apply(*data_plane_samples(providers).values())
    wait_available(kube)
    for pod, ip in kubelet.wait_pods(2):
        kubelet.start(pod, ip)
    kube.wait_up_to_date(2)
    kube.wait_reason(f"llmgw/{GW}", "ProvidersHealthy", "Healthy")
    kube.wait_reason(f"llmgw/{GW}", "ConfigApplied", "Applied")


def event_reasons(kube: Kube) -> list[str]:
    return [e["reason"] for e in kube.events()]


@caused("NotRendered", "NoReadyPods")
def test_a_gateway_that_never_resolved_has_no_config_and_no_pods_to_ask(kube: Kube) -> None:
    documents = apply_samples(kube, without=("primary",))
    kube.wait_reason(f"llmgw/{GW}", "ConfigApplied", "NotRendered")
    kube.wait_reason(f"llmgw/{GW}", "ProvidersHealthy", "NoReadyPods")
    seen = first_look(kube)
    assert "ConfigApplied=Unknown NotRendered: the gateway has no rendered config yet" in seen
    assert "ProvidersHealthy=Unknown NoReadyPods: no ready pod to ask" in seen
    assert "PoliciesResolved=False PolicyNotFound" in seen  # where "See PoliciesResolved" leads
    assert "Ready=False PoliciesUnresolved" in seen  # where "See Ready" leads
    assert f"configmap/{GW}-proxy-config" not in seen

    kube.apply(documents["primary"])  # the fix of PoliciesResolved: the config is rendered, pods start
    wait_available(kube)
    # Both move on. The sample's pods run on kwok's default nodes, where nothing answers behind
    # their IPs: the next reason is NoReports (see the next test for that one).
    kube.wait_reason(f"llmgw/{GW}", "ConfigApplied", "NoReports")
    kube.wait_reason(f"llmgw/{GW}", "ProvidersHealthy", "NoReports")


@caused("NoReports", "Healthy")
def test_no_reports_until_the_admin_port_answers(
    kube: Kube, kubelet: Kubelet, providers: dict[str, FakeProviderProcess]
) -> None:
    kube.apply(*data_plane_samples(providers).values())  # ready pods; nothing listens on their admin port
    wait_available(kube)
    kube.wait_reason(f"llmgw/{GW}", "ProvidersHealthy", "NoReports")
    kube.wait_reason(f"llmgw/{GW}", "ConfigApplied", "NoReports")
    seen = first_look(kube)
    for type_ in ("ProvidersHealthy", "ConfigApplied"):
        assert f"{type_}=Unknown NoReports: none of the 2 pods answered GET /status" in seen
    assert re.search(rf"^llmgateway\S*/{GW}\s+True\s+Available\s+NoReports\s", seen, re.M), seen

    # The row's check: `port-forward pod/POD 9090:9090` makes the pod's admin port 127.0.0.1:9090.
    # kwok runs no kubelet to forward to, so the curl goes to what it forwards to: POD_IP:9090.
    documented("ProvidersHealthy", "NoReports", "kubectl -n NS port-forward pod/POD 9090:9090")
    curl = documented("ProvidersHealthy", "NoReports", "curl -s 127.0.0.1:9090/status")
    pods = kubelet.wait_pods(2)
    for _, ip in pods:
        assert kube.shell(curl.replace("127.0.0.1", ip)) == ""  # nothing answers

    for pod, ip in pods:  # the fix: the admin port answers
        kubelet.start(pod, ip)
    kube.wait_up_to_date(2)
    kube.wait_reason(f"llmgw/{GW}", "ProvidersHealthy", "Healthy")
    kube.wait_reason(f"llmgw/{GW}", "ConfigApplied", "Applied")
    seen = first_look(kube)
    assert "ProvidersHealthy=True Healthy: 2 pods report every provider healthy" in seen
    rendered = kube.get(f"llmgw/{GW}")["status"]["config"]["hash"]
    assert f"ConfigApplied=True Applied: 2 pods run config {rendered}" in seen
    assert re.search(rf"^llmgateway\S*/{GW}\s+True\s+Available\s+Healthy\s", seen, re.M), seen
    report = json.loads(kube.shell(curl.replace("127.0.0.1", pods[0][1])))
    assert report["configHash"] == rendered


@caused("BreakerOpen")
def test_breaker_open(kube: Kube, kubelet: Kubelet, providers: dict[str, FakeProviderProcess]) -> None:
    deploy_data_plane(kube, kubelet, providers)
    providers["primary"].plan({"status": 500, "times": 0})
    for sidecar in kubelet.sidecars.values():
        assert sidecar.chat() == 200  # the fallback answers; the primary's breaker opens

    waits = section("### `ProvidersHealthy`")
    wait = "kubectl -n NS wait --for=condition=ProvidersHealthy=false llmgw/GW"
    assert f"`{wait}`" in waits, "the section's wait for trouble"
    assert "condition met" in kube.shell(wait + f" --timeout={WAIT}s")
    assert kube.condition("ProvidersHealthy")["reason"] == "BreakerOpen"
    seen = first_look(kube)
    assert "ProvidersHealthy=False BreakerOpen: primary: breaker open in 2 of 2 pods" in seen
    assert re.search(rf"^llmgateway\S*/{GW}\s+True\s+Available\s+BreakerOpen\s", seen, re.M), seen
    assert re.search(r"Warning\s+ProviderUnhealthy", seen), seen
    # The policy's status follows the gateway's in a pass of its own.
    kube.kubectl("wait", "llmpp/primary", "--for=jsonpath={.status.breakerOpenPods}=2", f"--timeout={WAIT}s")
    columns = (
        "kubectl -n NS get llmpp -o custom-columns=POLICY:.metadata.name,BREAKER-OPEN:.status.breakerOpenPods"
    )
    per_policy = kube.shell(documented("ProvidersHealthy", "BreakerOpen", columns))
    assert re.search(r"^primary\s+2$", per_policy, re.M), per_policy
    assert re.search(r"^fallback\s+0$", per_policy, re.M), per_policy

    # The provider is well again: its breaker half-opens after openDuration (10 s), and the next
    # request is the probe that closes it.
    providers["primary"].clear()

    def recovered() -> bool:
        for sidecar in kubelet.sidecars.values():
            sidecar.chat()
        return bool(kube.condition("ProvidersHealthy").get("reason") == "Healthy")

    eventually(recovered, WAIT, "ProvidersHealthy=True Healthy again")
    assert re.search(r"Normal\s+ProviderRecovered", first_look(kube))


@caused("RateLimited")
def test_rate_limited(kube: Kube, kubelet: Kubelet, providers: dict[str, FakeProviderProcess]) -> None:
    deploy_data_plane(kube, kubelet, providers)
    # The provider's quota runs out: a 429 whose Retry-After pauses the primary in each pod.
    providers["primary"].plan({"status": 429, "retryAfter": 15, "times": 0})
    for sidecar in kubelet.sidecars.values():
        assert sidecar.chat() == 200  # the fallback answers
    kube.wait_reason(f"llmgw/{GW}", "ProvidersHealthy", "RateLimited")
    seen = first_look(kube)
    assert "ProvidersHealthy=False RateLimited: primary: paused by a 429 in 2 of 2 pods" in seen
    assert "BreakerOpen" not in seen

    providers["primary"].clear()  # the quota is back; the pause ends with its Retry-After
    kube.wait_reason(f"llmgw/{GW}", "ProvidersHealthy", "Healthy")


@caused("ReloadPending", "ReloadRefused")
def test_reload_pending_then_refused(
    kube: Kube, kubelet: Kubelet, providers: dict[str, FakeProviderProcess], tmp_path: Path
) -> None:
    deploy_data_plane(kube, kubelet, providers)
    kube.kubectl("patch", "llmpp/fallback", "--type", "merge", "-p", '{"spec": {"timeouts": {"total": 90}}}')
    # The ConfigMap holds the new config; kubelet (this test) has not handed it to the pods yet.
    kube.wait_reason(f"llmgw/{GW}", "ConfigApplied", "ReloadPending")
    rendered = kube.get(f"llmgw/{GW}")["status"]["config"]["hash"]
    seen = first_look(kube)
    assert f"ConfigApplied=False ReloadPending: 2 of 2 pods run an older config than {rendered}" in seen
    assert "ConfigNotApplied" not in event_reasons(kube)  # "No Event"

    # One pod gets the config; the other refuses it. In a cluster that is a sidecar image older
    # than the operator (a pinned spec.proxy.image) meeting a config it cannot read; here the
    # sidecar meets a config version it does not read, which it refuses the same way.
    good, bad = sorted(kubelet.sidecars)
    kubelet.publish(good)
    kubelet.publish(bad, re.sub(r"^version: 1$", "version: 2", kubelet.rendered(), flags=re.M))
    kube.wait_reason(f"llmgw/{GW}", "ConfigApplied", "ReloadRefused")
    seen = first_look(kube)
    assert (
        f"ConfigApplied=False ReloadRefused: 1 of 2 pods run an older config than {rendered}; "
        "reload refused: config_invalid in 1 pod" in seen
    )
    assert re.search(r"Warning\s+ConfigNotApplied", seen), seen
    # kwok keeps no container logs: the row's grep reads the sidecar's own stderr, which is what
    # `kubectl logs` would show.
    logs = "kubectl -n NS logs POD -c llmgw-proxy | grep 'reload refused'"
    grep = documented("ConfigApplied", "ReloadRefused", logs).split("|", 1)[1]
    stderr = tmp_path / "sidecar.log"
    stderr.write_text("".join(json.dumps(line) + "\n" for line in kubelet.sidecars[bad].lines))
    refused = kube.shell(f"cat {stderr} |{grep}")
    assert "config_invalid" in refused and "version 2 is not supported" in refused, refused

    kubelet.publish(bad)  # the fix: a sidecar that reads the operator's config
    kube.wait_reason(f"llmgw/{GW}", "ConfigApplied", "Applied")
