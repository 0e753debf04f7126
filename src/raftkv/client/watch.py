"""``Watch``: an async iterator of a key range's events that survives the loss of the node serving it.

Theory of operation
-------------------
A watch is served by one node over a connection of its own. The client hosts a ``Watcher`` capability; the node
pushes events to it in revision order. A task pings the node every second; if the node dies or stops answering,
the watch resumes on another node (through the client's retry loop) from the last revision it delivered: one
revision can change several keys (a txn, a range delete), so a resume re-asks for that revision and skips only
the keys already delivered. No gap, no duplicate. Events still in flight from a node the watch has left are
dropped (they could arrive after the new node's and break the order).

**The event queue is bounded** (:data:`MAX_QUEUED_EVENTS` by default). When the node pushes faster than the
consumer drains, the watch *ends* with :class:`~raftkv.errors.WatchCancelled` and a reason, once the consumer
has taken the events already queued (they are in order, with no gap). It does not apply backpressure: the node
already bounds a watch's buffer and cancels a watcher that stays behind (``raftkv.kvserver.watches``), so a
push held up on our side would only end there anyway — later, with the node's buffer full and without saying
that the consumer was at fault. Ending here keeps our memory bounded, says why at once, and never makes the
node wait on us. A consumer that gets it re-reads what it cares about and watches again from that revision.

The ending of a watch (the node's cancellation, our overflow, the loss of the node) travels beside the queue,
not in it, so that it is never refused by a full queue; the consumer sees it once the queue is drained. The
health check and the cancellation sent to the node on overflow are tasks of the watch (a ``TaskSet``), reaped by
:meth:`Watch.aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from typing import Any, Final

import msgspec

from raftkv.client.connection import FAILED, Connection
from raftkv.client.router import Router
from raftkv.errors import RaftError, WatchCancelled
from raftkv.kv.watch import Event
from raftkv.tasks import TaskSet
from raftkv.transport.wire import schema

MAX_QUEUED_EVENTS: Final = 10_000
"""Events a watch holds for its consumer before it ends (as many as a node buffers for a watcher)."""
HEALTH_INTERVAL_S: Final = 1.0
"""How often the serving node is pinged."""
HEALTH_TIMEOUT_S: Final = 1.0
"""A ping not answered within this long means the node is lost: resume elsewhere."""
SUBSCRIBE_TIMEOUT_S: Final = 2.0
"""At most this long for one node to accept the watch, so that a stuck one leaves time to try the others."""
CANCEL_TIMEOUT_S: Final = 1.0

_EVENT_DECODER = msgspec.msgpack.Decoder(Event)


class _Signal(enum.Enum):
    LOST = "lost"
    """The serving node went away: resume elsewhere."""
    WAKE = "wake"
    """Queued only into an empty queue, to wake a consumer waiting on it when an ending arrives or on close."""


class _Watcher(schema.Watcher.Server):  # type: ignore[misc]
    """The capability a node pushes one watch's events to (one per node the watch has been served by)."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch

    async def events(self, events: Any, _context: Any, **_kw: Any) -> None:
        self.watch._offer(self, events)

    async def cancelled(self, reason: str, compactRevision: int, _context: Any, **_kw: Any) -> None:  # noqa: N803
        if self.watch._source is self:
            self.watch._end(WatchCancelled(str(reason)))


