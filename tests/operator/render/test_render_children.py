"""All children of a resolved gateway in one call, in apply order; an unresolved one renders nothing."""

from __future__ import annotations

import base64

import pytest
import renderkit
import yaml

from llmgw_operator.api import gateway
from llmgw_operator.render import children, names, resolve
from llmgw_proxy import config

SECRETS = {"llm-keys": {"primary": base64.b64encode(b"sk-1").decode()}}


def test_renders_config_keys_deployment_and_hpa_in_apply_order() -> None:
    spec = renderkit.gateway_spec(
        autoscaling={"minReplicas": 2, "maxReplicas": 8, "targetCPUUtilizationPercentage": 60}
    )
    resolution = resolve.gateway_policies(spec, renderkit.policies(), SECRETS)
    rendered = children.render(
        "chat", "ns", spec, resolution, observed_replicas=4, default_image="img:1", native_sidecar=True
    )
    assert [m["kind"] for m in rendered.manifests()] == [
        "ConfigMap",
        "Secret",
        "Deployment",
        "HorizontalPodAutoscaler",
    ]
    compiled = config.parse(yaml.safe_load(rendered.config_map["data"][names.CONFIG_KEY]))
    limit = compiled.providers["primary"].rate_limit
    assert limit is not None
    assert limit.requests_per_minute == 25  # 100 shared by the 4 pods the HPA runs now
    assert rendered.secret["data"] == {"primary": base64.b64encode(b"sk-1").decode()}


def test_without_autoscaling_there_is_no_hpa() -> None:
    spec = renderkit.gateway_spec(replicas=2)
    resolution = resolve.gateway_policies(spec, renderkit.policies(), SECRETS)
    rendered = children.render(
        "chat", "ns", spec, resolution, observed_replicas=None, default_image="img:1", native_sidecar=False
    )
    assert rendered.hpa is None
    assert [m["kind"] for m in rendered.manifests()] == ["ConfigMap", "Secret", "Deployment"]


def test_injection_mode_renders_config_and_keys_and_splits_limits_across_injected_pods() -> None:
    document = renderkit.gateway_spec().model_dump(by_alias=True, exclude_none=True)
    del document["template"]
    spec = gateway.LLMGatewaySpec.model_validate(document)
    resolution = resolve.gateway_policies(spec, renderkit.policies(), SECRETS)
    rendered = children.render(
        "chat",
        "ns",
        spec,
        resolution,
        observed_replicas=None,
        default_image="img:1",
        native_sidecar=True,
        injected_pods=4,
    )
    assert rendered.deployment is None and rendered.hpa is None
    assert [m["kind"] for m in rendered.manifests()] == ["ConfigMap", "Secret"]
    compiled = config.parse(yaml.safe_load(rendered.config_map["data"][names.CONFIG_KEY]))
    limit = compiled.providers["primary"].rate_limit
    assert limit is not None and limit.requests_per_minute == 25  # 100 shared by 4 injected pods


def test_owned_and_injected_pods_share_the_limits() -> None:
    spec = renderkit.gateway_spec(replicas=2)
    resolution = resolve.gateway_policies(spec, renderkit.policies(), SECRETS)
    rendered = children.render(
        "chat",
        "ns",
        spec,
        resolution,
        observed_replicas=2,
        default_image="img:1",
        native_sidecar=True,
        injected_pods=2,
    )
    compiled = config.parse(yaml.safe_load(rendered.config_map["data"][names.CONFIG_KEY]))
    limit = compiled.providers["primary"].rate_limit
    assert limit is not None and limit.requests_per_minute == 25


def test_refuses_to_render_an_unresolved_gateway() -> None:
    spec = renderkit.gateway_spec()
    resolution = resolve.gateway_policies(spec, renderkit.policies(), {})
    with pytest.raises(ValueError, match="Secret llm-keys not found"):
        children.render(
            "chat", "ns", spec, resolution, observed_replicas=None, default_image="img:1", native_sidecar=True
        )
