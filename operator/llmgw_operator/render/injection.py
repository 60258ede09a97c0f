"""Injection mode: the JSON patch that gives a user's pod its gateway's sidecar.

The admission webhook calls ``plan`` with the pod as the API server sent it.
The sidecar container and its volumes come from ``render/deployment.py``, the
owned mode's renderer, so an injected pod runs exactly the sidecar a gateway's
own Deployment would. A pod that already has the sidecar gets an empty patch
(the API server may call the webhook again after another injector), and a pod
the sidecar cannot join safely is refused whole: there is no half-injected pod.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmgw_operator.api import gateway
from llmgw_operator.render import deployment, egress, names

# Marks a pod the webhook injected, with the gateway's name as value: the status counts these.
INJECTED_ANNOTATION = "llmgateway.io/injected"

JsonPatch = list[dict[str, Any]]


class Refused(ValueError):
    """The pod cannot get the sidecar; the message says why, naming the field."""


def _pointer(*parts: str) -> str:
    """An RFC 6901 JSON pointer: '~' and '/' inside a key are escaped."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def has_sidecar(pod_spec: Mapping[str, Any]) -> bool:
    listed = [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]
    return any(isinstance(c, Mapping) and c.get("name") == gateway.SIDECAR_CONTAINER for c in listed)


def _refusals(pod_spec: Mapping[str, Any], added: set[str]) -> list[str]:
    """What keeps the sidecar out of this pod; ``added``: the names of the volumes it would bring."""
    problems = []
    if pod_spec.get("hostNetwork") is True:
        # The same rule as the owned mode's template (the API's 127.0.0.1 would be the node's).
        problems.append(gateway.HOST_NETWORK_RULE["message"].replace("template.spec", "spec"))
    volumes = [v.get("name") for v in pod_spec.get("volumes") or [] if isinstance(v, Mapping)]
    for taken in sorted(added & set(volumes)):
        problems.append(f"spec.volumes: the name {taken} is reserved for the sidecar")
    return problems


def plan(
    pod: Mapping[str, Any],
    gateway_name: str,
    spec: gateway.LLMGatewaySpec,
    *,
    image: str,
    native_sidecar: bool,
    mounts: Sequence[egress.Mount] = (),
) -> JsonPatch:
    """The patch that adds the sidecar, its volumes and annotations; empty when the pod has it already.

    ``image`` is the sidecar image (``deployment.image_for``); ``native_sidecar``
    puts it first among the init containers with restartPolicy Always (API 1.29+),
    else it is appended to the containers. ``mounts``: the egress objects of the gateway and
    its policies (``egress.mounts``), as in the owned mode. Raises ``Refused``.
    """
    pod_spec = pod.get("spec") or {}
    if has_sidecar(pod_spec):
        return []
    volumes = deployment.volumes(gateway_name, spec, mounts)
    problems = _refusals(pod_spec, {v["name"] for v in volumes})
    if problems:
        raise Refused("; ".join(problems))
    ops: JsonPatch = []
    annotations = {
        INJECTED_ANNOTATION: gateway_name,
        names.RESTART_HASH_ANNOTATION: deployment.restart_hash(spec, image),
    }
    if (pod.get("metadata") or {}).get("annotations"):
        ops += [
            {"op": "add", "path": _pointer("metadata", "annotations", k), "value": v}
            for k, v in annotations.items()
        ]
    else:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
    sidecar = deployment.sidecar(spec, image, native=native_sidecar, mounts=mounts)
    if native_sidecar:
        # First: kubelet starts init containers in order, and the application's own init
        # containers may already call the model API.
        if pod_spec.get("initContainers"):
            ops.append({"op": "add", "path": "/spec/initContainers/0", "value": sidecar})
        else:
            ops.append({"op": "add", "path": "/spec/initContainers", "value": [sidecar]})
    else:
        ops.append({"op": "add", "path": "/spec/containers/-", "value": sidecar})
    if pod_spec.get("volumes"):
        ops += [{"op": "add", "path": "/spec/volumes/-", "value": v} for v in volumes]
    else:
        ops.append({"op": "add", "path": "/spec/volumes", "value": volumes})
    return ops


def sidecar_hash(pod: Mapping[str, Any]) -> str | None:
    """The restart hash the pod's sidecar was injected with (None: not injected by the webhook)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if INJECTED_ANNOTATION not in annotations:
        return None
    value = annotations.get(names.RESTART_HASH_ANNOTATION)
    return value if isinstance(value, str) else None


# (restart hash, pods), sorted: what the webhook injected into a gateway's live pods. A tuple so an
# unchanged census compares equal and the poller triggers nothing.
Census = tuple[tuple[str, int], ...]


def census(pods: Sequence[Mapping[str, Any]], gateway_name: str) -> Census:
    """The gateway's injected pods that still run or will (not finished, not being deleted),
    counted by the restart hash their sidecar was injected with."""
    counts: dict[str, int] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        phase = (pod.get("status") or {}).get("phase")
        if annotations.get(INJECTED_ANNOTATION) != gateway_name or meta.get("deletionTimestamp"):
            continue
        if phase in ("Succeeded", "Failed"):
            continue
        found = sidecar_hash(pod) or ""
        counts[found] = counts.get(found, 0) + 1
    return tuple(sorted(counts.items()))


def rollout(counted: Census, current_hash: str) -> dict[str, int]:
    """``status.injection``'s counts: injected pods, those with the current sidecar, the outdated rest."""
    total = sum(n for _, n in counted)
    current = sum(n for h, n in counted if h == current_hash)
    return {"pods": total, "current": current, "outdated": total - current}
