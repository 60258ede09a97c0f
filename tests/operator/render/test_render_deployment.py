"""The Deployment: the application's template plus the sidecar, rolled only by restart-needing changes."""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

import pytest
import renderkit
from hypothesis import given
from hypothesis import strategies as st

from llmgw_dev import dockerfile_check
from llmgw_operator.api import gateway
from llmgw_operator.render import deployment, names

IMAGE = "ghcr.io/example/llmgw-proxy:1.0"
ROOT = pathlib.Path(__file__).resolve().parents[3]


def _render(spec: gateway.LLMGatewaySpec | None = None, *, native: bool = True) -> dict[str, Any]:
    return deployment.render(
        "chat", "team-a", spec or renderkit.gateway_spec(), image=IMAGE, native_sidecar=native
    )


def _sidecar(rendered: dict[str, Any]) -> dict[str, Any]:
    pod = rendered["spec"]["template"]["spec"]
    found = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "llmgw-proxy"]
    assert len(found) == 1
    sidecar: dict[str, Any] = found[0]
    return sidecar


def test_a_native_sidecar_is_an_init_container_that_always_restarts() -> None:
    pod = _render(native=True)["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["llmgw-proxy"]
    assert pod["initContainers"][0]["restartPolicy"] == "Always"
    assert [c["name"] for c in pod["containers"]] == ["app"]


def test_without_native_sidecars_the_proxy_is_an_ordinary_container() -> None:
    pod = _render(native=False)["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert [c["name"] for c in pod["containers"]] == ["app", "llmgw-proxy"]
    assert "restartPolicy" not in pod["containers"][1]


def test_the_native_sidecar_starts_before_the_applications_own_init_containers() -> None:
    template = copy.deepcopy(renderkit.APP_TEMPLATE)
    template["spec"]["initContainers"] = [{"name": "migrate", "image": "chat:1"}]
    pod = _render(renderkit.gateway_spec(template=template))["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["llmgw-proxy", "migrate"]


def test_the_sidecar_runs_the_proxy_with_the_mounted_config_and_admin_probes() -> None:
    spec = renderkit.gateway_spec(proxy={"adminPort": 9555, "resources": {"requests": {"cpu": "10m"}}})
    sidecar = _sidecar(_render(spec))
    assert sidecar["image"] == IMAGE
    assert sidecar["command"] == ["llmgw-proxy", "--config", "/etc/llmgw/config/proxy.yaml"]
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9555}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9555}
    assert sidecar["resources"] == {"requests": {"cpu": "10m"}}


def test_the_sidecar_runs_the_images_program_under_the_images_optimize_level() -> None:
    """The image runs the sidecar under -OO (its PYTHONOPTIMIZE): the rendered container runs the
    image's own program and leaves that setting to the image, so a gateway pinned to an older
    image (whose CLI read its __doc__) is not handed a flag it cannot run with."""
    text = (ROOT / "Dockerfile.proxy").read_text()
    assert dockerfile_check.final_env(text)["PYTHONOPTIMIZE"] == "2"
    entrypoint = json.loads(dockerfile_check.stages(text)[-1].find("ENTRYPOINT")[-1].args)
    sidecar = _sidecar(_render(renderkit.gateway_spec(proxy={"env": [{"name": "A", "value": "1"}]})))
    assert sidecar["command"][: len(entrypoint)] == entrypoint
    assert [e["name"] for e in sidecar["env"]] == ["A"]


def test_the_sidecar_runs_restricted() -> None:
    context = _sidecar(_render())["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_config_and_keys_are_whole_read_only_volumes_so_updates_reach_the_pod() -> None:
    rendered = _render()
    mounts = _sidecar(rendered)["volumeMounts"]
    assert {(m["name"], m["mountPath"]) for m in mounts} == {
        ("llmgw-config", "/etc/llmgw/config"),
        ("llmgw-keys", "/etc/llmgw/keys"),
    }
    assert all(m["readOnly"] and "subPath" not in m for m in mounts)
    volumes = {v["name"]: v for v in rendered["spec"]["template"]["spec"]["volumes"]}
    assert volumes["llmgw-config"]["configMap"]["name"] == "chat-proxy-config"
    assert volumes["llmgw-keys"]["secret"]["secretName"] == "chat-provider-keys"
    assert "scratch" in volumes


def test_keeps_the_applications_labels_and_adds_the_selector() -> None:
    rendered = _render()
    labels = rendered["spec"]["template"]["metadata"]["labels"]
    assert labels["app"] == "chat"
    assert labels["app.kubernetes.io/name"] == "chat"
    assert rendered["spec"]["selector"] == {"matchLabels": {"llmgateway.io/gateway": "chat"}}
    assert rendered["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert rendered["metadata"] == {"name": "chat", "namespace": "team-a", "labels": names.labels("chat")}


def test_does_not_modify_the_spec_it_was_given() -> None:
    spec = renderkit.gateway_spec()
    before = spec.model_dump()
    _render(spec)
    assert spec.model_dump() == before


@pytest.mark.parametrize(
    ("overrides", "replicas"),
    [
        pytest.param({}, 1, id="default"),
        pytest.param({"replicas": 3}, 3, id="fixed"),
        pytest.param({"replicas": 0}, 0, id="zero"),
        pytest.param(
            {"autoscaling": {"maxReplicas": 4, "targetCPUUtilizationPercentage": 60}}, None, id="hpa-owns"
        ),
    ],
)
def test_replicas_are_set_only_when_no_hpa_owns_them(overrides: dict[str, Any], replicas: int | None) -> None:
    assert _render(renderkit.gateway_spec(**overrides))["spec"].get("replicas") == replicas


def _hash(rendered: dict[str, Any]) -> str:
    return str(rendered["spec"]["template"]["metadata"]["annotations"][names.RESTART_HASH_ANNOTATION])


@pytest.mark.parametrize(
    "proxy",
    [
        pytest.param({"port": 8081}, id="port"),
        pytest.param({"adminPort": 9091}, id="admin-port"),
        pytest.param({"resources": {"limits": {"memory": "1Gi"}}}, id="resources"),
    ],
)
def test_restart_needing_changes_change_the_hash(proxy: dict[str, Any]) -> None:
    assert _hash(_render(renderkit.gateway_spec(proxy=proxy))) != _hash(_render())


def test_a_new_image_changes_the_hash() -> None:
    spec = renderkit.gateway_spec()
    other = deployment.render("chat", "team-a", spec, image="llmgw-proxy:2", native_sidecar=True)
    assert _hash(other) != _hash(_render(spec))


reloadable = st.fixed_dictionaries(
    {},
    optional={
        "routes": st.lists(
            st.builds(
                lambda m, p: {"model": m, "targets": [{"policy": p}]}, renderkit.names, renderkit.names
            ),
            min_size=1,
            max_size=3,
            unique_by=lambda r: r["model"],
        ),
        "proxy": st.fixed_dictionaries(
            {},
            optional={
                "logLevel": st.sampled_from(["debug", "info", "warning", "error"]),
                "maxBodyBytes": st.integers(min_value=1024, max_value=10**8),
            },
        ),
        "cache": st.fixed_dictionaries({"maxEntries": st.integers(min_value=1, max_value=10**6)}),
        "replicas": st.integers(min_value=0, max_value=50),
    },
)


@given(change=reloadable)
def test_hot_reloadable_changes_never_change_the_hash(change: dict[str, Any]) -> None:
    assert _hash(_render(renderkit.gateway_spec(**change))) == _hash(_render())


@given(spec=renderkit.gateway_specs(), native=st.booleans())
def test_rendering_is_deterministic(spec: gateway.LLMGatewaySpec, native: bool) -> None:
    again = gateway.LLMGatewaySpec.model_validate(spec.model_dump(by_alias=True))
    assert _render(spec, native=native) == _render(again, native=native)


def test_image_for_prefers_the_gateways_image() -> None:
    assert deployment.image_for(renderkit.gateway_spec(), "default:1") == "default:1"
    assert deployment.image_for(renderkit.gateway_spec(proxy={"image": "mine:2"}), "default:1") == "mine:2"
