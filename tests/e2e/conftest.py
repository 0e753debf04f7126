"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import ProcCluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[ProcCluster]:
    """Three ``raftkv serve`` processes with a leader elected; stopped at teardown."""
    c = ProcCluster(tmp_path, 3)
    await c.start()
    try:
        await c.wait_leader(timeout=15.0)
        yield c
    finally:
        await c.close()
