"""The Cap'n Proto front end of a node's client port: the ``Client`` interface (``Admin``, ``Replicated``, ``Kv``).

Theory of operation
-------------------
A thin layer: each handler checks the request's header, decodes its arguments, calls a wire-neutral service
(``Admin``, ``KVService``, ``WatchRegistry``) or a public method of the runtime (``propose``), and encodes the
answer. Handlers never let a Python exception cross the wire: expected outcomes become typed error codes
(``notLeader`` with the leader's id and client address, ``timeout``, ``proposalDropped``, ``compacted``,
``invalid``), and anything else is logged here and answered with ``internal``. A watch's events go to the
watcher capability the client hosts, through :class:`_CapnpSink`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, Final

import msgspec

from raftkv.errors import (
    Compacted,
    ConfChangeInProgress,
    InvalidConfChange,
    InvalidRequest,
    NodeFailed,
    NotLeader,
    ProposalDropped,
    Timeout,
)
from raftkv.kv.commands import (
    Authenticate,
    AuthStatus,
    Command,
    DeleteRange,
    ErrorResult,
    Put,
    Range,
    Request,
    Txn,
    decode_command,
    encode_result,
)
from raftkv.kv.errors import AuthError, CommandError, ErrorCode, LimitExceeded
from raftkv.kv.keys import MAX_KEY_BYTES
from raftkv.kv.watch import Event
from raftkv.kvserver.admin import Admin
from raftkv.kvserver.frames_api import ExecuteFrames, frame_limit
from raftkv.kvserver.service import KVService
from raftkv.kvserver.watches import WatchRegistry
from raftkv.raft.membership import ChangeType
from raftkv.raft.types import NodeId, SnapshotMeta
from raftkv.runtime.node import RaftNode
from raftkv.transport.address import Address
from raftkv.transport.frames import CLIENT_FRAME_MAGIC
from raftkv.transport.snapshot_stream import conf_to_wire
from raftkv.transport.streams import Listener, StreamLayer
from raftkv.transport.wire import schema

log = logging.getLogger("raftkv.client")
BACKUP_CHUNK_BYTES = 1 << 20
_EVENT_ENCODER = msgspec.msgpack.Encoder()
_NOT_KV = "this node does not run the key-value store"
_CHANGE_KINDS = {
    "addVoter": ChangeType.ADD_VOTER,
    "addLearner": ChangeType.ADD_LEARNER,
    "promote": ChangeType.PROMOTE,
    "remove": ChangeType.REMOVE,
}


class _CapnpSink:
    """A watch's events, pushed to the client's ``Watcher`` capability (msgspec-encoded)."""

    def __init__(self, watcher: Any) -> None:
        self.watcher = watcher

    async def events(self, events: Sequence[Event]) -> None:
        await self.watcher.events(events=[_EVENT_ENCODER.encode(e) for e in events])

    async def cancelled(self, reason: str, compact_revision: int) -> None:
        await self.watcher.cancelled(reason=reason, compactRevision=compact_revision)


class ClientService(schema.Client.Server):  # type: ignore[misc]
    """One client connection's view of the node."""

    def __init__(
        self,
        node: RaftNode,
        admin: Admin,
        kv: KVService | None,
        watches: WatchRegistry | None,
        cert_user: str = "",
    ) -> None:
        self.node = node
        self.admin = admin
        self.kv = kv
        self.watches = watches
        self.cert_user = cert_user
        self._watch_ids: set[int] = set()
        """The watches this connection started (some may have ended since: pruned when counted)."""
        """The common name of the connection's verified TLS client certificate (``""``: none): the user of a
        request without a token (``--client-cert-auth``, etcd's rule)."""
        self._backup: tuple[SnapshotMeta, bytes, int] | None = None
        """The image this connection is downloading (``raftkv snapshot save``)."""

    def _check(self, header: Any, results: Any) -> bool:
        return self.check_cluster(str(header.clusterId), results)

    def check_cluster(self, cluster: str, results: Any) -> bool:
        """Whether a request for ``cluster`` may be served here; if not, the error is set in ``results``."""
        expected = self.node.config.cluster_id
        if cluster and cluster != expected:
            results.error.code = "wrongCluster"
            results.error.message = f"this is cluster {expected!r}, not {cluster!r}"
            return False
        if not self.node.serving:
            results.error.code = "stopped"
            results.error.message = "the node is not serving"
            return False
        return True

    def identify(self, token: str) -> str:
        """The user a request with ``token`` comes from (``""``: nobody, or authentication is off); raises
        ``AuthError`` for a token that does not check out."""
        if self.kv is None:
            return ""
        return self.kv.auth.identify(token, self.cert_user)

    def _admit_root(self, header: Any, r: Any, what: str) -> bool:
        """Whether the request may run an admin operation (root's while authentication is on); if not, the
        error is set in ``r``."""
        if not self._check(header, r):
            return False
        if self.kv is None or not self.kv.kv.auth.enabled:
            return True
        try:
            user = self.identify(str(header.token))
        except AuthError as e:
            self._fail(r, e, what)
            return False
        if self.kv.kv.auth.is_root(user):
            return True
        who = f"user {user!r}" if user else "a request without a user (authenticate first: --user)"
        self._fail(
            r,
            AuthError(ErrorCode.PERMISSION_DENIED, f"permission denied: {who} may not {what}: it needs role root"),
            what,
        )
        return False

    def _fail(self, r: Any, e: BaseException, what: str) -> None:
        """Encode an error: the expected kinds by their code, anything else as ``internal`` (and logged)."""
        err = r.error
        if isinstance(e, NotLeader):
            err.code = "notLeader"
            err.leaderId = int(e.leader_hint)
            err.leaderAddress = e.leader_address
        elif isinstance(e, Timeout | TimeoutError):
            err.code = "timeout"
        elif isinstance(e, ProposalDropped | NodeFailed):
            err.code = "proposalDropped"
        elif isinstance(e, InvalidRequest | CommandError):
            err.code = "invalid"
        elif isinstance(e, Compacted):
            err.code = "compacted"
        elif isinstance(e, InvalidConfChange):
            err.code = "invalidConfChange"
        elif isinstance(e, ConfChangeInProgress):
            err.code = "confChangeInProgress"
        elif isinstance(e, AuthError):
            err.code = "unauthenticated" if e.code == ErrorCode.INVALID_TOKEN else "permissionDenied"
        elif isinstance(e, LimitExceeded):
            err.code = "limitExceeded"
        else:
            log.error("node %s: %s failed: %s: %s", self.node.id, what, type(e).__name__, e, exc_info=e)
            err.code = "internal"
            err.message = f"{what}: {type(e).__name__}: {e}"[:200]
            return
        err.message = str(e)[:300]

    # --- Admin ------------------------------------------------------------------------------------------------

    async def ping(self, header: Any, payload: Any, _context: Any, **_kw: Any) -> None:
        r = _context.results
        if not self._check(header, r):
            return
        r.payload = payload
        r.nodeId = self.node.id
        r.term = self.node.term

    async def status(self, header: Any, _context: Any, **_kw: Any) -> None:
        r = _context.results
        if not self._check(header, r):
            return
        s = self.admin.status()
        out = r.init("status")
        out.id = s.id
        out.role = s.role
        out.term = s.term
        out.leader = s.leader or 0
        out.commit = s.commit
        out.applied = s.applied
        out.lastIndex = s.last_index
        out.clusterId = s.cluster_id
        peers = out.init("peers", len(s.peers))
        for k, (pid, info) in enumerate(s.peers.items()):
            p = peers[k]
            p.id = pid
            p.address = info["address"]
            p.connected = info["connected"]
            p.match = info.get("match", 0)
            p.next = info.get("next", 0)
            p.state = info.get("state", "")

    async def backupChunk(self, header: Any, offset: int, _context: Any, **_kw: Any) -> None:  # noqa: N802
        r = _context.results
        if not self._admit_root(header, r, "take a backup"):
            return
        try:
            if offset == 0 or self._backup is None:
                self._backup = await self.admin.backup_image()
            meta, image, crc = self._backup
        except Exception as e:
            self._fail(r, e, "taking a backup")
            return
        r.lastIndex = meta.index
        r.lastTerm = meta.term
        r.conf = conf_to_wire(meta.conf)
        r.totalSize = len(image)
        r.crc32c = crc
        r.data = image[offset : offset + BACKUP_CHUNK_BYTES]

    async def members(self, header: Any, _context: Any, **_kw: Any) -> None:
        r = _context.results
        if not self._check(header, r):
            return
        try:
            members = self.admin.members()
        except Exception as e:
            self._fail(r, e, "members")
            return
        out = r.init("members", len(members))
        for k, m in enumerate(members):
            o = out[k]
            w = o.init("member")
            w.id = m["id"]
            w.peerAddress = m["peer_address"]
            w.clientAddress = m["client_address"]
            w.learner = m["learner"]
            o.isLeader = m["leader"]
            o.reachable = m["reachable"]
            o.hasProgress = "match" in m
            o.match = m.get("match", 0)
            o.lag = m.get("lag", 0)
        r.leader = int(self.node.leader_id)
        r.confIndex = int(self.node.conf_index)
        r.nodeId = int(self.node.id)

    async def memberChange(self, header: Any, change: Any, timeoutMs: int, _context: Any, **_kw: Any) -> None:  # noqa: N802, N803
        r = _context.results
        if not self._admit_root(header, r, "change the members"):
            return
        try:
            kind = _CHANGE_KINDS[str(change.kind)]
            conf = await self.admin.change_members(
                kind,
                NodeId(int(change.id)),
                str(change.peerAddress),
                str(change.clientAddress),
                timeout=(timeoutMs or 10_000) / 1000,
            )
        except NotLeader:
            self._fail(r, self.node.not_leader(), "member change")
            return
        except Exception as e:
            self._fail(r, e, "member change")
            return
        r.members = conf_to_wire(conf)

    async def leaderTransfer(self, header: Any, to: int, timeoutMs: int, _context: Any, **_kw: Any) -> None:  # noqa: N802, N803
        r = _context.results
        if not self._admit_root(header, r, "move the leadership"):
            return
        try:
            target = NodeId(int(to)) if to else None
            r.leader = int(await self.admin.transfer_leadership(target, timeout=(timeoutMs or 5000) / 1000))
        except NotLeader:
            self._fail(r, self.node.not_leader(), "leader transfer")
        except Exception as e:
            self._fail(r, e, "leader transfer")

    # --- Replicated --------------------------------------------------------------------------------------------

    async def propose(self, header: Any, data: Any, timeoutMs: int, _context: Any, **_kw: Any) -> None:  # noqa: N803
        r = _context.results
        if not self._admit_root(header, r, "propose raw log entries"):
            return
        timeout = (timeoutMs or 5000) / 1000
        if self.kv is not None and _is_command(bytes(data)):
            # The raw propose would skip the sessions, the limits and the permission checks of Kv.execute (a
            # forged Authed above all): on a key-value node it takes only bytes that are no command.
            self._fail(
                r,
                InvalidRequest(
                    "a key-value command goes through Kv.execute (the client's put, get, txn...), not the raw propose"
                ),
                "propose",
            )
            return
        try:
            index, term, result = await self.node.propose_indexed(bytes(data), timeout)
        except NotLeader:
            self._fail(r, self.node.not_leader(), "propose")
            return
        except Exception as e:
            self._fail(r, e, "propose")
            return
        r.index = index
        r.term = term
        r.result = str(result).encode() if result is not None else b""

    # --- Kv ------------------------------------------------------------------------------------------------

    async def execute(self, header: Any, requests: Any, timeoutMs: int, _context: Any, **_kw: Any) -> None:  # noqa: N803
        await self.execute_into(
            str(header.clusterId),
            [(bytes(q.command), bool(q.serializable)) for q in requests],
            timeoutMs,
            _context.results,
            str(header.token),
        )

    async def execute_into(
        self, cluster: str, requests: Sequence[tuple[bytes, bool]], timeout_ms: int, r: Any, token: str = ""
    ) -> None:
        """``Kv.execute`` into ``r`` (its results or an ``ExecuteReturn``): the capnp call and the client data
        plane's frames (raftkv/kvserver/frames_api.py) share it. Never raises but for cancellation."""
        if not self.check_cluster(cluster, r):
            return
        timeout = (timeout_ms or 5000) / 1000
        try:
            if self.kv is None:
                raise InvalidRequest(_NOT_KV)
            refused: dict[int, ErrorResult] = {}
            commands: list[tuple[Command, bool]] = []
            for k, (command, serializable) in enumerate(requests):
                why = self._too_big(command)  # before decoding: a 50 MB command is not decoded at all
                if why is None and len(command) > _SHAPE_CHECK_BYTES:
                    why = self._over_ops(_txn_shape(command))  # a 100k-op txn: counted, never built
                if why is None:
                    decoded = decode_command(command)
                    why = self._too_many_ops(decoded) or self._key_too_long(decoded)
                    if why is None:
                        commands.append((decoded, serializable))
                        continue
                refused[k] = why  # this command only: the batch holds other callers' commands too
            try:
                user = self.identify(token)
            except AuthError:
                # An expired token must not stop the client from getting a new one.
                if not commands or not all(isinstance(c, Authenticate | AuthStatus) for c, _ in commands):
                    raise
                user = ""
            results = await self.kv.execute(commands, timeout, user) if commands else []
            if refused:
                rest = iter(results)
                results = [refused[k] if k in refused else next(rest) for k in range(len(requests))]
        except TimeoutError:
            r.error.code = "timeout"
            r.error.message = f"not completed within {timeout} s; outcomes unknown, retry the batch as is"
            return
        except Exception as e:
            self._fail(r, e, "execute")
            return
        out = r.init("results", len(results))
        for k, res in enumerate(results):
            out[k] = encode_result(res)

    def _too_big(self, data: bytes) -> ErrorResult | None:
        """The refusal of a command over ``--max-request-bytes`` (etcd's check of the request's size), or None."""
        cfg = self.node.config
        if len(data) > cfg.max_request_bytes:
            return ErrorResult(
                ErrorCode.LIMIT_EXCEEDED,
                f"a request of {len(data)} bytes is over the limit of {cfg.max_request_bytes} "
                "(--max-request-bytes on the nodes)",
            )
        return None

    def _too_many_ops(self, command: Command) -> ErrorResult | None:
        """The refusal of a txn over ``--max-txn-ops`` (etcd's: its compares, and each branch's operations)."""
        txn = command.op if isinstance(command, Request) else command
        if isinstance(txn, Txn):
            return self._over_ops((len(txn.compare), len(txn.success), len(txn.failure)))
        return None

    def _key_too_long(self, command: Command) -> ErrorResult | None:
        """The refusal of a key (or range end) over ``--max-key-bytes``; nothing to check at its default, the
        state machine's own limit (511)."""
        limit = self.node.config.max_key_bytes
        if limit >= MAX_KEY_BYTES:
            return None
        longest = max((len(k) for k in _keys_of(command)), default=0)
        if longest <= limit:
            return None
        return ErrorResult(
            ErrorCode.LIMIT_EXCEEDED,
            f"a key of {longest} bytes is over the limit of {limit} (--max-key-bytes on the nodes)",
        )

    def _over_ops(self, shape: tuple[int, int, int] | None) -> ErrorResult | None:
        limit = self.node.config.max_txn_ops
        if shape is None or max(shape) <= limit:
            return None
        compares, success, failure = shape
        return ErrorResult(
            ErrorCode.LIMIT_EXCEEDED,
            f"a txn of {compares} compares, {success} and {failure} operations is over the limit of {limit} of "
            "each (--max-txn-ops on the nodes)",
        )

    async def watch(
        self,
        header: Any,
        key: Any,
        rangeEnd: Any,  # noqa: N803
        hasRangeEnd: bool,  # noqa: N803
        startRevision: int,  # noqa: N803
        watcher: Any,
        _context: Any,
        **_kw: Any,
    ) -> None:
        r = _context.results
        if not self._check(header, r):
            return
        try:
            if self.watches is None or self.kv is None:
                raise InvalidRequest(_NOT_KV)
            user = self.identify(str(header.token))
            start, end = bytes(key), bytes(rangeEnd) if hasRangeEnd else None
            store = self.kv.kv.auth
            if store.enabled and (why := store.check(user, Range(start, end or None), self.kv.kv.lease_keys)):
                raise AuthError(why.code, why.message)
            open_ids = self._watch_ids = {i for i in self._watch_ids if i in self.watches.watches}
            limit = self.node.config.max_watchers_per_connection
            if len(open_ids) >= limit:
                raise LimitExceeded(
                    f"this connection already holds {len(open_ids)} watches, the limit "
                    "(--max-watchers-per-connection on the nodes): cancel some, or watch a wider range"
                )
            watch_id = self.watches.start(start, end, int(startRevision), _CapnpSink(watcher), user)
            open_ids.add(watch_id)
            r.watchId = watch_id
        except Compacted as e:
            self._fail(r, e, "watch")
            r.compactRevision = e.oldest_revision
        except Exception as e:
            self._fail(r, e, "watch")

    async def cancelWatch(self, header: Any, watchId: int, _context: Any, **_kw: Any) -> None:  # noqa: N802, N803
        r = _context.results
        if self._check(header, r) and self.watches is not None:
            self.watches.cancel(int(watchId))


