"""End-to-end fixtures: real local clusters (network namespaces, processes), as root.

Every cluster gets a unique name so two runs never clash, and is brought down
in a finalizer even when the test fails. Helpers live in e2ekit.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from e2ekit import ROOT, Cluster, unique_name


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _need_root() -> None:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("e2e tests need root and nftables (run scripts/test.sh as root)")


@pytest.fixture
def new_cluster() -> Iterator[Cluster]:
    """A cluster name reserved for one test, torn down afterwards whatever happened."""
    c = Cluster(unique_name())
    try:
        yield c
    finally:
        c.down()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """One 2-node cluster shared by a test module (keeps the suite fast)."""
    if os.geteuid() != 0:
        pytest.skip("e2e tests need root")
    c = Cluster(unique_name())
    try:
        c.up(2, "--image-table", str(ROOT / "tests" / "e2e" / "image-table.yaml"))
        yield c
    finally:
        c.down()
