"""The two CustomResourceDefinitions, built from the models the operator validates with."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from llmgw_operator.api import common, gateway, policy, structural

CATEGORIES = ("llm",)

_READY = '.status.conditions[?(@.type=="Ready")]'
_ACCEPTED = '.status.conditions[?(@.type=="Accepted")]'
_SECRET_RESOLVED = '.status.conditions[?(@.type=="SecretResolved")]'  # noqa: S105 (a JSONPath)
_PROVIDERS = '.status.conditions[?(@.type=="ProvidersHealthy")]'


def _column(name: str, type_: str, path: str, description: str, priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path, "description": description}
    if priority:
        column["priority"] = priority
    return column


_AGE = _column("Age", "date", ".metadata.creationTimestamp", "Time since the object was created.")


def _literal(value: Any) -> str | None:
    """A default as a reader types it, or None for one not worth a sentence (empty, or an object)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, list) and value and all(isinstance(v, str | int) for v in value):
        return ", ".join(str(v) for v in value)
    return None


def _named(name: str, message: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message) is not None


def explained(node: dict[str, Any], inherited: tuple[str, ...] = ()) -> dict[str, Any]:
    """``node`` with each description also saying its default and the rules that involve it.

    `kubectl explain` prints a field's description and type only: a default or a
    CEL rule in the schema is invisible there. ``inherited`` are the messages of
    the parent object's rules that name this field (a cross-field rule such as
    Azure needing apiVersion sits on the object, not on the field).
    """
    out = dict(node)
    own = tuple(str(r["message"]) for r in out.get("x-kubernetes-validations", []))
    sentences = []
    default = _literal(out["default"]) if "default" in out else None
    if default is not None:
        sentences.append(f"Default: {default}.")
    sentences += [f"Rule: {m}." for m in (*own, *inherited)]
    if sentences and "description" in out:
        out["description"] = " ".join([out["description"], *sentences])
    if "properties" in out:
        out["properties"] = {
            name: explained(sub, tuple(m for m in own if _named(name, m)))
            for name, sub in out["properties"].items()
        }
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = explained(out[key])
    return out


def _object_schema(
    description: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    *rules: dict[str, str],
    explain: bool = True,
) -> dict[str, Any]:
    spec_schema = structural.convert(spec.model_json_schema(by_alias=True))
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
            "spec": spec_schema if not explain else explained(spec_schema),
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


def llmgateway(*, explain: bool = True) -> dict[str, Any]:
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
            explain=explain,
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


def providerpolicy(*, explain: bool = True) -> dict[str, Any]:
    return _definition(
        kind=policy.KIND,
        plural=policy.PLURAL,
        singular=policy.SINGULAR,
        short_names=policy.SHORT_NAMES,
        schema=_object_schema(
            "One upstream LLM provider: where it is, which key to use and how the sidecar treats it.",
            policy.ProviderPolicySpec,
            policy.ProviderPolicyStatus,
            explain=explain,
        ),
        columns=[
            _column("Provider", "string", ".spec.provider", "Kind of provider."),
            _column("Accepted", "string", f"{_ACCEPTED}.status", "Whether the policy is valid."),
            _column("Reason", "string", f"{_ACCEPTED}.reason", "Why it is or is not accepted."),
            # A valid policy whose key Secret is missing is still unusable: show it beside Accepted.
            _column(
                "SecretResolved",
                "string",
                f"{_SECRET_RESOLVED}.status",
                "Whether the key Secret exists, is marked as a provider key and holds a usable key.",
            ),
            _column(
                "SecretReason",
                "string",
                f"{_SECRET_RESOLVED}.reason",
                "Why the key Secret is or is not resolved.",
                priority=1,
            ),
            _column("URL", "string", ".spec.baseURL", "Base URL of the provider.", priority=1),
            _AGE,
        ],
    )


def all_definitions(*, explain: bool = True) -> dict[str, dict[str, Any]]:
    """File name (as kubebuilder names them) to CRD.

    ``explain=False`` leaves defaults and rules out of the descriptions, for the
    reference page, which shows them in columns and lists of their own.
    """
    return {
        f"{common.GROUP}_{gateway.PLURAL}.yaml": llmgateway(explain=explain),
        f"{common.GROUP}_{policy.PLURAL}.yaml": providerpolicy(explain=explain),
    }
