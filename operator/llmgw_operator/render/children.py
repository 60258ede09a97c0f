"""Every child of a gateway in one call: the handler observes, calls this, applies, writes status."""

from __future__ import annotations

import dataclasses
from typing import Any

from llmgw_operator.api import gateway
from llmgw_operator.render import configmap, deployment, egress, hpa, proxy_config, resolve, secret
from llmgw_operator.render.conditions import TRUE


@dataclasses.dataclass(frozen=True)
class Children:
    config_map: dict[str, Any]
    secret: dict[str, Any]
    # None: injection mode (no template), so the apply layer deletes any Deployment left from before.
    deployment: dict[str, Any] | None
    # None: no autoscaling, so the apply layer deletes any HPA left from before.
    hpa: dict[str, Any] | None

    def manifests(self) -> list[dict[str, Any]]:
        """In apply order: config and keys exist before the pods that mount them."""
        optional = [m for m in (self.deployment, self.hpa) if m is not None]
        return [self.config_map, self.secret, *optional]


def render(
    name: str,
    namespace: str,
    spec: gateway.LLMGatewaySpec,
    resolution: resolve.Resolution,
    *,
    observed_replicas: int | None,
    default_image: str,
    native_sidecar: bool,
    injected_pods: int = 0,
) -> Children:
    """Render all children of a gateway whose policies resolved.

    ``observed_replicas`` is the Deployment's current ``spec.replicas`` (None
    before it exists), used to split shared limits under autoscaling;
    ``injected_pods`` the pods the webhook gave this gateway's sidecar, which
    share those limits too. Raises
    ValueError when the resolution is not successful: rendering then would
    ship a config that names missing keys.
    """
    if resolution.verdict.status != TRUE:
        raise ValueError(f"policies are not resolved: {resolution.verdict.message}")
    replicas = proxy_config.sharing_pods(spec, observed_replicas, injected_pods)
    compiled = proxy_config.compile_config(spec, resolution.policies, replicas, namespace)
    image = deployment.image_for(spec, default_image)
    return Children(
        config_map=configmap.render(name, namespace, compiled),
        secret=secret.render(name, namespace, resolution.keys),
        deployment=(
            None
            if spec.injected
            else deployment.render(
                name,
                namespace,
                spec,
                image=image,
                native_sidecar=native_sidecar,
                mounts=egress.mounts(spec, resolution.policies),
            )
        ),
        hpa=None if spec.injected else hpa.render(name, namespace, spec),
    )
