"""The two CustomResourceDefinitions, built from the models the operator validates with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from llmgw_operator.api import common, gateway, policy, structural

CATEGORIES = ("llm",)

_READY = '.status.conditions[?(@.type=="Ready")]'
_ACCEPTED = '.status.conditions[?(@.type=="Accepted")]'
_PROVIDERS = '.status.conditions[?(@.type=="ProvidersHealthy")]'


def _column(name: str, type_: str, path: str, description: str, priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path, "description": description}
    if priority:
        column["priority"] = priority
    return column


_AGE = _column("Age", "date", ".metadata.creationTimestamp", "Time since the object was created.")


def _object_schema(
    description: str, spec: type[BaseModel], status: type[BaseModel], *rules: dict[str, str]
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "Versioned schema of this representation of the object.",
            },
            "kind": {"type": "string", "description": "REST resource this object represents."},
            "metadata": {"type": "object"},
            "spec": structural.convert(spec.model_json_schema(by_alias=True)),
            "status": structural.convert(status.model_json_schema(by_alias=True)),
        },
        "required": ["spec"],
    }
    if rules:
        schema["x-kubernetes-validations"] = list(rules)
    return schema


def _definition(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: tuple[str, ...],
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{common.GROUP}"},
        "spec": {
            "group": common.GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": common.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def llmgateway() -> dict[str, Any]:
    return _definition(
        kind=gateway.KIND,
        plural=gateway.PLURAL,
        singular=gateway.SINGULAR,
        short_names=gateway.SHORT_NAMES,
        schema=_object_schema(
            "An application's pods, each with the LLM gateway sidecar, and the routes from model names "
            "to ProviderPolicies.",
            gateway.LLMGatewaySpec,
            gateway.LLMGatewayStatus,
            gateway.NAME_RULE,
        ),
        columns=[
            _column("Ready", "string", f"{_READY}.status", "Whether the gateway serves its current config."),
            _column("Reason", "string", f"{_READY}.reason", "Why it is or is not ready."),
            _column("Providers", "string", f"{_PROVIDERS}.reason", "Provider health as the pods report it."),
            _column("Replicas", "integer", ".status.replicas", "Pods of the gateway."),
            _column("Available", "integer", ".status.readyReplicas", "Ready pods.", priority=1),
            _AGE,
        ],
    )


def providerpolicy() -> dict[str, Any]:
    return _definition(
        kind=policy.KIND,
        plural=policy.PLURAL,
        singular=policy.SINGULAR,
        short_names=policy.SHORT_NAMES,
        schema=_object_schema(
            "One upstream LLM provider: where it is, which key to use and how the sidecar treats it.",
            policy.ProviderPolicySpec,
            policy.ProviderPolicyStatus,
        ),
        columns=[
            _column("Provider", "string", ".spec.provider", "Kind of provider."),
            _column("Accepted", "string", f"{_ACCEPTED}.status", "Whether the policy is valid."),
            _column("Reason", "string", f"{_ACCEPTED}.reason", "Why it is or is not accepted."),
            _column("URL", "string", ".spec.baseURL", "Base URL of the provider.", priority=1),
            _AGE,
        ],
    )


def all_definitions() -> dict[str, dict[str, Any]]:
    """File name (as kubebuilder names them) to CRD."""
    return {
        f"{common.GROUP}_{gateway.PLURAL}.yaml": llmgateway(),
        f"{common.GROUP}_{policy.PLURAL}.yaml": providerpolicy(),
    }
