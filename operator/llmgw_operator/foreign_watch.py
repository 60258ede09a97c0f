"""Metadata-only LIST and WATCH of the objects that could block a child's name (``foreign.py``).

One loop per kind and namespace (every namespace in one when the operator
watches all, or by pattern): list the objects its own watches do not select,
then watch them from the listing's resourceVersion, a minute per watch
request, going on from the last version seen. A version too old to watch from
(410 Gone) lists again. Any other failure forgets the kind's names until the
next listing succeeds, so that meanwhile passes read child names from the
API; refused for good (403: RBAC that does not allow listing there), the loop
stops and passes keep reading.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from llmgw_operator import foreign, kube
from llmgw_operator.render import names

logger = logging.getLogger(__name__)

SELECTORS = {
    "ConfigMap": names.NOT_MANAGED_SELECTOR,
    "Secret": names.NOT_PROVIDER_KEY_SELECTOR,
    "Deployment": names.NOT_MANAGED_SELECTOR,
    "HorizontalPodAutoscaler": names.NOT_MANAGED_SELECTOR,
}
"""Per kind, what the operator's own watches leave out (handlers.start sets their selectors): those
objects are in its copy, every other one only here. A Secret labelled as the operator's but not as
a provider key is someone else's too (its watch of Secrets selects the provider-key label)."""
CONNECTIONS = 8
"""Connections of the watches' client: one open watch per kind (and namespace, when named)."""
MAX_DELAY = 30.0


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


async def follow(
    client: kube.Client,
    held: foreign.ForeignNames,
    kind: str,
    namespace: str | None,
    in_scope: Callable[[str], bool] = lambda namespace: True,
) -> None:
    """Keep ``held``'s names of ``kind`` (in ``namespace``, every one when None) up to date; runs
    until cancelled, or until the API refuses it for good (403)."""
    delay = 1.0
    while True:
        try:
            listed, version = await client.list_metadata(kind, namespace, SELECTORS[kind])
            held.listed(kind, (n for n in map(_name, listed) if n is not None and in_scope(n[0])))
            delay = 1.0
            while True:
                version = await _watch(client, held, kind, namespace, in_scope, version)
        except Gone:
            held.lost(kind)
        except kube.ApiError as e:
            held.lost(kind)
            if e.status == 410:
                continue
            if e.status == 403:
                logger.warning(
                    "cannot watch %s %s (%s): new gateways' child names are read from the API",
                    kind,
                    f"in {namespace}" if namespace else "in every namespace",
                    e.message,
                )
                return
            delay = await _back_off(kind, e, delay)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            held.lost(kind)
            delay = await _back_off(kind, e, delay)


async def _watch(
    client: kube.Client,
    held: foreign.ForeignNames,
    kind: str,
    namespace: str | None,
    in_scope: Callable[[str], bool],
    version: str,
) -> str:
    """One watch request's events into ``held``; the last resourceVersion seen."""
    async for event in client.watch_metadata(kind, namespace, SELECTORS[kind], version):
        kind_of_event = event.get("type")
        body = event.get("object") or {}
        if kind_of_event == "ERROR":
            if body.get("code") == 410:
                raise Gone(body.get("message"))
            raise kube.ApiError(int(body.get("code") or 500), str(body.get("message") or "watch error"))
        meta = body.get("metadata") or {}
        version = str(meta.get("resourceVersion") or version)
        name = _name(meta)
        if kind_of_event == "BOOKMARK" or name is None or not in_scope(name[0]):
            continue
        if kind_of_event == "DELETED":
            held.removed(kind, name)
        else:
            held.added(kind, name)
    return version


def _name(meta: dict[str, object]) -> foreign.Name | None:
    namespace, name = meta.get("namespace"), meta.get("name")
    if isinstance(namespace, str) and isinstance(name, str):
        return (namespace, name)
    return None


async def _back_off(kind: str, error: BaseException, delay: float) -> float:
    logger.warning(
        "watching %s not labelled as the operator's failed (%s); again in %.0fs", kind, error, delay
    )
    await asyncio.sleep(delay)
    return min(delay * 2, MAX_DELAY)
