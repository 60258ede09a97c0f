"""A real trace store for the tracing tests: Jaeger v2 (the pinned `jaeger` binary, built from its
Go module by llmgw_dev.binaries) with in-memory storage, receiving OTLP/HTTP and answering its
HTTP query API, every listener on a free loopback port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import childkit
import yaml
from childkit import free_port

# Traces the in-memory store keeps; the tests send a handful.
MAX_TRACES = 1000


def config(otlp_port: int, query_port: int, query_grpc_port: int) -> dict[str, Any]:
    """Jaeger's all-in-one pipeline cut to what the tests use: OTLP/HTTP in, memory, query API."""
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": [],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            # No metrics listener of its own (the default is :8888 on every interface).
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info"}},
        },
        "extensions": {
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": MAX_TRACES}}}},
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                "http": {"endpoint": f"127.0.0.1:{query_port}"},
                "grpc": {"endpoint": f"127.0.0.1:{query_grpc_port}"},
            },
        },
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{otlp_port}"}}}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


class Jaeger(childkit.Child):
    """`jaeger --config FILE` as a child process, its log in a file."""

    def __init__(self, binary: Path, folder: Path) -> None:
        super().__init__("jaeger", folder / "jaeger.log")
        self.binary = binary
        self.folder = folder
        otlp, query, grpc = free_port(), free_port(), free_port()
        self.otlp_endpoint = f"http://127.0.0.1:{otlp}"
        self.query_url = f"http://127.0.0.1:{query}"
        self.config_file = folder / "jaeger.yaml"
        self.config_file.write_text(yaml.safe_dump(config(otlp, query, grpc)))

    def start(self, timeout: float = 60) -> None:
        self.launch([str(self.binary), "--config", str(self.config_file)])
        # Both ends up: the query API answers, and the OTLP receiver takes a connection.
        self.wait(lambda: self._get("/api/services") is not None, timeout, "the query API")
        self.wait(self._otlp_listens, timeout, "the OTLP receiver")

    def _otlp_listens(self) -> bool:
        # OTLP/HTTP answers a GET on its path with 405: the listener is there.
        try:
            urllib.request.urlopen(self.otlp_endpoint + "/v1/traces", timeout=5)  # noqa: S310 (loopback)
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            return False
        return True

    def _get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(self.query_url + path, timeout=5) as resp:  # noqa: S310 (loopback)
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise
        except (urllib.error.URLError, OSError):
            return None

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """One trace from the query API (Jaeger's JSON model), or None while it is not stored."""
        body = self._get(f"/api/traces/{trace_id}")
        if not body or not body.get("data"):
            return None
        (found,) = body["data"]
        result: dict[str, Any] = found
        return result

    def trace_ids(self, service: str) -> set[str]:
        body = self._get(f"/api/traces?service={service}&limit=100&lookback=1h")
        return {t["traceID"] for t in (body or {}).get("data") or []}
