"""metav1.Condition lists and the conditions of both custom resources, computed from observations.

Conditions are plain dicts in their wire shape, ready for a status patch. Time
is injected: ``lastTransitionTime`` moves only when a condition's status does.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from llmgw_operator.api import common

TRUE, FALSE, UNKNOWN = (
    common.ConditionStatus.TRUE,
    common.ConditionStatus.FALSE,
    common.ConditionStatus.UNKNOWN,
)

READY = "Ready"
RECONCILED = "Reconciled"
POLICIES_RESOLVED = "PoliciesResolved"
ACCEPTED = "Accepted"
SECRET_RESOLVED = "SecretResolved"  # noqa: S105 (a condition type)
# From the sidecars' reports (render.dataplane), not from the objects the operator applies.
PROVIDERS_HEALTHY = "ProvidersHealthy"
CONFIG_APPLIED = "ConfigApplied"

# A message names what a resource author wrote (container, volume, ServiceAccount names
# that the CRD does not bound); cut well below the CRD's 32768 so a crafted template
# cannot make every status write fail.
MAX_MESSAGE = 4096


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A condition's status, reason and message, before it is stamped with a type and time."""

    status: common.ConditionStatus
    reason: str
    message: str = ""


def timestamp(now: datetime.datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second, as the API server writes it."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: Sequence[Mapping[str, Any]], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.get("status") == TRUE


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    verdict: Verdict,
    *,
    generation: int,
    now: datetime.datetime,
) -> list[dict[str, Any]]:
    """A new list with ``type_`` set; other conditions keep their place and content."""
    previous = find(conditions, type_)
    unchanged = previous is not None and previous.get("status") == verdict.status
    condition = {
        "type": type_,
        "status": str(verdict.status),
        "reason": verdict.reason,
        "message": _bounded(verdict.message),
        "observedGeneration": generation,
        "lastTransitionTime": (
            str(previous["lastTransitionTime"])
            if unchanged and previous is not None and previous.get("lastTransitionTime")
            else timestamp(now)
        ),
    }
    out = [dict(c) for c in conditions if c.get("type") != type_]
    index = next((i for i, c in enumerate(conditions) if c.get("type") == type_), len(out))
    out.insert(index, condition)
    return out


_CUT = " ... (truncated)"


def _bounded(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - len(_CUT)] + _CUT


ROLLING_OUT = frozenset({"RolloutPending", "RolloutInProgress", "ReplicasUnavailable"})
"""Ready=False reasons that only say the first rollout has not finished yet."""


def rollout_progress(prior: Mapping[str, Any] | None, condition: Mapping[str, Any]) -> bool:
    """Ready=False only because pods are still coming up, and before that nothing or Ready=False
    already: a step of one rollout (pending, in progress, not all available), no news worth an
    Event. A new gateway posted one per step; the Ready=True that ends the rollout is the one that
    says it. After a problem (Ready=False, NotReconciled), what ended it has its own Events
    (Resolved, Applied): the rollout that follows is a step towards Ready, not news either."""
    return (
        condition.get("type") == READY
        and condition.get("status") == FALSE
        and condition.get("reason") in ROLLING_OUT
        and (prior is None or prior.get("status") == FALSE)
    )


