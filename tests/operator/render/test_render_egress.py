"""Egress and sidecar settings in the rendered children: the config's files are the pod's mounts."""

from __future__ import annotations

import base64
import posixpath
from typing import Any

import pydantic
import pytest
import renderkit
import yaml

from llmgw_operator.api import common, gateway
from llmgw_operator.render import children, deployment, egress, names, pod_rules, resolve
from llmgw_proxy import config

SECRETS = {"llm-keys": {"primary": base64.b64encode(b"sk-1").decode()}}
CA_FROM_SECRET = {"caBundle": {"secret": "internal-ca", "key": "ca.crt"}}


def _render(spec: gateway.LLMGatewaySpec, **policy_overrides: dict[str, Any]) -> children.Children:
    policies = renderkit.policies()
    for name, overrides in policy_overrides.items():
        document = policies[name].model_dump(mode="json", by_alias=True, exclude_none=True) | overrides
        policies[name] = type(policies[name]).model_validate(document)
    resolution = resolve.gateway_policies(spec, policies, SECRETS)
    return children.render(
        "chat", "ns", spec, resolution, observed_replicas=None, default_image="img:1", native_sidecar=True
    )


def _config(rendered: children.Children) -> config.ProxyConfig:
    return config.parse(yaml.safe_load(rendered.config_map["data"][names.CONFIG_KEY]))


def _pod(rendered: children.Children) -> dict[str, Any]:
    assert rendered.deployment is not None, "an owned-mode gateway renders its Deployment"
    pod: dict[str, Any] = rendered.deployment["spec"]["template"]["spec"]
    return pod


def _sidecar(rendered: children.Children) -> dict[str, Any]:
    pod = _pod(rendered)
    [found] = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "llmgw-proxy"]
    sidecar: dict[str, Any] = found
    return sidecar


def _source_of(rendered: children.Children, path: str) -> tuple[dict[str, Any], str]:
    """The pod volume a file path of the sidecar lies on, and the key the file is within it."""
    mounts = _sidecar(rendered)["volumeMounts"]
    [mount] = [m for m in mounts if path.startswith(m["mountPath"] + "/")]
    [volume] = [v for v in _pod(rendered)["volumes"] if v["name"] == mount["name"]]
    assert mount["readOnly"] is True
    return volume, posixpath.relpath(path, mount["mountPath"])


def test_a_ca_bundle_from_a_secret_is_mounted_where_the_config_points() -> None:
    rendered = _render(renderkit.gateway_spec(), primary={"egress": CA_FROM_SECRET})
    ca_file = _config(rendered).providers["primary"].egress.ca_file
    assert ca_file is not None
    volume, key = _source_of(rendered, ca_file)
    assert volume["secret"] == {"secretName": "internal-ca", "defaultMode": 0o444}
    assert key == "ca.crt"
    assert _config(rendered).providers["fallback"].egress.ca_file is None  # per policy


def test_a_ca_bundle_from_a_config_map_is_mounted_where_the_config_points() -> None:
    rendered = _render(
        renderkit.gateway_spec(),
        primary={"egress": {"caBundle": {"configMap": "corp-ca", "key": "bundle.pem"}}},
    )
    ca_file = _config(rendered).providers["primary"].egress.ca_file
    assert ca_file is not None
    volume, key = _source_of(rendered, ca_file)
    assert volume["configMap"] == {"name": "corp-ca", "defaultMode": 0o444}
    assert key == "bundle.pem"


def test_a_client_certificate_mounts_its_secret_for_both_files() -> None:
    rendered = _render(
        renderkit.gateway_spec(), primary={"egress": {"clientCertificate": {"secret": "mtls"}}}
    )
    provider = _config(rendered).providers["primary"].egress
    assert provider.client_cert_file is not None and provider.client_key_file is not None
    for path, key in ((provider.client_cert_file, "tls.crt"), (provider.client_key_file, "tls.key")):
        volume, found = _source_of(rendered, path)
        assert volume["secret"]["secretName"] == "mtls"
        assert found == key


def test_the_gateway_proxy_applies_to_every_provider_unless_its_policy_sets_one() -> None:
    spec = renderkit.gateway_spec(
        egress={
            "proxy": {
                "httpsProxy": "http://proxy.corp:3128",
                "noProxy": ".svc,.cluster.local",
                "credentialsSecretRef": {"name": "proxy-auth", "key": "credentials"},
            }
        }
    )
    rendered = _render(spec, fallback={"egress": {"proxy": {}}})
    primary = _config(rendered).providers["primary"].egress.proxy
    assert primary is not None
    assert (primary.https_proxy, primary.no_proxy) == ("http://proxy.corp:3128", ".svc,.cluster.local")
    assert primary.credentials_file is not None
    volume, key = _source_of(rendered, primary.credentials_file)
    assert (volume["secret"]["secretName"], key) == ("proxy-auth", "credentials")
    # An empty proxy object in the policy replaces the gateway's: that provider goes direct.
    assert _config(rendered).providers["fallback"].egress.proxy == config.EgressProxy()


