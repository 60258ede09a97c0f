"""Injection: a user's pod plus a gateway gives a JSON patch that adds the owned mode's sidecar, once."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
import renderkit
from hypothesis import given
from hypothesis import strategies as st

from llmgw_operator.api import gateway
from llmgw_operator.render import deployment, egress, injection, names

IMAGE = "ghcr.io/example/llmgw-proxy:1.0"


def _injection_spec(**overrides: Any) -> gateway.LLMGatewaySpec:
    document = renderkit.gateway_spec().model_dump(by_alias=True, exclude_none=True)
    del document["template"]
    return gateway.LLMGatewaySpec.model_validate(document | overrides)


def _pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {gateway.GATEWAY_LABEL: "chat"}},
        "spec": {"containers": [{"name": "app", "image": "chat:1"}]} | spec,
    }


def _inject(pod: dict[str, Any], *, native: bool = True, spec: gateway.LLMGatewaySpec | None = None) -> Any:
    ops = injection.plan(pod, "chat", spec or _injection_spec(), image=IMAGE, native_sidecar=native)
    return jsonpatch.apply_patch(pod, ops)


def test_the_injected_sidecar_is_the_owned_modes_sidecar() -> None:
    spec = _injection_spec()
    pod = _inject(_pod(), spec=spec)
    assert pod["spec"]["initContainers"] == [deployment.sidecar(spec, IMAGE, native=True)]
    assert pod["spec"]["volumes"] == deployment.volumes("chat")
    assert pod["spec"]["containers"] == [{"name": "app", "image": "chat:1"}]


def test_a_native_sidecar_goes_before_the_applications_own_init_containers() -> None:
    pod = _inject(_pod(initContainers=[{"name": "migrate", "image": "m:1"}]))
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["llmgw-proxy", "migrate"]
    assert pod["spec"]["initContainers"][0]["restartPolicy"] == "Always"


def test_before_native_sidecars_the_proxy_is_appended_to_the_containers() -> None:
    pod = _inject(_pod(), native=False)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", "llmgw-proxy"]
    assert "restartPolicy" not in pod["spec"]["containers"][1]
    assert "initContainers" not in pod["spec"]


def test_existing_volumes_and_annotations_are_kept() -> None:
    pod = _pod(volumes=[{"name": "scratch", "emptyDir": {}}])
    pod["metadata"]["annotations"] = {"team": "a", "odd/key~x": "1"}
    injected = _inject(pod)
    assert [v["name"] for v in injected["spec"]["volumes"]] == ["scratch", "llmgw-config", "llmgw-keys"]
    assert injected["metadata"]["annotations"] == {
        "team": "a",
        "odd/key~x": "1",
        injection.INJECTED_ANNOTATION: "chat",
        names.RESTART_HASH_ANNOTATION: deployment.restart_hash(_injection_spec(), IMAGE),
    }


@pytest.mark.parametrize("native", [True, False], ids=["native", "plain"])
def test_a_pod_that_has_the_sidecar_gets_an_empty_patch(native: bool) -> None:
    once = _inject(_pod(), native=native)
    assert injection.plan(once, "chat", _injection_spec(), image=IMAGE, native_sidecar=native) == []


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        pytest.param(_pod(hostNetwork=True), "spec.hostNetwork is not allowed", id="host-network"),
        pytest.param(
            _pod(volumes=[{"name": "llmgw-keys", "emptyDir": {}}]),
            "spec.volumes: the name llmgw-keys is reserved",
            id="reserved-volume",
        ),
    ],
)
def test_a_pod_the_sidecar_cannot_join_is_refused_whole(pod: dict[str, Any], message: str) -> None:
    with pytest.raises(injection.Refused, match=message):
        injection.plan(pod, "chat", _injection_spec(), image=IMAGE, native_sidecar=True)


def test_the_sidecar_hash_reads_back_what_was_injected() -> None:
    spec = _injection_spec()
    assert injection.sidecar_hash(_pod()) is None
    assert injection.sidecar_hash(_inject(_pod(), spec=spec)) == deployment.restart_hash(spec, IMAGE)


def _named(min_size: int) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Containers or volumes with distinct names (the fields the injection looks at)."""
    return st.lists(renderkit.names, min_size=min_size, max_size=3, unique=True).map(
        lambda found: [{"name": n, "image": "x:1"} for n in found]
    )


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": draw(_named(1))}
    for key in ("initContainers", "volumes"):
        if draw(st.booleans()):
            spec[key] = draw(_named(0))
    metadata: dict[str, Any] = {"labels": {gateway.GATEWAY_LABEL: "chat"}}
    if draw(st.booleans()):
        metadata["annotations"] = draw(
            st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=10), max_size=3)
        )
    return {"metadata": metadata, "spec": spec}


