"""Which children are the gateway's: it writes only objects it controls, and says which it may not.

A child's name is fixed by the gateway's name (``names``), so another object
may already hold it: one created by hand, by another tool, or by another
gateway. Such an object is never written or deleted; the gateway reports it
as a NameConflict instead. "Ours" means an ownerReference to this very
gateway (its UID) marked as controller: the API server allows one controller
per object, and the UID changes when a gateway of the same name is recreated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """The controller reference a child carries, so the garbage collector takes it with the gateway."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def adopt(manifest: dict[str, Any], owner: Mapping[str, Any]) -> dict[str, Any]:
    """``manifest`` with the owner's controller reference and nothing else of the owner's.

    Unlike ``kopf.adopt`` this copies none of the owner's labels: a label put on
    an LLMGateway (``argocd.argoproj.io/secret-type``, a backup or policy
    selector) must not reach the keys Secret or any other child.
    """
    metadata = {**manifest["metadata"], "ownerReferences": [owner_reference(owner)]}
    return {**manifest, "metadata": metadata}


def controlled_by(live: Mapping[str, Any], owner_uid: str) -> bool:
    """The live object's controller is the gateway with ``owner_uid``."""
    references = (live.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == owner_uid and r.get("controller") is True for r in references)


def describe(live: Mapping[str, Any]) -> str:
    """``Kind name``, and who controls it when something does: for a NameConflict message."""
    meta = live.get("metadata") or {}
    what = f"{live.get('kind', 'object')} {meta.get('name', '?')}"
    controller = next((r for r in meta.get("ownerReferences") or [] if r.get("controller") is True), None)
    if controller is not None:
        return f"{what} (controlled by {controller.get('kind')} {controller.get('name')})"
    return what