def test_without_a_proxy_anywhere_the_sidecar_environment_decides() -> None:
    rendered = _render(renderkit.gateway_spec())
    assert _config(rendered).providers["primary"].egress.proxy is None


def test_one_object_named_twice_is_mounted_once() -> None:
    rendered = _render(
        renderkit.gateway_spec(), primary={"egress": CA_FROM_SECRET}, fallback={"egress": CA_FROM_SECRET}
    )
    secrets = [v for v in _pod(rendered)["volumes"] if v.get("secret", {}).get("secretName") == "internal-ca"]
    assert len(secrets) == 1
    assert all(v["name"].startswith("llmgw-egress-") and len(v["name"]) <= 63 for v in secrets)


def test_sidecar_env_resources_and_volumes_go_into_the_container_as_written() -> None:
    env = [
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability:4318"},
        {"name": "HTTPS_PROXY", "valueFrom": {"secretKeyRef": {"name": "egress", "key": "url"}}},
    ]
    resources = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    spec = renderkit.gateway_spec(
        proxy={
            "env": env,
            "resources": resources,
            "volumes": [{"name": "corp-certs", "configMap": {"name": "corp-certs"}}],
            "volumeMounts": [
                {"name": "corp-certs", "mountPath": "/etc/ssl/corp", "readOnly": True},
                {"name": "scratch", "mountPath": "/var/scratch"},  # the template's own volume
            ],
        }
    )
    rendered = _render(spec)
    sidecar = _sidecar(rendered)
    assert sidecar["env"] == env
    assert sidecar["resources"] == resources
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert mounts["/etc/ssl/corp"] == "corp-certs" and mounts["/var/scratch"] == "scratch"
    assert mounts[names.CONFIG_DIR] == gateway.CONFIG_VOLUME and mounts[names.KEYS_DIR] == gateway.KEYS_VOLUME
    volumes = [v["name"] for v in _pod(rendered)["volumes"]]
    assert volumes.count("corp-certs") == 1 and volumes.count("scratch") == 1
    # What the spec cannot reach stays the operator's.
    assert sidecar["ports"] == [{"name": "llmgw-admin", "containerPort": 9090, "protocol": "TCP"}]
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["securityContext"] == deployment.SECURITY_CONTEXT


def test_the_sidecar_function_alone_carries_the_settings_for_injected_pods() -> None:
    spec = renderkit.gateway_spec(proxy={"env": [{"name": "A", "value": "1"}]})
    mounts = (egress.Mount("secret", "internal-ca"),)
    container = deployment.sidecar(spec, "img:1", native=True, mounts=mounts)
    assert container["env"] == [{"name": "A", "value": "1"}]
    assert mounts[0].volume_mount() in container["volumeMounts"]
    assert mounts[0].pod_volume() in deployment.volumes("chat", spec, mounts)


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        (
            {"volumes": [{"name": "scratch", "emptyDir": {}}]},
            "proxy.volumes: scratch is also a volume of template.spec.volumes",
        ),
        (
            {"volumeMounts": [{"name": "nowhere", "mountPath": "/x"}]},
            "proxy.volumeMounts: nowhere is neither in proxy.volumes nor in template.spec.volumes",
        ),
        (
            {
                "volumes": [{"name": "v", "emptyDir": {}}],
                "volumeMounts": [{"name": "v", "mountPath": "/etc/./llmgw/"}],
            },
            "/etc/llmgw and the directories above it are reserved",
        ),
        ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "proxy.env: duplicate name A"),
    ],
)
def test_sidecar_settings_that_would_break_the_pod_are_refused(proxy: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message.replace(".", r"\.")):
        renderkit.gateway_spec(proxy=proxy)


def test_a_host_path_sidecar_volume_is_refused_like_a_template_one() -> None:
    spec = renderkit.gateway_spec(proxy={"volumes": [{"name": "host", "hostPath": {"path": "/"}}]})
    refused = pod_rules.sidecar_refusals(spec.proxy, pod_rules.Rules())
    assert refused == [
        "proxy.volumes: hostPath volume host is not allowed by the operator's --allow-host-path"
    ]
    assert pod_rules.sidecar_refusals(spec.proxy, pod_rules.Rules(host_path=True)) == []


def test_a_bad_proxy_url_is_refused_without_quoting_it() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        renderkit.gateway_spec(egress={"proxy": {"httpsProxy": "http://user:s3cret@proxy:99999"}})
    explained = common.explain(caught.value)
    assert "egress.proxy.httpsProxy: the proxy URL does not parse" in explained
    assert "s3cret" not in explained


def test_the_connect_stagger_is_the_policys() -> None:
    rendered = _render(renderkit.gateway_spec(), primary={"egress": {"connectStagger": 0.1}})
    assert _config(rendered).providers["primary"].egress.connect_stagger == 0.1
    assert _config(rendered).providers["fallback"].egress.connect_stagger == 0.25
