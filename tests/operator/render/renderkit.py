"""Builders and hypothesis strategies shared by the renderer tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from llmgw_operator.api import gateway, policy

APP_TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "chat", "app.kubernetes.io/name": "chat"}},
    "spec": {
        "containers": [
            {"name": "app", "image": "chat:1", "env": [{"name": "OPENAI_BASE_URL", "value": "x"}]}
        ],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    },
}


def gateway_spec(**overrides: Any) -> gateway.LLMGatewaySpec:
    document: dict[str, Any] = {
        "template": APP_TEMPLATE,
        "routes": [
            {
                "model": "gpt-4o-mini",
                "targets": [{"policy": "primary"}, {"policy": "fallback", "model": "llama3"}],
            }
        ],
    }
    return gateway.LLMGatewaySpec.model_validate(document | overrides)


def policy_spec(**overrides: Any) -> policy.ProviderPolicySpec:
    document: dict[str, Any] = {
        "provider": "openai-compatible",
        "baseURL": "http://127.0.0.1:18080/v1",
        "apiKeySecretRef": {"name": "llm-keys", "key": "primary"},
    }
    return policy.ProviderPolicySpec.model_validate(document | overrides)


def policies() -> dict[str, policy.ProviderPolicySpec]:
    return {
        "primary": policy_spec(rateLimit={"requestsPerMinute": 100, "tokensPerMinute": 10_000}),
        "fallback": policy_spec(baseURL="http://127.0.0.1:18081/v1", apiKeySecretRef=None),
    }


names = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
ports = st.integers(min_value=1, max_value=65535)
limits = st.integers(min_value=1, max_value=10_000_000)
replica_counts = st.integers(min_value=1, max_value=1000)


@st.composite
def gateway_specs(draw: st.DrawFn) -> gateway.LLMGatewaySpec:
    """Gateways with varied routes, proxy settings and scaling."""
    port, admin = draw(st.lists(ports, min_size=2, max_size=2, unique=True))
    route_models = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    policy_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    routes = [
        {
            "model": model,
            "targets": [
                {"policy": p} for p in draw(st.lists(st.sampled_from(policy_names), min_size=1, max_size=3))
            ],
        }
        for model in route_models
    ]
    scaling: dict[str, Any] = draw(
        st.sampled_from(
            [
                {},
                {"replicas": 3},
                {"autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetCPUUtilizationPercentage": 70}},
            ]
        )
    )
    proxy = {
        "port": port,
        "adminPort": admin,
        "logLevel": draw(st.sampled_from(["debug", "info", "warning", "error"])),
        "image": draw(st.sampled_from(["llmgw-proxy:1", "llmgw-proxy:2"])),
    }
    return gateway_spec(routes=routes, proxy=proxy, **scaling)
