"""Pure renderers: a gateway's spec in, child manifests (plain dicts) out.

Nothing here talks to the API server; owner references are added by the apply layer.
"""

from llmgw_operator.render import (
    children,
    conditions,
    configmap,
    deployment,
    hpa,
    names,
    proxy_config,
    resolve,
    secret,
)

__all__ = [
    "children",
    "conditions",
    "configmap",
    "deployment",
    "hpa",
    "names",
    "proxy_config",
    "resolve",
    "secret",
]
