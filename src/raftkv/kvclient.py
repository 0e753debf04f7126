"""``raftkv.Client``: the async key-value client (and ``SyncClient``, its blocking twin).

Theory of operation
-------------------
**Finding the leader.** The client starts with any endpoint; writes and linearizable reads that reach a follower
come back ``notLeader`` with the leader's client address, and the client follows it. Unreachable endpoints are
skipped with a short backoff until the call's deadline.

**Coalescing.** Calls made in the same event-loop turn are sent together in one ``execute`` RPC (one capnp call
costs ~75 µs of CPU whatever it carries); serializable reads travel in their own batch, to any node.

**Exactly once.** Every write belongs to the client's session and carries a sequence number (dissertation §6.3).
When a batch fails in a way that leaves outcomes unknown (timeout, leader change, broken connection), the client
retries *the same batch*, with the same sequence numbers, elsewhere; the state machine answers a retried write
with its first result instead of applying it twice. The session is opened lazily through the log and kept alive
by the client's writes (a client idle for longer than the session TTL gets a new session on its next write).

**Watches.** ``client.watch(...)`` is an async iterator of events. The server pushes events to a capability the
client hosts. If the serving node dies or stops answering (a ping every second checks it), the watch resumes on
another node from the last revision it delivered plus one: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import capnp  # type: ignore[import-untyped]
import msgspec

from raftkv.errors import Compacted, RaftError, SessionExpired, Timeout, TxnFailed, Unavailable, WatchCancelled
from raftkv.kv.commands import (
    Compare,
    DeleteRange,
    DeleteResult,
    ErrorResult,
    KeyValue,
    OpenSession,
    Put,
    PutResult,
    Range,
    RangeResult,
    Request,
    Result,
    SessionResult,
    Txn,
    TxnResult,
    decode_result,
    encode_command,
)
from raftkv.kv.errors import ErrorCode
from raftkv.kv.keys import prefix_end
from raftkv.kv.watch import Event
from raftkv.transport.address import Address
from raftkv.transport.kjloop import kj_loop
from raftkv.transport.streams import PLAIN
from raftkv.transport.wire import schema

T = TypeVar("T")
Key = str | bytes
Op = Put | DeleteRange | Range


def _b(value: Key) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


@dataclass(slots=True)
class _Call:
    command: bytes
    serializable: bool
    future: asyncio.Future[Result | None]
    deadline: float


@dataclass(slots=True)
class _NotLeader(Exception):
    address: str


def _execute_request(conn: _Conn, calls: Sequence[_Call], timeout_ms: int) -> Any:
    """An ``execute`` call filled field by field (a list of dicts costs pycapnp ~5 µs per request to convert)."""
    request = conn.cap.execute_request()
    request.header = conn.header
    request.timeoutMs = timeout_ms
    items = request.init("requests", len(calls))
    for k, call in enumerate(calls):
        item = items[k]
        item.command = call.command
        if call.serializable:
            item.serializable = True
    return request


class _Conn:
    """One connection to one node's client port."""

    def __init__(self, endpoint: Address, cluster_id: str) -> None:
        self.endpoint = endpoint
        self.header: Any = schema.Header.new_message(clusterId=cluster_id).as_reader()
        """Every call's header (from and to 0: a client), built once: pycapnp copies a struct ~9x faster than it
        converts a dict."""
        self.client: Any = None
        self.cap: Any = None

    async def open(self, timeout: float) -> None:
        self.client = await PLAIN.dial_rpc(self.endpoint, timeout)
        self.cap = self.client.bootstrap().cast_as(schema.Client)

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        self.client = self.cap = None


