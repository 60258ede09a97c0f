"""Egress and sidecar settings through a real control plane: what lands in the Deployment and config.

The operator of this module runs with the chart's default pod rules. It never
reads the CA, client certificate or proxy credential objects: kubelet mounts
them, so the test checks that the Deployment mounts them where the rendered
config points.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

import operatorkit
import pytest
from operatorkit import Namespace

pytestmark = pytest.mark.cluster

GW = "chat"
CA_SECRET = "internal-ca"
PROXY_SECRET = "proxy-credentials"
SIDECAR_ENV = [
    {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability:4318"},
    {"name": "HTTPS_PROXY", "valueFrom": {"secretKeyRef": {"name": "egress", "key": "url"}}},
]


def documents(
    gateway: dict[str, Any] | None = None, primary: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    found = operatorkit.samples()
    found[GW]["spec"] |= gateway or {}
    found["primary"]["spec"] |= primary or {}
    return list(found.values())


def wait_reason(ns: Namespace, ref: str, type_: str, reason: str) -> dict[str, Any]:
    ns.wait(ref, f'jsonpath={{.status.conditions[?(@.type=="{type_}")].reason}}={reason}')
    found = ns.condition(ref, type_)
    assert found is not None
    return found


def sidecar_of(deployment: dict[str, Any]) -> dict[str, Any]:
    pod = deployment["spec"]["template"]["spec"]
    [found] = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "llmgw-proxy"]
    container: dict[str, Any] = found
    return container


def source_of(deployment: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The pod volume a sidecar file lies on, and its key within the mounted object."""
    [mount] = [m for m in sidecar_of(deployment)["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    [volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    return volume, posixpath.relpath(path, mount["mountPath"])


def test_egress_settings_reach_the_sidecar_and_its_config(ns: Namespace) -> None:
    ns.apply(
        *documents(
            gateway={
                "proxy": {**operatorkit.samples()[GW]["spec"]["proxy"], "env": SIDECAR_ENV},
                "egress": {
                    "proxy": {
                        "httpsProxy": "http://egress-proxy.egress:3128",
                        "noProxy": ".svc,.cluster.local",
                        "credentialsSecretRef": {"name": PROXY_SECRET, "key": "credentials"},
                    }
                },
            },
            primary={"egress": {"caBundle": {"secret": CA_SECRET, "key": "ca.crt"}}},
        )
    )
    wait_reason(ns, f"llmgw/{GW}", "Reconciled", "Applied")
    deployment = ns.get(f"deployment/{GW}")
    assert sidecar_of(deployment)["env"] == SIDECAR_ENV
    provider = ns.proxy_config(GW)["providers"]["primary"]["egress"]
    volume, key = source_of(deployment, provider["caFile"])
    assert (volume["secret"]["secretName"], key) == (CA_SECRET, "ca.crt")
    volume, key = source_of(deployment, provider["proxy"]["credentialsFile"])
    assert (volume["secret"]["secretName"], key) == (PROXY_SECRET, "credentials")
    assert provider["proxy"]["httpsProxy"] == "http://egress-proxy.egress:3128"
    # The gateway's proxy reaches the other policy too, without its CA.
    fallback = ns.proxy_config(GW)["providers"]["fallback"]["egress"]
    assert fallback["proxy"]["noProxy"] == ".svc,.cluster.local" and "caFile" not in fallback


def test_the_api_server_refuses_a_sidecar_mount_over_the_keys(ns: Namespace) -> None:
    proxy = {
        **operatorkit.samples()[GW]["spec"]["proxy"],
        "volumes": [{"name": "mine", "emptyDir": {}}],
        "volumeMounts": [{"name": "mine", "mountPath": "/etc/llmgw/keys"}],
    }
    docs = documents(gateway={"proxy": proxy})
    [gateway] = [d for d in docs if d["kind"] == "LLMGateway"]
    refused = ns.cluster.kubectl("-n", ns.name, "apply", "-f", "-", input=json.dumps(gateway), check=False)
    assert refused.returncode != 0
    assert "/etc/llmgw and the directories above it are reserved" in refused.stderr
    assert not ns.exists(f"llmgw/{GW}")


def test_a_sidecar_mount_of_no_volume_is_an_invalid_spec_named_on_the_gateway(ns: Namespace) -> None:
    proxy = {
        **operatorkit.samples()[GW]["spec"]["proxy"],
        "volumeMounts": [{"name": "nowhere", "mountPath": "/x"}],
    }
    ns.apply(*documents(gateway={"proxy": proxy}))
    reconciled = wait_reason(ns, f"llmgw/{GW}", "Reconciled", "InvalidSpec")
    assert reconciled["status"] == "False"
    assert (
        "proxy.volumeMounts: nowhere is neither in proxy.volumes nor in template.spec.volumes"
        in (reconciled["message"])
    )
    assert not ns.exists(f"deployment/{GW}")


def test_a_host_path_sidecar_volume_is_refused_like_a_template_one(ns: Namespace) -> None:
    proxy = {
        **operatorkit.samples()[GW]["spec"]["proxy"],
        "volumes": [{"name": "host", "hostPath": {"path": "/var/run"}}],
        "volumeMounts": [{"name": "host", "mountPath": "/host"}],
    }
    ns.apply(*documents(gateway={"proxy": proxy}))
    reconciled = wait_reason(ns, f"llmgw/{GW}", "Reconciled", "PodTemplateRefused")
    assert (
        "proxy.volumes: hostPath volume host is not allowed by the operator's --allow-host-path"
        in (reconciled["message"])
    )
    assert not ns.exists(f"deployment/{GW}")


def test_the_egress_sample_is_accepted_and_rendered(ns: Namespace) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES / "egress"))
    wait_reason(ns, "llmgw/chat-egress", "Reconciled", "Applied")
    deployment = ns.get("deployment/chat-egress")
    env = {e["name"]: e for e in sidecar_of(deployment)["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].startswith("http://otel-collector.")
    internal = ns.proxy_config("chat-egress")["providers"]["internal-llm"]["egress"]
    volume, key = source_of(deployment, internal["caFile"])
    assert (volume["configMap"]["name"], key) == ("internal-ca", "ca.crt")
    assert internal["proxy"] == {}  # direct: the policy's empty proxy replaces the gateway's
