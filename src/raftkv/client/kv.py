"""``Client``: the key-value operations, exactly-once sessions, and the coalescing of calls into batches.

Theory of operation
-------------------
Every KV call becomes a pending ``_Call`` (its encoded command, its deadline, a future). The first call of an
event-loop turn schedules a flush at the end of that turn; the flush sends all pending calls as ``execute``
batches (serializable reads in batches of their own, which any node may answer; at most 1024 calls a batch),
each on a task owned by the client (a :class:`~raftkv.tasks.TaskSet`). A batch goes through the client's one
retry loop (:class:`~raftkv.client.router.Router`) with the latest deadline of its calls; its results (or its
error) resolve the futures.

Writes belong to the client's session, opened lazily through the log, and carry a sequence number; each also
tells the session the lowest sequence number still in flight, so that the state machine can forget the
results of older ones (dissertation §6.3). A retried batch carries the same sequence numbers, so a write is
applied at most once. An expired session is forgotten; the next write opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from raftkv import trace
from raftkv.client.admin import Admin, MemberReport
from raftkv.client.auth import AuthAdmin
from raftkv.client.recipes import Election, Lock
from raftkv.client.router import Router
from raftkv.client.watch import MAX_QUEUED_EVENTS, Watch
from raftkv.errors import InvariantViolation, RaftError, SessionExpired, TxnFailed
from raftkv.kv.commands import (
    Authenticate,
    AuthenticateResult,
    Compact,
    CompactResult,
    Compare,
    DeleteRange,
    DeleteResult,
    ErrorResult,
    KeyValue,
    LeaseGrant,
    LeaseGrantResult,
    LeaseKeepAlive,
    LeaseKeepAliveResult,
    LeaseLeases,
    LeaseLeasesResult,
    LeaseRevoke,
    LeaseRevokeResult,
    LeaseTimeToLive,
    LeaseTimeToLiveResult,
    OpenSession,
    Put,
    PutResult,
    Range,
    RangeResult,
    Request,
    Result,
    SessionResult,
    SortOrder,
    SortTarget,
    Txn,
    TxnResult,
    Write,
    decode_result,
    encode_command,
)
from raftkv.kv.errors import (
    AUTH_CODES,
    AuthError,
    Compacted,
    ErrorCode,
    FutureRevision,
    LeaseNotFound,
    LimitExceeded,
    auth_error,
)
from raftkv.kv.keys import prefix_end
from raftkv.raft.types import ConfState
from raftkv.tasks import TaskSet
from raftkv.transport.address import Address
from raftkv.transport.kjloop import kj_loop
from raftkv.transport.streams import PLAIN, StreamLayer
from raftkv.transport.tls import TLSFiles, client_context

Key = str | bytes
Op = Put | DeleteRange | Range
R = TypeVar(
    "R",
    PutResult,
    RangeResult,
    DeleteResult,
    TxnResult,
    CompactResult,
    LeaseGrantResult,
    LeaseRevokeResult,
    LeaseKeepAliveResult,
    LeaseTimeToLiveResult,
    LeaseLeasesResult,
)

MAX_BATCH: Final = 1024
"""Calls per ``execute`` RPC at most."""
MAX_BATCH_BYTES: Final = 4 << 20
"""Command bytes per ``execute`` batch at most (a single bigger command goes alone): the nodes close a client
data plane connection whose frame is over ``max(4 MiB, --max-request-bytes)`` and some slack."""


def _b(value: Key) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _end(key: bytes, range_end: Key | None, prefix: bool) -> bytes | None:
    return prefix_end(key) if prefix else (_b(range_end) if range_end is not None else None)


@dataclass(slots=True, frozen=True)
class _Ask:
    """A command sent on its own, outside the batches (``Authenticate``: the batches wait for its token)."""

    command: bytes
    serializable: bool = False


@dataclass(slots=True)
class _Call:
    command: bytes
    serializable: bool
    future: asyncio.Future[Result | None]
    deadline: float


@dataclass
class Client:
    """An async client for a raftkv cluster. Use ``async with raftkv.connect([...]) as client``."""

    endpoints: list[Address]
    cluster_id: str = ""
    timeout: float = 5.0
    """Default deadline of each call, leader changes and retries included."""
    session_ttl_ms: int = 60_000
    streams: StreamLayer = PLAIN
    """How connections are dialled (plain TCP; where TLS will plug in)."""
    router: Router = field(init=False)
    """The endpoints, their connections and the retry loop, shared with :attr:`admin` and every watch."""
    admin: Admin = field(init=False)
    """Status, ping, the generic propose, backups, membership: on the same connections."""
    user: str = ""
    """Who the client is, once authentication is on (etcdctl's ``--user``); with :attr:`password` the client
    authenticates before its first call and again whenever its token expires."""
    password: str = field(default="", repr=False)
    auth: AuthAdmin = field(init=False)
    """Users, roles and permissions (etcd's Auth API)."""
    _auth_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _pending: list[_Call] = field(default_factory=list, init=False)
    _flush_scheduled: bool = field(default=False, init=False)
    _tasks: TaskSet = field(init=False)
    _watches: weakref.WeakSet[Watch] = field(default_factory=weakref.WeakSet, init=False)
    _session_id: int = field(default=0, init=False)
    _session_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1), init=False)
    _in_flight: set[int] = field(default_factory=set, init=False)
    _closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.router = Router(self.endpoints, self.cluster_id, self.streams)
        self.admin = Admin(self.router, self.timeout)
        self.auth = AuthAdmin(lambda command, timeout: self._call(command, False, timeout))
        self._tasks = TaskSet("raftkv client")
        if self.user:
            self.router.reauthenticate = self.authenticate

    async def authenticate(self, timeout: float | None = None) -> None:
        """Exchange :attr:`user` and :attr:`password` for a token that every call then carries (the client
        does it by itself before its first call and when a node refuses an expired token). Raises
        :class:`~raftkv.errors.AuthError` for a wrong password or while authentication is off."""
        stale = self.router.token
        async with self._auth_lock:
            if self.router.token != stale:
                return  # another caller renewed it meanwhile
            try:
                token = await self.issue_token(self.user, self.password, timeout)
            except AuthError as e:
                if e.code == ErrorCode.AUTH_NOT_ENABLED:
                    self.router.authenticated = True  # etcd's client too: no token, calls go without one
                    return
                raise
            self.router.set_token(token)
            self.router.authenticated = True

    async def issue_token(self, user: str, password: str, timeout: float | None = None) -> str:
        """A token for ``user`` (what :meth:`authenticate` gets), without keeping it: for a front end that
        authenticates on behalf of its own callers (the etcd gateway). Raises
        :class:`~raftkv.errors.AuthError` for a wrong password or while authentication is off."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        ask = _Ask(encode_command(Authenticate(user, password)))
        encoded = await self.router.run(lambda conn, left: conn.execute([ask], left), deadline, authenticate=False)
        result = decode_result(encoded[0])
        if isinstance(result, ErrorResult):
            raise auth_error(result.code, result.message)
        if not isinstance(result, AuthenticateResult):
            raise InvariantViolation(f"the node answered Authenticate with {result!r}")
        return result.token

    # --- key-value operations ----------------------------------------------------------------------------

    async def put(
        self, key: Key, value: Key, *, prev_kv: bool = False, lease: int = 0, timeout: float | None = None
    ) -> PutResult:
        """Set ``key``; with ``lease``, attach it to that lease (``LeaseNotFound`` if there is none)."""
        result = await self._write(Put(_b(key), _b(value), prev_kv, lease), timeout)
        return _expect(result, PutResult)

    # --- leases (etcd's) ---------------------------------------------------------------------------------

    async def lease_grant(self, ttl: int, *, lease_id: int = 0, timeout: float | None = None) -> LeaseGrantResult:
        """A lease of ``ttl`` seconds (``lease_id`` 0: the cluster picks the id). It lives while kept alive."""
        return _expect(await self._write(LeaseGrant(ttl, lease_id), timeout), LeaseGrantResult)

    async def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> LeaseRevokeResult:
        """Revoke a lease now: its keys are deleted with it."""
        return _expect(await self._write(LeaseRevoke(lease_id), timeout), LeaseRevokeResult, lease=lease_id)

    async def lease_keep_alive_once(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Refresh the lease to a whole TTL from now (answered by the leader); its TTL in seconds."""
        result = await self._call(encode_command(LeaseKeepAlive(lease_id)), False, timeout)
        return _expect(result, LeaseKeepAliveResult, lease=lease_id).ttl_s

    async def lease_time_to_live(
        self, lease_id: int, *, keys: bool = False, timeout: float | None = None
    ) -> LeaseTimeToLiveResult:
        """Seconds left, the granted TTL, and (``keys``) the attached keys."""
        result = await self._call(encode_command(LeaseTimeToLive(lease_id, keys)), False, timeout)
        return _expect(result, LeaseTimeToLiveResult, lease=lease_id)

    async def leases(self, *, timeout: float | None = None) -> list[int]:
        """The id of every lease."""
        result = await self._call(encode_command(LeaseLeases()), False, timeout)
        return list(_expect(result, LeaseLeasesResult).ids)

    def lock(self, name: str | bytes, *, ttl: int = 10) -> Lock:
        """``async with client.lock("jobs/nightly") as held:`` a distributed lock (raftkv.client.recipes):
        ``held.token`` is its fencing token, ``held.lost`` is set if its lease is lost while held."""
        return Lock(self, name, ttl)

    def election(self, name: str | bytes, *, ttl: int = 10) -> Election:
        """A leader election (raftkv.client.recipes): ``campaign``, ``proclaim``, ``resign``, ``leader``,
        ``observe``."""
        return Election(self, name, ttl)

    def lease(self, ttl: int, *, lease_id: int = 0) -> Lease:
        """``async with client.lease(10) as lease:`` a lease kept alive in the background (every third of its
        TTL) until the block ends, then revoked. ``lease.lost`` is set if it could not be kept alive (the
        cluster unreachable for longer than its TTL, or the lease revoked): stop acting on what it guards."""
        return Lease(self, ttl, lease_id)

    async def get(
        self, key: Key, *, revision: int = 0, serializable: bool = False, timeout: float | None = None
    ) -> KeyValue | None:
        """``key``'s key-value (at ``revision`` if given), or None."""
        r = await self.range(key, revision=revision, serializable=serializable, timeout=timeout)
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
        revision: int = 0,
        sort_order: SortOrder = "none",
        sort_target: SortTarget = "key",
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
        min_create_revision: int = 0,
        max_create_revision: int = 0,
        serializable: bool = False,
        timeout: float | None = None,
    ) -> RangeResult:
        """etcd's Range: ``revision`` reads the store as it was then (``Compacted`` below the compaction
        revision, ``FutureRevision`` above the current one); ``sort_*`` and ``min_*``/``max_*`` as etcd's
        ``RangeRequest`` (applied before ``limit``)."""
        k = _b(key)
        request = Range(
            k,
            _end(k, range_end, prefix),
            limit,
            keys_only,
            count_only,
            revision,
            sort_order,
            sort_target,
            min_mod_revision,
            max_mod_revision,
            min_create_revision,
            max_create_revision,
        )
        result = await self._call(encode_command(request), serializable, timeout)
        return _expect(result, RangeResult, revision)

    async def compact(self, revision: int, *, timeout: float | None = None) -> CompactResult:
        """Compact the history at ``revision`` (etcd's Compact): reads and watches below it are refused from
        then on. ``Compacted`` if it is at or below the current compaction revision, ``FutureRevision`` above
        the store's revision."""
        return _expect(await self._write(Compact(revision), timeout), CompactResult, revision)

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
        result = await self._write(DeleteRange(k, _end(k, range_end, prefix), prev_kv), timeout)
        return _expect(result, DeleteResult)

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
        result = _expect(await self._write(Txn(list(compare), list(success), list(failure)), timeout), TxnResult)
        if require_success and not result.succeeded:
            raise TxnFailed("the transaction's comparison did not hold", result)
        return result

    async def cas(self, key: Key, expected: Key | None, value: Key, *, timeout: float | None = None) -> bool:
        """Set ``key`` to ``value`` if it currently holds ``expected`` (None: if it does not exist)."""
        k = _b(key)
        cmp = Compare(k, "version", "=", 0) if expected is None else Compare(k, "value", "=", _b(expected))
        return (await self.txn([cmp], [Put(k, _b(value))], timeout=timeout)).succeeded

    def watch(
        self,
        key: Key,
        range_end: Key | None = None,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        max_queued: int = MAX_QUEUED_EVENTS,
    ) -> Watch:
        """Events for ``key`` (or a prefix/range) from ``start_revision`` (0: from now), as an async iterator.

        At most ``max_queued`` events wait for the consumer; a consumer further behind ends the watch with
        ``WatchCancelled`` (see :mod:`raftkv.client.watch`).
        """
        if self._closed:
            raise RaftError("the client is closed")
        k = _b(key)
        w = Watch(self.router, self.timeout, k, _end(k, range_end, prefix), start_revision, max_queued)
        self._watches.add(w)
        return w

    # --- membership (docs/membership.md): shortcuts to ``admin`` ------------------------------------------

    async def members(self, timeout: float | None = None) -> list[MemberReport]:
        """The configuration as the leader sees it: each member's role, addresses, lag and reachability."""
        return await self.admin.members(timeout)

    async def add_member(
        self,
        node: int,
        peer_address: str,
        client_address: str = "",
        *,
        learner: bool = True,
        timeout: float | None = None,
    ) -> ConfState:
        """Add ``node``, as a learner by default (promote it once it has caught up)."""
        return await self.admin.add_member(node, peer_address, client_address, learner=learner, timeout=timeout)

    async def promote_member(self, node: int, timeout: float | None = None) -> ConfState:
        return await self.admin.promote_member(node, timeout)

    async def remove_member(self, node: int, timeout: float | None = None) -> ConfState:
        return await self.admin.remove_member(node, timeout)

    async def transfer_leader(self, to: int | None = None, timeout: float | None = None) -> int:
        return await self.admin.transfer_leader(to, timeout)

    def forget_leader(self) -> None:
        """Ask the endpoints in order again on the next call, instead of the leader last redirected to."""
        self.router.leader = None

    # --- sessions and writes -------------------------------------------------------------------------------

    async def _ensure_session(self, timeout: float | None) -> int:
        async with self._session_lock:
            if not self._session_id:
                result = await self._call(encode_command(OpenSession(self.session_ttl_ms)), False, timeout)
                self._session_id = _session_id(result)
            return self._session_id

    async def _write(self, op: Write, timeout: float | None) -> Result:
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
            if result.code == ErrorCode.LEASE_NOT_FOUND:
                raise LeaseNotFound(getattr(op, "lease", 0) or getattr(op, "id", 0), result.message)
            if result.code == ErrorCode.LIMIT_EXCEEDED:
                raise LimitExceeded(result.message)
            if result.code in AUTH_CODES:
                raise auth_error(result.code, result.message)
            if result.code not in (ErrorCode.COMPACTED, ErrorCode.FUTURE_REVISION):
                raise RaftError(f"{result.code}: {result.message}")
        if result is None:
            raise InvariantViolation("the node answered a write with no result")
        return result

    # --- batching ------------------------------------------------------------------------------------------------

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
        if self._closed:
            for call in calls:
                call.future.cancel()  # the client closed within the turn the calls were made in
            return
        for group in ([c for c in calls if c.serializable], [c for c in calls if not c.serializable]):
            batch: list[_Call] = []
            size = 0
            for call in group:
                if batch and (len(batch) == MAX_BATCH or size + len(call.command) > MAX_BATCH_BYTES):
                    self._tasks.spawn(self._send(batch), name="raftkv-client-batch")
                    batch, size = [], 0
                batch.append(call)
                size += len(call.command)
            if batch:
                self._tasks.spawn(self._send(batch), name="raftkv-client-batch")

    async def _send(self, calls: list[_Call]) -> None:
        deadline = max(c.deadline for c in calls)
        try:
            if trace.ON:
                trace.point("c.send", len(calls))
            encoded = await self.router.run(lambda conn, left: conn.execute(calls, left), deadline)
            results = [decode_result(data) for data in encoded]
            if trace.ON:
                trace.point("c.recv", len(calls))
        except RaftError as e:
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(e)
            return
        except asyncio.CancelledError:
            for call in calls:
                call.future.cancel()  # the client is closing: its callers must not wait forever
            raise
        for call, result in zip(calls, results, strict=True):
            if not call.future.done():
                call.future.set_result(result)

    async def aclose(self) -> None:
        """Close every watch, stop every batch in flight (their callers get CancelledError), hang up."""
        self._closed = True
        for w in list(self._watches):
            await w.aclose()
        await self._tasks.aclose()
        self.router.close()


