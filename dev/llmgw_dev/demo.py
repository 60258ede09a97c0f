"""`make demo`: the whole product on one machine, driven as a user drives it.

1. a local control plane; 2. `helm install` of the chart; 3. the operator, run
with the chart's ServiceAccount token (proof that the chart's RBAC suffices);
4. fake providers on loopback; 5. the samples applied with kubectl, waited to
Ready; 6. the sidecar run with exactly the ConfigMap and Secret content the
operator rendered, mounted where kubelet would mount them (a private mount
namespace over an overlay of /etc, so the host is untouched); 7. the openai
client: an answer, a stream, a Responses API call, a cache hit, the breaker
opening with fallback, a policy edit hot-reloaded, and a 429 from the local
limit; the anthropic client: one Messages call to an anthropic policy; 8. the status.
9. injection mode: a gateway without a template, the team's own Deployment
labelled with its name, the webhook (served by the operator on loopback, the
chart's webhook.url pointing there) injecting the sidecar into its pods, and
that sidecar answering as the owned one did.
Everything started is stopped, in reverse order. Any failed check exits 1.

The gateway's pods sit on a fake node whose pod IPs are loopback addresses,
so the operator polls the sidecar's GET /status through the pods' IPs, as in
a cluster: ProvidersHealthy turns False while the breaker is open and True
once it closes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llmgw_dev import binaries, cluster, processes, sidecar

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "demo"
RELEASE = "llmgw"
SYSTEM_NS = "llmgw-system"
GATEWAY = "chat"
PROVIDERS = {"primary": 18080, "fallback": 18081}
PROXY_PORT, ADMIN_PORT = 8080, 9090
# Injection mode: the operator's webhook on loopback (the chart's webhook.url points there), and the
# injected pod's sidecar, run beside the owned gateway's on ports of its own.
WEBHOOK_PORT = 19443
INJECTED_GATEWAY, INJECTED_APP = "chat-injected", "chat-app"
INJECTED_PROXY_PORT, INJECTED_ADMIN_PORT = 8082, 9092
MODEL = "gpt-4o-mini"
CLAUDE = "claude-sonnet"
ANTHROPIC_PORT = 18082
# The demo's Anthropic policy and route, added to the samples' gateway: the samples stay the
# newcomer's OpenAI-compatible setup. The fake takes any key, so the samples' Secret serves.
ANTHROPIC_POLICY = {
    "apiVersion": "llmgateway.io/v1alpha1",
    "kind": "ProviderPolicy",
    "metadata": {"name": "anthropic"},
    "spec": {
        "provider": "anthropic",
        "baseURL": f"http://127.0.0.1:{ANTHROPIC_PORT}/v1",
        "apiKeySecretRef": {"name": "llm-provider-keys", "key": "primary"},
    },
}
CLAUDE_ROUTE = {"model": CLAUDE, "targets": [{"policy": "anthropic"}]}


class DemoError(RuntimeError):
    pass


OPERATOR_ARGV = (sys.executable, "-m", "llmgw_operator.cli")


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def show(line: str) -> None:
    print(f"   {line}", flush=True)


def check(ok: bool, what: str) -> None:
    if not ok:
        raise DemoError(what)
    show(f"ok: {what}")


def eventually(what: str, probe: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.1)  # polling processes we do not own; nothing to await
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


def answers_ok(url: str) -> bool:
    return http_get(url)[0] == 200


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def http_post(url: str, payload: dict[str, Any]) -> None:
    req = urllib.request.Request(  # noqa: S310 - loopback
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=5):  # noqa: S310
        pass


@contextlib.contextmanager
def process(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[object]:
    with processes.running(argv, log, env) as proc:
        yield proc
    show(f"stopped {name} (exit {proc.returncode})")


def kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    return cluster.run_kubectl(kubeconfig, *args, input=input, timeout=120).stdout


def service_account_kubeconfig(c: cluster.Cluster, work: Path) -> Path:
    sa = kubectl(
        c.kubeconfig,
        "-n",
        SYSTEM_NS,
        "get",
        "serviceaccount",
        "-l",
        f"app.kubernetes.io/instance={RELEASE}",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ).strip()
    if not sa:
        raise DemoError("the chart created no ServiceAccount")
    token = kubectl(c.kubeconfig, "-n", SYSTEM_NS, "create", "token", sa, "--duration=2h").strip()
    path = work / "operator.kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {"server": c.server, "certificate-authority": str(c.ca_file)},
                    }
                ],
                "users": [{"name": sa, "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "local", "user": sa}}],
            }
        )
    )
    path.chmod(0o600)
    show(f"ServiceAccount {SYSTEM_NS}/{sa}: token written to {path}")
    return path


def metric(name: str, labels: str) -> float | None:
    _, text = http_get(f"http://127.0.0.1:{ADMIN_PORT}/metrics")
    for line in text.splitlines():
        # A metric without labels is written "name value", with labels "name{...} value".
        if line.startswith((name + "{", name + " ")) and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def run(work: Path) -> None:
    stack = contextlib.ExitStack()
    with stack:
        step("Start a local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)")
        started = time.monotonic()
        c = cluster.up(name=f"demo-{os.getpid()}")
        stack.callback(show, "stopped the local control plane")
        stack.callback(cluster.down, c)
        show(f"up in {time.monotonic() - started:.1f}s, kubeconfig {c.kubeconfig}")
        check(
            kubectl(c.kubeconfig, "get", "--raw", "/readyz").strip() == "ok", "the API server answers /readyz"
        )
        kc = c.kubeconfig

        step("helm install the chart")
        helm = str(binaries.ensure("helm"))
        out = subprocess.run(
            [
                helm,
                "--kubeconfig",
                str(kc),
                "install",
                RELEASE,
                str(ROOT / "helm" / "llmgw"),
                "-n",
                SYSTEM_NS,
                "--create-namespace",
                # The API server of the local control plane has no cluster network to reach the
                # webhook's Service; it calls the operator run below on loopback instead.
                "--set",
                f"webhook.url=https://127.0.0.1:{WEBHOOK_PORT}/inject",
                "--wait",
                "--timeout",
                "120s",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise DemoError(f"helm install failed: {out.stderr.strip()}")
        show(out.stdout.strip().splitlines()[0])
        check(
            "llmgateways.llmgateway.io" in kubectl(kc, "get", "crd", "-o", "name"),
            "the chart installed the CRDs",
        )

        if not port_free(WEBHOOK_PORT):
            raise DemoError(f"port {WEBHOOK_PORT} (the operator's webhook) is taken")
        step("Run the operator with the chart's ServiceAccount credentials")
        sa_config = service_account_kubeconfig(c, work)
        env = {**os.environ, "KUBECONFIG": str(sa_config), "LLMGW_PROXY_IMAGE": "llmgw-proxy:demo"}
        stack.enter_context(
            process(
                "the operator",
                # A short data-plane period, so the status follows the breaker within seconds.
                [
                    *OPERATOR_ARGV,
                    "--all-namespaces",
                    "--standalone",
                    "--metrics-port=0",
                    "--data-plane-period=2",
                    f"--webhook-port={WEBHOOK_PORT}",
                    "--webhook-address=127.0.0.1",
                    "--webhook-host=127.0.0.1",
                    f"--webhook-secret={SYSTEM_NS}/{RELEASE}-webhook-tls",
                    f"--webhook-configuration={RELEASE}-{SYSTEM_NS}",
                ],
                work / "operator.log",
                env,
            )
        )

        step("Start the fake providers on loopback")
        for name, port in PROVIDERS.items():
            if not port_free(port):
                raise DemoError(f"port {port} (fake provider {name}) is taken")
            stack.enter_context(
                process(
                    f"fake provider {name}",
                    [sys.executable, "-m", "llmgw_dev.fake_provider", "--port", str(port)],
                    work / f"fake-{name}.log",
                )
            )
        if not port_free(ANTHROPIC_PORT):
            raise DemoError(f"port {ANTHROPIC_PORT} (fake Anthropic provider) is taken")
        stack.enter_context(
            process(
                "fake Anthropic provider",
                [sys.executable, "-m", "llmgw_dev.fake_anthropic", "--port", str(ANTHROPIC_PORT)],
                work / "fake-anthropic.log",
            )
        )
        for name, port in [*PROVIDERS.items(), ("anthropic", ANTHROPIC_PORT)]:
            url = f"http://127.0.0.1:{port}/v1/models"
            eventually(f"fake provider {name}", functools.partial(answers_ok, url))
        show(
            f"primary on :{PROVIDERS['primary']}, fallback on :{PROVIDERS['fallback']}, "
            f"anthropic on :{ANTHROPIC_PORT}"
        )

        step("A fake node whose pod IPs are loopback addresses, so the operator can reach the sidecar")
        loopback_node(kc)
        show(f"node {LOOPBACK_NODE} (podCIDR {LOOPBACK_CIDR}); the other fake nodes cordoned")

        step("kubectl apply the samples: a provider-key Secret, two ProviderPolicies, an LLMGateway")
        kubectl(kc, "create", "namespace", NAMESPACE)
        for sample in ("secret", "providerpolicy-primary", "providerpolicy-fallback", "llmgateway"):
            show(
                kubectl(kc, "-n", NAMESPACE, "apply", "-f", str(ROOT / "samples" / f"{sample}.yaml")).strip()
            )
        show(kubectl(kc, "-n", NAMESPACE, "apply", "-f", "-", input=json.dumps(ANTHROPIC_POLICY)).strip())
        add_route = [{"op": "add", "path": "/spec/routes/-", "value": CLAUDE_ROUTE}]
        kubectl(kc, "-n", NAMESPACE, "patch", "llmgw", GATEWAY, "--type", "json", "-p", json.dumps(add_route))
        show(f"added route {CLAUDE} -> policy anthropic (provider: anthropic)")
        kubectl(kc, "-n", NAMESPACE, "wait", "--for=condition=Ready", f"llmgw/{GATEWAY}", "--timeout=90s")
        check(True, f"llmgw/{GATEWAY} is Ready")

        step("Run the sidecar with the rendered ConfigMap and Secret, mounted as kubelet mounts them")
        for port in (PROXY_PORT, ADMIN_PORT):
            if not port_free(port):
                raise DemoError(f"port {port} (sidecar) is taken")
        sc = stack.enter_context(
            sidecar.running(kc, NAMESPACE, GATEWAY, work, port=PROXY_PORT, admin_port=ADMIN_PORT)
        )
        stack.callback(show, "stopped the sidecar")
        for mount in sc.volumes:
            files = sorted(sc.seen[mount])
            show(f"{mount.kind} {mount.name} at {mount.path}: files {files} (values not shown)")
        eventually(
            "the sidecar's /readyz", lambda: http_get(f"http://127.0.0.1:{ADMIN_PORT}/readyz")[0] == 200, 30
        )
        check(True, f"sidecar ready: API on 127.0.0.1:{PROXY_PORT}, admin on :{ADMIN_PORT}")

        answer = talk(kc, sc)
        inject(kc, work, stack, answer)

        step("kubectl get llmgw,providerpolicies")
        print(kubectl(kc, "-n", NAMESPACE, "get", "llmgw,providerpolicies", "-o", "wide"))
        gw = json.loads(kubectl(kc, "-n", NAMESPACE, "get", "llmgw", GATEWAY, "-o", "json"))
        for cond in gw["status"]["conditions"]:
            show(f"{cond['type']}={cond['status']} ({cond['reason']}): {cond['message']}")
        step("Stop everything this demo started")


def inject(kc: Path, work: Path, stack: contextlib.ExitStack, owned_answer: str) -> None:
    """Injection mode: the team's own Deployment, labelled, gets the sidecar from the webhook."""
    import openai

    step("Injection mode: an LLMGateway without a template, and a plain Deployment labelled with its name")
    for sample in ("llmgateway", "deployment"):
        path = ROOT / "samples" / "injection" / f"{sample}.yaml"
        show(kubectl(kc, "-n", NAMESPACE, "apply", "-f", str(path)).strip())
    kubectl(
        kc, "-n", NAMESPACE, "wait", "--for=condition=Ready", f"llmgw/{INJECTED_GATEWAY}", "--timeout=90s"
    )
    check(True, f"llmgw/{INJECTED_GATEWAY} is Ready: its config and keys exist, no Deployment of its own")

    def injected_pods() -> list[dict[str, Any]]:
        listed = json.loads(
            kubectl(kc, "-n", NAMESPACE, "get", "pods", "-l", f"app={INJECTED_APP}", "-o", "json")
        )
        return [p for p in listed["items"] if p["spec"].get("initContainers")]

    eventually(
        "the Deployment's 2 pods, created by the ReplicaSet controller", lambda: len(injected_pods()) == 2
    )
    pods = injected_pods()
    for pod in pods:
        names = [c["name"] for c in pod["spec"]["initContainers"]]
        volumes = sorted(v["name"] for v in pod["spec"]["volumes"])
        show(f"pod {pod['metadata']['name']}: initContainers {names}, volumes {volumes}")
    check(
        all(p["spec"]["initContainers"][0]["name"] == "llmgw-proxy" for p in pods),
        "the webhook injected the native sidecar into every pod; the Deployment itself has none",
    )
    kubectl(
        kc,
        "-n",
        NAMESPACE,
        "wait",
        "--for=jsonpath={.status.injection.current}=2",
        f"llmgw/{INJECTED_GATEWAY}",
        "--timeout=60s",
    )
    show(
        "status.injection: "
        + kubectl(kc, "-n", NAMESPACE, "get", "llmgw", INJECTED_GATEWAY, "-o", "jsonpath={.status.injection}")
    )

    step("Run the injected pod's sidecar (its own mounts, read from the pod) and call it as the app would")
    for port in (INJECTED_PROXY_PORT, INJECTED_ADMIN_PORT):
        if not port_free(port):
            raise DemoError(f"port {port} (the injected sidecar) is taken")
    pod_name = pods[0]["metadata"]["name"]
    stack.enter_context(
        sidecar.running(
            kc,
            NAMESPACE,
            INJECTED_GATEWAY,
            work / "injected",
            port=INJECTED_PROXY_PORT,
            admin_port=INJECTED_ADMIN_PORT,
            pod=pod_name,
        )
    )
    eventually(
        "the injected sidecar's /readyz",
        lambda: http_get(f"http://127.0.0.1:{INJECTED_ADMIN_PORT}/readyz")[0] == 200,
        30,
    )
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{INJECTED_PROXY_PORT}/v1", api_key="the-app-has-no-key", max_retries=0
    )
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}], "temperature": 0}
    raw = client.chat.completions.with_raw_response.create(**ask)  # type: ignore[call-overload]
    reply = raw.parse().choices[0].message.content
    show(f"{reply!r} via {raw.headers.get('x-llmgw-provider')}")
    check(
        raw.headers.get("x-llmgw-provider") == "primary" and reply == owned_answer,
        "the injected sidecar answers as the owned mode's did",
    )


