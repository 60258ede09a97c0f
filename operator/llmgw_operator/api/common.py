"""Pieces shared by both custom resources: the base model, names, status conditions.

CEL rules live next to the pydantic validator that implements the same rule, in
``model_config["json_schema_extra"]``, so the CRD and the operator cannot disagree.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "llmgateway.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes object names (RFC 1123 subdomain) as referenced from specs.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]

# A Secret data key: alphanumerics, '-', '_' and '.'.
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 (a pattern, not a password)


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def cel_rules(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class Model(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class SecretKeyRef(Model):
    """A key in a Secret in the policy's namespace, labelled llmgateway.io/provider-key=true."""

    name: ObjectName = Field(description="Name of the Secret.")
    key: str = Field(
        min_length=1, max_length=253, pattern=SECRET_KEY, description="Key within the Secret's data."
    )


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(Model):
    """One aspect of the object's state, in the shape of metav1.Condition."""

    type: str = Field(
        min_length=1,
        max_length=316,
        description="CamelCase kind of condition, e.g. Ready.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=REASON_PATTERN,
        description="CamelCase, machine-readable reason for the last transition.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    observed_generation: int = Field(
        default=0, ge=0, description="metadata.generation of the object this condition was computed from."
    )
    last_transition_time: str = Field(
        max_length=64,
        description="When status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


Conditions = Annotated[
    tuple[Condition, ...],
    Field(
        max_length=16,
        description="Current state, one entry per condition type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


def explain(error: pydantic.ValidationError) -> str:
    """A one-line, user-facing summary of a validation error: ``field.path: message`` pairs.

    Input values are left out on purpose: a spec may carry something secret-like,
    and the message goes into status conditions and events.
    """
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