@dataclass
class Client:
    """An async client for a raftkv cluster. Use ``async with raftkv.connect([...]) as client``."""

    endpoints: list[Address]
    cluster_id: str = ""
    timeout: float = 5.0
    """Default deadline of each call, leader changes and retries included."""
    session_ttl_ms: int = 60_000
    _conns: dict[Address, _Conn] = field(default_factory=dict, init=False)
    _leader: Address | None = field(default=None, init=False)
    _pending: list[_Call] = field(default_factory=list, init=False)
    _flush_scheduled: bool = field(default=False, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _session_id: int = field(default=0, init=False)
    _session_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1), init=False)
    _in_flight: set[int] = field(default_factory=set, init=False)
    _closed: bool = field(default=False, init=False)

    # --- key-value operations ----------------------------------------------------------------------------

    async def put(self, key: Key, value: Key, *, prev_kv: bool = False, timeout: float | None = None) -> PutResult:
        result = await self._write(Put(_b(key), _b(value), prev_kv), timeout)
        assert isinstance(result, PutResult)
        return result

    async def get(self, key: Key, *, serializable: bool = False, timeout: float | None = None) -> KeyValue | None:
        r = await self.range(key, serializable=serializable, timeout=timeout)
        return r.kvs[0] if r.kvs else None

    async def range(
        self,
        key: Key,
        range_end: Key | None = None,
        *,
        prefix: bool = False,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        serializable: bool = False,
        timeout: float | None = None,
    ) -> RangeResult:
        k = _b(key)
        end = prefix_end(k) if prefix else (_b(range_end) if range_end is not None else None)
        result = await self._call(encode_command(Range(k, end, limit, keys_only, count_only)), serializable, timeout)
        assert isinstance(result, RangeResult)
        return result

    async def delete(
        self,
        key: Key,
        range_end: Key | None = None,
        *,
        prefix: bool = False,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> DeleteResult:
        k = _b(key)
        end = prefix_end(k) if prefix else (_b(range_end) if range_end is not None else None)
        result = await self._write(DeleteRange(k, end, prev_kv), timeout)
        assert isinstance(result, DeleteResult)
        return result

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Op] = (),
        failure: Sequence[Op] = (),
        *,
        require_success: bool = False,
        timeout: float | None = None,
    ) -> TxnResult:
        """Apply ``success`` if every comparison holds, else ``failure``, atomically (etcd's mini-transaction).

        With ``require_success``, a failed comparison raises :class:`TxnFailed` (carrying the result).
        """
        result = await self._write(Txn(list(compare), list(success), list(failure)), timeout)
        assert isinstance(result, TxnResult)
        if require_success and not result.succeeded:
            raise TxnFailed("the transaction's comparison did not hold", result)
        return result

    async def cas(self, key: Key, expected: Key | None, value: Key, *, timeout: float | None = None) -> bool:
        """Set ``key`` to ``value`` if it currently holds ``expected`` (None: if it does not exist)."""
        k = _b(key)
        cmp = Compare(k, "version", "=", 0) if expected is None else Compare(k, "value", "=", _b(expected))
        return (await self.txn([cmp], [Put(k, _b(value))], timeout=timeout)).succeeded

    def watch(self, key: Key, range_end: Key | None = None, *, prefix: bool = False, start_revision: int = 0) -> Watch:
        """Events for ``key`` (or a prefix/range) from ``start_revision`` (0: from now), as an async iterator."""
        k = _b(key)
        end = prefix_end(k) if prefix else (_b(range_end) if range_end is not None else None)
        return Watch(self, k, end, start_revision)

    # --- sessions and writes -------------------------------------------------------------------------------

    async def _ensure_session(self, timeout: float | None) -> int:
        async with self._session_lock:
            if not self._session_id:
                result = await self._call(encode_command(OpenSession(self.session_ttl_ms)), False, timeout)
                self._session_id = _session_id(result)
            return self._session_id

    async def _write(self, op: Put | DeleteRange | Txn, timeout: float | None) -> Result:
        session = await self._ensure_session(timeout)
        seq = next(self._seq)
        self._in_flight.add(seq)
        try:
            # §6.3: tell the session the lowest request we still await, so it can forget older results.
            request = Request(session, seq, 0, op, first_incomplete=min(self._in_flight))
            result = await self._call(encode_command(request), False, timeout)
        finally:
            self._in_flight.discard(seq)
        if isinstance(result, ErrorResult):
            if result.code == ErrorCode.SESSION_EXPIRED:
                if self._session_id == session:
                    self._session_id = 0  # the next write opens a new session
                raise SessionExpired(f"{result.message}; the write may or may not have been applied")
            raise RaftError(f"{result.code}: {result.message}")
        assert result is not None
        return result

    # --- batching and leader following ----------------------------------------------------------------------

    async def _call(self, command: bytes, serializable: bool, timeout: float | None) -> Result | None:
        if self._closed:
            raise RaftError("the client is closed")
        loop = asyncio.get_running_loop()
        t = self.timeout if timeout is None else timeout
        fut: asyncio.Future[Result | None] = loop.create_future()
        self._pending.append(_Call(command, serializable, fut, time.monotonic() + t))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        calls, self._pending = self._pending, []
        for group in ([c for c in calls if c.serializable], [c for c in calls if not c.serializable]):
            for start in range(0, len(group), 1024):
                task = asyncio.ensure_future(self._send(group[start : start + 1024]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send(self, calls: list[_Call]) -> None:
        deadline = max(c.deadline for c in calls)
        attempt = 0
        last_error = "no endpoint tried"
        order = list(self.endpoints)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            target = self._leader or order[attempt % len(order)]
            attempt += 1
            try:
                conn = await self._conn(target, min(1.0, left))
                async with asyncio.timeout(left + 0.5):
                    r = await _execute_request(conn, calls, int(left * 1000)).send()
                code = str(r.error.code)
                if code == "none":
                    results = [decode_result(bytes(x)) for x in r.results]
                    for call, result in zip(calls, results, strict=True):
                        if not call.future.done():
                            call.future.set_result(result)
                    return
                if code == "notLeader":
                    address = str(r.error.leaderAddress)
                    self._leader = Address.parse(address) if address else None
                    last_error = f"node at {target} is not the leader"
                    if address:
                        continue  # follow the redirection at once
                elif code in ("timeout", "proposalDropped", "stopped"):
                    # Outcome unknown: retry the same batch (same sequence numbers), possibly elsewhere.
                    self._leader = None
                    last_error = f"{code}: {r.error.message}"
                else:
                    err = RaftError(f"{code}: {r.error.message}")
                    for call in calls:
                        if not call.future.done():
                            call.future.set_exception(err)
                    return
            except (OSError, TimeoutError, capnp.KjException) as e:
                self._drop(target)
                if self._leader == target:
                    self._leader = None
                last_error = f"{target}: {_why(e)}"
            # Brisk retries: an election takes ~0.2 s, and a client polling 3 endpoints every 50 ms costs nothing.
            await asyncio.sleep(min(0.01 * attempt, 0.05))
        err = Unavailable(
            f"no leader reachable at {','.join(map(str, self.endpoints))} before the deadline ({last_error}); "
            "the outcome of any write in flight is unknown"
        )
        for call in calls:
            if not call.future.done():
                call.future.set_exception(err)

    async def _conn(self, endpoint: Address, timeout: float) -> _Conn:
        conn = self._conns.get(endpoint)
        if conn is None:
            conn = _Conn(endpoint, self.cluster_id)
            await conn.open(timeout)
            self._conns[endpoint] = conn
        return conn

    def _drop(self, endpoint: Address) -> None:
        conn = self._conns.pop(endpoint, None)
        if conn is not None:
            conn.close()

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for endpoint in list(self._conns):
            self._drop(endpoint)


def _session_id(result: Result | None) -> int:
    if isinstance(result, SessionResult):
        return result.session_id
    raise RaftError(f"could not open a session: {result}")


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "no answer before the deadline"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (is the node running?)"
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text


# --- watch ----------------------------------------------------------------------------------------------------

_EVENT_DECODER = msgspec.msgpack.Decoder(Event)


class _WatcherImpl(schema.Watcher.Server):  # type: ignore[misc]
    def __init__(self, queue: asyncio.Queue[Event | BaseException]) -> None:
        self.queue = queue

    async def events(self, events: Any, _context: Any, **_kw: Any) -> None:
        for data in events:
            self.queue.put_nowait(_EVENT_DECODER.decode(bytes(data)))

    async def cancelled(self, reason: str, compactRevision: int, _context: Any, **_kw: Any) -> None:  # noqa: N803
        self.queue.put_nowait(WatchCancelled(str(reason)))


class Watch:
    """An async iterator of events; resumes on another node (from the next revision) if its node goes away."""

    def __init__(self, client: Client, key: bytes, range_end: bytes | None, start_revision: int) -> None:
        self.client = client
        self.key = key
        self.range_end = range_end
        self.next_revision = start_revision
        """Where a resumed watch restarts: the revision of the last event delivered (or the start)."""
        self._delivered_at_next: set[bytes] = set()
        """Keys already delivered at ``next_revision``: one revision can change several keys (a txn, a range
        delete), so a resume re-asks for that revision and skips only what was already seen."""
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._conn: _Conn | None = None
        self._watch_id = 0
        self._health: asyncio.Task[None] | None = None
        self._closed = False
        self.resumes = 0
        """How many times the watch moved to another node (its node died or stopped answering)."""

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
                await self._start()
            item = await self._queue.get()
            if isinstance(item, _Lost):
                self._reset()
                self.resumes += 1
                continue
            if isinstance(item, BaseException):
                await self.aclose()
                raise item
            rev = item.kv.mod_revision
            if rev < self.next_revision or (rev == self.next_revision and item.kv.key in self._delivered_at_next):
                continue  # delivered before a resume
            if rev > self.next_revision:
                self.next_revision = rev
                self._delivered_at_next = set()
            self._delivered_at_next.add(item.kv.key)
            return item

    async def _start(self) -> None:
        c = self.client
        deadline = time.monotonic() + c.timeout
        order = ([c._leader] if c._leader else []) + list(c.endpoints)
        attempt = 0
        while True:
            target = order[attempt % len(order)]
            attempt += 1
            conn = _Conn(target, c.cluster_id)
            try:
                await conn.open(1.0)
                watcher = _WatcherImpl(self._queue)
                async with asyncio.timeout(2.0):
                    r = await conn.cap.watch(
                        header=conn.header,
                        key=self.key,
                        rangeEnd=self.range_end or b"",
                        hasRangeEnd=self.range_end is not None,
                        startRevision=self.next_revision,
                        watcher=watcher,
                    )
                code = str(r.error.code)
                if code == "compacted":
                    conn.close()
                    raise Compacted(self.next_revision, int(r.compactRevision))
                if code != "none":
                    raise RaftError(f"{code}: {r.error.message}")
                self._conn = conn
                self._watch_id = int(r.watchId)
                self._health = asyncio.ensure_future(self._check_health(conn))
                return
            except (OSError, TimeoutError, capnp.KjException, RaftError) as e:
                conn.close()
                if isinstance(e, Compacted) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(min(0.05 * attempt, 0.3))

    async def _check_health(self, conn: _Conn) -> None:
        """Ping the serving node every second; if it stops answering, resume the watch elsewhere."""
        try:
            while True:
                await asyncio.sleep(1.0)
                async with asyncio.timeout(1.0):
                    r = await conn.cap.ping(header=conn.header, payload=b"")
                if str(r.error.code) != "none":
                    break
        except (OSError, TimeoutError, capnp.KjException):
            pass
        except asyncio.CancelledError:
            return
        self._queue.put_nowait(_Lost())

    def _reset(self) -> None:
        if self._health is not None:
            self._health.cancel()
            self._health = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        if conn is not None and conn.cap is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await conn.cap.cancelWatch(header=conn.header, watchId=self._watch_id)
        health = self._health
        self._reset()
        if health is not None:
            with contextlib.suppress(BaseException):
                await health


class _Lost(Exception):
    """Internal marker: the serving node went away."""


# --- entry points ---------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def connect(
    endpoints: Sequence[str | Address], *, cluster_id: str = "", timeout: float = 5.0
) -> AsyncIterator[Client]:
    """``async with raftkv.connect(["127.0.0.1:9001", ...]) as client: await client.put("k", "v")``."""
    addrs = [e if isinstance(e, Address) else Address.parse(e, "endpoint") for e in endpoints]
    if not addrs:
        raise ValueError("connect() needs at least one endpoint")
    async with kj_loop():
        client = Client(addrs, cluster_id, timeout)
        try:
            yield client
        finally:
            await client.aclose()


class SyncClient:
    """The blocking client: the same operations, run on a private event loop thread."""

    def __init__(self, endpoints: Sequence[str | Address], *, cluster_id: str = "", timeout: float = 5.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raftkv-client", daemon=True)
        self._thread.start()
        self._cm = connect(endpoints, cluster_id=cluster_id, timeout=timeout)
        self._client: Client = self._run(self._cm.__aenter__())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)
        if name in ("put", "get", "range", "delete", "txn", "cas"):
            return lambda *a, **kw: self._run(method(*a, **kw))
        raise AttributeError(name)

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._cm.__aexit__(None, None, None))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def connect_sync(endpoints: Sequence[str | Address], *, cluster_id: str = "", timeout: float = 5.0) -> SyncClient:
    """``with raftkv.connect_sync([...]) as client: client.put("k", "v")``."""
    return SyncClient(endpoints, cluster_id=cluster_id, timeout=timeout)


__all__ = [
    "Client",
    "Compacted",
    "SessionExpired",
    "SyncClient",
    "Timeout",
    "TxnFailed",
    "Unavailable",
    "Watch",
    "WatchCancelled",
    "connect",
    "connect_sync",
]
