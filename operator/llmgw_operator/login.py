"""Where the operator's API credentials come from: one answer for kopf's watches and ``kube.Client``.

In a pod, the service account: its token, its CA, and the API server from
``KUBERNETES_SERVICE_HOST`` and ``KUBERNETES_SERVICE_PORT``, as client-go finds
it (kopf's own service-account login names ``kubernetes.default.svc``, which
needs cluster DNS). Elsewhere, the kubeconfig (``KUBECONFIG`` or
``~/.kube/config``), read by kopf's parser: tokens, client certificates, basic
auth, a proxy URL.

A kubeconfig whose user runs an exec plugin or an auth provider (the cloud
CLIs) has no credentials of its own in the file; for those the ``kubernetes``
package logs in if it is installed. The operator does not install it: kopf
imports it whenever it is importable (3.3 MB more resident after the
operator's imports, measured) for generated models nothing here uses.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any

import kopf

SERVICE_ACCOUNT = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")

logger = logging.getLogger(__name__)


def service_account(
    root: pathlib.Path = SERVICE_ACCOUNT, environ: dict[str, str] | os._Environ[str] = os.environ
) -> kopf.ConnectionInfo | None:
    """The pod's service account, or None outside a pod (no token file or no service address)."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    token_file = root / "token"
    if not host or not port or not token_file.is_file():
        return None
    if ":" in host:  # an IPv6 address goes in brackets in a URL
        host = f"[{host}]"
    ca = root / "ca.crt"
    namespace = root / "namespace"
    return kopf.ConnectionInfo(
        server=f"https://{host}:{port}",
        ca_path=str(ca) if ca.is_file() else None,
        token=token_file.read_text(encoding="utf-8").strip() or None,
        default_namespace=namespace.read_text(encoding="utf-8").strip() if namespace.is_file() else None,
    )


def kubeconfig(path: str | os.PathLike[str] | None = None) -> kopf.ConnectionInfo | None:
    """The current context of ``path`` (else ``KUBECONFIG`` or ``~/.kube/config``); None without one."""
    if path is not None:
        previous = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = os.fspath(path)
        try:
            return kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
        finally:
            if previous is None:
                del os.environ["KUBECONFIG"]
            else:
                os.environ["KUBECONFIG"] = previous
    return kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())


def from_kubeconfig(path: str | os.PathLike[str]) -> kopf.ConnectionInfo:
    """The current context of the kubeconfig at ``path`` (a test's own cluster, a bench's)."""
    info = kubeconfig(path)
    if info is None:
        raise kopf.LoginError(f"{os.fspath(path)} names no current context")
    return info


def _has_credentials(info: kopf.ConnectionInfo) -> bool:
    return bool(
        info.token or (info.username and info.password) or info.certificate_path or info.certificate_data
    )


def connection() -> kopf.ConnectionInfo:
    """The credentials to use now; called again when the API answers 401 (a rotated token)."""
    found = service_account() or kubeconfig()
    if found is not None and _has_credentials(found):
        return found
    try:
        import kubernetes  # noqa: F401  # only to learn whether kopf's client login can run
    except ImportError:
        if found is None:
            raise kopf.LoginError(
                "no credentials: not in a pod (no service account token) and no kubeconfig "
                "(KUBECONFIG or ~/.kube/config)"
            ) from None
        raise kopf.LoginError(
            "the kubeconfig's current user has no token, client certificate or password in the file "
            "(an exec plugin or auth provider?): install the `kubernetes` package beside the operator "
            "to have it run them"
        ) from None
    via_client = kopf.login_via_client(logger=logger, settings=kopf.OperatorSettings())
    if via_client is None:
        raise kopf.LoginError("the kubernetes package found no credentials either")
    return via_client


def kopf_login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's login handler: the same credentials as ``kube.Client``'s (handlers.py registers it)."""
    return connection()
