"""Fixed child names and labels: a retried reconcile finds the same children and never duplicates one."""

from __future__ import annotations

from llmgw_operator.api import gateway as _gateway

PART_OF = "llmgw"
MANAGED_BY = "llmgw-operator"
COMPONENT = "llmgw-gateway"

# Mount points and the files the sidecar reads.
CONFIG_DIR = "/etc/llmgw/config"
KEYS_DIR = "/etc/llmgw/keys"
CONFIG_KEY = "proxy.yaml"
CONFIG_FILE = f"{CONFIG_DIR}/{CONFIG_KEY}"

RESTART_HASH_ANNOTATION = "llmgateway.io/restart-hash"
# On the ConfigMap: ``config.digest`` of the config in it, what its up-to-date sidecars report.
# The poller reads it instead of parsing the config (a YAML load and a validation per new ConfigMap).
CONFIG_DIGEST_ANNOTATION = "llmgateway.io/config-digest"
GATEWAY_LABEL = _gateway.GATEWAY_LABEL
# A Secret the operator may read a provider key from carries this label with
# the value "true"; the gateway's own keys Secret carries it with "rendered",
# so one server-side selector (``in (true, rendered)``) watches both kinds and
# no other Secret. A policy naming a Secret without "true" is refused.
PROVIDER_KEY_LABEL = "llmgateway.io/provider-key"
PROVIDER_KEY_MARK = "true"
PROVIDER_KEY_RENDERED = "rendered"
PROVIDER_KEY_SELECTOR = f"{PROVIDER_KEY_LABEL} in ({PROVIDER_KEY_MARK},{PROVIDER_KEY_RENDERED})"
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
# What those two selectors leave out (a missing label included): the objects only the metadata
# watch of others' objects (foreign_watch.py) sees.
NOT_PROVIDER_KEY_SELECTOR = f"{PROVIDER_KEY_LABEL} notin ({PROVIDER_KEY_MARK},{PROVIDER_KEY_RENDERED})"
NOT_MANAGED_SELECTOR = f"app.kubernetes.io/managed-by!={MANAGED_BY}"


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


STORE_PASSWORD_KEY = "_shared-store-password"  # noqa: S105 (a file name, not a password)
"""The keys Secret's entry for the shared store's password: no policy name starts with '_'."""


def store_password_file() -> str:
    return f"{KEYS_DIR}/{STORE_PASSWORD_KEY}"


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


def metadata(
    name: str, namespace: str, gateway: str, extra_labels: dict[str, str] | None = None
) -> dict[str, object]:
    """A child's metadata: exactly these labels, none of the gateway's own (see ``ownership.adopt``)."""
    return {"name": name, "namespace": namespace, "labels": labels(gateway) | (extra_labels or {})}
