"""The one thin layer that talks to the Kubernetes API for reconciliation.

Writes are server-side applies with one field manager. A child whose live
object already holds every field we would apply is not written at all, so a
steady-state reconcile makes no write requests (and the API server would
skip a no-op apply anyway; this also spares the request).

Requests go out on the event loop through an aiohttp session of the client's
own, with at most ``connections`` of them open at once: the data-plane poller
has a client (and so a pool) of its own, so its LISTs never queue ahead of the
reconcile passes' calls. Credentials come from ``login``, asked again once when
the API answers 401 (a rotated service-account token).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets as _secrets
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import kopf
import orjson

from llmgw_operator import login
from llmgw_operator import metrics as metrics_

FIELD_MANAGER = "llmgw-operator"
logger = logging.getLogger(__name__)

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


class Exists(ApiError):
    """A create-only apply found its name taken, by an object the caller had not seen."""


CREATE_ONLY = "9223372036854775807"
"""The resourceVersion a create-only apply carries. An apply whose manifest has a resourceVersion
is conditional on it (409 Conflict when the live object's differs), and when the name is free the
API server creates the object and ignores it. No object holds this one, the largest etcd revision,
so the apply creates or is refused: it never changes an object the caller did not know was there.
A pass that has no copy of a child needs no GET first (tests/operator/integration/
test_operator_create_only.py pins this against the API server)."""


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


METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
"""What a metadata-only LIST and watch ask for: names, labels and versions, never spec or data."""
WATCH_SECONDS = 60
"""How long the API server keeps one watch request open (``timeoutSeconds``); the next one goes on
from the last resourceVersion seen, without listing again."""
WATCH_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=WATCH_SECONDS + 30)
"""A watch that sends nothing for this long after the server should have ended it is dead."""
MAX_WATCH_LINE = 1024 * 1024
"""The longest watch event read. Metadata only: one object's labels, annotations (256 KiB at most,
by the API server's own validation) and managedFields. A longer one ends the watch (ValueError)."""

CONNECTIONS = 32
"""Requests in flight at once per client (the reconcile passes': 16 per queue, two queues)."""
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=30)
"""A connect, and each wait for more of an answer, end after 30 s; the wait for a free connection
of the pool does not count (with 32 passes' requests queued, a total timeout would fail the last)."""
_CLOSED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
"""A pooled connection the API server had closed (a restart, an idle timeout). aiohttp itself sends
a GET, PUT or DELETE again once; a PATCH or POST is sent again here, once. Each is safe to repeat:
an apply or a merge patch sets the same fields, an Event is one more line, and a create that had
landed answers 409, which its callers read as "it exists"."""

Connect = Callable[[], kopf.ConnectionInfo]


