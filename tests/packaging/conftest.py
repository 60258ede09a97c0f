"""Fixtures for the image and chart tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: builds a venv or renders the chart; in the default suite all the same"
    )
