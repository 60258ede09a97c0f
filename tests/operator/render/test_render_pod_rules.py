"""What a gateway's pod template may ask for: hostNetwork never, the rest as the chart allows."""

from __future__ import annotations

from typing import Any

import pytest

from llmgw_operator.render import pod_rules

DEFAULTS = pod_rules.Rules()
EVERYTHING = pod_rules.Rules(privileged=True, host_namespaces=True, host_path=True)


def template(**pod: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "app", "image": "busybox"}], **pod}}


def privileged(field: str, where: str = "containers") -> dict[str, Any]:
    pod = template()
    pod["spec"][where] = [{"name": "c", "securityContext": {field: True}}]
    return pod


@pytest.mark.parametrize(
    ("pod", "rules", "named"),
    [
        pytest.param(template(hostNetwork=True), EVERYTHING, "hostNetwork", id="host-network-always"),
        pytest.param(template(hostPID=True), DEFAULTS, "hostPID", id="host-pid"),
        pytest.param(template(hostIPC=True), DEFAULTS, "hostIPC", id="host-ipc"),
        pytest.param(
            template(volumes=[{"name": "root", "hostPath": {"path": "/"}}]), DEFAULTS, "root", id="host-path"
        ),
        pytest.param(
            privileged("privileged"), DEFAULTS, "container c: securityContext.privileged", id="priv"
        ),
        pytest.param(
            privileged("allowPrivilegeEscalation", "initContainers"),
            DEFAULTS,
            "securityContext.allowPrivilegeEscalation",
            id="escalation-in-an-init-container",
        ),
        pytest.param(
            {
                "spec": {
                    "containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["sys_admin"]}}}]
                }
            },
            DEFAULTS,
            "capabilities.add SYS_ADMIN",
            id="a-capability-baseline-refuses",
        ),
        pytest.param(
            {
                "spec": {
                    "containers": [
                        {"name": "c", "securityContext": {"windowsOptions": {"hostProcess": True}}}
                    ]
                }
            },
            DEFAULTS,
            "container c: securityContext.windowsOptions.hostProcess",
            id="windows-host-process",
        ),
        pytest.param(
            template(securityContext={"windowsOptions": {"hostProcess": True}}),
            DEFAULTS,
            "template.spec.securityContext.windowsOptions.hostProcess",
            id="windows-host-process-for-the-pod",
        ),
        pytest.param(
            template(serviceAccountName="admin"),
            pod_rules.Rules(service_accounts=frozenset({"app"})),
            "serviceAccountName admin is not among the allowed ServiceAccounts (app)",
            id="service-account",
        ),
        pytest.param(
            template(serviceAccountName="app", serviceAccount="admin"),
            pod_rules.Rules(service_accounts=frozenset({"app"})),
            "admin",
            id="deprecated-service-account-field",
        ),
        pytest.param(
            template(),
            pod_rules.Rules(service_accounts=frozenset({"app"})),
            "serviceAccountName default",
            id="unset-means-default",
        ),
    ],
)
def test_refuses_what_the_rules_do_not_allow(pod: dict[str, Any], rules: pod_rules.Rules, named: str) -> None:
    found = pod_rules.refusals(pod, rules)
    assert any(named in f for f in found), found


@pytest.mark.parametrize(
    ("pod", "rules"),
    [
        pytest.param(template(), DEFAULTS, id="plain"),
        pytest.param(template(hostNetwork=False, hostPID=False), DEFAULTS, id="explicit-false"),
        pytest.param(template(serviceAccountName="admin"), DEFAULTS, id="any-account-by-default"),
        pytest.param(
            template(serviceAccountName="app"),
            pod_rules.Rules(service_accounts=frozenset({"app"})),
            id="listed",
        ),
        pytest.param(
            template(hostPID=True, hostIPC=True, volumes=[{"name": "v", "hostPath": {"path": "/x"}}]),
            EVERYTHING,
            id="allowed-by-the-chart",
        ),
        pytest.param(privileged("privileged"), EVERYTHING, id="privileged-allowed"),
        pytest.param(
            {
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "securityContext": {
                                "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}
                            },
                        }
                    ]
                }
            },
            DEFAULTS,
            id="a-capability-baseline-allows",
        ),
        pytest.param(
            template(volumes=[{"name": "v", "emptyDir": {}}, {"name": "s", "secret": {"secretName": "x"}}]),
            DEFAULTS,
            id="ordinary-volumes",
        ),
        pytest.param({"spec": "not a pod"}, DEFAULTS, id="no-pod-spec-is-the-models-to-refuse"),
    ],
)
def test_allows_what_the_rules_allow(pod: dict[str, Any], rules: pod_rules.Rules) -> None:
    assert pod_rules.refusals(pod, rules) == []


def test_names_every_refusal_at_once() -> None:
    pod = template(hostNetwork=True, hostPID=True, volumes=[{"name": "v", "hostPath": {"path": "/"}}])
    assert len(pod_rules.refusals(pod, DEFAULTS)) == 3
