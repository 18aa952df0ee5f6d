"""Fixtures of the cross-host tests: simulated hosts (network namespaces) and the tiny model."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# deploy/ is not an installed package; graph_helpers holds the HF reference of the graph tests.
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "graph")]

from deploy.netns import Network, unavailable  # noqa: E402


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    """A switch to add hosts to; every process and namespace is gone after the module."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"cross-host tests need network namespaces: {reason}")
    with Network() as created:
        yield created