@given(pod=pods(), native=st.booleans())
def test_injection_adds_exactly_one_sidecar_keeps_everything_else_and_is_idempotent(
    pod: dict[str, Any], native: bool
) -> None:
    pod_names = {c["name"] for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])}
    vol_names = {v["name"] for v in pod["spec"].get("volumes", [])}
    if gateway.SIDECAR_CONTAINER in pod_names or {"llmgw-config", "llmgw-keys"} & vol_names:
        return  # the cases above cover a pod that has (part of) it already
    before = copy.deepcopy(pod)
    injected = _inject(pod, native=native)
    assert pod == before, "plan must not change its input"
    listed = injected["spec"]["containers"] + injected["spec"].get("initContainers", [])
    assert [c["name"] for c in listed].count(gateway.SIDECAR_CONTAINER) == 1
    others = [c for c in listed if c["name"] != gateway.SIDECAR_CONTAINER]
    assert others == pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
    assert injected["spec"]["volumes"][: len(vol_names)] == pod["spec"].get("volumes", [])
    for key, value in (pod["metadata"].get("annotations") or {}).items():
        if key not in (injection.INJECTED_ANNOTATION, names.RESTART_HASH_ANNOTATION):
            assert injected["metadata"]["annotations"][key] == value
    assert injection.plan(injected, "chat", _injection_spec(), image=IMAGE, native_sidecar=native) == []


def _live(hash_: str | None, gateway_name: str = "chat", **status: Any) -> dict[str, Any]:
    annotations = {injection.INJECTED_ANNOTATION: gateway_name} if hash_ is not None else {}
    if hash_:
        annotations[names.RESTART_HASH_ANNOTATION] = hash_
    return {"metadata": {"annotations": annotations}, "status": status}


def test_the_census_counts_live_injected_pods_of_the_gateway_by_sidecar_hash() -> None:
    pods = [
        _live("a", phase="Running"),
        _live("a", phase="Pending"),
        _live("b", phase="Running"),
        _live("a", phase="Succeeded"),  # a finished Job's pod runs no sidecar any more
        _live("a", phase="Failed"),
        _live(None, phase="Running"),  # an owned Deployment's pod: not injected
        _live("a", gateway_name="other", phase="Running"),
    ]
    deleting = _live("b", phase="Running")
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    counted = injection.census([*pods, deleting], "chat")
    assert counted == (("a", 2), ("b", 1))
    assert injection.rollout(counted, "a") == {"pods": 3, "current": 2, "outdated": 1}
    assert injection.rollout((), "a") == {"pods": 0, "current": 0, "outdated": 0}


def test_egress_objects_and_sidecar_volumes_come_with_the_injected_sidecar() -> None:
    spec = _injection_spec(
        proxy={
            "volumes": [{"name": "otel-ca", "emptyDir": {}}],
            "volumeMounts": [{"name": "otel-ca", "mountPath": "/ca"}],
        }
    )
    policies = renderkit.policies()
    document = policies["primary"].model_dump(mode="json", by_alias=True, exclude_none=True)
    document["egress"] = {"caBundle": {"secret": "internal-ca", "key": "ca.crt"}}
    policies["primary"] = type(policies["primary"]).model_validate(document)
    mounts = egress.mounts(spec, policies)
    assert mounts, "the CA bundle's Secret is an egress object"
    ops = injection.plan(_pod(), "chat", spec, image=IMAGE, native_sidecar=True, mounts=mounts)
    pod = jsonpatch.apply_patch(_pod(), ops)
    (sidecar,) = pod["spec"]["initContainers"]
    assert sidecar == deployment.sidecar(spec, IMAGE, native=True, mounts=mounts)
    assert pod["spec"]["volumes"] == deployment.volumes("chat", spec, mounts)
    # Every mount of the sidecar names a volume the pod now has: none dangles.
    assert {m["name"] for m in sidecar["volumeMounts"]} <= {v["name"] for v in pod["spec"]["volumes"]}
    taken = _pod(volumes=[{"name": mounts[0].volume, "emptyDir": {}}])
    with pytest.raises(injection.Refused, match=mounts[0].volume):
        injection.plan(taken, "chat", spec, image=IMAGE, native_sidecar=True, mounts=mounts)
