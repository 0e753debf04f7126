"""``TaskSet``: the owner of tasks whose lifetime is an object's (a listener, a peer link, a client), not a block's.

Theory of operation
-------------------
DESIGN.md's rule is that every task has an owner that cancels and awaits it. Inside one ``async with`` block
that owner is an ``asyncio.TaskGroup``. An object that starts tasks in one call and stops them in a later one
cannot hold a TaskGroup open across calls safely: a TaskGroup entered by hand cancels *whichever task entered
it* when a child fails, which for a library object is its caller's task. ``TaskSet`` keeps the part of the
TaskGroup contract these objects need:

* every task is created through :meth:`spawn` and named;
* :meth:`aclose` cancels every task still running and waits for all of them (idempotent);
* a task that fails has its exception retrieved — never left for the garbage collector to report at a random
  later moment (which once corrupted CPython's state under pycapnp) — and is logged once with its name, unless
  the owner said it inspects its tasks' outcomes itself (``log_failures=False``: a peer link whose workers'
  failures are expected, such as a keepalive timing out, and handled by reconnecting);
* after ``aclose``, ``spawn`` refuses (the owner is gone), so no task outlives its owner.

Invariant: ``tasks`` holds exactly the spawned tasks that have not finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("raftkv.tasks")


class TaskSet:
    """Tasks owned by one object: spawned by name, all cancelled and awaited by :meth:`aclose`."""

    def __init__(self, owner: str, *, log_failures: bool = True) -> None:
        self.owner = owner
        self.log_failures = log_failures
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        if self.closed:
            coro.close()
            raise RuntimeError(f"{self.owner} is closed: cannot start {name}")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()  # retrieved in every case
        if error is not None and self.log_failures:
            log.error("%s: task %s failed: %s: %s", self.owner, task.get_name(), type(error).__name__, error)

    async def aclose(self) -> None:
        """Cancel every task and wait until all have finished. Idempotent."""
        self.closed = True
        while self.tasks:
            pending = list(self.tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)  # only our own cancellation propagates
            self.tasks.difference_update(pending)
