"""Guards for tests that run real nodes in-process: the same as tests/runtime's (one definition, shared)."""

from __future__ import annotations

from tests.runtime.conftest import no_abandoned_task_errors

__all__ = ["no_abandoned_task_errors"]
