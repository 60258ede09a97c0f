"""The operator benchmark reads the operator's own /metrics: its counters and its copy's gauges."""

from __future__ import annotations

import http.server
import threading

from llmgw_dev import bench_operator
from llmgw_operator import cache, metrics


def test_the_copys_gauges_are_read_from_the_operators_metrics() -> None:
    # The real exposition of a label-less gauge is "name value", with no braces: the bench's
    # parser missed it and never printed the copy's size.
    m = metrics.Metrics()
    store = cache.Store()
    store.put({"kind": "ConfigMap", "metadata": {"name": "a", "namespace": "ns", "resourceVersion": "1"}})
    cache.register_gauges(m, store)
    m.reconciles.labels("llmgateway", "success").inc(3)
    body = m.exposition()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        counts = bench_operator.operator_counters(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
    assert counts[("llmgw_operator_cache_objects",)] == 1.0
    assert counts[("llmgw_operator_cache_bytes",)] == float(store.size())
    assert counts[("controller_runtime_reconcile_total", "llmgateway")] == 3.0