class Client:
    def __init__(self, connect: Connect | None = login.connection, connections: int = CONNECTIONS) -> None:
        self._connect = connect
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._server = ""
        self._auth: Mapping[str, str] = {}
        self._logging_in = asyncio.Lock()
        self.writes = 0  # for the steady-state benchmark and tests
        self.reads = 0  # GETs and LISTs, ``api_reads`` by verb and kind
        self.metrics: metrics_.Metrics | None = None

    def _wrote(self, verb: str, kind: str) -> None:
        if kind != "Event":  # ``writes`` counts changes to objects, as it always has
            self.writes += 1
        if self.metrics is not None:
            self.metrics.api_writes.labels(verb, kind).inc()

    async def _log_in(self, refused: Mapping[str, str] | None = None) -> None:
        """Credentials, and the session on first use (made inside the running loop). After a 401
        to ``refused``, credentials anew, unless a request refused at the same time already did."""
        async with self._logging_in:
            if self._session is not None and self._auth is not refused:
                return
            if self._connect is None:
                raise RuntimeError("this client has no credentials (a test double that calls no API)")
            info = await asyncio.to_thread(self._connect)  # reads files; an exec plugin may run
            self._auth = info.as_http_headers()
            if self._session is not None:
                return  # a new token; the server and its CA stay those of the first login
            self._server = info.server.rstrip("/")
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ssl=info.as_ssl_context()),
                headers={"Accept": "application/json", "User-Agent": FIELD_MANAGER},
                timeout=TIMEOUT,
                proxy=info.proxy_url,
                # The environment's HTTP(S)_PROXY is not for the API server (client-go's and the
                # kubernetes package's default alike); a kubeconfig's proxy-url is.
                trust_env=False,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _read(self, verb: str, kind: str) -> None:
        self.reads += 1
        if self.metrics is not None:
            self.metrics.api_reads.labels(verb, kind).inc()

    async def namespaces(self) -> list[str]:
        self._read("list", "Namespace")
        result = await self._call("GET", "/api/v1/namespaces")
        return sorted(str(n["metadata"]["name"]) for n in result.get("items") or [])

    async def list_all(self, kind: str) -> list[dict[str, Any]]:
        """Every object of ``kind`` in every namespace, in one request."""
        self._read("list", kind)
        result = await self._call("GET", self._collection(kind, None))
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    def _path(self, kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        prefix, plural = RESOURCES[kind]
        path = f"{prefix}/namespaces/{namespace}/{plural}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
        accept: str = "application/json",
    ) -> dict[str, Any]:
        data = None if body is None else orjson.dumps(body)
        for attempt in range(2):
            if self._session is None:
                await self._log_in()
            assert self._session is not None
            auth = self._auth
            try:
                async with self._session.request(
                    method,
                    self._server + path,
                    params=query or None,
                    data=data,
                    headers={**auth, "Content-Type": content_type, "Accept": accept},
                ) as response:
                    status, text = response.status, await response.read()
                    # One line per request at --verbose, as urllib3 logged them (tests read them:
                    # operatorkit.writes_since); never headers or bodies, where the token and keys are.
                    logger.debug('"%s %s" %d', method, response.url.raw_path_qs, status)
            except _CLOSED as e:
                # A refused connect is not a closed connection; aiohttp already resent the others.
                if attempt or isinstance(e, aiohttp.ClientConnectorError) or method not in ("PATCH", "POST"):
                    raise
                continue
            if status == 401 and attempt == 0:
                await self._log_in(refused=auth)  # the token may have been rotated
                continue
            if not 200 <= status < 300:
                raise ApiError(status, _message(text or b"{}", response.reason or str(status)))
            # orjson: a poll round's LIST pages of 500 pods are megabytes, and json.loads of them
            # took 45 % of the operator's busy samples at 5,000 gateways (py-spy).
            result: dict[str, Any] = orjson.loads(text or b"{}")
            return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._read("get", kind)
        try:
            return await self._call("GET", self._path(kind, namespace, name))
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
        result = await self._call("GET", self._path(kind, namespace), query=query)
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    async def list_pages(
        self, kind: str, namespace: str | None, label_selector: str | None = None, limit: int = LIST_PAGE
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every object of ``kind`` in ``namespace`` (every namespace when None) that matches
        ``label_selector``, ``limit`` per request, one page at a time: the caller keeps what it
        needs of a page before the next is read.

        A page's ``continue`` token is good for a few minutes (the API server's compaction); a
        caller that pauses longer gets ApiError 410 and lists again from the start.
        """
        async for page in self._pages(kind, namespace, label_selector, limit):
            yield page.get("items") or []

    async def list_metadata(
        self, kind: str, namespace: str | None, label_selector: str | None = None, limit: int = LIST_PAGE
    ) -> tuple[list[dict[str, Any]], str]:
        """The metadata of every object ``list_pages`` would list, and the listing's resourceVersion
        (a watch from it misses nothing): the API server sends neither spec nor data."""
        metadata: list[dict[str, Any]] = []
        version = ""
        async for page in self._pages(kind, namespace, label_selector, limit, METADATA_LIST):
            metadata.extend(item.get("metadata") or {} for item in page.get("items") or [])
            version = str((page.get("metadata") or {}).get("resourceVersion") or version)
        return metadata, version

    async def _pages(
        self,
        kind: str,
        namespace: str | None,
        label_selector: str | None,
        limit: int,
        accept: str = "application/json",
    ) -> AsyncIterator[dict[str, Any]]:
        token = ""
        while True:
            query = [("limit", str(limit))]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            self._read("list", kind)
            path = self._collection(kind, namespace)
            result = await self._call("GET", path, None, accept=accept, query=query)
            yield result
            token = str((result.get("metadata") or {}).get("continue") or "")
            if not token:
                return

    def _collection(self, kind: str, namespace: str | None) -> str:
        return self._path(kind, namespace) if namespace is not None else "/".join(RESOURCES[kind])

    async def watch_metadata(
        self, kind: str, namespace: str | None, label_selector: str | None, version: str
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of a metadata-only watch from ``version`` (bookmarks included), until the API
        server ends it after ``WATCH_SECONDS``. ApiError 410 when ``version`` is too old to watch
        from: list again. An event longer than ``MAX_WATCH_LINE`` ends it with ValueError."""
        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_SECONDS)),
        ]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if self._session is None:
            await self._log_in()
        assert self._session is not None
        auth = self._auth
        async with self._session.get(
            self._server + self._collection(kind, namespace),
            params=query,
            headers={**auth, "Accept": METADATA},
            timeout=WATCH_TIMEOUT,
            read_bufsize=MAX_WATCH_LINE // 2,  # a line may fill twice the buffer before it is refused
        ) as response:
            logger.debug('"GET %s" %d (watch)', response.url.raw_path_qs, response.status)
            if response.status == 401:
                await self._log_in(refused=auth)  # the token may have been rotated; the caller retries
            if response.status != 200:
                raise ApiError(response.status, _message(await response.read(), response.reason or ""))
            try:
                async for line in response.content:
                    if line.strip():
                        event: dict[str, Any] = orjson.loads(line)
                        yield event
            except aiohttp.http_exceptions.LineTooLong:
                raise ValueError(f"a watch event of {kind} longer than {MAX_WATCH_LINE} bytes") from None

    async def apply(self, manifest: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
        """Server-side apply unless ``live`` already holds it. True when a write was made.

        With ``live`` None the apply only creates (``CREATE_ONLY``): raises Exists when an object
        holds the name, which is then left as it was.
        """
        if (
            live is not None
            and contains(live, manifest)
            and not drops_owned_fields(_applied_fields(live), manifest)
        ):
            return False
        meta = manifest["metadata"]
        body = dict(manifest)  # JSON is YAML: the apply body is sent as JSON
        if live is None:
            body["metadata"] = {**meta, "resourceVersion": CREATE_ONLY}
        self._wrote("apply", manifest["kind"])
        try:
            result = await self._call(
                "PATCH",
                self._path(manifest["kind"], meta["namespace"], meta["name"]),
                body,
                "application/apply-patch+yaml",
                [("fieldManager", FIELD_MANAGER), ("force", "true")],
            )
        except ApiError as e:
            if live is None and e.status == 409:
                raise Exists(409, f"{manifest['kind']} {meta['name']} exists") from None
            raise
        self.written(result)
        return True

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        try:
            self._wrote("delete", kind)
            await self._call("DELETE", self._path(kind, namespace, name))
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
            result = await self._call(
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

    async def child(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A gateway's child, read to check who controls it: a cached client may know it is absent."""
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
            await self._call("POST", self._path("Event", meta["namespace"]), body)
        except ApiError:
            return

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """POST a namespaced object; ApiError 409 when one of that name exists."""
        meta = manifest["metadata"]
        self._wrote("create", manifest["kind"])
        return await self._call("POST", self._path(manifest["kind"], meta["namespace"]), dict(manifest))

    async def patch_guarded(
        self, kind: str, namespace: str, name: str, resource_version: str, patch: Mapping[str, Any]
    ) -> None:
        """A merge patch that applies only to the object as read: ApiError 409 when someone wrote since."""
        body = {
            **patch,
            "metadata": {**dict(patch.get("metadata") or {}), "resourceVersion": resource_version},
        }
        self._wrote("patch", kind)
        await self._call("PATCH", self._path(kind, namespace, name), body, "application/merge-patch+json")

    async def webhook_ca_bundles(self, configuration: str) -> list[str] | None:
        """Each webhook's clientConfig.caBundle in a MutatingWebhookConfiguration (None: not found)."""
        try:
            found = await self._call("GET", f"{WEBHOOK_CONFIGURATIONS}/{configuration}")
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
        await self._call(
            "PATCH",
            f"{WEBHOOK_CONFIGURATIONS}/{configuration}",
            ops,
            "application/json-patch+json",
        )

    async def server_minor(self) -> int:
        version = await self._call("GET", "/version")
        return int("".join(ch for ch in str(version.get("minor", "0")) if ch.isdigit()) or 0)


def _message(data: bytes | str, fallback: str) -> str:
    """The API's Status message from a response body, or ``fallback``."""
    try:
        return str(orjson.loads(data).get("message") or fallback)
    except (ValueError, AttributeError):
        return fallback
