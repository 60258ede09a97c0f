"""The application's Deployment with the sidecar added to its pod template.

Config and keys reach running pods by hot reload (whole-volume mounts, which
kubelet updates atomically; a subPath mount would never update). Only changes
the sidecar cannot apply while running roll the Deployment, through the
``llmgateway.io/restart-hash`` pod-template annotation.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from llmgw_operator.api import gateway
from llmgw_operator.render import egress, names

SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def restart_inputs(spec: gateway.LLMGatewaySpec, image: str) -> dict[str, Any]:
    """What the running sidecar cannot pick up by hot reload.

    The listener ports are bound once at start-up; image and resources need a
    new container anyway. Routes, providers, limits, cache bounds, body size and
    the log level are hot-reloaded and so are deliberately absent.
    """
    return {
        "image": image,
        "port": spec.proxy.port,
        "adminPort": spec.proxy.admin_port,
        "resources": spec.proxy.resources,
    }


def restart_hash(spec: gateway.LLMGatewaySpec, image: str) -> str:
    encoded = json.dumps(restart_inputs(spec, image), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()[:16]


def _probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 1,
        "failureThreshold": failures,
    }


def sidecar(
    spec: gateway.LLMGatewaySpec, image: str, *, native: bool, mounts: Sequence[egress.Mount] = ()
) -> dict[str, Any]:
    """The sidecar container. ``spec.proxy``'s env, resources and volumeMounts go in as written
    (the spec's validation keeps them off the config and key mounts); ports, probes, command and
    security context are the operator's. ``mounts``: the egress objects (``egress.mounts``)."""
    proxy = spec.proxy
    container: dict[str, Any] = {
        "name": gateway.SIDECAR_CONTAINER,
        "image": image,
        "command": ["llmgw-proxy", "--config", names.CONFIG_FILE],
        "ports": [{"name": "llmgw-admin", "containerPort": proxy.admin_port, "protocol": "TCP"}],
        # Until ready, the application's calls would fail: with a native sidecar kubelet
        # starts the application only after this probe passes.
        "startupProbe": _probe("/readyz", proxy.admin_port, period=1, failures=60),
        "livenessProbe": _probe("/healthz", proxy.admin_port, period=10, failures=3),
        "readinessProbe": _probe("/readyz", proxy.admin_port, period=5, failures=2),
        "resources": copy.deepcopy(proxy.resources),
        "securityContext": copy.deepcopy(SECURITY_CONTEXT),
        "volumeMounts": [
            {"name": gateway.CONFIG_VOLUME, "mountPath": names.CONFIG_DIR, "readOnly": True},
            {"name": gateway.KEYS_VOLUME, "mountPath": names.KEYS_DIR, "readOnly": True},
            *(m.volume_mount() for m in mounts),
            *copy.deepcopy(list(proxy.volume_mounts)),
        ],
    }
    if proxy.env:
        container["env"] = [e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in proxy.env]
    if native:
        container["restartPolicy"] = "Always"
    return container


def volumes(
    gateway_name: str,
    spec: gateway.LLMGatewaySpec | None = None,
    mounts: Sequence[egress.Mount] = (),
) -> list[dict[str, Any]]:
    """The pod volumes the sidecar needs: config, keys, the egress objects and ``spec.proxy.volumes``."""
    return [
        {
            "name": gateway.CONFIG_VOLUME,
            "configMap": {"name": names.config_map(gateway_name), "defaultMode": 0o444},
        },
        # 0444: the sidecar runs as a fixed non-root user that must read the keys.
        {
            "name": gateway.KEYS_VOLUME,
            "secret": {"secretName": names.secret(gateway_name), "defaultMode": 0o444},
        },
        *(m.pod_volume() for m in mounts),
        *(copy.deepcopy(list(spec.proxy.volumes)) if spec is not None else []),
    ]


def pod_template(
    gateway_name: str,
    spec: gateway.LLMGatewaySpec,
    image: str,
    *,
    native_sidecar: bool,
    mounts: Sequence[egress.Mount] = (),
) -> dict[str, Any]:
    """The application's template with the sidecar, its volumes, labels and the restart hash."""
    if spec.template is None:
        raise ValueError("a gateway without a template owns no Deployment (injection mode)")
    template = copy.deepcopy(spec.template)
    metadata = template.setdefault("metadata", {})
    # The application's own labels win, except the selector's, which must match.
    metadata["labels"] = {
        **names.labels(gateway_name),
        **(metadata.get("labels") or {}),
        **names.selector_labels(gateway_name),
    }
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        names.RESTART_HASH_ANNOTATION: restart_hash(spec, image),
    }
    pod = template.setdefault("spec", {})
    proxy = sidecar(spec, image, native=native_sidecar, mounts=mounts)
    if native_sidecar:
        # Native sidecars start before, in order, and stop after the application's containers.
        pod["initContainers"] = [proxy, *(pod.get("initContainers") or [])]
    else:
        pod["containers"] = [*pod["containers"], proxy]
    pod["volumes"] = [*(pod.get("volumes") or []), *volumes(gateway_name, spec, mounts)]
    return template


def render(
    gateway_name: str,
    namespace: str,
    spec: gateway.LLMGatewaySpec,
    *,
    image: str,
    native_sidecar: bool,
    mounts: Sequence[egress.Mount] = (),
) -> dict[str, Any]:
    """The Deployment. ``image`` is the sidecar image (``spec.proxy.image`` or the operator's default);
    ``native_sidecar`` says the cluster runs initContainers with restartPolicy Always as sidecars
    (Kubernetes 1.29+ by default); ``mounts`` the egress objects (``egress.mounts``)."""
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": names.selector_labels(gateway_name)},
        "template": pod_template(gateway_name, spec, image, native_sidecar=native_sidecar, mounts=mounts),
    }
    if spec.autoscaling is None:
        # With autoscaling the HPA owns spec.replicas; writing it here would fight the HPA.
        deployment_spec["replicas"] = spec.replicas if spec.replicas is not None else 1
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": names.metadata(names.deployment(gateway_name), namespace, gateway_name),
        "spec": deployment_spec,
    }


def image_for(spec: gateway.LLMGatewaySpec, default_image: str) -> str:
    return spec.proxy.image if spec.proxy.image is not None else default_image
