"""The shared ``LogStorage`` conformance suite, re-run against WAL configurations that stress other paths.

``tests/raft/test_storage_conformance.py`` runs against the default WAL. Here every test of that suite runs
again with the smallest segments (many rotations) and no entry cache (every read goes to the files), so that
the suite's claims are checked against the disk-read and multi-segment code too.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from raftkv.storage.wal import WAL

SUITE = Path(__file__).parents[1] / "raft" / "test_storage_conformance.py"


def _load_suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("storage_conformance_suite", SUITE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses defined in it look their module up here
    spec.loader.exec_module(module)
    return module


suite = _load_suite()
TESTS: dict[str, Callable[..., None]] = {
    name: fn for name, fn in inspect.getmembers(suite, inspect.isfunction) if name.startswith("test_")
}
OPTIONS = {"small-segments-no-cache": {"segment_bytes": 4096, "cache_entries": 0}}


@pytest.mark.parametrize("options", sorted(OPTIONS))
@pytest.mark.parametrize("name", sorted(TESTS))
def test_conformance(name: str, options: str, tmp_path: Path) -> None:
    kw: dict[str, Any] = OPTIONS[options]

    def reopen(storage: WAL, path: Path) -> WAL:
        storage.close()
        return WAL.open(path / "wal", **kw)

    backend = suite.Backend(make=lambda p: WAL.open(p / "wal", **kw), reopen=reopen)
    TESTS[name](backend, tmp_path)


def test_the_suite_was_found() -> None:
    assert len(TESTS) >= 8
