"""The Secret the sidecar reads provider keys from: one key per policy name.

The operator copies each policy's key out of the Secret the policy references,
so the application's pod mounts only its own gateway's keys and the key file
name is the policy name (``/etc/llmgw/keys/<policy>``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from llmgw_operator.render import names


def render(gateway: str, namespace: str, keys: Mapping[str, bytes]) -> dict[str, Any]:
    """``keys`` maps policy name to the key's bytes, already read from the referenced Secrets."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": names.metadata(
            names.secret(gateway),
            namespace,
            gateway,
            extra_labels={names.PROVIDER_KEY_LABEL: names.PROVIDER_KEY_RENDERED},
        ),
        "data": {policy: base64.b64encode(value).decode("ascii") for policy, value in sorted(keys.items())},
    }
