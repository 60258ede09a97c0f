"""The one thin layer that talks to the Kubernetes API for reconciliation.

Writes are server-side applies with one field manager. A child whose live
object already holds every field we would apply is not written at all, so a
steady-state reconcile makes no write requests (and the API server would
skip a no-op apply anyway; this also spares the request).

The `kubernetes` client is synchronous; calls run in worker threads: the
event loop's default pool, or the client's own ``executor`` (the data-plane
poller has one, so its LISTs never queue ahead of the reconcile passes' calls).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import datetime
import functools
import json
import secrets as _secrets
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ParamSpec, Self, TypeVar

import kubernetes

from llmgw_operator import metrics as metrics_

FIELD_MANAGER = "llmgw-operator"
P = ParamSpec("P")
T = TypeVar("T")

# kind -> (api prefix, plural); the only kinds the operator reads or writes.
RESOURCES: dict[str, tuple[str, str]] = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "Event": ("/api/v1", "events"),
    "Pod": ("/api/v1", "pods"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "LLMGateway": ("/apis/llmgateway.io/v1alpha1", "llmgateways"),
    "ProviderPolicy": ("/apis/llmgateway.io/v1alpha1", "providerpolicies"),
}


WEBHOOK_CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


class ApiError(RuntimeError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.message = reason


_EMPTY: tuple[object, ...] = ({}, [])


def contains(live: Any, desired: Any) -> bool:
    """Every field of ``desired`` is present in ``live`` with the same value.

    Lists must match element-wise (order matters in Kubernetes lists we render).
    The server may add defaults; those do not count as differences. An empty
    map or list matches an absent field: the server omits them (a keys Secret
    of a gateway whose policies need no key has no ``data``), and without this
    every pass would write the object again.
    """
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            contains(live[k], v) if k in live else v in _EMPTY for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)


def drops_owned_fields(owned: Mapping[str, Any], desired: Any) -> bool:
    """A field our earlier applies own (``fieldsV1``) is absent from ``desired``.

    Applying would then remove it (a Secret key of a policy no route names any
    more, ``spec.replicas`` once an HPA takes over), which ``contains`` cannot
    see. Only map fields are walked: lists are compared whole by ``contains``.
    """
    if not isinstance(desired, Mapping):
        return False
    for key, sub in owned.items():
        if not key.startswith("f:"):
            continue
        name = key[2:]
        if name not in desired or (isinstance(sub, Mapping) and drops_owned_fields(sub, desired[name])):
            return True
    return False


def _applied_fields(live: Mapping[str, Any]) -> Mapping[str, Any]:
    for entry in live.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply":
            fields: Mapping[str, Any] = entry.get("fieldsV1") or {}
            return fields
    return {}


LIST_PAGE = 500
"""Objects per page of a paginated LIST (client-go's reflector pages by 500 too)."""


class Client:
    def __init__(
        self, api: kubernetes.client.ApiClient, executor: concurrent.futures.Executor | None = None
    ) -> None:
        self._api = api
        self.executor = executor  # None: the event loop's default pool
        self.writes = 0  # for the steady-state benchmark and tests
        self.reads = 0  # GETs and LISTs, ``api_reads`` by verb and kind
        self.metrics: metrics_.Metrics | None = None

    def _wrote(self, verb: str, kind: str) -> None:
        if kind != "Event":  # ``writes`` counts changes to objects, as it always has
            self.writes += 1
        if self.metrics is not None:
            self.metrics.api_writes.labels(verb, kind).inc()

    async def _run(self, call: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``call`` in a worker thread of ``executor``, as ``asyncio.to_thread`` runs it in the default's."""
        bound = functools.partial(contextvars.copy_context().run, call, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.executor, bound)

    def _read(self, verb: str, kind: str) -> None:
        self.reads += 1
        if self.metrics is not None:
            self.metrics.api_reads.labels(verb, kind).inc()

    async def namespaces(self) -> list[str]:
        self._read("list", "Namespace")
        result = await self._run(self._call, "GET", "/api/v1/namespaces")
        return sorted(str(n["metadata"]["name"]) for n in result.get("items") or [])

    async def list_all(self, kind: str) -> list[dict[str, Any]]:
        """Every object of ``kind`` in every namespace, in one request."""
        prefix, plural = RESOURCES[kind]
        self._read("list", kind)
        result = await self._run(self._call, "GET", f"{prefix}/{plural}")
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    @classmethod
    def from_environment(cls, executor: concurrent.futures.Executor | None = None) -> Self:
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        configuration = kubernetes.client.Configuration.get_default_copy()
        configuration.connection_pool_maxsize = 32
        return cls(kubernetes.client.ApiClient(configuration), executor=executor)

    def _path(self, kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        prefix, plural = RESOURCES[kind]
        path = f"{prefix}/namespaces/{namespace}/{plural}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        method, url, headers, payload, _ = self._api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(
                method, url, header_params=headers, body=payload, _request_timeout=30
            )
            response.read()  # type: ignore[no-untyped-call]
        except kubernetes.client.ApiException as e:
            raise ApiError(int(e.status or 0), _message(e.body or "{}", str(e.reason))) from None
        data = response.data or b"{}"
        if not 200 <= int(response.status) < 300:
            raise ApiError(int(response.status), _message(data, str(response.reason)))
        result: dict[str, Any] = json.loads(data)
        return result

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._read("get", kind)
        try:
            return await self._run(self._call, "GET", self._path(kind, namespace, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def list_objects(
        self, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Every object of ``kind`` in ``namespace`` (matching ``label_selector``), in one request."""
        query = [("labelSelector", label_selector)] if label_selector else []
        self._read("list", kind)
        result = await self._run(self._call, "GET", self._path(kind, namespace), query=query)
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    async def list_pages(
        self, kind: str, namespace: str, label_selector: str | None = None, limit: int = LIST_PAGE
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every object of ``kind`` in ``namespace`` (matching ``label_selector``), ``limit`` per
        request, one page at a time: the caller keeps what it needs of a page before the next is read.

        A page's ``continue`` token is good for a few minutes (the API server's compaction); a
        caller that pauses longer gets ApiError 410 and lists again from the start.
        """
        token = ""
        while True:
            query = [("limit", str(limit))]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            self._read("list", kind)
            result = await self._run(
                self._call, "GET", self._path(kind, namespace), None, "application/json", query
            )
            yield result.get("items") or []
            token = str((result.get("metadata") or {}).get("continue") or "")
            if not token:
                return

    async def apply(self, manifest: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
        """Server-side apply unless ``live`` already holds it. True when a write was made."""
        if (
            live is not None
            and contains(live, manifest)
            and not drops_owned_fields(_applied_fields(live), manifest)
        ):
            return False
        meta = manifest["metadata"]
        self._wrote("apply", manifest["kind"])
        result = await self._run(
            self._call,
            "PATCH",
            self._path(manifest["kind"], meta["namespace"], meta["name"]),
            json.dumps(manifest),
            "application/apply-patch+yaml",
            [("fieldManager", FIELD_MANAGER), ("force", "true")],
        )
        self.written(result)
        return True

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        try:
            self._wrote("delete", kind)
            await self._run(self._call, "DELETE", self._path(kind, namespace, name))
        except ApiError as e:
            if e.status == 404:
                self.deleted(kind, namespace, name)
                return False
            raise
        self.deleted(kind, namespace, name)
        return True

    async def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._wrote("patch", kind + "/status")
        try:
            result = await self._run(
                self._call,
                "PATCH",
                self._path(kind, namespace, name, "status"),
                {"status": dict(status)},
                "application/merge-patch+json",
            )
        except ApiError as e:
            if e.status == 404:
                self.deleted(kind, namespace, name)  # a cached copy outlived the object
            raise
        self.written(result)

    async def peek(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A read the caller needs only if a copy is at hand; this client has none, so it reads."""
        return await self.get(kind, namespace, name)

    def written(self, result: Mapping[str, Any]) -> None:
        """The API's answer to a write (the object as stored): a client with a cache keeps it."""

    def deleted(self, kind: str, namespace: str, name: str) -> None:
        """The object is gone (deleted here, or a write found it missing)."""

    async def event(self, owner: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about ``owner``; losing one is not worth failing a reconcile for."""
        meta = owner["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{_secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": FIELD_MANAGER,
        }
        self._wrote("create", "Event")
        try:
            await self._run(self._call, "POST", self._path("Event", meta["namespace"]), body)
        except ApiError:
            return

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """POST a namespaced object; ApiError 409 when one of that name exists."""
        meta = manifest["metadata"]
        self._wrote("create", manifest["kind"])
        return await self._run(
            self._call, "POST", self._path(manifest["kind"], meta["namespace"]), dict(manifest)
        )

    async def patch_guarded(
        self, kind: str, namespace: str, name: str, resource_version: str, patch: Mapping[str, Any]
    ) -> None:
        """A merge patch that applies only to the object as read: ApiError 409 when someone wrote since."""
        body = {
            **patch,
            "metadata": {**dict(patch.get("metadata") or {}), "resourceVersion": resource_version},
        }
        self._wrote("patch", kind)
        await self._run(
            self._call, "PATCH", self._path(kind, namespace, name), body, "application/merge-patch+json"
        )

    async def webhook_ca_bundles(self, configuration: str) -> list[str] | None:
        """Each webhook's clientConfig.caBundle in a MutatingWebhookConfiguration (None: not found)."""
        try:
            found = await self._run(self._call, "GET", f"{WEBHOOK_CONFIGURATIONS}/{configuration}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return [str((w.get("clientConfig") or {}).get("caBundle") or "") for w in found.get("webhooks") or []]

    async def set_webhook_ca_bundle(self, configuration: str, ca_bundle: str, count: int) -> None:
        """Set caBundle on the first ``count`` webhooks (as many as ``webhook_ca_bundles`` listed)."""
        ops = [
            {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": ca_bundle}
            for i in range(count)
        ]
        self._wrote("patch", "MutatingWebhookConfiguration")
        await self._run(
            self._call,
            "PATCH",
            f"{WEBHOOK_CONFIGURATIONS}/{configuration}",
            ops,
            "application/json-patch+json",
        )

    async def server_minor(self) -> int:
        version = await self._run(self._call, "GET", "/version")
        return int("".join(ch for ch in str(version.get("minor", "0")) if ch.isdigit()) or 0)


def _message(data: bytes | str, fallback: str) -> str:
    """The API's Status message from a response body, or ``fallback``."""
    try:
        return str(json.loads(data).get("message") or fallback)
    except (ValueError, AttributeError):
        return fallback
