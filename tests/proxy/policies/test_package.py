from __future__ import annotations

import subprocess
import sys

from llmgw_proxy import policies


def test_the_package_exposes_one_module_per_policy() -> None:
    assert policies.__all__ == [
        "backoff",
        "breaker",
        "buckets",
        "budgets",
        "cache_key",
        "cache_store",
        "clock",
        "egress",
        "global_limits",
        "limits",
        "retry_budget",
        "tokens",
    ]


def test_importing_the_policies_loads_no_io_library() -> None:
    code = (
        "import sys, llmgw_proxy.policies; "
        "io = ('aiohttp', 'prometheus_client', 'opentelemetry', 'redis'); "
        "print(sorted(m for m in io if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
