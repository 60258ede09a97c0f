"""The admission webhook's TLS listener and its certificates, run by every operator replica.

``Server`` is a kopf webhook server (what ``settings.admission.server`` takes):
kopf routes each AdmissionReview to the ``@kopf.on.mutate`` handler and turns
its patch into the response. It replaces kopf's ``WebhookServer`` because that
one generates certificates only with kopf's dev extra and, when its
certificate files change, closes its listener and opens a new one, which
leaves a gap where the API server's calls fail. Here a renewed certificate is
loaded into the live SSL context: handshakes from then on get it, and the
listener never closes.

``Keeper`` keeps the certificates in one Secret that every replica reads:
with ``managed`` (the default) it creates and renews them (``certs``) and
publishes the CA bundle in the MutatingWebhookConfiguration; otherwise
(cert-manager) it only loads what is in the Secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf
from aiohttp import web

from llmgw_operator import certs, kube

logger = logging.getLogger(__name__)

# An AdmissionReview of a pod is far below this; the API server's own request limit is 3 MiB.
MAX_REVIEW_BYTES = 4 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Settings:
    """The operator's --webhook-* flags (cli.py); ``port`` 0 leaves injection off."""

    port: int = 0
    addr: str = "0.0.0.0"
    namespace: str = "default"
    secret: str = "llmgw-webhook-tls"  # noqa: S105 - a Secret's name
    configuration: str | None = None
    hosts: tuple[str, ...] = ()
    managed: bool = True
    fail_closed: bool = True
    lifetimes: certs.Lifetimes = dataclasses.field(default_factory=certs.Lifetimes)
    period: float = 60.0


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Server:
    """HTTPS on ``addr:port`` once a certificate is loaded; the URL path names the kopf handler."""

    def __init__(self, addr: str, port: int) -> None:
        self.addr = addr
        self.port = port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._loaded = asyncio.Event()
        self.serving = False
        self.certificate: bytes | None = None

    def load(self, cert: bytes, key: bytes) -> None:
        """Swap the certificate in the live context (``load_cert_chain`` takes only file paths,
        so the files exist for the moment of the call, in a private directory)."""
        with tempfile.TemporaryDirectory(prefix="llmgw-webhook-") as folder:
            paths = []
            for name, data in (("tls.crt", cert), ("tls.key", key)):
                path = os.path.join(folder, name)
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "wb") as out:
                    out.write(data)
                paths.append(path)
            self.context.load_cert_chain(paths[0], paths[1])
        self.certificate = cert
        self._loaded.set()

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        await self._loaded.wait()

        async def review(request: web.Request) -> web.Response:
            try:
                data = json.loads(await request.read())
                answer = await fn(data, webhook=request.match_info["id"], headers=dict(request.headers))
            except Exception as e:
                # A review kopf cannot read (not JSON, no request, an unknown resource; the
                # handler's own errors become refusals inside kopf): the API server applies
                # the failurePolicy.
                logger.warning("admission review not served: %s: %s", type(e).__name__, e)
                raise web.HTTPBadRequest(reason=type(e).__name__) from None
            return web.json_response(answer)

        app = web.Application(client_max_size=MAX_REVIEW_BYTES)
        app.router.add_post("/{id:.*}", review)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.addr, self.port, ssl_context=self.context).start()
            self.serving = True
            logger.info("admission webhook listening on https://%s:%d", self.addr, self.port)
            # kopf passes this to its configuration manager, which the operator leaves off: the
            # MutatingWebhookConfiguration is the chart's (service, failurePolicy, selectors).
            yield kopf.WebhookClientConfig(url=f"https://{self.addr}:{self.port}")
            await asyncio.Event().wait()
        finally:
            self.serving = False
            await runner.cleanup()


@dataclasses.dataclass
class Keeper:
    client: kube.Client
    server: Server
    namespace: str
    secret: str
    hosts: tuple[str, ...]
    # The MutatingWebhookConfiguration whose caBundle the keeper sets (None: leave it alone).
    configuration: str | None = None
    managed: bool = True
    lifetimes: certs.Lifetimes = dataclasses.field(default_factory=certs.Lifetimes)
    period: float = 60.0
    now: Callable[[], datetime.datetime] = _utcnow

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                await self.check()
                delay = self.period
            except (kube.ApiError, OSError, ssl.SSLError, ValueError) as e:
                logger.warning("webhook certificates: %s; again in %.0fs", e, min(delay, self.period))
                delay = min(delay * 2, self.period)
            await asyncio.sleep(min(delay, self.period))

    async def check(self) -> None:
        """Store (if managed) the bundle due now, load it, then publish its CA bundle, in this order:
        a certificate is served only from a CA the published bundle already holds (see ``certs``).
        A replica that loses a race to write the Secret reads the winner's at once."""
        for _ in range(3):
            if await self._check_once():
                return
        raise kube.ApiError(409, f"Secret {self.namespace}/{self.secret} kept changing while renewing it")

    async def _check_once(self) -> bool:
        live = await self.client.get("Secret", self.namespace, self.secret)
        current = certs.Bundle.from_secret_data((live or {}).get("data"), need_ca_key=self.managed)
        published_as = await self._published()
        if self.managed:
            encoded = base64.b64encode(current.ca_bundle).decode() if current is not None else None
            published = bool(published_as) and all(b == encoded for b in published_as or [])
            following = certs.next_bundle(
                current, self.hosts, self.now(), self.lifetimes, published=published
            )
            if following is not None:
                if not await self._store(live, following):
                    return False  # another replica wrote first: read its bundle
                logger.info("webhook certificates renewed: serving until %s", certs.not_after(following.cert))
                current = following
        if current is None:
            raise ValueError(f"Secret {self.namespace}/{self.secret} holds no usable certificate yet")
        if current.cert != self.server.certificate:
            self.server.load(current.cert, current.key)
        if self.managed and published_as is not None:
            encoded = base64.b64encode(current.ca_bundle).decode()
            if any(b != encoded for b in published_as):
                assert self.configuration is not None
                await self.client.set_webhook_ca_bundle(self.configuration, encoded, len(published_as))
        return True

    async def _published(self) -> list[str] | None:
        if self.configuration is None:
            return None
        return await self.client.webhook_ca_bundles(self.configuration)

    async def _store(self, live: dict[str, Any] | None, bundle: certs.Bundle) -> bool:
        manifest: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": self.secret,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": kube.FIELD_MANAGER},
            },
            "data": bundle.secret_data(),
        }
        try:
            if live is None:
                await self.client.create(manifest)
            else:
                # Guarded by the read's resourceVersion: of two replicas renewing at once, one wins.
                await self.client.patch_guarded(
                    "Secret",
                    self.namespace,
                    self.secret,
                    live["metadata"]["resourceVersion"],
                    {"data": manifest["data"]},
                )
        except kube.ApiError as e:
            if e.status == 409:
                return False
            raise
        return True


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
