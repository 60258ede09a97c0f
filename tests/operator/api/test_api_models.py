"""The pydantic validators implement the same cross-field rules as the CRD's CEL, with the same messages."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from llmgw_operator.api import common, crd, gateway, policy
from llmgw_operator.render import pod_rules


def _policy(**overrides: Any) -> dict[str, Any]:
    return {"provider": "openai-compatible", "baseURL": "http://127.0.0.1:18080/v1"} | overrides


def _gateway(**overrides: Any) -> dict[str, Any]:
    return {
        "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}},
        "routes": [{"model": "gpt-4o", "targets": [{"policy": "primary"}]}],
    } | overrides


def _cel_messages(definition: dict[str, Any]) -> set[str]:
    found: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        found.update(r["message"] for r in node.get("x-kubernetes-validations", []))
        for sub in node.get("properties", {}).values():
            walk(sub)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])

    walk(definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return found


POLICY_RULES = [
    pytest.param(
        _policy(egress={"caBundle": {"configMap": "ca", "secret": "ca", "key": "ca.crt"}}),
        "name exactly one of configMap and secret",
        id="ca-bundle-one-source",
    ),
    pytest.param(
        _policy(forwardHeaders=["X-Tenant", "X-Api-Key"]),
        "forwardHeaders may not name a credential, proxy or hop-by-hop header",
        id="forward-headers-no-credential",
    ),
    pytest.param(
        _policy(forwardHeaders=["Proxy-Anything"]),
        "forwardHeaders may not name a credential, proxy or hop-by-hop header",
        id="forward-headers-no-proxy-header",
    ),
    pytest.param(
        _policy(provider="azure-openai", apiKeySecretRef={"name": "k", "key": "k"}),
        "apiVersion is required when provider is azure-openai",
        id="azure-needs-api-version",
    ),
    pytest.param(
        _policy(provider="openai"),
        "apiKeySecretRef is required unless provider is openai-compatible",
        id="openai-needs-a-key",
    ),
    pytest.param(
        _policy(rateLimit={"maxWait": 1}),
        "rateLimit needs requestsPerMinute or tokensPerMinute",
        id="rate-limit-needs-a-limit",
    ),
    pytest.param(
        _policy(budget={"tokensPerDay": 1000}),
        "budget needs sharedStore: a budget counted per pod would be a budget per pod",
        id="budget-needs-a-shared-store",
    ),
    pytest.param(
        _policy(rateLimit={"requestsPerMinute": 60, "scope": "global"}),
        "rateLimit.scope global needs sharedStore",
        id="global-limit-needs-a-shared-store",
    ),
    pytest.param(
        _policy(modelRateLimits={"m": {"requestsPerMinute": 60, "scope": "global"}}),
        "modelRateLimits scope global needs sharedStore",
        id="global-model-limit-needs-a-shared-store",
    ),
    pytest.param(
        _policy(cache={"enabled": True, "shared": True}),
        "cache.shared needs sharedStore",
        id="shared-cache-needs-a-shared-store",
    ),
    pytest.param(
        _policy(sharedStore={"url": "redis://r:6379/0"}, budget={}),
        "budget needs tokensPerDay or tokensPerMonth",
        id="budget-needs-a-period",
    ),
    pytest.param(
        _policy(modelRateLimits={"m" * 254: {"requestsPerMinute": 60}}),
        "modelRateLimits keys are model names of 1 to 253 characters",
        id="model-rate-limit-names-bounded",
    ),
    pytest.param(
        _policy(modelRateLimits={"": {"requestsPerMinute": 60}}),
        "modelRateLimits keys are model names of 1 to 253 characters",
        id="model-rate-limit-names-not-empty",
    ),
    pytest.param(
        _policy(circuitBreaker={"openDuration": 60, "maxOpenDuration": 30}),
        "circuitBreaker.openDuration must not exceed circuitBreaker.maxOpenDuration",
        id="open-duration-within-max",
    ),
]

GATEWAY_RULES = [
    pytest.param(
        _gateway(replicas=2, autoscaling={"maxReplicas": 3, "targetCPUUtilizationPercentage": 70}),
        "replicas and autoscaling are mutually exclusive",
        id="replicas-xor-autoscaling",
    ),
    pytest.param(
        _gateway(autoscaling={"minReplicas": 4, "maxReplicas": 3, "targetCPUUtilizationPercentage": 70}),
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        id="min-within-max",
    ),
    pytest.param(
        _gateway(autoscaling={"maxReplicas": 3}),
        "autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage",
        id="autoscaling-needs-a-target",
    ),
    pytest.param(
        {k: v for k, v in _gateway(replicas=2).items() if k != "template"},
        gateway.INJECTION_RULE["message"],
        id="replicas-need-a-template",
    ),
    pytest.param(
        {
            k: v
            for k, v in _gateway(autoscaling={"maxReplicas": 3, "targetCPUUtilizationPercentage": 70}).items()
            if k != "template"
        },
        gateway.INJECTION_RULE["message"],
        id="autoscaling-needs-a-template",
    ),
    pytest.param(
        _gateway(proxy={"port": 9090}),
        "proxy.port and proxy.adminPort must differ",
        id="distinct-ports",
    ),
    pytest.param(
        _gateway(routes=[{"model": "c", "targets": [{"policy": "p"}], "endpoints": ["messages", "audio"]}]),
        "endpoints: 'messages' is Anthropic's, not to be served by a route with OpenAI endpoints",
        id="one-api-family-per-route",
    ),
    pytest.param(
        _gateway(proxy={"env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {}}}]}),
        "env: set value or valueFrom, not both",
        id="env-value-xor-value-from",
    ),
    pytest.param(
        _gateway(proxy={"volumes": [{"name": "llmgw-config", "emptyDir": {}}]}),
        "proxy.volumes: names starting with llmgw- are reserved for the operator's volumes",
        id="sidecar-volume-names-reserved",
    ),
    pytest.param(
        _gateway(
            proxy={
                "volumes": [{"name": "ca", "emptyDir": {}}],
                "volumeMounts": [{"name": "ca", "mountPath": "/etc/llmgw/keys"}],
            }
        ),
        "proxy.volumeMounts: /etc/llmgw and the directories above it are reserved for the sidecar's "
        "config, keys and egress files",
        id="sidecar-mount-off-the-config-and-keys",
    ),
    pytest.param(
        _gateway(
            proxy={
                "volumes": [{"name": "ca", "emptyDir": {}}],
                "volumeMounts": [{"name": "ca", "mountPath": "/etc"}],
            }
        ),
        "proxy.volumeMounts: /etc/llmgw and the directories above it are reserved for the sidecar's "
        "config, keys and egress files",
        id="sidecar-mount-not-above-the-config",
    ),
]


@pytest.mark.parametrize(("spec", "message"), POLICY_RULES)
def test_policy_rules_match_the_crd(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message.replace(".", r"\.")):
        policy.ProviderPolicySpec.model_validate(spec)
    assert message in _cel_messages(crd.providerpolicy())


@pytest.mark.parametrize(("spec", "message"), GATEWAY_RULES)
def test_gateway_rules_match_the_crd(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message.replace(".", r"\.")):
        gateway.LLMGatewaySpec.model_validate(spec)
    assert message in _cel_messages(crd.llmgateway())


def test_a_gateway_name_must_fit_in_a_label_value() -> None:
    assert gateway.name_problem("g" * 63) is None
    assert gateway.name_problem("g" * 64) == "metadata.name must be at most 63 characters"
    assert gateway.NAME_RULE["message"] in _cel_messages(crd.llmgateway())


def test_host_network_is_refused_by_the_crd_and_by_the_operator_with_one_message() -> None:
    # Not a pydantic rule: the operator's twin reports it as PodTemplateRefused, like the
    # pod rules the chart configures, for a CRD older than the rule.
    template = {"spec": {"hostNetwork": True, "containers": [{"name": "app"}]}}
    message = gateway.HOST_NETWORK_RULE["message"]
    assert message in pod_rules.refusals(template, pod_rules.Rules())
    assert message in _cel_messages(crd.llmgateway())


def test_every_cel_rule_has_a_twin_in_the_operator() -> None:
    tested = {p.values[1] for p in POLICY_RULES + GATEWAY_RULES} | {
        gateway.NAME_RULE["message"],
        gateway.HOST_NETWORK_RULE["message"],
    }
    assert _cel_messages(crd.providerpolicy()) | _cel_messages(crd.llmgateway()) == tested


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param(
            {"routes": [{"model": "a", "targets": [{"policy": "p"}]}] * 2},
            "routes: duplicate model a",
            id="duplicate-route",
        ),
        pytest.param({"template": {"spec": {}}}, "template.spec.containers", id="no-containers"),
        pytest.param(
            {"template": {"spec": {"containers": [{"name": "llmgw-proxy"}]}}},
            "llmgw-proxy is reserved",
            id="reserved-container",
        ),
        pytest.param(
            {"template": {"spec": {"containers": [{"name": "a"}], "volumes": [{"name": "llmgw-keys"}]}}},
            "llmgw-keys is reserved",
            id="reserved-volume",
        ),
        pytest.param(
            {"routes": [{"model": "a", "targets": []}]}, "at least 1 item", id="route-without-target"
        ),
        pytest.param(
            {"routes": [{"model": "a", "targets": [{"policy": "Bad_Name"}]}]}, "pattern", id="bad-policy"
        ),
    ],
)
def test_gateway_refuses_invalid_specs(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        gateway.LLMGatewaySpec.model_validate(_gateway(**overrides))


def test_a_minimal_gateway_gets_the_documented_defaults() -> None:
    spec = gateway.LLMGatewaySpec.model_validate(_gateway())
    assert spec.replicas is None
    assert spec.autoscaling is None
    assert (spec.proxy.port, spec.proxy.admin_port, spec.proxy.log_level) == (8080, 9090, "info")
    assert spec.policy_names() == ("primary",)


def test_a_gateway_without_a_template_is_in_injection_mode() -> None:
    spec = gateway.LLMGatewaySpec.model_validate({"routes": _gateway()["routes"]})
    assert spec.injected and spec.template is None
    assert not gateway.LLMGatewaySpec.model_validate(_gateway()).injected


def test_policy_reads_the_kubernetes_spelling_of_base_url() -> None:
    spec = policy.ProviderPolicySpec.model_validate(_policy(rateLimit={"requestsPerMinute": 60}))
    assert spec.base_url == "http://127.0.0.1:18080/v1"
    assert spec.rate_limit is not None
    assert spec.rate_limit.scope is policy.Scope.SHARED
    assert spec.model_dump(by_alias=True, exclude_none=True)["baseURL"] == spec.base_url


def test_explain_names_fields_without_echoing_values() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        policy.ProviderPolicySpec.model_validate(
            _policy(baseURL="ftp://sk-secret-value", retry={"attempts": 0})
        )
    message = common.explain(caught.value)
    assert "baseURL: String should match pattern" in message
    assert "retry.attempts: Input should be greater than or equal to 1" in message
    assert "sk-secret-value" not in message


def test_explain_drops_pydantics_value_error_prefix() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        policy.ProviderPolicySpec.model_validate(_policy(provider="openai"))
    assert common.explain(caught.value) == "apiKeySecretRef is required unless provider is openai-compatible"
