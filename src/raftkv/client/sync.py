"""``SyncClient``: the blocking client — the same key-value operations, leases and recipes, run on a private
event loop thread.

Theory of operation
-------------------
The client owns one thread running its own asyncio loop (and so its own KJ loop: KJ's loop is per thread); each
call is handed to that loop with ``run_coroutine_threadsafe`` and waited for. Nothing of the caller's thread
(including an event loop it may run) is touched.

The recipes (:class:`SyncLock`, :class:`SyncElection`) and :class:`SyncLease` wrap the async ones: their lease is
kept alive by the client's loop thread in the background, whatever the caller's thread does meanwhile, and
``lost`` (``threading``-side: :meth:`SyncLock.is_lost`, :meth:`SyncLock.check`) reads the async lease's event.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from raftkv.client.kv import Client, Lease, connect
from raftkv.client.recipes import Election, Lock
from raftkv.kv.commands import KeyValue
from raftkv.transport.address import Address

T = TypeVar("T")

_OPERATIONS = frozenset(
    {
        "put",
        "get",
        "range",
        "delete",
        "txn",
        "cas",
        "compact",
        "lease_grant",
        "lease_revoke",
        "lease_keep_alive_once",
        "lease_time_to_live",
        "leases",
        "members",
    }
)
CLOSE_TIMEOUT_S = 5.0


class SyncClient:
    """The blocking client: the same operations, run on a private event loop thread."""

    def __init__(
        self,
        endpoints: Sequence[str | Address],
        *,
        cluster_id: str = "",
        timeout: float = 5.0,
        cacert: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raftkv-client", daemon=True)
        self._thread.start()
        self._cm = connect(endpoints, cluster_id=cluster_id, timeout=timeout, cacert=cacert, cert=cert, key=key)
        self._client: Client = self._run(self._cm.__aenter__())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name in _OPERATIONS:
            method = getattr(self._client, name)
            return lambda *a, **kw: self._run(method(*a, **kw))
        raise AttributeError(name)

    def lock(self, name: str | bytes, ttl: int = 10) -> SyncLock:
        """``with client.lock("jobs/nightly") as held:`` (see :class:`raftkv.client.Lock`)."""
        return SyncLock(self, self._client.lock(name, ttl=ttl))

    def election(self, name: str | bytes, ttl: int = 10) -> SyncElection:
        """A leader election under ``name`` (see :class:`raftkv.client.Election`)."""
        return SyncElection(self, self._client.election(name, ttl=ttl))

    def lease(self, ttl: int, *, lease_id: int = 0) -> SyncLease:
        """``with client.lease(10) as lease:`` a lease kept alive in the background until the block ends."""
        return SyncLease(self, self._client.lease(ttl, lease_id=lease_id))

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._cm.__aexit__(None, None, None))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=CLOSE_TIMEOUT_S)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def connect_sync(
    endpoints: Sequence[str | Address],
    *,
    cluster_id: str = "",
    timeout: float = 5.0,
    cacert: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
) -> SyncClient:
    """``with raftkv.connect_sync([...]) as client: client.put("k", "v")`` (TLS arguments: see ``connect``)."""
    return SyncClient(endpoints, cluster_id=cluster_id, timeout=timeout, cacert=cacert, cert=cert, key=key)


class SyncLease:
    """A lease kept alive by the client's loop thread while the ``with`` block runs, then revoked."""

    def __init__(self, client: SyncClient, lease: Lease) -> None:
        self._c = client
        self._lease = lease

    @property
    def id(self) -> int:
        return self._lease.id

    def is_lost(self) -> bool:
        """Whether the lease could not be kept alive (revoked, expired, or the cluster unreachable for its TTL)."""
        return self._lease.lost.is_set()

    def __enter__(self) -> SyncLease:
        self._c._run(self._lease.__aenter__())
        return self

    def __exit__(self, *_exc: object) -> None:
        self._c._run(self._lease.__aexit__(None, None, None))


class SyncLock:
    """The blocking :class:`~raftkv.client.Lock`: ``acquire``/``release`` or ``with``; ``token`` is the fencing
    token, :meth:`check` raises :class:`~raftkv.client.LockLost` once the lease behind it is lost."""

    def __init__(self, client: SyncClient, lock: Lock) -> None:
        self._c = client
        self._lock = lock

    @property
    def key(self) -> bytes:
        return self._lock.key

    @property
    def token(self) -> int:
        return self._lock.token

    def is_lost(self) -> bool:
        return self._lock.lost.is_set()

    def check(self) -> None:
        self._lock.check()

    def acquire(self, timeout: float | None = None) -> None:
        """Wait (at most ``timeout`` seconds: then ``TimeoutError``, and the place in the queue is given up)."""
        self._c._run(asyncio.wait_for(self._lock.acquire(), timeout))

    def release(self) -> None:
        self._c._run(self._lock.release())

    def __enter__(self) -> SyncLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class SyncElection:
    """The blocking :class:`~raftkv.client.Election`."""

    def __init__(self, client: SyncClient, election: Election) -> None:
        self._c = client
        self._election = election

    @property
    def key(self) -> bytes:
        return self._election.key

    def is_lost(self) -> bool:
        """Whether the lease behind this candidacy is lost (it no longer leads, or may not)."""
        return self._election.lost.is_set()

    def campaign(self, proposal: str | bytes, timeout: float | None = None) -> None:
        self._c._run(asyncio.wait_for(self._election.campaign(proposal), timeout))

    def proclaim(self, value: str | bytes) -> None:
        self._c._run(self._election.proclaim(value))

    def resign(self) -> None:
        self._c._run(self._election.resign())

    def leader(self) -> KeyValue | None:
        return self._c._run(self._election.leader())

    def observe(self) -> Iterator[bytes]:
        """The leader's value now and each time it changes, blocking between them (close the generator to stop)."""
        events: AsyncIterator[bytes] = self._election.observe()
        try:
            while True:
                try:
                    yield self._c._run(_next(events))
                except StopAsyncIteration:
                    return
        finally:
            self._c._run(_aclose(events))


async def _next(events: AsyncIterator[bytes]) -> bytes:
    return await events.__anext__()


async def _aclose(events: AsyncIterator[bytes]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()


__all__ = ["SyncClient", "SyncElection", "SyncLease", "SyncLock", "connect_sync"]
