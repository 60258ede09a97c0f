"""Egress in the rendered objects: the Secrets and ConfigMaps the sidecar mounts, and its config.

Every Secret or ConfigMap an egress setting names (a policy's CA bundle or
client certificate, a proxy's credentials) becomes one read-only volume of the
pod, mounted whole (so kubelet updates rotated files) under
``/etc/llmgw/egress/<kind>-<name>``; the config points at the key's file there.
One object named by several settings is mounted once. The operator never
reads these objects: kubelet does, with the pod's rights.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from llmgw_operator.api import egress as egress_api
from llmgw_operator.api import gateway, policy
from llmgw_proxy import config

EGRESS_DIR = f"{gateway.RESERVED_DIR}/egress"


@dataclasses.dataclass(frozen=True, order=True)
class Mount:
    """One referenced object, as a pod volume and the sidecar's mount of it."""

    kind: Literal["configMap", "secret"]
    name: str

    @property
    def volume(self) -> str:
        # Object names may be 253 characters; volume names at most 63: a digest keeps them apart.
        digest = hashlib.sha256(f"{self.kind}/{self.name}".encode()).hexdigest()[:12]
        return f"{gateway.RESERVED_VOLUME_PREFIX}egress-{digest}"

    @property
    def directory(self) -> str:
        return f"{EGRESS_DIR}/{self.kind.lower()}-{self.name}"

    def file(self, key: str) -> str:
        return f"{self.directory}/{key}"

    def pod_volume(self) -> dict[str, Any]:
        # 0444: the sidecar runs as a fixed non-root user that must read them.
        if self.kind == "secret":
            return {"name": self.volume, "secret": {"secretName": self.name, "defaultMode": 0o444}}
        return {"name": self.volume, "configMap": {"name": self.name, "defaultMode": 0o444}}

    def volume_mount(self) -> dict[str, Any]:
        return {"name": self.volume, "mountPath": self.directory, "readOnly": True}


def _proxy_mounts(proxy: egress_api.Proxy | None) -> Iterable[Mount]:
    if proxy is not None and proxy.credentials_secret_ref is not None:
        yield Mount("secret", proxy.credentials_secret_ref.name)


def _ca_mount(ref: egress_api.ObjectKeyRef) -> Mount:
    if ref.secret is not None:
        return Mount("secret", ref.secret)
    assert ref.config_map is not None
    return Mount("configMap", ref.config_map)


def mounts(
    spec: gateway.LLMGatewaySpec, policies: Mapping[str, policy.ProviderPolicySpec]
) -> tuple[Mount, ...]:
    """Every object the gateway's egress settings and its routed policies name, each once, sorted."""
    found: set[Mount] = set(_proxy_mounts(spec.egress.proxy))
    for name in spec.policy_names():
        p = policies.get(name)
        if p is None:
            continue
        found.update(_proxy_mounts(p.egress.proxy))
        if p.egress.ca_bundle is not None:
            found.add(_ca_mount(p.egress.ca_bundle))
        if p.egress.client_certificate is not None:
            found.add(Mount("secret", p.egress.client_certificate.secret))
    return tuple(sorted(found))


def _proxy(proxy: egress_api.Proxy) -> config.EgressProxy:
    ref = proxy.credentials_secret_ref
    return config.EgressProxy(
        https_proxy=proxy.https_proxy,
        http_proxy=proxy.http_proxy,
        no_proxy=proxy.no_proxy,
        credentials_file=Mount("secret", ref.name).file(ref.key) if ref is not None else None,
    )


def provider_egress(p: policy.ProviderPolicySpec, gateway_proxy: egress_api.Proxy | None) -> config.Egress:
    """The provider's egress: the policy's proxy, else the gateway's, else none (the environment's)."""
    chosen = p.egress.proxy if p.egress.proxy is not None else gateway_proxy
    ca = p.egress.ca_bundle
    cert = p.egress.client_certificate
    client = Mount("secret", cert.secret) if cert is not None else None
    return config.Egress(
        proxy=_proxy(chosen) if chosen is not None else None,
        ca_file=_ca_mount(ca).file(ca.key) if ca is not None else None,
        client_cert_file=client.file(cert.certificate_key)
        if client is not None and cert is not None
        else None,
        client_key_file=client.file(cert.private_key_key)
        if client is not None and cert is not None
        else None,
        connect_stagger=p.egress.connect_stagger,
    )