class Watch:
    """An async iterator of events; resumes on another node (from the next revision) if its node goes away."""

    def __init__(
        self,
        router: Router,
        timeout: float,
        key: bytes,
        range_end: bytes | None,
        start_revision: int,
        max_queued: int = MAX_QUEUED_EVENTS,
    ) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be >= 1, got {max_queued}")
        self._router = router
        self.timeout = timeout
        """Deadline for starting (or resuming) the watch on some node."""
        self.key = key
        self.range_end = range_end
        self.next_revision = start_revision
        """Where a resumed watch restarts: the revision of the last event delivered (or the start)."""
        self._delivered_at_next: set[bytes] = set()
        """Keys already delivered at ``next_revision``."""
        self._queue: asyncio.Queue[Event | _Signal] = asyncio.Queue(maxsize=max_queued)
        self._ending: WatchCancelled | _Signal | None = None
        """Why the events stop (the first reason wins); seen by the consumer once the queue is drained."""
        self._source: _Watcher | None = None
        """The capability whose events are accepted: the current node's (None: none is)."""
        self._conn: Connection | None = None
        self._watch_id = 0
        self._health: asyncio.Task[Any] | None = None
        self._tasks = TaskSet("raftkv watch")
        self._closed = False
        self.resumes = 0
        """How many times the watch moved to another node (its node died or stopped answering)."""

    @property
    def max_queued(self) -> int:
        return self._queue.maxsize

    def __aiter__(self) -> Watch:
        return self

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def __anext__(self) -> Event:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._conn is None:
                try:
                    await self._start()
                except RaftError:
                    await self.aclose()
                    raise
            if self._queue.empty() and self._ending is not None:
                ending, self._ending = self._ending, None
                if isinstance(ending, _Signal):  # LOST (WAKE is never an ending)
                    self._reset()
                    self.resumes += 1
                    continue
                await self.aclose()
                raise ending
            item = await self._queue.get()
            if isinstance(item, _Signal):
                continue
            rev = item.kv.mod_revision
            if rev < self.next_revision or (rev == self.next_revision and item.kv.key in self._delivered_at_next):
                continue  # delivered before a resume
            if rev > self.next_revision:
                self.next_revision = rev
                self._delivered_at_next = set()
            self._delivered_at_next.add(item.kv.key)
            return item

    # --- the node's side ---------------------------------------------------------------------------------------

    def _offer(self, source: _Watcher, events: Any) -> None:
        if source is not self._source:
            return  # a node the watch has left, or a watch that has ended
        for data in events:
            if self._queue.full():
                self._end(
                    WatchCancelled(
                        f"the watch's consumer fell more than {self._queue.maxsize} events behind; "
                        "re-read the keys and watch again from the revision read"
                    )
                )
                self._cancel_on_node()
                return
            self._queue.put_nowait(_EVENT_DECODER.decode(bytes(data)))

    def _end(self, why: WatchCancelled | _Signal) -> None:
        self._source = None
        if self._ending is None:
            self._ending = why
        if self._queue.empty():
            self._queue.put_nowait(_Signal.WAKE)

    def _cancel_on_node(self) -> None:
        """Tell the node to stop pushing to a watch that has ended (it would only be dropped here)."""
        conn, watch_id = self._conn, self._watch_id
        if conn is not None and not self._tasks.closed:
            self._tasks.spawn(self._cancel(conn, watch_id), name=f"raftkv-watch-cancel-{watch_id}")

    @staticmethod
    async def _cancel(conn: Connection, watch_id: int) -> None:
        with contextlib.suppress(*FAILED):  # the node may be gone: then it has no watch to cancel
            await conn.cancel_watch(watch_id, CANCEL_TIMEOUT_S)

    # --- starting, resuming, closing ---------------------------------------------------------------------------

    async def _start(self) -> None:
        await self._router.run(self._subscribe, time.monotonic() + self.timeout, own_connection=True, role="node")

    async def _subscribe(self, conn: Connection, left: float) -> None:
        watcher = _Watcher(self)
        self._source = watcher  # the node may push its history before it answers
        try:
            watch_id = await conn.watch(
                self.key, self.range_end, self.next_revision, watcher, min(SUBSCRIBE_TIMEOUT_S, left)
            )
        except BaseException:
            if self._source is watcher:
                self._source = None
            raise
        self._conn, self._watch_id = conn, watch_id
        self._health = self._tasks.spawn(self._check_health(conn, watcher), name=f"raftkv-watch-health-{watch_id}")

    async def _check_health(self, conn: Connection, watcher: _Watcher) -> None:
        """Ping the serving node every second; if it stops answering, resume the watch elsewhere."""
        try:
            while True:
                await asyncio.sleep(HEALTH_INTERVAL_S)
                await conn.ping(HEALTH_TIMEOUT_S, b"")
        except FAILED:
            if self._source is watcher:
                self._end(_Signal.LOST)

    def _reset(self) -> None:
        self._source = None
        if self._health is not None:
            self._health.cancel()  # reaped by the TaskSet
            self._health = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        """Cancel the watch on its node and stop its tasks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._source = None
        if self._queue.empty():
            self._queue.put_nowait(_Signal.WAKE)  # a consumer waiting for an event ends its iteration
        if self._conn is not None:
            await self._cancel(self._conn, self._watch_id)
        await self._tasks.aclose()
        self._reset()
