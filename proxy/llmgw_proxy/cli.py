"""``llmgw-proxy``: run the sidecar from a compiled config file, or in quick mode.

    llmgw-proxy --config /etc/llmgw/config/proxy.yaml
    llmgw-proxy --upstream https://api.openai.com/v1 --api-key-file key.txt [--port 8080]

Quick mode routes every model ('*') to one OpenAI-compatible upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import llmgw_proxy
from llmgw_proxy.server import lazy_aiohttp, lazy_packages, pydantic_plugins
from llmgw_proxy.telemetry import logs

if TYPE_CHECKING:
    from llmgw_proxy import config


def quick_config(upstream: str, api_key_file: str | None) -> config.ProxyConfig:
    from llmgw_proxy import config  # after main() has set up pydantic (pydantic_plugins)

    return config.parse(
        {
            "providers": {"upstream": {"baseUrl": upstream, "apiKeyFile": api_key_file}},
            "routes": [{"model": "*", "targets": [{"provider": "upstream"}]}],
        }
    )


# Not __doc__: the image runs the sidecar under -OO, which strips docstrings.
DESCRIPTION = "run the sidecar from a compiled config file, or in quick mode"


class _Version(argparse.Action):
    """argparse's ``version`` action, reading the version only when ``--version`` is given."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"{parser.prog} {llmgw_proxy.__version__}")  # to stdout, as argparse's own
        parser.exit()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmgw-proxy", description=DESCRIPTION)
    p.add_argument("--version", action=_Version, help="show program's version number and exit")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="FILE", help="compiled proxy config (YAML or JSON)")
    source.add_argument("--upstream", metavar="URL", help="quick mode: one OpenAI-compatible base URL")
    p.add_argument("--api-key-file", metavar="F", help="quick mode: file holding the upstream key")
    p.add_argument("--host", help="API listener host (overrides the config)")
    p.add_argument("--port", type=int, help="API listener port, 0 for any (overrides the config)")
    p.add_argument("--admin-host", help="admin listener host (overrides the config)")
    p.add_argument("--admin-port", type=int, help="admin listener port, 0 for any (overrides the config)")
    p.add_argument(
        "--reload-interval", type=float, default=1.0, metavar="S", help="seconds between file checks"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.api_key_file and not args.upstream:
        parser().error("--api-key-file belongs to quick mode (--upstream)")
    logs.setup("info")
    # Before anything imports aiohttp: the server modules below import its web side only.
    lazy_aiohttp.install()
    # The config is read with PyYAML's safe loader alone: its __init__ imports the writers too
    # (emitter, serializer, representer, dumpers) and the libyaml binding, about 0.5 MB.
    lazy_packages.install("yaml")
    # frozenlist's compiled extension is C++: it maps libstdc++, about 1 MB of the idle RSS,
    # for the lists aiohttp walks at start and per signal. Its pure-Python twin (the package's
    # documented switch) does the same at no cost the sidecar can measure.
    os.environ.setdefault("FROZENLIST_NO_EXTENSIONS", "1")
    # Before the first pydantic model (llmgw_proxy.config's, imported by run).
    pydantic_plugins.install()
    from llmgw_proxy.server import run

    fixed = quick_config(args.upstream, args.api_key_file) if args.upstream else None
    overrides = run.Overrides(args.host, args.port, args.admin_host, args.admin_port)
    coro = run.run(args.config, fixed, overrides, args.reload_interval)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    sys.exit(main())