def deployment_ready(deployment: Mapping[str, Any] | None) -> Verdict:
    """Ready when the Deployment controller has seen the latest template and enough pods are available."""
    if deployment is None:
        return Verdict(FALSE, "DeploymentNotFound", "the gateway's Deployment does not exist yet")
    generation = deployment.get("metadata", {}).get("generation", 0)
    status = deployment.get("status") or {}
    desired = (deployment.get("spec") or {}).get("replicas", 1)
    if status.get("observedGeneration", 0) < generation:
        return Verdict(FALSE, "RolloutPending", "the Deployment controller has not seen the latest template")
    if desired == 0:
        return Verdict(FALSE, "ScaledToZero", "the Deployment has 0 replicas")
    updated = status.get("updatedReplicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < desired or status.get("replicas", 0) > updated:
        return Verdict(FALSE, "RolloutInProgress", f"{updated} of {desired} pods run the current template")
    if available < desired:
        return Verdict(FALSE, "ReplicasUnavailable", f"{available} of {desired} pods are available")
    return Verdict(TRUE, "Available", f"{available} of {desired} pods are available")


def replica_counts(deployment: Mapping[str, Any] | None) -> tuple[int, int]:
    """(replicas, readyReplicas) for the gateway's status and printer columns."""
    status = (deployment or {}).get("status") or {}
    return int(status.get("replicas", 0)), int(status.get("readyReplicas", 0))


def gateway_ready(
    policies: Verdict, reconciled: Verdict, deployment: Mapping[str, Any] | None, *, injection: bool = False
) -> Verdict:
    """Ready means serving the current config: resolved policies, applied children, an available rollout
    (in injection mode, with no Deployment: the config and keys the injected sidecars mount)."""
    if policies.reason == "InvalidSpec":
        # The operator's model refused the gateway itself; its policies were never looked at.
        return Verdict(FALSE, "InvalidSpec", policies.message)
    if policies.status != TRUE:
        return Verdict(FALSE, "PoliciesUnresolved", policies.message)
    if reconciled.status != TRUE:
        return Verdict(FALSE, "NotReconciled", reconciled.message)
    if injection:
        return Verdict(
            TRUE, "InjectionReady", "config and keys applied; labelled pods get the sidecar when created"
        )
    return deployment_ready(deployment)


def gateway_conditions(
    existing: Sequence[Mapping[str, Any]],
    *,
    generation: int,
    now: datetime.datetime,
    policies: Verdict,
    reconciled: Verdict,
    deployment: Mapping[str, Any] | None,
    injection: bool = False,
) -> list[dict[str, Any]]:
    """An LLMGateway's Ready, Reconciled and PoliciesResolved conditions."""
    out = set_condition(existing, POLICIES_RESOLVED, policies, generation=generation, now=now)
    out = set_condition(out, RECONCILED, reconciled, generation=generation, now=now)
    ready = gateway_ready(policies, reconciled, deployment, injection=injection)
    return set_condition(out, READY, ready, generation=generation, now=now)


def accepted(error: str | None) -> Verdict:
    """A ProviderPolicy's Accepted condition from its validation error, if any."""
    if error is None:
        return Verdict(TRUE, "Valid", "the policy is valid")
    return Verdict(FALSE, "Invalid", error)


def policy_conditions(
    existing: Sequence[Mapping[str, Any]],
    *,
    generation: int,
    now: datetime.datetime,
    accepted: Verdict,
    secret: Verdict,
) -> list[dict[str, Any]]:
    """A ProviderPolicy's Accepted and SecretResolved conditions."""
    out = set_condition(existing, ACCEPTED, accepted, generation=generation, now=now)
    return set_condition(out, SECRET_RESOLVED, secret, generation=generation, now=now)


def data_plane_event(prior: Mapping[str, Any] | None, condition: Mapping[str, Any]) -> tuple[str, str] | None:
    """(Event type, reason) for a ProvidersHealthy or ConfigApplied change, or None for no Event.

    Only transitions an SRE acts on: a provider turning unhealthy (or unhealthy for
    another reason), recovering from that, and a refused reload. A first True, a
    reload still pending and Unknown (no reports) post nothing, so a poll never
    becomes an Event stream.
    """
    status, reason = condition.get("status"), condition.get("reason")
    was = (prior.get("status"), prior.get("reason")) if prior is not None else (None, None)
    if (status, reason) == was:
        return None
    if condition.get("type") == PROVIDERS_HEALTHY:
        if status == FALSE:
            return "Warning", "ProviderUnhealthy"
        if status == TRUE and was[0] == FALSE:
            return "Normal", "ProviderRecovered"
    elif condition.get("type") == CONFIG_APPLIED:
        if status == FALSE and reason == "ReloadRefused":
            return "Warning", "ConfigNotApplied"
        if status == TRUE and was[1] == "ReloadRefused":
            return "Normal", "ConfigApplied"
    return None
