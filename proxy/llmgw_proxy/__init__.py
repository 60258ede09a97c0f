"""The llmgw sidecar proxy. Its version is the ``llmgw`` distribution's, read from the package metadata."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # Read when asked for (``--version``, tools), not at import: importlib.metadata (with its
    # email, zipfile and csv imports) is about 0.6 MB of the idle sidecar's RSS.
    if name == "__version__":
        from importlib import metadata

        return metadata.version("llmgw")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