def _expect(result: Result | None, kind: type[R], revision: int = 0, lease: int = 0) -> R:
    """The result of a call, of the kind its command produces (``revision``, ``lease``: the ones it named)."""
    if isinstance(result, kind):
        return result
    if isinstance(result, ErrorResult):
        if result.code == ErrorCode.LEASE_NOT_FOUND:
            raise LeaseNotFound(lease, result.message)
        if result.code == ErrorCode.COMPACTED:
            raise Compacted(revision, result.revision)
        if result.code == ErrorCode.FUTURE_REVISION:
            raise FutureRevision(revision, result.revision)
        if result.code == ErrorCode.LIMIT_EXCEEDED:
            raise LimitExceeded(result.message)
        if result.code in AUTH_CODES:
            raise auth_error(result.code, result.message)
        raise RaftError(f"{result.code}: {result.message}")
    raise InvariantViolation(f"a {kind.__name__} was expected, the node answered {result!r}")


class Lease:
    """A lease kept alive in the background while the ``async with`` block runs (etcd's concurrency session).

    It refreshes every third of its TTL. If a keep-alive cannot get through for longer than the TTL (the
    cluster unreachable), or the lease is gone (revoked, expired), ``lost`` is set and the keep-alive stops: the
    holder must stop acting on what the lease guards. At the end of the block the lease is revoked."""

    def __init__(self, client: Client, ttl: int, lease_id: int = 0) -> None:
        self.client = client
        self.ttl = ttl
        self.id = lease_id
        self.lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Lease:
        granted = await self.client.lease_grant(self.ttl, lease_id=self.id)
        self.id = granted.id
        self._task = asyncio.ensure_future(self._keep_alive())
        return self

    async def _keep_alive(self) -> None:
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.client.lease_keep_alive_once(self.id, timeout=max(0.5, self.ttl / 3))
                last_ok = time.monotonic()
            except LeaseNotFound:
                self.lost.set()
                return
            except RaftError:
                if time.monotonic() - last_ok >= self.ttl:
                    self.lost.set()  # the cluster may have expired it by now
                    return

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if not self.lost.is_set():
            with contextlib.suppress(RaftError):
                await self.client.lease_revoke(self.id)


