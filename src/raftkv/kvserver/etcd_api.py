"""The etcd v3 gateway: etcd's gRPC API (package ``etcdserverpb``) on ``--listen-etcd``, for etcdctl and the etcd
client libraries (issue 18; docs/etcd-gateway.md says what is served so far and how it maps).

Theory of operation
-------------------
A front end like ``capnp_api.py``: it decodes etcd's requests into raftkv commands and encodes the results in
etcd's messages. grpcio's asyncio server runs on a loop and thread of its own and carries each call to the
node's event loop, where it runs, in batches (:class:`_Bridge`); :func:`serve_etcd` says why. The protocol files
are ours, written from etcd's published field numbers (``etcdpb/*.proto``), and compiled when the gateway
starts (``grpc.protos_and_services``, from grpcio-tools): nothing generated is kept in the tree.

Every node serves every call, as etcd does (its clients spread over the endpoints and ignore the leader):
writes and linearizable reads go through a raftkv client of the node's own client port, whose retry loop
follows the node's redirection to the leader and whose session makes each write exactly-once; serializable
reads are answered from this node's store.

Revisions. An empty etcd store is at revision 1 and its first write makes 2; an empty raftkv store is at 0
and its first write makes 1. The gateway adds 1 to every revision it sends (headers, create and mod revisions)
and takes 1 from every revision it receives (a range's revision and its min/max filters, a compaction, a
compare on create or mod revision), so that etcd's clients see etcd's numbers.

Errors carry etcd's gRPC codes and exact messages, which the Go client matches on ("etcdserver: mvcc: required
revision has been compacted", "etcdserver: requested lease not found", ...).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import hashlib
import itertools
import logging
import math
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, Final, TypeVar

import grpc  # type: ignore[import-untyped]
import msgspec

from raftkv.backup import Backup, backup_bytes, etcd_framed
from raftkv.errors import RaftError, Unavailable
from raftkv.kv.commands import (
    Compare,
    CompareOp,
    CompareTarget,
    DeleteRange,
    DeleteResult,
    ErrorResult,
    KeyValue,
    Op,
    Permission,
    PermissionType,
    Put,
    PutResult,
    Range,
    RangeResult,
    SortOrder,
    SortTarget,
)
from raftkv.kv.errors import AuthError, Compacted, ErrorCode, FutureRevision, LeaseNotFound, LimitExceeded
from raftkv.kv.machine import hash_history
from raftkv.kv.watch import Event
from raftkv.raft.types import NO_NODE

log = logging.getLogger("raftkv.etcd")

_PROTO_DIR: Final = Path(__file__).parent / "etcdpb"
T = TypeVar("T")
SNAPSHOT_CHUNK: Final = 32 << 10
"""Bytes per Snapshot message (etcd sends 32 KiB)."""
PROGRESS_NOTIFY_INTERVAL_S: Final = 600.0
"""A watch created with progress_notify hears its progress after this long without a response (etcd's 10 min)."""
PROGRESS_SCAN_PAGES: Final = 8
"""At most this many pages of history read to compute one watch's progress (the rest waits for the next)."""
API_VERSION: Final = "3.4.0"
TOKEN_CLIENTS: Final = 64
"""Clients kept for callers' tokens (each has its own connections): the least recently used is closed."""
_TOKEN: contextvars.ContextVar[str] = contextvars.ContextVar("raftkv_etcd_token", default="")
"""The etcd ``token`` metadata of the call being served ("" if none): set by its handler, carried with it to
the node's loop (``_Bridge`` and ``_carried`` keep the context), read by ``Gateway.caller``."""
"""What ``Status`` answers as the version: the etcd API level the gateway follows (etcdctl prints it)."""

_SORT_ORDERS: Final[tuple[SortOrder, ...]] = ("none", "ascend", "descend")
_SORT_TARGETS: Final[tuple[SortTarget, ...]] = ("key", "version", "create", "mod", "value")
_COMPARE_OPS: Final[tuple[CompareOp, ...]] = ("=", ">", "<", "!=")
_COMPARE_TARGETS: Final[tuple[CompareTarget, ...]] = ("version", "create", "mod", "value", "lease")
_PERMISSION_TYPES: Final[tuple[PermissionType, ...]] = ("read", "write", "readwrite")  # authpb's READ, WRITE, ...
AUTH_METHODS: Final = (
    "AuthEnable", "AuthDisable", "AuthStatus", "UserAdd", "UserGet", "UserList", "UserDelete",
    "UserChangePassword", "UserGrantRole", "UserRevokeRole", "RoleAdd", "RoleGet", "RoleList", "RoleDelete",
    "RoleGrantPermission", "RoleRevokePermission",
)  # fmt: skip
"""etcd's user and role management calls, served by ``Gateway.auth_call``."""


def load_protos() -> tuple[Any, Any]:
    """(messages, services) of ``etcdpb/rpc.proto``, compiled now (grpcio-tools)."""
    sys.path.insert(0, str(_PROTO_DIR))  # protos_and_services finds the file and its imports on sys.path
    try:
        compiled: tuple[Any, Any] = grpc.protos_and_services("rpc.proto")
        return compiled
    finally:
        sys.path.remove(str(_PROTO_DIR))


def cluster_number(cluster_id: str) -> int:
    """etcd's cluster id is a number: raftkv's is a name; this is its stable 64-bit hash."""
    return int.from_bytes(hashlib.sha256(cluster_id.encode()).digest()[:8], "big")


def _in(revision: int) -> int:
    """A revision an etcd client sent, as raftkv's (0 keeps its meaning: "current", "no bound")."""
    return max(0, revision - 1) if revision > 0 else 0


def _out(revision: int) -> int:
    return revision + 1


class _Progress:
    """How far one watch of the stream has delivered: every event of its range below ``last`` (raftkv's
    revisions), and the first ``count`` events at ``last``; ``start`` is the first revision it covers."""

    __slots__ = ("count", "last", "sent_at", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.last = 0
        self.count = 0
        self.sent_at = 0.0

    def delivered(self, revision: int) -> None:
        if revision == self.last:
            self.count += 1
        else:
            self.last, self.count = revision, 1


def _cancel_with(task: asyncio.Task[Any], _done: asyncio.Future[Any]) -> None:
    task.cancel()


class Unsupported(ValueError):
    """A field the gateway does not serve yet: the call fails with INVALID_ARGUMENT naming it."""


class Gateway:
    """The encoding both ways, and the calls: ``local`` answers serializable reads from this node
    (``KVService.execute``), ``client`` is a raftkv client of the node's own client port (the rest)."""

    def __init__(self, node: Any, local: Any, client: Any, pb: Any) -> None:
        self.node = node
        self.local = local
        self.client = client
        """The anonymous client (no token): every call that carries none."""
        self.pb = pb
        self.cluster_id = cluster_number(node.config.cluster_id)
        self._by_token: OrderedDict[str, Any] = OrderedDict()
        """A client per etcd token (a raftkv token: the node checks it), the most recently used last."""
        self._closing: set[asyncio.Future[None]] = set()

    @property
    def caller(self) -> Any:
        """The client of the call being served: the one carrying its token (``_TOKEN``), or the anonymous one.
        Runs on the node's loop."""
        token = _TOKEN.get()
        if not token:
            if self.local.kv.auth.enabled:
                # Refused here, not by the node: the gateway's own client may present this node's certificate,
                # whose common name would otherwise be taken as the caller's user (--client-cert-auth).
                raise AuthError(ErrorCode.USER_EMPTY, "user name is empty: authenticate first")
            return self.client
        client = self._by_token.get(token)
        if client is None:
            client = type(self.client)(
                self.client.endpoints, self.client.cluster_id, timeout=self.client.timeout, streams=self.client.streams
            )
            client.router.set_token(token)
            client.router.authenticated = True  # no password here: an expired token goes back to the caller
            self._by_token[token] = client
            while len(self._by_token) > TOKEN_CLIENTS:
                _old, evicted = self._by_token.popitem(last=False)
                closing = asyncio.ensure_future(evicted.aclose())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        else:
            self._by_token.move_to_end(token)
        return client

    async def aclose(self) -> None:
        """Close the callers' clients (the anonymous one is its owner's)."""
        clients, self._by_token = list(self._by_token.values()), OrderedDict()
        for client in clients:
            await client.aclose()
        await asyncio.gather(*self._closing, return_exceptions=True)

    # --- users and roles (etcd's Auth service): raftkv's own, through the caller's client ---

    def _done(self, kind: str) -> Any:
        return getattr(self.pb, kind)(header=self.header(self.local.kv.revision))

    def permission_out(self, p: Permission) -> Any:
        return self.pb.auth__pb2.Permission(
            permType=_PERMISSION_TYPES.index(p.type), key=p.key, range_end=p.range_end or b""
        )

    async def auth_call(self, method: str, request: Any) -> Any:
        """One of etcd's user and role management calls, as the caller (only root may, while auth is on)."""
        auth = self.caller.auth
        if method == "AuthEnable":
            await auth.enable()
        elif method == "AuthDisable":
            await auth.disable()
        elif method == "AuthStatus":
            st = await auth.status()
            return self.pb.AuthStatusResponse(
                header=self.header(self.local.kv.revision), enabled=st.enabled, authRevision=st.auth_revision
            )
        elif method == "UserAdd":
            if request.hashedPassword:
                raise Unsupported("a hashed password: give the password (raftkv hashes it on the node)")
            await auth.user_add(str(request.name), str(request.password), no_password=request.options.no_password)
        elif method == "UserGet":
            user = await auth.user_get(str(request.name))
            return self.pb.AuthUserGetResponse(header=self.header(self.local.kv.revision), roles=list(user.roles))
        elif method == "UserList":
            names = await auth.user_list()
            return self.pb.AuthUserListResponse(header=self.header(self.local.kv.revision), users=names)
        elif method == "UserDelete":
            await auth.user_delete(str(request.name))
        elif method == "UserChangePassword":
            if request.hashedPassword:
                raise Unsupported("a hashed password: give the password (raftkv hashes it on the node)")
            await auth.user_change_password(str(request.name), str(request.password))
        elif method == "UserGrantRole":
            await auth.user_grant_role(str(request.user), str(request.role))
        elif method == "UserRevokeRole":
            await auth.user_revoke_role(str(request.name), str(request.role))
        elif method == "RoleAdd":
            await auth.role_add(str(request.name))
        elif method == "RoleGet":
            role = await auth.role_get(str(request.role))
            perms = [self.permission_out(p) for p in role.permissions]
            return self.pb.AuthRoleGetResponse(header=self.header(self.local.kv.revision), perm=perms)
        elif method == "RoleList":
            names = await auth.role_list()
            return self.pb.AuthRoleListResponse(header=self.header(self.local.kv.revision), roles=names)
        elif method == "RoleDelete":
            await auth.role_delete(str(request.role))
        elif method == "RoleGrantPermission":
            perm = request.perm
            kind = _PERMISSION_TYPES[int(perm.permType)]
            await auth.role_grant_permission(str(request.name), kind, bytes(perm.key), bytes(perm.range_end) or None)
        elif method == "RoleRevokePermission":
            await auth.role_revoke_permission(str(request.role), bytes(request.key), bytes(request.range_end) or None)
        else:  # pragma: no cover -- the servicer only routes the methods above
            raise Unsupported(f"Auth.{method}")
        return self._done(f"Auth{method}Response" if not method.startswith("Auth") else f"{method}Response")

    async def authenticate(self, request: Any) -> Any:
        """etcd's Authenticate: a raftkv token for the user, which the caller then sends as etcd's ``token``."""
        token = await self.client.issue_token(str(request.name), str(request.password))
        return self.pb.AuthenticateResponse(header=self.header(self.local.kv.revision), token=token)

    # --- etcd -> raftkv ---------------------------------------------------------------------------------

    @staticmethod
    def range_of(r: Any) -> Range:
        return Range(
            bytes(r.key),
            bytes(r.range_end) or None,
            int(r.limit),
            bool(r.keys_only),
            bool(r.count_only),
            _in(int(r.revision)),
            _SORT_ORDERS[int(r.sort_order)],
            _SORT_TARGETS[int(r.sort_target)],
            _in(int(r.min_mod_revision)),
            _in(int(r.max_mod_revision)),
            _in(int(r.min_create_revision)),
            _in(int(r.max_create_revision)),
        )

    @staticmethod
    def put_of(r: Any) -> Put:
        if r.ignore_value or r.ignore_lease:
            raise Unsupported("ignore_value and ignore_lease are not served by raftkv's gateway yet")
        return Put(bytes(r.key), bytes(r.value), bool(r.prev_kv), int(r.lease))

    @staticmethod
    def delete_of(r: Any) -> DeleteRange:
        return DeleteRange(bytes(r.key), bytes(r.range_end) or None, bool(r.prev_kv))

    def op_of(self, op: Any) -> Op:
        kind = op.WhichOneof("request")
        if kind == "request_range":
            return self.range_of(op.request_range)
        if kind == "request_put":
            return self.put_of(op.request_put)
        if kind == "request_delete_range":
            return self.delete_of(op.request_delete_range)
        raise Unsupported("a txn inside a txn is not served by raftkv's gateway yet")

    @staticmethod
    def compare_of(c: Any) -> Compare:
        if c.range_end:
            raise Unsupported("a compare over a range (range_end) is not served by raftkv's gateway yet")
        target = _COMPARE_TARGETS[int(c.target)]
        value: bytes | int
        if target == "value":
            value = bytes(c.value)
        elif target == "create":
            value = _in(int(c.create_revision)) if c.create_revision else 0
        elif target == "mod":
            value = _in(int(c.mod_revision)) if c.mod_revision else 0
        elif target == "version":
            value = int(c.version)
        else:
            value = int(c.lease)
        return Compare(bytes(c.key), target, _COMPARE_OPS[int(c.result)], value)

    # --- raftkv -> etcd ---------------------------------------------------------------------------------

    def header(self, revision: int) -> Any:
        return self.pb.ResponseHeader(
            cluster_id=self.cluster_id, member_id=int(self.node.id), revision=_out(revision), raft_term=self.node.term
        )

    def kv_out(self, kv: KeyValue) -> Any:
        return self.pb.kv__pb2.KeyValue(
            key=kv.key,
            create_revision=_out(kv.create_revision) if kv.create_revision else 0,  # 0 in a delete event
            mod_revision=_out(kv.mod_revision),
            version=kv.version,
            value=kv.value,
            lease=kv.lease,
        )

    def range_out(self, r: RangeResult) -> Any:
        return self.pb.RangeResponse(
            header=self.header(r.revision), kvs=[self.kv_out(kv) for kv in r.kvs], more=r.more, count=r.count
        )

    def put_out(self, r: PutResult) -> Any:
        prev = self.kv_out(r.prev_kv) if r.prev_kv is not None else None
        return self.pb.PutResponse(header=self.header(r.revision), prev_kv=prev)

    def delete_out(self, r: DeleteResult) -> Any:
        return self.pb.DeleteRangeResponse(
            header=self.header(r.revision), deleted=r.deleted, prev_kvs=[self.kv_out(kv) for kv in r.prev_kvs]
        )

    # --- the calls ----------------------------------------------------------------------------------------

    async def range(self, request: Any) -> Any:
        rng = self.range_of(request)
        if int(request.revision) == 1:
            # etcd's revision 1 is the empty store, raftkv's 0, which a Range cannot name (0 is "now").
            kv = self.local.kv
            if kv.compact_revision > 0:
                raise Compacted(0, kv.compact_revision)
            return self.pb.RangeResponse(header=self.header(kv.revision))
        if int(request.max_mod_revision) == 1 or int(request.max_create_revision) == 1:
            # No key was written at or before etcd's revision 1; raftkv's bound 0 would mean "no bound".
            rng = msgspec.structs.replace(rng, count_only=True)
        if request.serializable and not _TOKEN.get():  # answered here, as nobody (refused while auth is on)
            (result,) = await self.local.execute([(rng, True)], 5.0)
            if isinstance(result, ErrorResult):
                raise _error_of(result, rng.revision)
            assert isinstance(result, RangeResult)
        else:  # the caller's client; a serializable read carries its token too
            result = await self.caller.range(
                rng.key,
                rng.range_end,
                limit=rng.limit,
                keys_only=rng.keys_only,
                count_only=rng.count_only,
                revision=rng.revision,
                sort_order=rng.sort_order,
                sort_target=rng.sort_target,
                min_mod_revision=rng.min_mod_revision,
                max_mod_revision=rng.max_mod_revision,
                min_create_revision=rng.min_create_revision,
                max_create_revision=rng.max_create_revision,
                serializable=bool(request.serializable),
            )
        return self.range_out(result)

    async def put(self, request: Any) -> Any:
        op = self.put_of(request)
        return self.put_out(await self.caller.put(op.key, op.value, prev_kv=op.prev_kv, lease=op.lease))

    async def delete_range(self, request: Any) -> Any:
        op = self.delete_of(request)
        return self.delete_out(await self.caller.delete(op.key, op.range_end, prev_kv=op.prev_kv))

    async def txn(self, request: Any) -> Any:
        compares = [self.compare_of(c) for c in request.compare]
        success = [self.op_of(o) for o in request.success]
        failure = [self.op_of(o) for o in request.failure]
        r = await self.caller.txn(compares, success, failure)
        responses = []
        for one in r.responses:
            if isinstance(one, PutResult):
                responses.append(self.pb.ResponseOp(response_put=self.put_out(one)))
            elif isinstance(one, DeleteResult):
                responses.append(self.pb.ResponseOp(response_delete_range=self.delete_out(one)))
            else:
                responses.append(self.pb.ResponseOp(response_range=self.range_out(one)))
        return self.pb.TxnResponse(header=self.header(r.revision), succeeded=r.succeeded, responses=responses)

    async def compact(self, request: Any) -> Any:
        if int(request.revision) <= 1:
            # etcd's revision 1 is the empty store: compacting there removes nothing (raftkv has no revision 0).
            kv = self.local.kv
            if kv.compact_revision > 0:
                raise Compacted(0, kv.compact_revision)
            return self.pb.CompactionResponse(header=self.header(kv.revision))
        r = await self.caller.compact(_in(int(request.revision)))
        return self.pb.CompactionResponse(header=self.header(r.revision))

    # --- watches (etcd's Watch service: one bidirectional stream carries many watches) ---

    def event_out(self, e: Event, prev_kv: bool) -> Any:
        prev = self.kv_out(e.prev_kv) if prev_kv and e.prev_kv is not None else None
        return self.pb.kv__pb2.Event(type=int(e.type), kv=self.kv_out(e.kv), prev_kv=prev)

    async def watch_stream(self, requests: Any) -> AsyncIterator[Any]:
        """etcd's Watch: creates and cancels arrive on ``requests``; answers and events leave as yielded."""
        out: asyncio.Queue[Any] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        pumps: dict[int, tuple[asyncio.Task[None], Any]] = {}
        progresses: dict[int, tuple[bytes, bytes | None, _Progress]] = {}
        ids = itertools.count()

        async def pump(watch_id: int, watch: Any, create: Any, progress: _Progress) -> None:
            skip = {int(f) for f in create.filters}  # NOPUT = 0 = PUT's type, NODELETE = 1 = DELETE's
            try:
                async for event in watch:
                    progress.delivered(event.revision)  # a filtered event counts as delivered too
                    if int(event.type) in skip:
                        continue
                    ev = self.event_out(event, bool(create.prev_kv))
                    header = self.header(max(self.local.kv.revision, event.revision))
                    progress.sent_at = loop.time()
                    await out.put(self.pb.WatchResponse(header=header, watch_id=watch_id, events=[ev]))
            except Compacted as e:
                await out.put(
                    self.pb.WatchResponse(
                        header=self.header(self.local.kv.revision),
                        watch_id=watch_id,
                        canceled=True,
                        compact_revision=_out(e.oldest_revision),
                        cancel_reason="etcdserver: mvcc: required revision has been compacted",
                    )
                )
            except RaftError as e:  # WatchCancelled (too slow, a permission revoked), Unavailable
                await out.put(
                    self.pb.WatchResponse(
                        header=self.header(self.local.kv.revision),
                        watch_id=watch_id,
                        canceled=True,
                        cancel_reason=str(e),
                    )
                )

        async def notify(watch_id: int, create: Any, progress: _Progress) -> None:
            """progress_notify: after a quiet interval, the revision up to which the watch has everything."""
            key, range_end = bytes(create.key), bytes(create.range_end) or None
            while True:
                quiet = loop.time() - progress.sent_at
                if quiet < PROGRESS_NOTIFY_INTERVAL_S:
                    await asyncio.sleep(PROGRESS_NOTIFY_INTERVAL_S - quiet)
                    continue
                progress.sent_at = loop.time()
                revision = self.progress_revision(key, range_end, progress)
                await out.put(self.pb.WatchResponse(header=self.header(revision), watch_id=watch_id))

        async def read() -> None:
            async for request in requests:
                kind = request.WhichOneof("request_union")
                if kind == "create_request":
                    create = request.create_request
                    watch_id = next(ids)
                    start = int(create.start_revision)
                    # etcd's revision s is raftkv's s - 1; etcd's 1 (the empty store) has no events: from 1 on.
                    # "From now" is made explicit (the revision after this node's), so that progress is known.
                    first = max(1, start - 1) if start > 0 else self.local.kv.revision + 1
                    watch = self.caller.watch(bytes(create.key), bytes(create.range_end) or None, start_revision=first)
                    progress = _Progress(first)
                    progress.sent_at = loop.time()
                    header = self.header(self.local.kv.revision)
                    await out.put(self.pb.WatchResponse(header=header, watch_id=watch_id, created=True))
                    task = asyncio.ensure_future(pump(watch_id, watch, create, progress))
                    pumps[watch_id] = (task, watch)
                    progresses[watch_id] = (bytes(create.key), bytes(create.range_end) or None, progress)
                    if create.progress_notify:
                        notifier = asyncio.ensure_future(notify(watch_id, create, progress))
                        task.add_done_callback(functools.partial(_cancel_with, notifier))
                elif kind == "cancel_request":
                    watch_id = int(request.cancel_request.watch_id)
                    found = pumps.pop(watch_id, None)
                    progresses.pop(watch_id, None)
                    if found is not None:
                        found[0].cancel()
                        await found[1].aclose()
                    header = self.header(self.local.kv.revision)
                    await out.put(self.pb.WatchResponse(header=header, watch_id=watch_id, canceled=True))
                elif kind == "progress_request":
                    # One answer for the stream: the revision every watch on it has reached.
                    revision = min(
                        (self.progress_revision(k, e, p) for k, e, p in progresses.values()),
                        default=self.local.kv.revision,
                    )
                    await out.put(self.pb.WatchResponse(header=self.header(revision), watch_id=-1))

        reader = asyncio.ensure_future(read())
        try:
            while True:
                getting = asyncio.ensure_future(out.get())
                await asyncio.wait({getting, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getting.done():
                    yield getting.result()
                    continue
                getting.cancel()
                if reader.exception() is not None:
                    raise reader.exception()  # type: ignore[misc]
                if not pumps:
                    return  # the client closed its side and holds no watch
                await asyncio.gather(*(t for t, _w in pumps.values()), return_exceptions=True)
                while not out.empty():
                    yield out.get_nowait()
                return
        finally:
            reader.cancel()
            for task, watch in pumps.values():
                task.cancel()
                await watch.aclose()

    def progress_revision(self, key: bytes, range_end: bytes | None, progress: _Progress) -> int:
        """The highest revision (raftkv's) up to which a watch of the range has been given every event: this
        node's store revision, unless its durable history holds an event of the range the watch has not
        delivered yet (then the revision before that event). Reads at most ``PROGRESS_SCAN_PAGES`` pages of
        history from the watch's last event; an answer below the truth is safe (a progress notification says
        "you have everything up to here"), one above it never happens."""
        kv = self.local.kv
        target: int = kv.revision
        position: int = progress.last or progress.start
        same = 0
        for _page in range(PROGRESS_SCAN_PAGES):
            if position > target:
                return target
            try:
                events, position = kv.history_events(key, range_end, position)
            except Compacted:
                return max(progress.last, progress.start) - 1
            for e in events:
                revision: int = e.revision
                if revision > target:
                    return target
                if revision == progress.last:
                    same += 1
                    if same <= progress.count:
                        continue
                return revision - 1  # not delivered yet
        return min(target, position - 1)

    # --- leases (etcd's Lease service) ---

    async def lease_grant(self, request: Any) -> Any:
        r = await self.caller.lease_grant(int(request.TTL), lease_id=int(request.ID))
        return self.pb.LeaseGrantResponse(header=self.header(r.revision), ID=r.id, TTL=r.ttl_s)

    async def lease_revoke(self, request: Any) -> Any:
        r = await self.caller.lease_revoke(int(request.ID))
        return self.pb.LeaseRevokeResponse(header=self.header(r.revision))

    async def lease_keep_alive(self, request: Any) -> Any:
        try:
            ttl = await self.caller.lease_keep_alive_once(int(request.ID))
        except LeaseNotFound:
            ttl = 0  # etcd answers a keep-alive of a lease that is gone with TTL 0 (-1 in etcdctl's words)
        return self.pb.LeaseKeepAliveResponse(header=self.header(self.local.kv.revision), ID=request.ID, TTL=ttl)

    async def lease_time_to_live(self, request: Any) -> Any:
        header = self.header(self.local.kv.revision)
        try:
            r = await self.caller.lease_time_to_live(int(request.ID), keys=bool(request.keys))
        except LeaseNotFound:  # etcd: TTL -1 for a lease that does not exist, not an error
            return self.pb.LeaseTimeToLiveResponse(header=header, ID=request.ID, TTL=-1)
        return self.pb.LeaseTimeToLiveResponse(
            header=header, ID=r.id, TTL=r.ttl_s, grantedTTL=r.granted_ttl_s, keys=list(r.keys)
        )

    async def lease_leases(self, _request: Any) -> Any:
        ids = await self.caller.leases()
        return self.pb.LeaseLeasesResponse(
            header=self.header(self.local.kv.revision), leases=[self.pb.LeaseStatus(ID=i) for i in ids]
        )

    # --- members (etcd's Cluster service) ---

    @staticmethod
    def _url(address: str) -> list[str]:
        return [f"http://{address}"] if address else []

    async def members_out(self) -> list[Any]:
        """etcd's members. Their clientURLs are their etcd gateways (what etcd's clients dial, as learned in the
        peer handshake), empty for a member that serves none: its raftkv client port speaks another protocol."""
        return [
            self.pb.Member(
                ID=m.id,
                name=f"node-{m.id}",
                peerURLs=self._url(m.peer_address),
                clientURLs=[url] if (url := self.node.etcd_url_of(m.id)) else [],
                isLearner=m.learner,
            )
            for m in await self.caller.members()
        ]

    async def member_list(self, _request: Any) -> Any:
        members = await self.members_out()
        return self.pb.MemberListResponse(header=self.header(self.local.kv.revision), members=members)

    async def member_add(self, request: Any) -> Any:
        """etcd picks the new member's id; here it is one above the highest (start the node with that --id)."""
        if len(request.peerURLs) != 1:
            raise Unsupported("a member has exactly one peer URL here")
        peer = str(request.peerURLs[0]).split("://", 1)[-1]
        new_id = max((m.id for m in await self.caller.members()), default=0) + 1
        await self.caller.add_member(new_id, peer, learner=bool(request.isLearner))
        members = await self.members_out()
        added = next(m for m in members if new_id == m.ID)
        return self.pb.MemberAddResponse(header=self.header(self.local.kv.revision), member=added, members=members)

    async def member_remove(self, request: Any) -> Any:
        await self.caller.remove_member(int(request.ID))
        members = await self.members_out()
        return self.pb.MemberRemoveResponse(header=self.header(self.local.kv.revision), members=members)

    async def member_promote(self, request: Any) -> Any:
        await self.caller.promote_member(int(request.ID))
        members = await self.members_out()
        return self.pb.MemberPromoteResponse(header=self.header(self.local.kv.revision), members=members)

    # --- the rest of Maintenance ---

    async def alarm(self, request: Any) -> Any:
        """raftkv raises no alarm in the store (a full disk stops the node, see docs/operations.md): the list is
        empty, and activating one is refused."""
        if int(request.action) != 0:
            raise Unsupported("raftkv keeps no alarms to activate or deactivate")
        return self.pb.AlarmResponse(header=self.header(self.local.kv.revision))

    async def move_leader(self, request: Any) -> Any:
        await self.caller.transfer_leader(int(request.targetID))
        return self.pb.MoveLeaderResponse(header=self.header(self.local.kv.revision))

    async def snapshot(self) -> AsyncIterator[Any]:
        """A ``raftkv snapshot save`` backup file (``raftkv snapshot restore`` reads it), in etcd's framing:
        chunks with the bytes remaining, and the SHA-256 of the whole as the last 32 bytes (etcdctl checks it)."""
        meta, cluster_id, image = await self.caller.admin.download_backup(30.0)
        data = etcd_framed(backup_bytes(Backup(meta, cluster_id, image)))
        header = self.header(self.local.kv.revision)
        for start in range(0, len(data), SNAPSHOT_CHUNK):
            blob = data[start : start + SNAPSHOT_CHUNK]
            remaining = len(data) - start - len(blob)
            yield self.pb.SnapshotResponse(header=header, remaining_bytes=remaining, blob=blob)

    async def hash_kv(self, request: Any) -> Any:
        """etcd's HashKV, answered by this node from its own store: the CRC-32C of the retained history up to
        the revision (``hash_history``), equal on members that applied the same log. compact_revision is -1
        before any compaction, as etcd's."""
        revision = int(request.revision)
        kv = self.local.kv
        with kv.backend.read() as view:
            crc, _upto = hash_history(view, _in(revision)) if revision != 1 else (0, 0)  # etcd's 1: nothing yet
            compact = view.meta().compact_revision
        return self.pb.HashKVResponse(
            header=self.header(kv.revision), hash=crc, compact_revision=_out(compact) if compact else -1
        )

    async def hash(self, _request: Any) -> Any:
        """etcd's Hash (of its whole database): here the same hash as HashKV of everything."""
        kv = self.local.kv
        with kv.backend.read() as view:
            crc, _upto = hash_history(view)
        return self.pb.HashResponse(header=self.header(kv.revision), hash=crc)

    async def defragment(self) -> Any:
        return self.pb.DefragmentResponse(header=self.header(self.local.kv.revision))

    async def status(self, _request: Any) -> Any:
        s = self.node.status()
        return self.pb.StatusResponse(
            header=self.header(self.local.kv.revision),
            version=API_VERSION,
            leader=int(s.leader or 0),
            raftIndex=int(s.commit),
            raftTerm=int(s.term),
            raftAppliedIndex=int(s.applied),
        )


def _error_of(result: ErrorResult, revision: int) -> Exception:
    if result.code == ErrorCode.COMPACTED:
        return Compacted(revision, result.revision)
    if result.code == ErrorCode.FUTURE_REVISION:
        return FutureRevision(revision, result.revision)
    return RaftError(f"{result.code}: {result.message}")


_AUTH_STATUS: Final[dict[ErrorCode, tuple[Any, str]]] = {
    ErrorCode.PERMISSION_DENIED: (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied"),
    ErrorCode.USER_EMPTY: (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: user name is empty"),
    ErrorCode.AUTH_FAILED: (
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: authentication failed, invalid user ID or password",
    ),
    ErrorCode.INVALID_TOKEN: (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token"),
    ErrorCode.AUTH_NOT_ENABLED: (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: authentication is not enabled"),
    ErrorCode.USER_EXISTS: (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: user name already exists"),
    ErrorCode.USER_NOT_FOUND: (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: user name not found"),
    ErrorCode.ROLE_EXISTS: (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: role name already exists"),
    ErrorCode.ROLE_NOT_FOUND: (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: role name not found"),
    ErrorCode.ROLE_NOT_GRANTED: (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: role is not granted to the user"),
    ErrorCode.PERMISSION_NOT_GRANTED: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "etcdserver: permission is not granted to the role",
    ),
    ErrorCode.ROOT_USER_NOT_EXIST: (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: root user does not exist"),
    ErrorCode.ROOT_ROLE_NOT_EXIST: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "etcdserver: root user does not have root role",
    ),
    ErrorCode.INVALID_AUTH_MGMT: (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: invalid auth management"),
}
"""etcd's codes and words for raftkv's auth refusals (etcd's clients re-authenticate on "invalid auth token")."""


def _status_of(error: BaseException) -> tuple[Any, str] | None:
    """etcd's gRPC code and exact message for a raftkv error (None: not one of ours, let it through)."""
    if isinstance(error, Compacted):
        return grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"
    if isinstance(error, FutureRevision):
        return grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"
    if isinstance(error, LeaseNotFound):
        return grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"
    if isinstance(error, LimitExceeded):
        too_many = "--max-txn-ops" in str(error)
        message = "etcdserver: too many operations in txn request" if too_many else "etcdserver: request is too large"
        return grpc.StatusCode.INVALID_ARGUMENT, message
    if isinstance(error, AuthError):
        status: tuple[Any, str] = _AUTH_STATUS.get(
            error.code, (grpc.StatusCode.INVALID_ARGUMENT, f"etcdserver: {error}")
        )
        return status
    if isinstance(error, (Unavailable, TimeoutError)):
        return grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"
    if isinstance(error, (RaftError, ValueError)):  # CommandError (an empty key...) and Unsupported are ValueErrors
        return grpc.StatusCode.INVALID_ARGUMENT, f"etcdserver: {error}"
    return None


class _Bridge:
    """Carries the gateway's calls from its own loop (the gRPC server's, in its thread) to the node's loop and
    their answers back, a batch per hop each way: one wake-up of the other loop carries every call made since
    the last one, so 64 calls in flight cost a few hops, not 128 (each ``call_soon_threadsafe`` writes to the
    loop's wake-up pipe)."""

    def __init__(self, node_loop: asyncio.AbstractEventLoop, gateway_loop: asyncio.AbstractEventLoop) -> None:
        self.node_loop = node_loop
        self.gateway_loop = gateway_loop
        self._lock = threading.Lock()  # guards both lists: each is filled in one thread and emptied in the other
        self._calls: list[tuple[Coroutine[Any, Any, Any], asyncio.Future[Any], contextvars.Context]] = []
        self._answers: list[tuple[asyncio.Future[Any], asyncio.Task[Any]]] = []

    async def __call__(self, call: Coroutine[Any, Any, T]) -> T:
        """``call``'s result, run on the node's loop (awaited on the gateway's)."""
        answer: asyncio.Future[T] = self.gateway_loop.create_future()
        with self._lock:
            self._calls.append((call, answer, contextvars.copy_context()))  # the call's token goes with it
            first = len(self._calls) == 1
        if first:
            self.node_loop.call_soon_threadsafe(self._start)
        return await answer

    def _start(self) -> None:  # on the node's loop
        with self._lock:
            calls, self._calls = self._calls, []
        for call, answer, context in calls:
            task = self.node_loop.create_task(call, context=context)
            task.add_done_callback(functools.partial(self._done, answer))

    def _done(self, answer: asyncio.Future[Any], task: asyncio.Task[Any]) -> None:  # on the node's loop
        with self._lock:
            self._answers.append((answer, task))
            first = len(self._answers) == 1
        if first and not self.gateway_loop.is_closed():
            self.gateway_loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:  # on the gateway's loop
        with self._lock:
            answers, self._answers = self._answers, []
        for answer, task in answers:
            if answer.done():  # the caller gave up (its client hung up)
                continue
            if task.cancelled():
                answer.cancel()
            elif (error := task.exception()) is not None:
                answer.set_exception(error)
            else:
                answer.set_result(task.result())


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def _carried(items: AsyncIterable[T], source: asyncio.AbstractEventLoop) -> AsyncIterator[T]:
    """The items of ``items``, an async iterable that must run on the loop ``source``, as an async iterator on
    the running loop, item by item. When the consumer stops (its call ended), the producer is cancelled and
    closed on its own loop: no task and no watch stay behind."""
    here = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    end = object()

    async def pump() -> None:  # on ``source``
        try:
            async for item in items:
                here.call_soon_threadsafe(queue.put_nowait, item)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # carried to the consumer, which raises it
            here.call_soon_threadsafe(queue.put_nowait, _Failed(e))
        else:
            here.call_soon_threadsafe(queue.put_nowait, end)
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()

    pumping = asyncio.run_coroutine_threadsafe(pump(), source)
    try:
        while (item := await queue.get()) is not end:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        pumping.cancel()


NO_LEADER_CHECKS: Final = 3
NO_LEADER_MIN_S: Final = 3.0
"""A stream that asked for a leader (``hasleader`` metadata) ends when its node has had none at this many
election timeouts in a row, and for at least ``NO_LEADER_MIN_S`` (etcd's monitor: 3 of its 1 s timeouts).
Ending a stream costs its client a new one, and etcd's client ends a watch on "no leader" rather than moving
it: so not for the few hundred milliseconds of an election (raftkv's election timeout is 150 ms)."""


def _credentials(config: Any) -> Any:
    """The gateway port's TLS, from the client port's flags (etcd serves gRPC on its client URLs with them):
    ``--cert-file``/``--key-file``, and with ``--client-cert-auth`` a client certificate signed by
    ``--trusted-ca-file`` required. None: plaintext. The files were checked when the client port started."""
    if config.cert_file is None:
        return None
    ca = Path(config.trusted_ca_file).read_bytes() if config.trusted_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(Path(config.key_file).read_bytes(), Path(config.cert_file).read_bytes())],
        root_certificates=ca if config.client_cert_auth else None,
        require_client_auth=bool(config.client_cert_auth),
    )


def _token_of(context: Any) -> str:
    """The call's etcd ``token`` metadata ("" if none)."""
    return next((str(v) for k, v in context.invocation_metadata() or () if k == "token"), "")


def _wants_leader(context: Any) -> bool:
    """Whether the call carries etcd's ``hasleader: true`` metadata (``clientv3.WithRequireLeader``)."""
    return any(k == "hasleader" and v == "true" for k, v in context.invocation_metadata() or ())


async def _while_led(items: AsyncIterator[T], node: Any) -> AsyncIterator[T]:
    """The items of ``items``, until the node has had no leader for a while (``NO_LEADER_CHECKS``,
    ``NO_LEADER_MIN_S``); then ``Unavailable``: a partitioned member's watch must not go quiet forever."""
    period = node.config.tick_ms * node.config.election_ticks / 1000
    checks = max(NO_LEADER_CHECKS, math.ceil(NO_LEADER_MIN_S / period))

    async def leaderless() -> None:
        missed = 0
        while missed < checks:
            await asyncio.sleep(period)
            missed = missed + 1 if node.leader_id == NO_NODE else 0

    lost = asyncio.ensure_future(leaderless())
    following: asyncio.Future[T] | None = None
    try:
        while True:
            following = asyncio.ensure_future(anext(items))
            await asyncio.wait({following, lost}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                raise Unavailable("the node has no leader")
            try:
                item = following.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        lost.cancel()
        if following is not None and not following.done():  # the leader lost, or the call ended meanwhile
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


async def _led_within(node: Any, seconds: float) -> bool:
    """Whether the node knows a leader, now or within ``seconds`` (a call or a stream that requires one, made
    during an election, waits for its end rather than failing: etcd refuses it at once, and its client then
    ends a watch instead of resuming it)."""
    deadline = time.monotonic() + seconds
    while node.leader_id == NO_NODE:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class GatewayServer:
    """The gateway's gRPC server, on its own thread and event loop, and how to stop it from the node's loop."""

    def __init__(self, thread: threading.Thread, loop: asyncio.AbstractEventLoop, server: Any, gw: Gateway) -> None:
        self.thread = thread
        self.loop = loop
        self.server = server
        self.gateway = gw

    async def stop(self, grace: float) -> None:
        """Stop the server (calls in flight get ``grace`` seconds), then its loop and thread."""
        if self.loop.is_closed():
            return
        stopping = asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop)
        try:
            await asyncio.wait_for(asyncio.wrap_future(stopping), grace + 5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            await asyncio.to_thread(self.thread.join, 5)
            await self.gateway.aclose()


async def serve_etcd(address: Any, node: Any, local: Any, client: Any) -> GatewayServer:
    """Start the gateway's gRPC server on ``address``; the caller stops it (``await server.stop(grace)``).

    grpcio's asyncio server on a loop of its own, in a thread of its own (the "gateway loop"), and every call's
    work (decode, the raftkv call, encode) on the node's loop, carried there and back in batches
    (:class:`_Bridge`). Not on the node's loop itself: grpcio's asyncio server takes one new call per turn of
    the loop it runs on, and a busy node's loop turns every millisecond or two, so 64 calls in flight reached
    the log one at a time. Not grpcio's threaded server either: a thread per call in flight, each woken through
    the GIL, cost ~1 ms of CPU per put (docs/etcd-gateway.md)."""
    node_loop = asyncio.get_running_loop()
    ready: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, Any, Gateway]] = concurrent.futures.Future()

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            server, gw = loop.run_until_complete(_start(address, node, local, client, node_loop, loop))
        except BaseException as e:  # handed to serve_etcd, which raises it
            ready.set_exception(e)
            loop.close()
            return
        ready.set_result((loop, server, gw))
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name=f"raftkv-etcd-{node.id}", daemon=True)
    thread.start()
    loop, server, gw = await asyncio.wrap_future(ready)
    log.info("node %s: etcd v3 gateway on %s", node.id, address)
    return GatewayServer(thread, loop, server, gw)


async def _start(
    address: Any, node: Any, local: Any, client: Any, node_loop: asyncio.AbstractEventLoop, loop: Any
) -> tuple[Any, Gateway]:
    """The gRPC server, started on the gateway's loop (the running one), and its Gateway."""
    pb, services = load_protos()
    gw = Gateway(node, local, client, pb)
    on_node = _Bridge(node_loop, loop)

    async def answer(context: Any, call: Coroutine[Any, Any, T]) -> T:
        _TOKEN.set(_token_of(context))
        try:
            if _wants_leader(context) and not await _led_within(node, NO_LEADER_MIN_S):
                call.close()
                raise Unavailable("the node has no leader")
            return await on_node(call)
        except Exception as e:
            status = _status_of(e)
            if status is None:
                raise
            await context.abort(*status)  # raises
            raise AssertionError("unreachable: context.abort raises") from e  # pragma: no cover

    class KV(services.KVServicer):  # type: ignore[misc, name-defined]
        async def Range(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.range(request))

        async def Put(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.put(request))

        async def DeleteRange(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.delete_range(request))

        async def Txn(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.txn(request))

        async def Compact(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.compact(request))

    class Maintenance(services.MaintenanceServicer):  # type: ignore[misc, name-defined]
        async def Status(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.status(request))

        async def Alarm(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.alarm(request))

        async def MoveLeader(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.move_leader(request))

        async def HashKV(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.hash_kv(request))

        async def Hash(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.hash(request))

        async def Defragment(self, request: Any, context: Any) -> Any:  # noqa: N802
            # LMDB reuses freed pages by itself: there is nothing to defragment.
            return await answer(context, gw.defragment())

        async def Snapshot(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
            _TOKEN.set(_token_of(context))
            try:
                async for chunk in _carried(gw.snapshot(), node_loop):
                    yield chunk
            except (RaftError, OSError) as e:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"etcdserver: {e}")

    class Watch(services.WatchServicer):  # type: ignore[misc, name-defined]
        async def Watch(self, requests: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
            _TOKEN.set(_token_of(context))
            responses = _carried(gw.watch_stream(_carried(requests, loop)), node_loop)
            if _wants_leader(context):
                if not await _led_within(node, NO_LEADER_MIN_S):
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
                responses = _while_led(responses, node)
            try:
                async for response in responses:
                    yield response
            except Unavailable:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")

    class Lease(services.LeaseServicer):  # type: ignore[misc, name-defined]
        async def LeaseGrant(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.lease_grant(request))

        async def LeaseRevoke(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.lease_revoke(request))

        async def LeaseKeepAlive(self, requests: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
            # A stream: one answer per keep-alive the client sends, until it hangs up.
            async for request in requests:
                yield await answer(context, gw.lease_keep_alive(request))

        async def LeaseTimeToLive(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.lease_time_to_live(request))

        async def LeaseLeases(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.lease_leases(request))

    class Cluster(services.ClusterServicer):  # type: ignore[misc, name-defined]
        async def MemberList(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.member_list(request))

        async def MemberAdd(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.member_add(request))

        async def MemberRemove(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.member_remove(request))

        async def MemberPromote(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.member_promote(request))

        async def MemberUpdate(self, request: Any, context: Any) -> Any:  # noqa: N802
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "raftkv: a member's peer address does not change")

    class Auth(services.AuthServicer):  # type: ignore[misc, name-defined]
        async def Authenticate(self, request: Any, context: Any) -> Any:  # noqa: N802
            return await answer(context, gw.authenticate(request))

    def auth_handler(method: str) -> Callable[[Any, Any, Any], Coroutine[Any, Any, Any]]:
        async def handle(_self: Any, request: Any, context: Any) -> Any:
            return await answer(context, gw.auth_call(method, request))

        return handle

    for method in AUTH_METHODS:
        setattr(Auth, method, auth_handler(method))

    server = grpc.aio.server()
    services.add_KVServicer_to_server(KV(), server)
    services.add_LeaseServicer_to_server(Lease(), server)
    services.add_WatchServicer_to_server(Watch(), server)
    services.add_ClusterServicer_to_server(Cluster(), server)
    services.add_AuthServicer_to_server(Auth(), server)
    services.add_MaintenanceServicer_to_server(Maintenance(), server)
    where = f"{address.host}:{address.port}"
    try:
        credentials = _credentials(node.config)
        port = server.add_secure_port(where, credentials) if credentials else server.add_insecure_port(where)
    except RuntimeError:
        port = 0
    if not port:
        raise OSError(f"--listen-etcd {address}: cannot listen there")
    await server.start()
    return server, gw
