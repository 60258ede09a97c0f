"""Compile an LLMGateway and its ProviderPolicies into the sidecar's config document.

The result is validated by the proxy's own model, so a config the sidecar would
refuse fails here, in the operator, where it can be reported on the CR.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from llmgw_operator.api import egress as egress_api
from llmgw_operator.api import gateway, policy
from llmgw_operator.render import egress, names
from llmgw_proxy import config


def effective_replicas(spec: gateway.LLMGatewaySpec, observed: int | None = None) -> int:
    """The pod count shared limits are split by.

    Fixed replicas: the spec's (1 when unset). Autoscaling: the Deployment's
    current replica count as the HPA set it (``observed``), clamped to
    [minReplicas, maxReplicas]; minReplicas before the Deployment exists. Never
    below 1, so a scaled-to-zero gateway still compiles.
    """
    if spec.autoscaling is None:
        return max(1, spec.replicas if spec.replicas is not None else 1)
    low, high = spec.autoscaling.min_replicas, spec.autoscaling.max_replicas
    return max(1, min(high, max(low, observed if observed is not None else low)))


def sharing_pods(spec: gateway.LLMGatewaySpec, observed: int | None, injected: int) -> int:
    """Every pod that runs this gateway's sidecar: the owned Deployment's (``effective_replicas``)
    plus those the webhook injected. Injection mode owns none; never below 1."""
    owned = 0 if spec.injected else effective_replicas(spec, observed)
    return max(1, owned + max(0, injected))


def split(limit: int | None, replicas: int) -> int | None:
    """One pod's share of a shared limit: ceil, so the gateway's total never falls short of it."""
    return None if limit is None else math.ceil(limit / replicas)


def rate_limit(spec: policy.RateLimit, replicas: int) -> config.RateLimit:
    if spec.scope is policy.Scope.GLOBAL:
        # Enforced whole in Redis; the sidecar splits it by the replicas only while Redis is away.
        return config.RateLimit(
            requests_per_minute=spec.requests_per_minute,
            tokens_per_minute=spec.tokens_per_minute,
            request_burst=spec.request_burst,
            token_burst=spec.token_burst,
            max_wait=spec.max_wait,
            default_max_tokens=spec.default_max_tokens,
            scope=config.LimitScope.GLOBAL,
            fallback_share=replicas,
        )
    share = replicas if spec.scope is policy.Scope.SHARED else 1
    return config.RateLimit(
        requests_per_minute=split(spec.requests_per_minute, share),
        tokens_per_minute=split(spec.tokens_per_minute, share),
        request_burst=split(spec.request_burst, share),
        token_burst=split(spec.token_burst, share),
        max_wait=spec.max_wait,
        default_max_tokens=spec.default_max_tokens,
    )


def _same_fields(model: Any) -> dict[str, Any]:
    """The field-by-field mapping: the policy's sub-objects mirror the proxy's names."""
    return dict(model.model_dump(mode="python"))


def shared_id(namespace: str, name: str) -> str:
    """The policy's identity in Redis: every gateway of the namespace using it shares its state."""
    return f"{namespace}/{name}"


def shared_store(spec: policy.SharedStore) -> config.SharedStore:
    return config.SharedStore(
        url=spec.url,
        sentinels=spec.sentinels,
        sentinel_master=spec.sentinel_master,
        cluster=spec.cluster,
        username=spec.username,
        password_file=names.store_password_file() if spec.password_secret_ref is not None else None,
        timeout=spec.timeout,
        max_in_flight=spec.max_in_flight,
    )


def provider(
    name: str,
    spec: policy.ProviderPolicySpec,
    replicas: int,
    gateway_proxy: egress_api.Proxy | None = None,
    namespace: str = "default",
) -> config.Provider:
    return config.Provider(
        kind=spec.provider,
        base_url=spec.base_url,
        api_key_file=names.key_file(name) if spec.api_key_secret_ref is not None else None,
        api_version=spec.api_version,
        timeouts=config.Timeouts(**_same_fields(spec.timeouts)),
        rate_limit=rate_limit(spec.rate_limit, replicas) if spec.rate_limit is not None else None,
        model_rate_limits={m: rate_limit(r, replicas) for m, r in sorted(spec.model_rate_limits.items())},
        circuit_breaker=(
            config.CircuitBreaker(**_same_fields(spec.circuit_breaker))
            if spec.circuit_breaker is not None
            else None
        ),
        retry=config.Retry(**_same_fields(spec.retry)),
        cache=config.CachePolicy(**_same_fields(spec.cache)),
        forward_headers=spec.forward_headers,
        # The sidecar enforces the allow-list itself: a '*' route would pass any model.
        models=tuple(sorted(spec.models)) if spec.models is not None else None,
        upstream_limits=config.UpstreamLimits(**_same_fields(spec.upstream_limits)),
        egress=egress.provider_egress(spec, gateway_proxy),
        shared_id=shared_id(namespace, name) if spec.shared_store is not None else None,
        budget=(config.TokenBudget(**_same_fields(spec.budget)) if spec.budget is not None else None),
    )


def compile_config(
    spec: gateway.LLMGatewaySpec,
    policies: Mapping[str, policy.ProviderPolicySpec],
    replicas: int,
    namespace: str = "default",
) -> config.ProxyConfig:
    """The sidecar's config: provider names are policy names, targets name them.

    ``policies`` must hold every policy the routes name (the caller reports the
    missing ones as PoliciesResolved=False first); policies no route names are
    left out. ``replicas`` is ``effective_replicas(...)``. Raises KeyError naming
    a missing policy, pydantic.ValidationError when the proxy would refuse the result.
    """
    used = spec.policy_names()
    missing = [p for p in used if p not in policies]
    if missing:
        raise KeyError(f"policies not found: {', '.join(missing)}")
    return config.ProxyConfig(
        listen=config.Listener(host="127.0.0.1", port=spec.proxy.port),
        admin=config.AdminListener(host="0.0.0.0", port=spec.proxy.admin_port),
        max_body_bytes=spec.proxy.max_body_bytes,
        max_attempts=spec.proxy.max_attempts,
        log_level=spec.proxy.log_level.value,
        providers={
            name: provider(name, policies[name], replicas, spec.egress.proxy, namespace) for name in used
        },
        routes=tuple(
            config.Route(
                model=route.model,
                targets=tuple(config.Target(provider=t.policy, model=t.model) for t in route.targets),
                endpoints=route.endpoints,
            )
            for route in spec.routes
        ),
        cache=config.CacheStore(max_entries=spec.cache.max_entries, max_bytes=spec.cache.max_bytes),
        shared_store=next(
            (shared_store(s) for name in used if (s := policies[name].shared_store) is not None), None
        ),
    )
