"""What a gateway's pod template may ask for: the operator creates its Deployment with its own rights.

Whoever may create an LLMGateway gets pods made by the operator's
ServiceAccount, so the operator refuses what would let them reach past the
pod: ``hostNetwork`` always (it would put the sidecar's loopback-only API on
the node's network), and, unless the platform team allows them through the
chart, privileged containers, host PID/IPC namespaces, hostPath volumes and
ServiceAccounts outside an allow-list. A refused template is reported, never
rendered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from llmgw_operator.api import gateway

# The CRD's CEL rule says the same, at admission; this check serves CRDs older than it.
HOST_NETWORK_MESSAGE = gateway.HOST_NETWORK_RULE["message"]
DEFAULT_SERVICE_ACCOUNT = "default"
# Capabilities the Baseline Pod Security Standard lets a container add; any other needs --allow-privileged.
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)


@dataclasses.dataclass(frozen=True)
class Rules:
    """What the chart allows (operator flags); the defaults refuse what Baseline Pod Security refuses."""

    # Empty: any ServiceAccount of the namespace, as for anyone who may create pods there.
    service_accounts: frozenset[str] = frozenset()
    privileged: bool = False
    host_namespaces: bool = False
    host_path: bool = False


def _containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        c
        for field in ("initContainers", "containers")
        for c in pod.get(field) or []
        if isinstance(c, Mapping)
    ]


def _security(container: Mapping[str, Any]) -> Mapping[str, Any]:
    found = container.get("securityContext")
    return found if isinstance(found, Mapping) else {}


def _privileges(name: str, security: Mapping[str, Any]) -> list[str]:
    """What in one container's securityContext reaches past the container."""
    found = [
        f"container {name}: securityContext.{field} is not allowed by the operator's --allow-privileged"
        for field in ("privileged", "allowPrivilegeEscalation")
        if security.get(field) is True
    ]
    windows = security.get("windowsOptions")
    if isinstance(windows, Mapping) and windows.get("hostProcess") is True:
        found.append(
            f"container {name}: securityContext.windowsOptions.hostProcess is not allowed by the operator's "
            "--allow-privileged"
        )
    capabilities = security.get("capabilities")
    added = capabilities.get("add") if isinstance(capabilities, Mapping) else None
    extra = sorted(
        {str(c).upper().removeprefix("CAP_") for c in added or [] if isinstance(c, str)}
        - BASELINE_CAPABILITIES
    )
    if extra:
        found.append(
            f"container {name}: securityContext.capabilities.add {', '.join(extra)} is not allowed by the "
            "operator's --allow-privileged"
        )
    return found


def refusals(template: Mapping[str, Any], rules: Rules) -> list[str]:
    """Every reason to refuse ``template`` (a PodTemplateSpec), by field path; empty when allowed."""
    pod = template.get("spec")
    if not isinstance(pod, Mapping):
        return []
    found = []
    if pod.get("hostNetwork") is True:
        found.append(HOST_NETWORK_MESSAGE)
    if not rules.host_namespaces:
        found += [
            f"template.spec.{field} is not allowed by the operator's --allow-host-namespaces"
            for field in ("hostPID", "hostIPC")
            if pod.get(field) is True
        ]
    if not rules.host_path:
        found += [
            f"template.spec.volumes: hostPath volume {v.get('name')} is not allowed by the operator's "
            "--allow-host-path"
            for v in pod.get("volumes") or []
            if isinstance(v, Mapping) and "hostPath" in v
        ]
    if not rules.privileged:
        for container in _containers(pod):
            found += _privileges(str(container.get("name")), _security(container))
        pod_security = pod.get("securityContext")
        windows = pod_security.get("windowsOptions") if isinstance(pod_security, Mapping) else None
        if isinstance(windows, Mapping) and windows.get("hostProcess") is True:
            found.append(
                "template.spec.securityContext.windowsOptions.hostProcess is not allowed by the operator's "
                "--allow-privileged"
            )
    if rules.service_accounts:
        # serviceAccount is the deprecated alias the API server still honours: both are checked.
        named = {pod.get(f) for f in ("serviceAccountName", "serviceAccount")} - {None, ""}
        allowed = ", ".join(sorted(rules.service_accounts))
        found += [
            f"template.spec.serviceAccountName {account} is not among the allowed ServiceAccounts ({allowed})"
            for account in sorted(str(a) for a in named or {DEFAULT_SERVICE_ACCOUNT})
            if account not in rules.service_accounts
        ]
    return found


def sidecar_refusals(proxy: gateway.Proxy, rules: Rules) -> list[str]:
    """The same rule for the volumes ``spec.proxy`` adds to the pod: hostPath needs --allow-host-path."""
    if rules.host_path:
        return []
    return [
        f"proxy.volumes: hostPath volume {v.get('name')} is not allowed by the operator's --allow-host-path"
        for v in proxy.volumes
        if "hostPath" in v
    ]