LOOPBACK_NODE, LOOPBACK_CIDR = "kwok-loopback", "127.0.100.0/24"


def loopback_node(kc: Path) -> None:
    """kwok gives a pod the next address of its node's podCIDR: with one inside 127.0.0.0/8, the
    gateway's pod IPs reach the sidecar this demo runs (its admin port listens on every address),
    and the operator polls GET /status there exactly as it would in a cluster."""
    node = cluster.fake_node(LOOPBACK_NODE, pod_cidr=LOOPBACK_CIDR)
    kubectl(kc, "apply", "-f", "-", input=json.dumps(node))
    kubectl(kc, "wait", "--for=condition=Ready", f"node/{LOOPBACK_NODE}", "--timeout=60s")
    for name in kubectl(kc, "get", "nodes", "-o", "name").split():
        if name != f"node/{LOOPBACK_NODE}":
            kubectl(kc, "cordon", name)


def providers_condition(kc: Path) -> dict[str, Any]:
    gw = json.loads(kubectl(kc, "-n", NAMESPACE, "get", "llmgw", GATEWAY, "-o", "json"))
    found: dict[str, Any] = next(c for c in gw["status"]["conditions"] if c["type"] == "ProvidersHealthy")
    return found


def talk(kc: Path, sc: sidecar.Running) -> str:
    """The owned gateway's sidecar through its paces; its first answer, to compare injection mode's with."""
    import openai

    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{PROXY_PORT}/v1", api_key="the-app-has-no-key", max_retries=0
    )
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}], "temperature": 0}

    step("A normal answer through the sidecar (the openai client, no provider key in the app)")
    raw = client.chat.completions.with_raw_response.create(**ask)  # type: ignore[call-overload]
    answer = raw.parse()
    show(
        f"{answer.choices[0].message.content!r} via {raw.headers.get('x-llmgw-provider')}, "
        f"cache {raw.headers.get('x-llmgw-cache')}, usage {answer.usage.total_tokens} tokens"
    )
    check(raw.headers.get("x-llmgw-provider") == "primary", "served by the primary provider")
    first = str(answer.choices[0].message.content)

    step("A stream, chunk by chunk")
    chunks = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Stream please"}], stream=True
        )
        if c.choices
    ]
    show(f"{len(chunks)} chunks: {''.join(chunks)!r}")
    check(len(chunks) > 1, "the answer arrived as several chunks")

    step("The Responses API (what the Agents SDK calls), through the same route")
    raw_response = client.responses.with_raw_response.create(model=MODEL, input="Say hello")
    response = raw_response.parse()
    show(
        f"{response.output_text!r} via {raw_response.headers.get('x-llmgw-provider')}, "
        f"usage {response.usage.total_tokens if response.usage else None} tokens, id {response.id}"
    )
    check(response.status == "completed", "a Responses API answer")

    step("Anthropic's Messages API with the anthropic client, to the anthropic policy")
    import anthropic

    claude = anthropic.Anthropic(
        base_url=f"http://127.0.0.1:{PROXY_PORT}", api_key="the-app-has-no-key", max_retries=0
    )
    raw_message = claude.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
    )
    message = raw_message.parse()
    text = message.content[0].text if message.content and message.content[0].type == "text" else ""
    show(
        f"{text!r} via {raw_message.headers.get('x-llmgw-provider')}, "
        f"usage {message.usage.input_tokens}+{message.usage.output_tokens} tokens"
    )
    check(raw_message.headers.get("x-llmgw-provider") == "anthropic", "served by the anthropic policy")
    claude.close()

    step("The same deterministic question again: a cache hit")
    raw = client.chat.completions.with_raw_response.create(**ask)  # type: ignore[call-overload]
    show(f"x-llmgw-cache: {raw.headers.get('x-llmgw-cache')}")
    check(raw.headers.get("x-llmgw-cache") == "HIT", "answered from the sidecar's cache")

    step("The primary fails: retries, then the breaker opens and the fallback serves")
    http_post(f"http://127.0.0.1:{PROVIDERS['primary']}/_control", {"faults": [{"status": 500, "times": 0}]})
    served = []
    for i in range(8):
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"question {i}"}]
        )
        served.append(raw.headers.get("x-llmgw-provider"))
    show(f"served by: {', '.join(str(s) for s in served)}")
    check(all(s == "fallback" for s in served), "every answer came from the fallback")
    state = metric("llmgw_breaker_state", 'provider="primary"')
    show(f'llmgw_breaker_state{{provider="primary"}} = {state} (0 closed, 1 half-open, 2 open)')
    check(state == 2, "the primary's breaker is open")
    _, recorded = http_get(f"http://127.0.0.1:{PROVIDERS['primary']}/_control/requests")
    before = len(json.loads(recorded))
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "one more"}])
    _, recorded = http_get(f"http://127.0.0.1:{PROVIDERS['primary']}/_control/requests")
    check(len(json.loads(recorded)) == before, "with the breaker open, the primary gets no traffic")
    step("The operator polls the pods' /status: the gateway's status says the breaker is open")
    kubectl(
        kc,
        "-n",
        NAMESPACE,
        "wait",
        "--for=condition=ProvidersHealthy=false",
        f"llmgw/{GATEWAY}",
        "--timeout=60s",
    )
    print(kubectl(kc, "-n", NAMESPACE, "get", "llmgw", GATEWAY))
    condition = providers_condition(kc)
    show(f"ProvidersHealthy={condition['status']} ({condition['reason']}): {condition['message']}")
    check(
        condition["reason"] == "BreakerOpen" and "primary" in condition["message"],
        "the CR names the provider",
    )

    step("The primary recovers: after the open duration a probe closes the breaker, and the CR follows")
    http_delete(f"http://127.0.0.1:{PROVIDERS['primary']}/_control")

    def primary_serves() -> bool:
        time.sleep(0.5)  # one question every half second until the breaker lets a probe through
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": "are you back?"}]
            )
        except openai.APIStatusError:
            return False
        return raw.headers.get("x-llmgw-provider") == "primary"

    eventually("the primary to serve again", primary_serves, 60)
    kubectl(
        kc, "-n", NAMESPACE, "wait", "--for=condition=ProvidersHealthy", f"llmgw/{GATEWAY}", "--timeout=60s"
    )
    condition = providers_condition(kc)
    show(f"ProvidersHealthy={condition['status']} ({condition['reason']}): {condition['message']}")
    check(condition["status"] == "True", "the CR says the providers are healthy again")

    step("Tighten both policies' limits with kubectl; the sidecar hot-reloads the new config")
    tight = {
        "spec": {"rateLimit": {"requestsPerMinute": 2, "requestBurst": 2, "maxWait": 0, "scope": "perPod"}}
    }
    generation = metric("llmgw_config_generation", "") or 0.0
    for policy in PROVIDERS:
        kubectl(
            kc, "-n", NAMESPACE, "patch", "providerpolicy", policy, "--type", "merge", "-p", json.dumps(tight)
        )
    # As kubelet would: the re-rendered ConfigMap is copied into the sidecar's volume.
    eventually(
        "the operator to re-render the ConfigMap",
        lambda: f"configmap/{GATEWAY}-proxy-config" in sidecar.sync(kc, NAMESPACE, sc),
    )
    eventually(
        "the sidecar to load the new config",
        lambda: (metric("llmgw_config_generation", "") or 0.0) > generation,
        30,
    )
    check(True, "new config generation loaded without a restart")

    step("Past the local limit: 429 with Retry-After, which the openai client understands")
    # The edit gave both providers new limiter and breaker state; let the primary answer again.
    http_delete(f"http://127.0.0.1:{PROVIDERS['primary']}/_control")
    refused = None
    for i in range(10):
        try:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"burst {i}"}])
        except openai.RateLimitError as e:
            refused = e
            break
    check(refused is not None, "the sidecar refused with 429 once both providers' buckets were empty")
    assert refused is not None
    show(
        f"{refused.status_code} Retry-After={refused.response.headers.get('retry-after')} "
        f"x-ratelimit-remaining-requests={refused.response.headers.get('x-ratelimit-remaining-requests')}"
    )
    show(f"error body: {json.dumps(refused.body)[:160]}")
    return first


def http_delete(url: str) -> None:
    req = urllib.request.Request(url, method="DELETE")  # noqa: S310 - loopback
    with urllib.request.urlopen(req, timeout=5):  # noqa: S310
        pass


def main() -> int:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="llmgw-demo-"))
    try:
        run(work)
    except (DemoError, cluster.ClusterError, binaries.BuildError) as e:
        print(f"\n\033[31mdemo failed: {e}\033[0m\nlogs kept in {work}", file=sys.stderr)
        for log in sorted(work.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-8:]
            print(f"--- {log.name}\n" + "\n".join(tail), file=sys.stderr)
        return 1
    print(f"\ndemo finished in {time.monotonic() - started:.0f}s")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
