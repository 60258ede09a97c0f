"""The public surface the kopf handlers build on is pinned, so a rename is a visible decision."""

from __future__ import annotations

import llmgw_operator.api
import llmgw_operator.render


def test_the_api_package_exports() -> None:
    assert sorted(llmgw_operator.api.__all__) == sorted(
        [
            "GROUP",
            "VERSION",
            "Condition",
            "ConditionStatus",
            "LLMGateway",
            "LLMGatewaySpec",
            "LLMGatewayStatus",
            "ProviderPolicy",
            "ProviderPolicySpec",
            "ProviderPolicyStatus",
            "common",
            "crd",
            "gateway",
            "policy",
            "structural",
        ]
    )
    assert all(hasattr(llmgw_operator.api, name) for name in llmgw_operator.api.__all__)


def test_the_render_package_exports_one_module_per_child() -> None:
    assert llmgw_operator.render.__all__ == [
        "children",
        "conditions",
        "configmap",
        "deployment",
        "hpa",
        "names",
        "proxy_config",
        "resolve",
        "secret",
    ]
    assert all(hasattr(llmgw_operator.render, name) for name in llmgw_operator.render.__all__)


def test_full_objects_parse_as_read_from_the_api_server() -> None:
    body = {
        "apiVersion": "llmgateway.io/v1alpha1",
        "kind": "ProviderPolicy",
        "metadata": {"name": "p", "namespace": "ns", "generation": 2},
        "spec": {"provider": "openai-compatible", "baseURL": "http://127.0.0.1:1/v1"},
    }
    parsed = llmgw_operator.api.ProviderPolicy.model_validate(body)
    assert parsed.spec.base_url == "http://127.0.0.1:1/v1"
    assert parsed.status is None
