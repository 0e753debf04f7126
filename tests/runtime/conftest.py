"""Guards for tests that run real nodes in-process."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_abandoned_task_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test that leaves a task whose exception nobody retrieved.

    Such a task reports its error from a garbage-collector finalizer at an arbitrary later moment; with pycapnp
    that once corrupted CPython 3.11's AST recursion counter and broke every later compile in the process.
    """
    yield
    gc.collect()
    leaked = [r.getMessage() for r in caplog.records if "exception was never retrieved" in r.getMessage()]
    assert not leaked, f"tasks left with unretrieved exceptions: {leaked[:3]}"