def _session_id(result: Result | None) -> int:
    if isinstance(result, SessionResult):
        return result.session_id
    raise RaftError(f"could not open a session: {result}")


@contextlib.asynccontextmanager
async def connect(
    endpoints: Sequence[str | Address],
    *,
    cluster_id: str = "",
    timeout: float = 5.0,
    cacert: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
    user: str = "",
    password: str = "",
    streams: StreamLayer = PLAIN,
) -> AsyncIterator[Client]:
    """``async with raftkv.connect(["127.0.0.1:9001", ...]) as client: await client.put("k", "v")``.

    TLS (the nodes were started with ``--cert-file``): ``cacert`` is the CA that signed the nodes' certificates
    (the system's CAs if omitted but ``cert`` is given); ``cert`` and ``key``, the client's own certificate, for
    nodes started with ``--client-cert-auth``. A file that cannot be loaded raises ``ValueError`` naming it.

    ``user`` and ``password``: who the client is once authentication is on (``raftkv auth enable``); it
    authenticates before its first call and renews its token by itself.
    """
    addrs = [e if isinstance(e, Address) else Address.parse(e, "endpoint") for e in endpoints]
    if not addrs:
        raise ValueError("connect() needs at least one endpoint")
    if streams is PLAIN and (cacert or cert or key):
        files = TLSFiles(*(Path(f) if f else None for f in (cert, key, cacert)))
        streams = StreamLayer(client_tls=client_context(files))
    async with kj_loop():
        client = Client(addrs, cluster_id, timeout, streams=streams, user=user, password=password)
        try:
            yield client
        finally:
            await client.aclose()