_SHAPE_CHECK_BYTES: Final = 16 << 10
"""Commands larger than this have their txn sizes counted before they are decoded: a txn of 100,000 operations
costs ~14 ms to build and ~1 ms to count (a txn within --max-txn-ops of small keys is far smaller)."""
_SHAPE: Final = msgspec.msgpack.Decoder(list[msgspec.Raw])
_TXN_TAG: Final = msgspec.msgpack.encode("txn")
_REQUEST_TAG: Final = msgspec.msgpack.encode("req")
_AUTHED_TAG: Final = msgspec.msgpack.encode("as")


def _is_command(data: bytes) -> bool:
    try:
        decode_command(data)
    except CommandError:
        return False
    return True


def _keys_of(command: Command) -> Iterator[bytes]:
    """Every key and range end a command names (inside a session request and a txn too)."""
    match command:
        case Request():
            yield from _keys_of(command.op)
        case Put():
            yield command.key
        case DeleteRange() | Range():
            yield command.key
            yield command.range_end or b""
        case Txn():
            for c in command.compare:
                yield c.key
            for op in (*command.success, *command.failure):
                yield from _keys_of(op)
        case _:
            return


def _array_length(raw: bytes) -> int:
    """The length of the MessagePack array ``raw`` starts with (0 if it is not one)."""
    head = raw[0] if raw else 0
    if 0x90 <= head <= 0x9F:
        return head & 0x0F
    if head == 0xDC and len(raw) >= 3:
        return int.from_bytes(raw[1:3], "big")
    if head == 0xDD and len(raw) >= 5:
        return int.from_bytes(raw[1:5], "big")
    return 0


