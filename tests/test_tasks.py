"""TaskSet: every task owned, cancelled and awaited on close, failures retrieved (and logged unless told not to)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from raftkv.tasks import TaskSet


async def _fail() -> None:
    raise ValueError("boom")


async def test_close_cancels_and_awaits_every_task_and_refuses_new_ones() -> None:
    owned = TaskSet("test")
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = owned.spawn(forever(), name="forever")
    await asyncio.wait_for(started.wait(), 2)
    await owned.aclose()
    assert task.cancelled() and owned.tasks == set()
    with pytest.raises(RuntimeError, match="test is closed"):
        owned.spawn(forever(), name="late")
    await owned.aclose()  # idempotent


async def test_a_failed_task_is_retrieved_and_logged_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    owned = TaskSet("owner")
    task = owned.spawn(_fail(), name="the-task")
    await asyncio.wait({task})
    await asyncio.sleep(0)  # done callbacks run on the next turn
    assert any("the-task failed: ValueError: boom" in r.getMessage() for r in caplog.records)
    assert owned.tasks == set()


async def test_an_owner_that_handles_failures_itself_gets_no_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    owned = TaskSet("link", log_failures=False)
    task = owned.spawn(_fail(), name="keepalive")
    await asyncio.wait({task})
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert isinstance(task.exception(), ValueError)
