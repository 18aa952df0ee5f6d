"""Test order: random (pytest-randomly), with each test package's modules kept together.

pytest-randomly shuffles modules across the whole session, so a package- or
session-scoped graph (tests/apps, tests/reliability) would stay up while every
other package's graphs start and stop: several graphs at once on 2 cores, which
starved them into timeouts. A stable sort by package on top of the shuffled order
keeps the order random and reproducible from the seed, while a package's graph
lives only as long as its own tests run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    first_seen: dict[str, int] = {}
    for item in items:
        first_seen.setdefault(_package(item), len(first_seen))
    items.sort(key=lambda item: first_seen[_package(item)])


def _package(item: pytest.Item) -> str:
    """The folder under tests/ that holds the item."""
    parts = item.path.relative_to(TESTS).parts
    return parts[0] if len(parts) > 1 else ""
