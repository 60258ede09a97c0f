"""The proxy config ConfigMap: one key, byte-stable, readable by the proxy."""

from __future__ import annotations

import renderkit
import yaml
from hypothesis import given

from llmgw_operator.api import gateway
from llmgw_operator.render import configmap, names, proxy_config
from llmgw_proxy import config


def _compiled(spec: gateway.LLMGatewaySpec) -> config.ProxyConfig:
    policies = {name: renderkit.policy_spec() for name in spec.policy_names()}
    return proxy_config.compile_config(spec, policies, replicas=2)


def test_holds_the_config_under_proxy_yaml() -> None:
    document = _compiled(renderkit.gateway_spec())
    rendered = configmap.render("chat", "team-a", document)
    assert rendered["metadata"] == {
        "name": "chat-proxy-config",
        "namespace": "team-a",
        "labels": names.labels("chat"),
        "annotations": {names.CONFIG_DIGEST_ANNOTATION: config.digest(document)},
    }
    assert list(rendered["data"]) == ["proxy.yaml"]
    assert config.parse(yaml.safe_load(rendered["data"]["proxy.yaml"])) == document


@given(spec=renderkit.gateway_specs())
def test_the_digest_annotation_is_the_digest_a_sidecar_reading_the_data_reports(
    spec: gateway.LLMGatewaySpec,
) -> None:
    rendered = configmap.render("chat", "ns", _compiled(spec))
    served = config.parse(yaml.safe_load(rendered["data"]["proxy.yaml"]))
    assert rendered["metadata"]["annotations"][names.CONFIG_DIGEST_ANNOTATION] == config.digest(served)


def test_leaves_owner_references_to_the_apply_layer() -> None:
    rendered = configmap.render("chat", "team-a", _compiled(renderkit.gateway_spec()))
    assert "ownerReferences" not in rendered["metadata"]


@given(spec=renderkit.gateway_specs())
def test_the_same_spec_gives_byte_identical_data(spec: gateway.LLMGatewaySpec) -> None:
    again = gateway.LLMGatewaySpec.model_validate(spec.model_dump(by_alias=True))
    first = configmap.render("chat", "ns", _compiled(spec))["data"]["proxy.yaml"]
    second = configmap.render("chat", "ns", _compiled(again))["data"]["proxy.yaml"]
    assert first.encode() == second.encode()


def test_provider_order_does_not_change_the_bytes() -> None:
    spec = renderkit.gateway_spec()
    forward = proxy_config.compile_config(spec, renderkit.policies(), replicas=1)
    backward = proxy_config.compile_config(
        spec, dict(reversed(list(renderkit.policies().items()))), replicas=1
    )
    assert configmap.serialise(forward) == configmap.serialise(backward)


def test_writes_only_fields_that_differ_from_their_defaults_so_older_sidecars_can_read_it() -> None:
    document = _compiled(renderkit.gateway_spec())
    written = yaml.safe_load(configmap.serialise(document))
    assert written["version"] == config.CONFIG_VERSION
    assert "maxBodyBytes" not in written  # left at its default
    assert "admin" not in written or written["admin"] != config.AdminListener().model_dump(by_alias=True)
    for provider in written["providers"].values():
        assert "retry" not in provider or provider["retry"] != config.Retry().model_dump(by_alias=True)
    assert config.parse(written) == document