def _txn_shape(data: bytes) -> tuple[int, int, int] | None:
    """(compares, success ops, failure ops) of the txn ``data`` encodes, bare or in a session ``Request``,
    counted from the MessagePack array headers without building any op; None for anything else."""
    try:
        parts = _SHAPE.decode(data)
        if len(parts) >= 3 and bytes(parts[0]) == _AUTHED_TAG:
            parts = _SHAPE.decode(parts[2])
        if len(parts) >= 5 and bytes(parts[0]) == _REQUEST_TAG:
            parts = _SHAPE.decode(parts[4])
    except msgspec.DecodeError:
        return None  # the real decoder says what is wrong with it
    if not parts or bytes(parts[0]) != _TXN_TAG:
        return None
    compares, success, failure = (*(_array_length(bytes(p)) for p in parts[1:4]), 0, 0, 0)[:3]
    return compares, success, failure  # fields left out (their defaults) count 0


async def serve_capnp(
    streams: StreamLayer,
    address: Address,
    node: RaftNode,
    admin: Admin,
    kv: KVService | None,
    watches: WatchRegistry | None,
) -> Listener:
    """Serve the ``Client`` interface on ``address``; each connection gets its own :class:`ClientService`.

    The same port takes the client data plane (``ExecuteCall`` frames, told apart by their first bytes):
    :class:`raftkv.kvserver.frames_api.ExecuteFrames` serves them with a service of their own.
    """

    def service(cert_user: str = "") -> ClientService:
        return ClientService(node, admin, kv, watches, cert_user)

    return await streams.listen(
        address,
        lambda _close, names: service(names.common_name),
        name=f"node {node.id} client port",
        plain=lambda: ExecuteFrames(service(), node.id, frame_limit(node.config.max_request_bytes)),
        magic=CLIENT_FRAME_MAGIC,
        max_connections=node.config.max_connections,
    )
