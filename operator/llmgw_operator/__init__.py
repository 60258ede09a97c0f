"""The llmgw operator. Its version is the ``llmgw`` distribution's, read from the package metadata."""

from importlib import metadata

__version__ = metadata.version("llmgw")
