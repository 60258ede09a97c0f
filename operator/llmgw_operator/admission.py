"""Injection mode's admission decision: which gateway a new pod names, and the patch that joins it.

Reads go to the API server on every request, not to a cache: every operator
replica serves the webhook, and a replica that does not hold the peering lock
runs no watches, so a cache there would be stale. A labelled pod costs two
GETs (the gateway and its ConfigMap); a pod that already has the sidecar
(reinvocation, or an owned Deployment's pod) costs none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pydantic

from llmgw_operator import kube
from llmgw_operator.api import common, gateway, policy
from llmgw_operator.render import deployment, egress, injection, names


class Refused(Exception):
    """The pod must not be created: it asked for a sidecar it cannot get. The message says why."""


@dataclasses.dataclass(frozen=True)
class Decision:
    patch: injection.JsonPatch
    warnings: tuple[str, ...] = ()


@dataclasses.dataclass
class Injector:
    client: kube.Client
    default_image: str
    native_sidecar: bool
    # The webhook's failurePolicy. Fail: a pod that cannot get its sidecar is refused. Ignore: it is
    # admitted without one, with a warning, as it would be if the webhook were down.
    fail_closed: bool = True

    async def decide(self, pod: Mapping[str, Any], namespace: str) -> Decision:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        name = labels.get(gateway.GATEWAY_LABEL)
        if not name or injection.has_sidecar(pod.get("spec") or {}):
            return Decision([])
        try:
            spec = await self._gateway(namespace, str(name))
            patch = injection.plan(
                pod,
                str(name),
                spec,
                image=deployment.image_for(spec, self.default_image),
                native_sidecar=self.native_sidecar,
                mounts=egress.mounts(spec, await self._policies(namespace, spec)),
            )
        except (Refused, injection.Refused) as e:
            message = f"llmgw: no sidecar for this pod: {e}"
            if self.fail_closed:
                raise Refused(message) from None
            return Decision([], (message + "; admitted without it (failurePolicy Ignore)",))
        return Decision(patch)

    async def _policies(
        self, namespace: str, spec: gateway.LLMGatewaySpec
    ) -> dict[str, policy.ProviderPolicySpec]:
        """The policies the gateway routes to, for the egress objects (CA bundles, client
        certificates, proxy credentials) the sidecar mounts; a missing or invalid one adds none,
        as its gateway's status already says."""
        found: dict[str, policy.ProviderPolicySpec] = {}
        for name in spec.policy_names():
            obj = await self.client.get("ProviderPolicy", namespace, name)
            if obj is None:
                continue
            try:
                found[name] = policy.ProviderPolicySpec.model_validate(obj.get("spec") or {})
            except pydantic.ValidationError:
                continue
        return found

    async def _gateway(self, namespace: str, name: str) -> gateway.LLMGatewaySpec:
        label = f"its label {gateway.GATEWAY_LABEL}={name}"
        found = await self.client.get("LLMGateway", namespace, name)
        if found is None:
            raise Refused(f'{label} names LLMGateway "{name}", which does not exist in namespace {namespace}')
        try:
            spec = gateway.LLMGatewaySpec.model_validate(found.get("spec") or {})
        except pydantic.ValidationError as e:
            raise Refused(f'LLMGateway "{name}" is invalid: {common.explain(e)}') from None
        if await self.client.get("ConfigMap", namespace, names.config_map(name)) is None:
            raise Refused(
                f'LLMGateway "{name}" has no proxy config yet; its status says why '
                f"(kubectl -n {namespace} get llmgateway {name} -o yaml)"
            )
        return spec
