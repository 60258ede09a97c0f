"""Fixed child names and labels: a retried reconcile finds the same children and never duplicates one."""

from __future__ import annotations

PART_OF = "llmgw"
MANAGED_BY = "llmgw-operator"
COMPONENT = "llmgw-gateway"

# Mount points and the files the sidecar reads.
CONFIG_DIR = "/etc/llmgw/config"
KEYS_DIR = "/etc/llmgw/keys"
CONFIG_KEY = "proxy.yaml"
CONFIG_FILE = f"{CONFIG_DIR}/{CONFIG_KEY}"

RESTART_HASH_ANNOTATION = "llmgateway.io/restart-hash"
GATEWAY_LABEL = "llmgateway.io/gateway"


def deployment(gateway: str) -> str:
    return gateway


def hpa(gateway: str) -> str:
    return gateway


def config_map(gateway: str) -> str:
    return f"{gateway}-proxy-config"


def secret(gateway: str) -> str:
    return f"{gateway}-provider-keys"


def key_file(policy: str) -> str:
    """Where the sidecar finds a policy's API key: the Secret holds one key per policy name."""
    return f"{KEYS_DIR}/{policy}"


def selector_labels(gateway: str) -> dict[str, str]:
    """Stable for the gateway's lifetime (a Deployment's selector is immutable), and in our own
    prefix so it never collides with the application's app.kubernetes.io labels."""
    return {GATEWAY_LABEL: gateway}


def labels(gateway: str) -> dict[str, str]:
    """Carried by every child, so `kubectl get all -l llmgateway.io/gateway=<gw>` finds them."""
    return {
        "app.kubernetes.io/name": COMPONENT,
        "app.kubernetes.io/instance": gateway,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": PART_OF,
    } | selector_labels(gateway)


def metadata(name: str, namespace: str, gateway: str) -> dict[str, object]:
    return {"name": name, "namespace": namespace, "labels": labels(gateway)}
