"""Which referenced policies, Secrets and keys exist: the PoliciesResolved and SecretResolved verdicts.

Inputs are what the handler observed (policies by name, Secrets' data by
name); outputs name what is missing and never carry a key's value.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping
from typing import Any

from llmgw_operator.api import common, gateway, policy
from llmgw_operator.render import names
from llmgw_operator.render.conditions import FALSE, TRUE, Verdict
from llmgw_proxy import config

# A policy as observed: its validated spec, or the validation error's message.
Observed = policy.ProviderPolicySpec | str
# A Secret as observed: its ``data`` (base64 values, as the API returns them).
SecretData = Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class Unmarked:
    """A Secret that exists but does not carry the provider-key label: its data is not read."""


UNMARKED = Unmarked()
ObservedSecret = SecretData | Unmarked


def observe_secret(live: Mapping[str, Any]) -> ObservedSecret:
    """What the operator may use of a Secret it read: its data only when it is marked as a provider key.

    The mark is the owner's consent: without it any Secret of the namespace
    (a service-account token, a database password) could be sent as a bearer
    token to whatever ``baseURL`` a policy's author chose.
    """
    labels = (live.get("metadata") or {}).get("labels") or {}
    if labels.get(names.PROVIDER_KEY_LABEL) != names.PROVIDER_KEY_MARK:
        return UNMARKED
    data: SecretData = live.get("data") or {}
    return data


def _decode(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def secret_key(
    spec: policy.ProviderPolicySpec, secrets: Mapping[str, ObservedSecret]
) -> tuple[Verdict, bytes | None]:
    """The policy's SecretResolved verdict and, when resolved, its key's bytes as the sidecar reads them."""
    ref = spec.api_key_secret_ref
    if ref is None:
        return Verdict(TRUE, "NoSecretNeeded", "the policy references no Secret"), None
    return read_ref(ref, secrets)


def read_ref(ref: common.SecretKeyRef, secrets: Mapping[str, ObservedSecret]) -> tuple[Verdict, bytes | None]:
    """A ``SecretKeyRef``'s value checked by the sidecar's key rule, or why it cannot be read."""
    data = secrets.get(ref.name)
    if data is None:
        return Verdict(FALSE, "SecretNotFound", f"Secret {ref.name} not found"), None
    if isinstance(data, Unmarked):
        return Verdict(
            FALSE,
            "SecretNotMarked",
            f"Secret {ref.name} is not marked as a provider key; label it "
            f"{names.PROVIDER_KEY_LABEL}={names.PROVIDER_KEY_MARK} to let the operator read it",
        ), None
    value = _decode(data[ref.key]) if ref.key in data else None
    if value is None:
        return Verdict(FALSE, "SecretKeyMissing", f"Secret {ref.name} has no key {ref.key}"), None
    # The sidecar's own rule: a key accepted here is one the sidecar will serve with.
    checked = config.check_key(value)
    if isinstance(checked, config.KeyProblem):
        return Verdict(FALSE, "InvalidKey", f"key {ref.key} of Secret {ref.name} {checked.detail}"), None
    return Verdict(TRUE, "SecretFound", f"key {ref.key} of Secret {ref.name}"), checked.encode()


def _conflicts(resolved: Mapping[str, policy.ProviderPolicySpec]) -> list[str]:
    """The policies naming another shared store than the first one that names one: a sidecar
    has one Redis connection."""
    stores = [(name, spec.shared_store) for name, spec in resolved.items() if spec.shared_store is not None]
    if len({store for _, store in stores}) <= 1:
        return []
    return [f"{name} ({store.url})" for name, store in stores]


@dataclasses.dataclass(frozen=True)
class Resolution:
    """The gateway's PoliciesResolved verdict, plus what compiling and the keys Secret need."""

    verdict: Verdict
    policies: dict[str, policy.ProviderPolicySpec]
    keys: dict[str, bytes]


def _models_used(spec: gateway.LLMGatewaySpec, name: str) -> list[str]:
    """Upstream models routes send to policy ``name`` (a wildcard route without a target model is any)."""
    used = []
    for route in spec.routes:
        for target in route.targets:
            model = target.model or route.model
            if target.policy == name and model != "*":
                used.append(model)
    return used


def gateway_policies(
    spec: gateway.LLMGatewaySpec,
    policies: Mapping[str, Observed],
    secrets: Mapping[str, ObservedSecret],
    namespace: str = "the gateway's namespace",
) -> Resolution:
    """Resolve every policy the routes name; the first kind of problem found names all its cases.

    ``namespace`` is where the policies were looked for: a missing policy is
    often one created in another namespace, so the message says which.
    """
    missing, invalid, no_secret, unmarked, no_key, bad_key, disallowed = [], [], [], [], [], [], []
    store_problems: list[str] = []
    resolved: dict[str, policy.ProviderPolicySpec] = {}
    keys: dict[str, bytes] = {}
    for name in spec.policy_names():
        observed = policies.get(name)
        if observed is None:
            missing.append(name)
            continue
        if isinstance(observed, str):
            invalid.append(name)
            continue
        resolved[name] = observed
        verdict, key = secret_key(observed, secrets)
        if verdict.reason == "SecretNotFound":
            no_secret.append(f"{name} ({verdict.message})")
        elif verdict.reason == "SecretNotMarked":
            unmarked.append(f"{name} ({verdict.message})")
        elif verdict.reason == "SecretKeyMissing":
            no_key.append(f"{name} ({verdict.message})")
        elif verdict.reason == "InvalidKey":
            bad_key.append(f"{name} ({verdict.message})")
        elif key is not None:
            keys[name] = key
        store = observed.shared_store
        if store is not None and store.password_secret_ref is not None:
            verdict, password = read_ref(store.password_secret_ref, secrets)
            if password is None:
                store_problems.append(f"{name} (Redis password: {verdict.message})")
            else:
                keys[names.STORE_PASSWORD_KEY] = password
        allowed = observed.models
        if allowed is not None:
            disallowed += [
                f"{model} via {name}" for model in _models_used(spec, name) if model not in allowed
            ]
    for reason, what, found in (
        ("PolicyNotFound", f"ProviderPolicy not found in namespace {namespace}", missing),
        ("PolicyInvalid", "ProviderPolicy invalid", invalid),
        ("SecretNotFound", "API key Secret not found for", no_secret),
        ("SecretNotMarked", "API key Secret not marked as a provider key for", unmarked),
        ("SecretKeyMissing", "API key missing for", no_key),
        ("InvalidKey", "API key unusable for", bad_key),
        ("ModelNotAllowed", "model not in the policy's models", disallowed),
        ("SharedStoreUnresolved", "shared store unusable for", store_problems),
        ("SharedStoreConflict", "one gateway's policies must name one sharedStore", _conflicts(resolved)),
    ):
        if found:
            return Resolution(Verdict(FALSE, reason, f"{what}: {', '.join(found)}"), resolved, keys)
    listed = ", ".join(spec.policy_names())
    return Resolution(Verdict(TRUE, "Resolved", f"policies resolved: {listed}"), resolved, keys)
