"""The key-value store on a node: executing client batches and pushing watch events.

Theory of operation
-------------------
**Batches.** A client coalesces its concurrent calls into one ``execute`` batch. On the leader, every write in
the batch is stamped with the leader's clock (the only way time enters the state machine: session expiry runs on
log time) and proposed at once, so the batch travels in one Ready, one fsync and one AppendEntries per follower.
Linearizable reads in the batch share one ReadIndex barrier (dissertation §6.4: confirm leadership with a
heartbeat round, wait until the state machine has applied the read index — no log write), then are served from
the state machine. Serializable reads are served from whatever this node has applied (possibly stale, by
request). A follower refuses a batch that needs the leader with ``NotLeader``.

**Watches.** A watch registers a listener on the state machine's event hub and reads the retained history in
the same synchronous step, so nothing can be applied in between: the watcher gets every event after its start
revision exactly once, in order, then live events. Each watcher has a bounded buffer; a watcher that falls more
than ``max_buffered`` events behind is cancelled with a reason rather than ever slowing the node down. Pushing
events to a watcher is a capnp call with a deadline; a watcher that stops answering is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from raftkv.errors import NotLeader
from raftkv.kv.commands import Command, Range, Result, encode_command, stamp
from raftkv.kv.keys import key_in_range
from raftkv.kv.machine import KVStateMachine
from raftkv.kv.watch import Event
from raftkv.raft.ready import Role

if TYPE_CHECKING:
    from raftkv.server.node import RaftNode

log = logging.getLogger("raftkv.kv")
_EVENT_ENCODER = msgspec.msgpack.Encoder()


UNSAFE_STALE_READS_ENV = "RAFTKV_TEST_UNSAFE_STALE_READS"
"""Test-only switch (issue: verification harness): when set to 1, every read is served from this node's local
state, on followers too, without ReadIndex. It breaks linearizability on purpose so that the Jepsen-style
harness can prove it notices. Never set it in production; the node logs a warning at start when it is on."""


def unsafe_stale_reads() -> bool:
    return os.environ.get(UNSAFE_STALE_READS_ENV) == "1"


async def execute_batch(
    node: RaftNode, commands: Sequence[tuple[Command, bool]], timeout: float
) -> list[Result | None]:
    """Execute ``(command, serializable)`` pairs; results in the same order. Raises NotLeader / Timeout."""
    sm = node.state_machine
    assert isinstance(sm, KVStateMachine)
    core = node.core
    assert core is not None
    if node.unsafe_stale_reads:
        commands = [(c, serializable or isinstance(c, Range)) for c, serializable in commands]  # UNSAFE
    needs_leader = any(not (isinstance(c, Range) and serializable) for c, serializable in commands)
    if needs_leader and core.role is not Role.LEADER:
        raise NotLeader(core.leader)
    now_ms = int(time.time() * 1000)
    results: list[Result | None] = [None] * len(commands)
    write_at: list[int] = []
    datas: list[bytes] = []
    linearizable: list[int] = []
    for k, (cmd, serializable) in enumerate(commands):
        if isinstance(cmd, Range):
            if serializable:
                results[k] = sm.read(cmd)
            else:
                linearizable.append(k)
        else:
            write_at.append(k)
            datas.append(encode_command(stamp(cmd, now_ms)))
    writes: list[tuple[int, asyncio.Future[Any]]] = []
    if datas:
        _index, _term, futs = node.submit_batch(datas)
        writes = list(zip(write_at, futs, strict=True))
    async with asyncio.timeout(timeout):
        if linearizable:
            await node.read_barrier(timeout=None)
            for k in linearizable:
                cmd = commands[k][0]
                assert isinstance(cmd, Range)
                results[k] = sm.read(cmd)
        for k, fut in writes:
            results[k] = await fut
    return results


class _Watch:
    def __init__(
        self,
        registry: WatchRegistry,
        watch_id: int,
        key: bytes,
        range_end: bytes | None,
        start_revision: int,
        watcher: Any,
    ) -> None:
        self.registry = registry
        self.id = watch_id
        self.key = key
        self.range_end = range_end
        self.start_revision = start_revision
        """Events below it are never sent: a watch resumed on a node that lags behind must not go back in time."""
        self.watcher = watcher
        self.queue: deque[Event] = deque()
        self.wake = asyncio.Event()
        self.closed = False
        self.cancel_reason = ""
        self.remove_listener: Any = None

    def offer(self, events: Sequence[Event]) -> None:
        if self.closed:
            return
        start = self.start_revision
        matching = [
            e for e in events if e.kv.mod_revision >= start and key_in_range(e.kv.key, self.key, self.range_end)
        ]
        if not matching:
            return
        self.queue.extend(matching)
        if len(self.queue) > self.registry.max_buffered:
            self.cancel_reason = (
                f"watcher too slow: more than {self.registry.max_buffered} events behind; re-read and watch again"
            )
        self.wake.set()

    async def run(self) -> None:
        reason = ""
        try:
            while not self.closed and not self.cancel_reason:
                await self.wake.wait()
                self.wake.clear()
                while self.queue and not self.cancel_reason:
                    batch = [self.queue.popleft() for _ in range(min(len(self.queue), 512))]
                    call = asyncio.ensure_future(self.watcher.events(events=[_EVENT_ENCODER.encode(e) for e in batch]))
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
                        await self.watcher.cancelled(reason=reason, compactRevision=0)
        except Exception as e:  # the watcher went away: drop the watch
            log.debug("node %s: watch %s ended: %s", self.registry.node.id, self.id, e)
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
    def __init__(self, node: RaftNode, max_buffered: int = 10_000, call_timeout_s: float = 5.0) -> None:
        self.node = node
        self.max_buffered = max_buffered
        self.call_timeout_s = call_timeout_s
        self.watches: dict[int, _Watch] = {}
        self._next_id = 0

    def start(self, key: bytes, range_end: bytes | None, start_revision: int, watcher: Any) -> int:
        """Register a watch; raises ``raftkv.kv.errors.Compacted`` if ``start_revision`` is too old."""
        sm = self.node.state_machine
        assert isinstance(sm, KVStateMachine)
        hub = sm.watch
        # History and registration in one synchronous step: nothing can be applied in between.
        history = hub.events_since(key, range_end, start_revision)
        self._next_id += 1
        w = _Watch(self, self._next_id, key, range_end, start_revision, watcher)
        w.remove_listener = hub.add_listener(w.offer)
        self.watches[w.id] = w
        if history:
            w.offer(history)
        self.node.spawn(w.run(), name=f"raftkv-watch-{self.node.id}-{w.id}")
        return w.id

    def cancel(self, watch_id: int) -> bool:
        w = self.watches.get(watch_id)
        if w is None:
            return False
        w.close()
        return True

    def close_all(self) -> None:
        for w in list(self.watches.values()):
            w.close()
