"""Shared setup for the storage tests.

* Makes ``storage_testlib`` importable from every test module in this folder.
* Tests marked ``slow`` here are skipped unless selected with ``-m slow`` or ``RAFTKV_SLOW=1`` is set, so that a
  plain ``pytest`` (what ``make unit`` runs) stays quick.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("RAFTKV_SLOW") or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with `pytest -m slow` or RAFTKV_SLOW=1")
    for item in items:
        if "slow" in item.keywords and item.path.is_relative_to(HERE):
            item.add_marker(skip)
