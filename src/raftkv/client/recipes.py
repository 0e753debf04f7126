"""Coordination recipes on leases and revisions: a distributed lock and a leader election (etcd's
``concurrency`` package is the model).

Theory of operation
-------------------
Both recipes run on a :class:`~raftkv.client.kv.Lease` (a *session*): every key they write is attached to it, so
a holder that dies, or is cut off for longer than the TTL, loses its place when the lease expires, and the
lease's ``lost`` event tells a live holder that it may have.

**Lock** (``Mutex``). Each contender creates ``NAME/<lease id>`` if absent (a transaction on ``create = 0``);
its *create revision* orders the queue. A contender holds the lock when no key under ``NAME/`` has a lower
create revision. Otherwise it waits for the key *just below* its own to be deleted (released, or its lease
expired), then looks again: each waiter watches one key, so a release wakes one waiter, not all (no thundering
herd). The holder's create revision is a **fencing token**: it strictly increases from one holder to the next,
because a later key always gets a later revision. A resource that remembers the highest token it has seen and
refuses lower ones is safe even from a holder paused past its lease (which the lease cannot stop by itself).

**Election**. A campaign is the same queue, under ``NAME/``, with the proposal as the key's value; the leader is
the lowest create revision. ``proclaim`` changes the leader's value only while it is still its key (a
transaction on its create revision). ``observe`` yields the leader's value each time it changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from raftkv.errors import RaftError
from raftkv.kv.commands import (
    Compare,
    DeleteResult,
    KeyValue,
    Op,
    Put,
    Range,
    RangeResult,
    SortOrder,
    SortTarget,
    TxnResult,
)
from raftkv.kv.errors import Compacted, FutureRevision
from raftkv.kv.keys import prefix_end
from raftkv.kv.watch import EventType


class Lease(Protocol):
    """What the recipes need of a lease kept alive (``raftkv.client.kv.Lease``)."""

    id: int
    lost: asyncio.Event

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: object) -> None: ...


class _Events(Protocol):
    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: object) -> Any: ...

    def __aiter__(self) -> Any: ...


class Client(Protocol):
    """What the recipes need of a client (``raftkv.client.kv.Client``; a protocol, so that the client module,
    which offers ``lock()`` and ``election()``, and this one do not import each other)."""

    async def txn(
        self, compare: Sequence[Compare], success: Sequence[Op] = ..., failure: Sequence[Op] = ...
    ) -> TxnResult: ...

    async def range(
        self,
        key: bytes,
        range_end: bytes | None = ...,
        *,
        limit: int = ...,
        sort_order: SortOrder = ...,
        sort_target: SortTarget = ...,
        max_create_revision: int = ...,
        revision: int = ...,
        serializable: bool = ...,
    ) -> RangeResult: ...

    async def delete(self, key: bytes) -> DeleteResult: ...

    def watch(self, key: bytes, *, prefix: bool = ..., start_revision: int = ...) -> _Events: ...

    def lease(self, ttl: int) -> Lease: ...


class LockLost(RaftError):
    """The lease behind a lock or a leadership is gone (expired, revoked, or unreachable for a whole TTL): the
    holder must stop acting as the holder."""


_CLOSING: set[asyncio.Future[Any]] = set()
"""Watches being ended in the background (held so that they are not collected mid-way)."""


def _prefix(name: str | bytes) -> bytes:
    raw = name.encode() if isinstance(name, str) else name
    return raw.rstrip(b"/") + b"/"


@dataclass
class _Place:
    key: bytes
    revision: int  # its create revision: the position in the queue, and the fencing token


async def _join_queue(client: Client, prefix: bytes, lease: Lease, value: bytes) -> _Place:
    key = prefix + str(lease.id).encode()
    r = await client.txn(
        [Compare(key, "create", "=", 0)],
        [Put(key, value, lease=lease.id)],
        [Range(key)],
    )
    if r.succeeded:
        return _Place(key, r.revision)
    existing = r.responses[0]
    assert isinstance(existing, RangeResult) and existing.kvs
    return _Place(key, existing.kvs[0].create_revision)  # this lease queued already (a retry): keep its place


async def _wait_for_turn(client: Client, prefix: bytes, place: _Place, lease: Lease) -> None:
    """Wait until no key under ``prefix`` has a lower create revision than ``place``."""
    end = prefix_end(prefix)
    if place.revision <= 1:
        return  # nothing can be older (and max_create_revision=0 would mean "no bound")
    at = place.revision
    while True:
        lost: asyncio.Future[Any] = asyncio.ensure_future(lease.lost.wait())
        try:
            ahead = await _ahead(client, prefix, end, place.revision, at)
            if not ahead.kvs:
                return
            at = await _wait_deleted(client, ahead.kvs[0], ahead.revision, lost)
        finally:
            lost.cancel()
        if lease.lost.is_set():
            raise LockLost(f"the lease behind {place.key!r} was lost while waiting")
        if not ahead.more:
            # It was the only key ahead, and the keys ahead only ever go: none is left, no need to read again
            # (this saves the hand-over a round trip).
            return


async def _ahead(client: Client, prefix: bytes, end: bytes, mine: int, at: int) -> RangeResult:
    """The queued key just ahead of create revision ``mine``, read at revision ``at`` or later.

    The keys ahead of a place only ever go (a new key always gets a later create revision), so a read at any
    revision from ``at`` on, which the queueing or the last deletion seen is at or before, is as good as a
    linearizable one: it may be served by the nearest node from its own copy. A node that has not reached
    ``at`` yet (or has compacted past it) answers with an error, and the read goes to the leader."""
    options: dict[str, Any] = {
        "limit": 1,
        "sort_target": "create",
        "sort_order": "descend",
        "max_create_revision": mine - 1,
    }
    try:
        return await client.range(prefix, end, revision=at, serializable=True, **options)
    except (FutureRevision, Compacted):
        return await client.range(prefix, end, **options)


async def _take_turn(client: Client, prefix: bytes, ttl: int, value: bytes) -> tuple[Lease, _Place]:
    """Grant a session lease, queue under ``prefix`` on it, and wait for this place's turn. On any failure the
    lease is revoked, which takes the place in the queue with it."""
    lease = client.lease(ttl)
    await lease.__aenter__()
    try:
        place = await _join_queue(client, prefix, lease, value)
        await _wait_for_turn(client, prefix, place, lease)
    except BaseException:
        await lease.__aexit__(None, None, None)
        raise
    return lease, place


async def _leave(client: Client, key: bytes, lease: Lease | None) -> None:
    """Delete this place in the queue (the next in line's watch fires), then revoke the session's lease."""
    if lease is not None:
        try:
            await client.delete(key)
        finally:
            await lease.__aexit__(None, None, None)


async def _wait_deleted(client: Client, kv: KeyValue, seen_at: int, lost: asyncio.Future[Any]) -> int:
    """Until ``kv.key`` is deleted (a watch from just after the read that saw it), or ``lost`` fires; the
    revision of the delete (``seen_at`` if lost)."""
    w = client.watch(kv.key, start_revision=seen_at + 1)
    await w.__aenter__()
    nxt: asyncio.Future[Any] | None = None
    try:
        events = w.__aiter__()
        while True:
            nxt = asyncio.ensure_future(events.__anext__())
            waiting: set[asyncio.Future[Any]] = {nxt, lost}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                return seen_at
            try:
                event = nxt.result()
            except StopAsyncIteration:
                raise RaftError("the watch ended before the key ahead was deleted: the client closed") from None
            if event.type == EventType.DELETE:
                return int(event.kv.mod_revision)
    finally:
        if nxt is not None and not nxt.done():
            nxt.cancel()  # this wait was cancelled (the caller's deadline): so is the pending read of the watch
        # Ending the watch is a round trip to the node: the next waiter need not wait for it.
        closing = asyncio.ensure_future(w.__aexit__(None, None, None))
        _CLOSING.add(closing)
        closing.add_done_callback(_CLOSING.discard)


class Lock:
    """``async with client.lock(name) as held:`` see the module docstring. ``held.token`` is the fencing
    token; ``held.lost`` is set if the lease is lost while holding (check it, or call :meth:`check`)."""

    def __init__(self, client: Client, name: str | bytes, ttl: int = 10) -> None:
        self.client = client
        self.prefix = _prefix(name)
        self.ttl = ttl
        self.key = b""
        self.token = 0
        self._lease: Lease | None = None

    @property
    def lost(self) -> asyncio.Event:
        assert self._lease is not None, "not held"
        return self._lease.lost

    def check(self) -> None:
        """Raise :class:`LockLost` if the lock may no longer be held."""
        if self._lease is None or self._lease.lost.is_set():
            raise LockLost(f"lock {self.prefix.decode(errors='replace')!r}: the lease behind it was lost")

    async def acquire(self) -> None:
        self._lease, place = await _take_turn(self.client, self.prefix, self.ttl, b"")
        self.key, self.token = place.key, place.revision

    async def release(self) -> None:
        lease, self._lease = self._lease, None
        await _leave(self.client, self.key, lease)

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.release()


class Election:
    """A leader election under ``name`` (see the module docstring)."""

    def __init__(self, client: Client, name: str | bytes, ttl: int = 10) -> None:
        self.client = client
        self.prefix = _prefix(name)
        self.ttl = ttl
        self.key = b""
        self.revision = 0
        self._lease: Lease | None = None

    @property
    def lost(self) -> asyncio.Event:
        assert self._lease is not None, "not campaigning"
        return self._lease.lost

    async def campaign(self, proposal: str | bytes) -> None:
        """Wait until this candidate leads, its key holding ``proposal``."""
        value = proposal.encode() if isinstance(proposal, str) else proposal
        self._lease, place = await _take_turn(self.client, self.prefix, self.ttl, value)
        self.key, self.revision = place.key, place.revision

    async def proclaim(self, value: str | bytes) -> None:
        """Change the leader's value; :class:`LockLost` if this candidate no longer leads."""
        raw = value.encode() if isinstance(value, str) else value
        if self._lease is None:
            raise LockLost("not the leader: campaign first")
        r = await self.client.txn(
            [Compare(self.key, "create", "=", self.revision)], [Put(self.key, raw, lease=self._lease.id)]
        )
        if not r.succeeded:
            raise LockLost(f"no longer the leader of {self.prefix.decode(errors='replace')!r}")

    async def resign(self) -> None:
        lease, self._lease = self._lease, None
        await _leave(self.client, self.key, lease)

    async def leader(self) -> KeyValue | None:
        """The leader's key and value, or None."""
        r = await self.client.range(self.prefix, prefix_end(self.prefix), limit=1, sort_target="create")
        return r.kvs[0] if r.kvs else None

    async def observe(self) -> AsyncIterator[bytes]:
        """The leader's value now (if any), then each time it changes (a new leader, or a proclaim)."""
        current = await self.client.range(self.prefix, prefix_end(self.prefix), limit=1, sort_target="create")
        last: KeyValue | None = current.kvs[0] if current.kvs else None
        if last is not None:
            yield last.value
        async with self.client.watch(self.prefix, prefix=True, start_revision=current.revision + 1) as w:
            async for event in w:
                if last is not None and event.kv.key == last.key and event.type == EventType.PUT:
                    if event.kv.value != last.value:
                        yield event.kv.value  # the leader proclaimed
                    last = event.kv
                    continue
                if last is not None and event.kv.key != last.key:
                    continue  # a candidate joined or left the queue behind the leader
                now = await self.leader()  # the leader's key went (or there was none): who leads now
                if now is not None and (last is None or now.key != last.key or now.value != last.value):
                    yield now.value
                last = now


__all__ = ["Election", "Lock", "LockLost"]
