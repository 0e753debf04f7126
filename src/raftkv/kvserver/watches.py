"""Watches on a node, wire-neutral: each watcher gets every event after its start revision, in order, once.

Theory of operation
-------------------
A watch registers a listener on the state machine's event hub and reads the retained history in the same
synchronous step, so nothing can be applied in between: the watcher gets every event after its start revision
exactly once, in order, then live events. A start revision older than the hub's in-memory window (but not
compacted) is served from the store's durable history: the watch notes the store's revision ``upto`` when it
registers, its task sends the history up to ``upto`` page by page (``KVStateMachine.history_events``, whole
revisions per page, yielding between pages), and only then the live events it buffered meanwhile, which are
all above ``upto``. Each watch has a bounded buffer; a watcher that falls more than
``max_buffered`` events, or ``max_pending_bytes`` bytes of keys and values (``--max-watch-pending-bytes``),
behind is cancelled with a reason rather than ever slowing the node down or growing its memory.

Events leave through a :class:`WatchSink`, which a front end provides (the Cap'n Proto front end pushes them to
a capability the client hosts). Every call to a sink has a deadline; a sink that does not take events in time
is dropped. The registry owns one task per watch (a :class:`~raftkv.tasks.TaskSet`), all stopped by
:meth:`WatchRegistry.aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from raftkv.kv.errors import Compacted
from raftkv.kv.keys import key_in_range
from raftkv.kv.machine import KVStateMachine
from raftkv.kv.watch import Event, event_size
from raftkv.raft.types import NodeId
from raftkv.tasks import TaskSet

log = logging.getLogger("raftkv.kv")


class WatchSink(Protocol):
    """Where a watch's events go: a front end's connection to the watching client."""

    async def events(self, events: Sequence[Event]) -> None:
        """Deliver a batch of events, in revision order (awaited with a deadline)."""
        ...

    async def cancelled(self, reason: str, compact_revision: int) -> None:
        """The node ended the watch (too slow, compacted); ``reason`` says why."""
        ...


class _Watch:
    def __init__(
        self,
        registry: WatchRegistry,
        watch_id: int,
        key: bytes,
        range_end: bytes | None,
        start_revision: int,
        sink: WatchSink,
        user: str = "",
    ) -> None:
        self.registry = registry
        self.user = user
        """Whose watch it is: its permission to read the range is checked again at every auth change."""
        self.id = watch_id
        self.key = key
        self.range_end = range_end
        self.start_revision = start_revision
        """Events below it are never sent: a watch resumed on a node that lags behind must not go back in time."""
        self.sink = sink
        self.queue: deque[Event] = deque()
        self.pending_bytes = 0
        """The keys and values (previous ones included) of the events in ``queue``."""
        self.wake = asyncio.Event()
        self.closed = False
        self.cancel_reason = ""
        self.remove_listener: Callable[[], None] | None = None
        self.catch_up_to = 0
        """Send the stored history from ``start_revision`` up to this revision before the live events (0: none)."""

    def offer(self, events: Sequence[Event]) -> None:
        if self.closed or self.cancel_reason:
            return
        start = self.start_revision
        matching = [
            e for e in events if e.kv.mod_revision >= start and key_in_range(e.kv.key, self.key, self.range_end)
        ]
        if not matching:
            return
        self.queue.extend(matching)
        self.pending_bytes += sum(map(event_size, matching))
        registry = self.registry
        if len(self.queue) > registry.max_buffered:
            self.cancel_reason = (
                f"watcher too slow: more than {registry.max_buffered} events behind; re-read and watch again"
            )
        elif self.pending_bytes > registry.max_pending_bytes:
            self.cancel_reason = (
                f"watcher too slow: more than {registry.max_pending_bytes} bytes of events behind "
                "(--max-watch-pending-bytes on the nodes); re-read and watch again"
            )
        self.wake.set()

    async def _catch_up(self) -> str:
        """Send the stored events from ``start_revision`` through ``catch_up_to``; why it stopped, if it did."""
        kv, position = self.registry.kv, self.start_revision
        while position <= self.catch_up_to and not self.closed and not self.cancel_reason:
            try:
                events, position = kv.history_events(self.key, self.range_end, position)
            except Compacted as e:
                return f"compacted while catching up: {e}"
            events = [e for e in events if e.revision <= self.catch_up_to]
            if events:
                async with asyncio.timeout(self.registry.call_timeout_s):
                    await self.sink.events(events)
            else:
                await asyncio.sleep(0)  # a page without matches: still let the loop breathe
        return ""

    async def run(self) -> None:
        reason = ""
        try:
            if self.catch_up_to:
                reason = await self._catch_up()
            while not reason and not self.closed and not self.cancel_reason:
                await self.wake.wait()
                self.wake.clear()
                while self.queue and not self.cancel_reason:
                    batch = [self.queue.popleft() for _ in range(min(len(self.queue), 512))]
                    self.pending_bytes -= sum(map(event_size, batch))
                    call = asyncio.ensure_future(self.sink.events(batch))
                    # Race the call against a cancellation: a watcher stuck in a call must still learn, at once,
                    # that it fell too far behind (and the node must never wait on it).
                    while not call.done() and not self.cancel_reason and not self.closed:
                        waiter = asyncio.ensure_future(self.wake.wait())
                        try:
                            await asyncio.wait(
                                {call, waiter},
                                timeout=self.registry.call_timeout_s,
                                return_when=asyncio.FIRST_COMPLETED,
                            )
                        finally:
                            waiter.cancel()
                        if not call.done() and not waiter.done():
                            reason = f"watcher did not take events within {self.registry.call_timeout_s} s"
                            break
                        self.wake.clear()
                    if not call.done():
                        call.cancel()
                        await asyncio.gather(call, return_exceptions=True)
                        break
                    call.result()  # a failed call (watcher gone) ends the watch
                if reason:
                    break
            reason = reason or self.cancel_reason
            if reason and not self.closed:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.registry.call_timeout_s):
                        await self.sink.cancelled(reason, 0)
        except Exception as e:  # the watcher went away: drop the watch
            log.debug("node %s: watch %s ended: %s", self.registry.node_id, self.id, e)
        finally:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.remove_listener is not None:
                self.remove_listener()
            self.registry.watches.pop(self.id, None)
            self.wake.set()


class WatchRegistry:
    """The watches on one node's KV store."""

    def __init__(
        self,
        kv: KVStateMachine,
        node_id: NodeId,
        max_buffered: int = 10_000,
        call_timeout_s: float = 5.0,
        max_pending_bytes: int = 64 << 20,
    ) -> None:
        self.kv = kv
        self.node_id = node_id
        self.max_buffered = max_buffered
        self.max_pending_bytes = max_pending_bytes
        self.call_timeout_s = call_timeout_s
        self.watches: dict[int, _Watch] = {}
        self._next_id = 0
        self._tasks = TaskSet(f"node {node_id} watches")
        kv.on_auth_change = self.recheck

    def recheck(self) -> None:
        """Cancel the watches whose user may no longer read their range (a permission or a role revoked, the
        user deleted). The state machine calls it after a batch that changed the auth store and before that
        batch's events are offered: no event written after the change reaches a watch it revoked."""
        store = self.kv.auth
        if not store.enabled:
            return
        for w in list(self.watches.values()):
            if not w.cancel_reason and not store.allowed(w.user, "read", w.key, w.range_end):
                who = repr(w.user) if store.users.get(w.user) is not None else f"{w.user!r} (deleted)"
                w.cancel_reason = f"permission denied: user {who} may no longer read the watched keys"
                w.wake.set()

    def start(self, key: bytes, range_end: bytes | None, start_revision: int, sink: WatchSink, user: str = "") -> int:
        """Register a watch; raises ``raftkv.errors.Compacted`` if ``start_revision`` is compacted."""
        kv, hub = self.kv, self.kv.watch
        # History and registration in one synchronous step: nothing can be applied in between.
        catch_up_to = 0
        if 0 < start_revision < hub.oldest_revision and start_revision <= kv.revision:
            if start_revision < kv.compact_revision:
                raise Compacted(start_revision, kv.compact_revision)
            history: list[Event] = []
            catch_up_to = kv.revision  # older than memory holds: from the store, up to here
        else:
            history = hub.events_since(key, range_end, start_revision)
        self._next_id += 1
        w = _Watch(self, self._next_id, key, range_end, start_revision, sink, user)
        w.catch_up_to = catch_up_to
        w.remove_listener = hub.add_listener(w.offer)
        self.watches[w.id] = w
        if history:
            w.offer(history)
        self._tasks.spawn(w.run(), name=f"raftkv-watch-{self.node_id}-{w.id}")
        return w.id

    def cancel(self, watch_id: int) -> bool:
        w = self.watches.get(watch_id)
        if w is None:
            return False
        w.close()
        return True

    async def aclose(self) -> None:
        """End every watch and stop its task. Idempotent."""
        for w in list(self.watches.values()):
            w.close()
        await self._tasks.aclose()
