"""The one thin layer that talks to the sidecars: ``GET /status`` on a pod's admin port.

Every answer is bounded (``MAX_REPORT_BYTES``, the timeout) and parsed with the
sidecar's own model (``llmgw_proxy.status``). Anything else, from a refused
connection to a body that is not a report, is "no report": the pod counts as
unreporting, never as unhealthy. The concurrency bound holds across every
gateway polled at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

import aiohttp
import pydantic

from llmgw_operator import metrics as metrics_
from llmgw_proxy.status import SidecarStatus

logger = logging.getLogger(__name__)

MAX_REPORT_BYTES = 1024 * 1024
"""A report of 256 providers is about 100 KiB; past this bound the answer is no report."""


class Fetcher:
    def __init__(self, *, timeout: float, concurrency: int) -> None:
        self.timeout = timeout
        self.concurrency = concurrency
        self._gate = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self.metrics: metrics_.Metrics | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                # One short request per pod and period: no pool of idle connections to thousands of pods.
                connector=aiohttp.TCPConnector(limit=self.concurrency, force_close=True),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def status(self, ip: str, port: int) -> SidecarStatus | None:
        """The pod's report, or None when it gave none in time."""
        report = await self._status(ip, port)
        if self.metrics is not None:
            self.metrics.polls.labels("ok" if report is not None else "unreporting").inc()
        return report

    async def _status(self, ip: str, port: int) -> SidecarStatus | None:
        try:
            host = f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip
        except ValueError:
            return None
        url = f"http://{host}:{port}/status"
        async with self._gate:
            try:
                async with self._open().get(url, allow_redirects=False) as resp:
                    if resp.status != 200:
                        return None
                    body = await resp.content.read(MAX_REPORT_BYTES + 1)
                    if len(body) > MAX_REPORT_BYTES:
                        return None
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                logger.debug("no report from %s: %s", url, type(e).__name__)
                return None
        try:
            return SidecarStatus.model_validate_json(body)
        except pydantic.ValidationError:
            logger.debug("no report from %s: not a status document", url)
            return None
