"""Node-to-node transport: an inbound ``Peer`` service and one supervised outbound link per peer.

Theory of operation
-------------------
Raft messages are one-way (see ``raftkv.capnp``). :meth:`Transport.send` never blocks: it puts each message on
its destination's bounded queue and writes what it can at once. Each :class:`PeerLink` is a supervisor task that

1. dials the peer (through the :mod:`~raftkv.transport.streams` seam, with a timeout) and checks who answers
   with a ``ping`` (cluster id and node id), so a wrong address in ``--peers`` is reported once, clearly,
   instead of silently talking to the wrong node;
2. opens the **data plane** (:mod:`~raftkv.transport.frames`): a second connection to the same port that
   carries one-way ``MessageBatch`` frames, each holding every queued message up to a size bound. The control
   connection stays Cap'n Proto RPC: the handshake, a keepalive ``ping`` with a deadline that notices a
   SIGSTOPped peer (frames have no replies, so nothing else would), and snapshots
   (:mod:`~raftkv.transport.snapshot_stream`). With ``TransportSettings.frames`` off, messages travel as
   ``send`` calls instead, at most ``max_inflight_calls`` unanswered (calls on one capability are delivered in
   order);
3. on any error or timeout (a stopped peer never errors by itself: every call has a deadline) drops the
   connections, and reconnects after a jittered exponential backoff.

A message that cannot be sent is dropped: Raft is built for lossy networks and retransmits what matters. While a
link is down nothing is queued for it (it would be stale on reconnection), and a full queue (a slow peer) drops
the newest messages; both are counted.

Membership: :meth:`Transport.add_peer`, :meth:`~Transport.update_peer` and :meth:`~Transport.remove_peer` change
the set of links while the node runs (a link is a task the transport owns). Inbound, only members are served.

Inbound, the peer port (a :class:`~raftkv.transport.streams.Listener`) tells data plane connections from Cap'n
Proto ones by their first bytes; each capnp connection gets its own :class:`PeerService`. Both check the
header (cluster id, a known sender, addressed to us), decode every message at the edge, and hand the batch to
the node. Malformed input closes that one connection and is counted; requests from another cluster or an
unknown member are refused with a typed error (a frame, which has no reply, by closing its connection) and
logged once. No Python traceback ever crosses the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import capnp  # type: ignore[import-untyped]

from raftkv.raft.messages import AppendEntries, InstallSnapshot, Message
from raftkv.raft.types import Index, NodeId, SnapshotMeta, Term
from raftkv.tasks import TaskSet
from raftkv.transport.address import Address, AddressError
from raftkv.transport.codec import DecodeError, decode, encode_into
from raftkv.transport.frames import FRAME_MAGIC, FrameReceiver, FrameSender, frame
from raftkv.transport.snapshot_stream import SnapshotInbox, SnapshotSource, conf_from_wire, send_snapshot
from raftkv.transport.streams import PLAIN, Listener, StreamLayer, describe
from raftkv.transport.tls import member_name
from raftkv.transport.wire import NESTING_LIMIT, TRAVERSAL_LIMIT_WORDS, schema

log = logging.getLogger("raftkv.transport")

SNIFF_TIMEOUT_S = 10.0
"""A new connection that sends nothing for this long is closed (Cap'n Proto clients speak first)."""


@dataclass(slots=True)
class TransportSettings:
    call_timeout_s: float = 1.0
    connect_timeout_s: float = 1.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 1.0
    max_queue_msgs: int = 4096
    max_batch_msgs: int = 512
    max_batch_bytes: int = 4 << 20
    max_inflight_calls: int = 4
    snapshot_call_timeout_s: float = 10.0
    frames: bool = True
    """Carry Raft messages as one-way frames on a plain stream (the data plane); off: as capnp ``send`` calls."""
    max_connections: int = 0
    """Connections open at once on the peer port (0: no limit); more are closed as they arrive."""


@dataclass(slots=True)
class TransportCounters:
    """Plain counters; the runtime exports them as Prometheus metrics at scrape time."""

    sent_calls: dict[NodeId, int] = field(default_factory=dict)
    sent_msgs: dict[NodeId, int] = field(default_factory=dict)
    dropped_msgs: dict[NodeId, int] = field(default_factory=dict)
    rpc_errors: dict[NodeId, int] = field(default_factory=dict)
    received_msgs: int = 0
    malformed: int = 0
    refused: int = 0

    @staticmethod
    def bump(d: dict[NodeId, int], peer: NodeId, n: int = 1) -> None:
        d[peer] = d.get(peer, 0) + n


class _Once:
    """Log a condition once until it clears, so a peer that stays down does not flood the log."""

    def __init__(self) -> None:
        self._active: set[str] = set()

    def warn(self, key: str, msg: str, *args: object) -> None:
        if key not in self._active:
            self._active.add(key)
            log.warning(msg, *args)

    def info(self, key: str, msg: str, *args: object) -> None:
        if key not in self._active:
            self._active.add(key)
            log.info(msg, *args)

    def clear(self, key: str) -> bool:
        if key in self._active:
            self._active.discard(key)
            return True
        return False


def _header(cluster_id: str, src: NodeId, dst: NodeId, src_address: str = "") -> Any:
    """A wire header, built once per link: pycapnp copies a struct ~9x faster than it converts a dict."""
    fields = {"from": int(src), "to": int(dst), "fromAddress": src_address}
    return schema.Header.new_message(clusterId=cluster_id, **fields).as_reader()


def _check_header(t: Transport, header: Any, names: frozenset[str]) -> tuple[str, str, NodeId]:
    """(error code, message, sender) of an inbound header on a connection whose TLS client certificate names
    ``names``; the code is "none" when it may be served."""
    src = NodeId(int(getattr(header, "from")))  # "from" is a Python keyword
    if header.clusterId != t.cluster_id:
        return "wrongCluster", f"this is cluster {t.cluster_id!r}, not {header.clusterId!r}", src
    if t.verify_names and member_name(src) not in names:
        # Peer mutual TLS: a certificate of the cluster's CA is not enough, it must be this member's own.
        shown = ", ".join(sorted(names)) or "no name"
        return "unknownMember", f"the certificate of this connection names {shown}, not {member_name(src)}", src
    if src not in t.peers and not t.admit(src, str(header.fromAddress)):
        return "unknownMember", f"node {src} is not a member of cluster {t.cluster_id!r}", src
    if header.to not in (0, t.node_id):
        return "wrongNode", f"this is node {t.node_id}, not node {header.to}", src
    return "none", "", src


async def _until_disconnected(client: Any) -> None:
    await client.on_disconnect()  # a pycapnp future, not a coroutine


class _Refused(Exception):
    """The peer answered the handshake but refused us (or is not the node we expected)."""


class PeerLink:
    """The connection to one peer, with its outbound queue and its supervisor."""

    def __init__(self, transport: Transport, peer: NodeId, address: Address) -> None:
        self.t = transport
        self.peer = peer
        self.address = address
        self.queue: deque[Message] = deque()
        """Bounded by ``max_queue_msgs`` (``enqueue`` drops beyond it)."""
        self.wake = asyncio.Event()
        self.connected = False
        self.ever_connected = False
        self.client_address = ""
        """The peer's client address, as it told us in the handshake ("" if it has none or is unknown)."""
        self.etcd_address = ""
        """The peer's etcd gateway address (``--listen-etcd``), as it told us in the handshake ("" if none)."""
        self.snapshot_request: InstallSnapshot | None = None
        """The core asked to send this peer a snapshot; streamed by its own task, beside the normal traffic."""
        self.snapshot_streaming: InstallSnapshot | None = None
        """The snapshot being streamed now (a request for it, or an older one, is not queued again)."""
        self.snapshot_wake = asyncio.Event()
        self._rng = random.Random()
        self._frames: FrameSender | None = None
        """The data plane connection while the pump runs on it."""
        self._wire_header = _header(transport.cluster_id, transport.node_id, peer, transport.own_address)

    def enqueue(self, msg: Message, wake: bool = True) -> None:
        if type(msg) is InstallSnapshot:
            if not self.connected:
                self.t.snapshot_sent(self.peer, False)
                return
            streaming = self.snapshot_streaming
            if streaming is not None and streaming.meta.index >= msg.meta.index:
                # The core asks again (its timer is shorter than streaming a large store takes): the stream
                # under way already carries this snapshot. Restarting it after would send the whole file
                # twice and make the follower install it twice (bench/learner_join.py: 125 MB, twice).
                return
            self.snapshot_request = msg
            self.snapshot_wake.set()
            return
        # While the link is down, messages would only be stale when it comes back: drop them (Raft resends).
        if not self.connected or len(self.queue) >= self.t.settings.max_queue_msgs:
            TransportCounters.bump(self.t.counters.dropped_msgs, self.peer)
            return
        self.queue.append(msg)
        if wake:
            self.wake.set()

    async def run(self) -> None:
        s = self.t.settings
        streams = self.t.streams
        backoff = s.backoff_initial_s
        while True:
            client: Any = None
            frames: FrameSender | None = None
            try:
                # Under peer TLS the certificate must be this member's own (tls.member_name), not just the CA's.
                client = await streams.dial_rpc(self.address, s.connect_timeout_s, name=member_name(self.peer))
                cap = client.bootstrap().cast_as(schema.Peer)
                if not await self._handshake(cap):
                    # A configuration error (wrong cluster, wrong node at that address): retry slowly. Falls
                    # through to the backoff below — a `continue` here once skipped it and spun reconnecting.
                    raise _Refused()
                if s.frames:
                    _tr, frames = await streams.dial_plain(
                        self.address, FrameSender, s.connect_timeout_s, name=member_name(self.peer)
                    )
                self.connected = True
                self.ever_connected = True
                backoff = s.backoff_initial_s
                if self.t.once.clear(f"down-{self.peer}"):
                    log.info("node %s: connection to node %s at %s restored", self.t.node_id, self.peer, self.address)
                await self._pump_until_disconnect(client, cap, frames)
            except asyncio.CancelledError:
                raise
            except _Refused:
                backoff = s.backoff_max_s  # the handshake logged why, once
            except (OSError, TimeoutError, capnp.KjException, ConnectionError) as e:
                TransportCounters.bump(self.t.counters.rpc_errors, self.peer)
                # Nodes start one after another: a peer that was never up yet is normal, not a warning.
                report = self.t.once.warn if self.ever_connected else self.t.once.info
                report(
                    f"down-{self.peer}",
                    "node %s: cannot reach node %s at %s (%s); retrying with backoff",
                    self.t.node_id,
                    self.peer,
                    self.address,
                    describe(e),
                )
            finally:
                if self.connected and self.t.on_peer_down is not None:
                    self.t.on_peer_down(self.peer)
                self.connected = False
                if frames is not None:
                    frames.close()
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            # Messages queued while disconnected are stale by the time we are back; Raft will resend.
            self.queue.clear()
            await asyncio.sleep(backoff * (0.5 + self._rng.random()))
            backoff = min(backoff * 2, s.backoff_max_s)

    async def _handshake(self, cap: Any) -> bool:
        async with asyncio.timeout(self.t.settings.call_timeout_s):
            r = await cap.ping(header=self._wire_header, payload=b"")
        code = str(r.error.code)
        if code != "none":
            self.t.once.warn(
                f"refused-{self.peer}",
                "node %s: node %s at %s refused us: %s (%s)",
                self.t.node_id,
                self.peer,
                self.address,
                code,
                r.error.message,
            )
            return False
        if r.nodeId != self.peer:
            self.t.once.warn(
                f"refused-{self.peer}",
                "node %s: %s answers as node %s, not node %s: check --peers",
                self.t.node_id,
                self.address,
                r.nodeId,
                self.peer,
            )
            return False
        self.t.once.clear(f"refused-{self.peer}")
        self.client_address = str(r.clientAddress)
        self.etcd_address = str(r.etcdAddress)
        return True

    async def _pump_until_disconnect(self, client: Any, cap: Any, frames: FrameSender | None) -> None:
        """Send until a call fails or a connection drops, whichever comes first.

        A follower sends to its leader only in reply to the leader's messages: if the leader's process dies it
        would never send again, and only watching the connections themselves tells it at once. The workers
        are this link's own: started here, all cancelled and awaited before this returns.
        """
        # Their failures are this link's business: the first one is re-raised below and reported (once) by run().
        workers = TaskSet(f"node {self.t.node_id} link to node {self.peer}", log_failures=False)
        closed = workers.spawn(_until_disconnected(client), name="raftkv-link-closed")
        snapshots = workers.spawn(self._snapshot_loop(cap), name="raftkv-link-snapshots")
        if frames is None:
            pumps = [workers.spawn(self._pump(cap), name="raftkv-link-calls")]
        else:
            # Frames have no replies, so nothing else would notice a peer that stopped answering (SIGSTOP).
            pumps = [
                workers.spawn(self._pump_frames(frames), name="raftkv-link-frames"),
                workers.spawn(self._keepalive(cap), name="raftkv-link-keepalive"),
            ]
        watched: set[asyncio.Future[Any]] = {closed, snapshots, *pumps}
        if frames is not None:
            watched.add(frames.closed)
        try:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            failed = [task for task in (snapshots, *pumps) if task in done and task.exception() is not None]
        finally:
            await workers.aclose()
            if self.snapshot_request is not None:
                self.snapshot_request = None
                self.t.snapshot_sent(self.peer, False)
        if failed:
            failed[0].result()  # re-raise the failure
        raise ConnectionError("the peer closed the connection")

    async def _keepalive(self, cap: Any) -> None:
        s = self.t.settings
        while True:
            await asyncio.sleep(s.call_timeout_s / 2)
            async with asyncio.timeout(s.call_timeout_s):
                await cap.ping(header=self._wire_header, payload=b"")

    async def _pump_frames(self, frames: FrameSender) -> None:
        s = self.t.settings
        transport = frames.transport
        if transport is None:
            raise ConnectionError("the data plane connection is not open")
        self._frames = frames
        try:
            while True:
                if not self.queue:
                    await self.wake.wait()
                    self.wake.clear()
                    continue
                if not frames.writable.is_set():
                    # The peer is not reading (or the network is slow): wait for the buffer to drain, not forever.
                    async with asyncio.timeout(s.call_timeout_s):
                        await frames.writable.wait()
                if transport.is_closing():
                    raise ConnectionError("the data plane connection closed")
                self._write_frames(frames)
        finally:
            self._frames = None

    def flush(self) -> None:
        """Write what is queued now, from the caller's turn of the loop, if the data plane can take it; wake the
        pump only for what is left (a full buffer, calls mode, a link not up yet).

        Saves the pump task's wake-up on the common path (the ready loop sends a Ready's messages). Both run on
        the loop thread, so frames never interleave. A failure here concerns this link only: it is logged and
        the connection dropped (the pump reconnects), never raised into the ready loop.
        """
        frames = self._frames
        if frames is not None and self.queue and frames.writable.is_set():
            try:
                self._write_frames(frames)
            except Exception:
                log.exception("node %s: failed to send frames to node %s", self.t.node_id, self.peer)
                self._drop_queue()
                frames.close()
        if self.queue:
            self.wake.set()

    def _write_frames(self, frames: FrameSender) -> None:
        transport = frames.transport
        c = self.t.counters
        if transport is None or transport.is_closing():
            self._drop_queue()  # stale by the time the link is back (the pump notices and reconnects)
            return
        while self.queue and frames.writable.is_set():
            batch = self._take_batch()
            mb = schema.MessageBatch.new_message()
            self._fill(mb, batch)
            transport.write(frame(mb.to_bytes()))
            TransportCounters.bump(c.sent_calls, self.peer)
            TransportCounters.bump(c.sent_msgs, self.peer, len(batch))

    def _fill(self, builder: Any, batch: list[Message]) -> None:
        """Header and messages of a ``MessageBatch`` frame or a ``send`` request (the same two fields)."""
        builder.header = self._wire_header
        lst = builder.init("messages", len(batch))
        for k, msg in enumerate(batch):
            encode_into(lst[k], msg)

    def _drop_queue(self) -> None:
        TransportCounters.bump(self.t.counters.dropped_msgs, self.peer, len(self.queue))
        self.queue.clear()

    async def _snapshot_loop(self, cap: Any) -> None:
        """Stream each requested snapshot (Raft §7) in chunks; heartbeats and appends keep flowing meanwhile."""
        while True:
            await self.snapshot_wake.wait()
            self.snapshot_wake.clear()
            request = self.snapshot_request
            if request is None:
                continue
            ok = False
            self.snapshot_streaming = request
            try:
                ok = await self._stream_snapshot(cap, request)
            finally:
                self.snapshot_streaming = None
                pending = self.snapshot_request
                if pending is request or (ok and pending is not None and pending.meta.index <= request.meta.index):
                    self.snapshot_request = None
                self.t.snapshot_sent(self.peer, ok)

    async def _stream_snapshot(self, cap: Any, request: InstallSnapshot) -> bool:
        source = self.t.snapshot_source
        if source is None:
            log.warning("node %s: asked to send node %s a snapshot, but it has none", self.t.node_id, self.peer)
            return False
        log.info("node %s: sending a snapshot to node %s", self.t.node_id, self.peer)
        ok, why = await send_snapshot(
            cap, self._wire_header, request.term, source, self.t.settings.snapshot_call_timeout_s
        )
        if not ok:
            log.warning("node %s: snapshot to node %s not sent: %s", self.t.node_id, self.peer, why)
        return ok

    async def _pump(self, cap: Any) -> None:
        inflight: deque[asyncio.Task[None]] = deque()
        try:
            await self._pump_calls(cap, inflight)
        finally:
            # Reap every call still in flight: an abandoned task whose call later fails ("RpcSystem was
            # destroyed") would report its exception from a garbage-collector finalizer, at any later moment.
            for task in inflight:
                task.cancel()
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)

    async def _pump_calls(self, cap: Any, inflight: deque[asyncio.Task[None]]) -> None:
        s = self.t.settings
        while True:
            while inflight and inflight[0].done():
                inflight.popleft().result()  # re-raises the call's error: reconnect
            if not self.queue:
                if inflight:
                    # Wait for new messages or for the oldest call, whichever comes first.
                    waiter = asyncio.ensure_future(self.wake.wait())
                    try:
                        await asyncio.wait({waiter, inflight[0]}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
                else:
                    await self.wake.wait()
                self.wake.clear()
                continue
            if len(inflight) >= s.max_inflight_calls:
                await asyncio.wait({inflight[0]})
                continue
            batch = self._take_batch()
            request = cap.send_request()
            self._fill(request, batch)
            # The call leaves now, in order; the task only waits for its answer (with a deadline). The tasks
            # are this pump's own, bounded by max_inflight_calls, and reaped by _pump.
            inflight.append(asyncio.ensure_future(self._await_reply(request.send(), len(batch))))

    def _take_batch(self) -> list[Message]:
        s = self.t.settings
        batch: list[Message] = []
        size = 0
        q = self.queue
        while q and len(batch) < s.max_batch_msgs:
            msg = q[0]
            if type(msg) is AppendEntries:
                size += sum(len(e.data) + 21 for e in msg.entries)
                if batch and size > s.max_batch_bytes:
                    break
            batch.append(q.popleft())
        return batch

    async def _await_reply(self, promise: Any, n: int) -> None:
        async with asyncio.timeout(self.t.settings.call_timeout_s):
            r = await promise
        code = str(r.error.code)
        if code != "none":
            raise ConnectionError(f"peer refused the batch: {code} ({r.error.message})")
        c = self.t.counters
        TransportCounters.bump(c.sent_calls, self.peer)
        TransportCounters.bump(c.sent_msgs, self.peer, n)


class PeerService(schema.Peer.Server):  # type: ignore[misc]
    """The inbound side of one capnp connection; ``close`` hangs up on it."""

    def __init__(self, transport: Transport, close: Callable[[], None], names: frozenset[str] = frozenset()) -> None:
        self.t = transport
        self._close = close
        self.names = names
        """What this connection's TLS client certificate names (checked against each header's sender)."""

    def _check(self, header: Any) -> tuple[str, str, NodeId]:
        return _check_header(self.t, header, self.names)

    def _refuse(self, code: str, message: str, results: Any) -> None:
        self.t.counters.refused += 1
        self.t.once.warn(f"refuse-{code}-{message}", "node %s refused a peer request: %s", self.t.node_id, message)
        results.error.code = code
        results.error.message = message

    async def send(self, header: Any, messages: Any, _context: Any, **_kw: Any) -> None:
        results = _context.results
        try:
            code, why, src = self._check(header)
            if code != "none":
                self._refuse(code, why, results)
                return
            batch = [decode(m, src, self.t.node_id) for m in messages]
        except (DecodeError, capnp.KjException, ValueError) as e:
            self.t.counters.malformed += 1
            self.t.once.warn(
                f"malformed-{e}", "node %s: malformed peer input, closing that connection: %s", self.t.node_id, e
            )
            results.error.code = "malformed"
            results.error.message = str(e)[:200]
            self._close_soon()
            return
        self.t.counters.received_msgs += len(batch)
        try:
            self.t.on_messages(batch)
        except Exception as e:  # a bug: keep it local, answer with a typed error
            log.exception("node %s: failed to process a peer batch", self.t.node_id)
            results.error.code = "internal"
            results.error.message = f"{type(e).__name__}: {e}"[:200]

    async def ping(self, header: Any, payload: Any, _context: Any, **_kw: Any) -> None:
        results = _context.results
        code, why, _src = self._check(header)
        if code != "none":
            self._refuse(code, why, results)
            return
        results.payload = payload
        results.nodeId = self.t.node_id
        results.term = self.t.term()
        results.clientAddress = self.t.client_address
        results.etcdAddress = self.t.etcd_address

    async def installSnapshot(self, header: Any, chunk: Any, _context: Any, **_kw: Any) -> None:  # noqa: N802
        """Follower side of §7: collect the chunks (the inbox); on the last, verified, hand the file over."""
        results = _context.results
        t = self.t
        try:
            code, why, src = self._check(header)
            if code != "none":
                self._refuse(code, why, results)
                return
            results.term = t.term()
            if t.inbox.directory is None or t.snapshot_received is None:
                results.error.code = "stopped"
                results.error.message = "this node does not accept snapshots"
                return
            if int(chunk.term) < t.term():
                results.error.code = "wrongNode"
                results.error.message = f"stale term {int(chunk.term)} (this node is at term {t.term()})"
                return
            try:
                conf = conf_from_wire(chunk.conf)
            except ValueError as e:  # the sender's bug, not ours: refuse the chunk, like any malformed input
                results.error.code = "malformed"
                results.error.message = f"snapshot chunk: {e}"[:200]
                return
            meta = SnapshotMeta(Index(int(chunk.lastIndex)), Term(int(chunk.lastTerm)), conf)
            code, message, next_offset, path = await t.inbox.receive(
                src, meta, int(chunk.offset), bytes(chunk.data), bool(chunk.done), int(chunk.crc32c)
            )
            if code != "none":
                results.error.code = code
                results.error.message = message
                return
            results.nextOffset = next_offset
            if path is None:
                return
            await t.snapshot_received(meta, path)
            t.on_messages([InstallSnapshot(Term(int(chunk.term)), src, t.node_id, meta)])
        except (ValueError, capnp.KjException, OSError) as e:
            log.warning("node %s: failed to receive a snapshot: %s", t.node_id, e)
            results.error.code = "internal"
            results.error.message = f"{type(e).__name__}: {e}"[:200]

    def _close_soon(self) -> None:
        # Close after the typed reply has left: pycapnp writes it only once this handler has returned, and a
        # close scheduled for the very next loop turn would overtake it.
        asyncio.get_running_loop().call_later(0.05, self._close)


class Transport:
    """All of one node's peer connections, inbound and outbound."""

    def __init__(
        self,
        node_id: NodeId,
        cluster_id: str,
        peers: dict[NodeId, Address],
        on_messages: Callable[[list[Message]], None],
        term: Callable[[], int],
        settings: TransportSettings | None = None,
        client_address: str = "",
        on_peer_down: Callable[[NodeId], None] | None = None,
        *,
        etcd_address: str = "",
        streams: StreamLayer = PLAIN,
        snapshot_source: SnapshotSource | None = None,
        on_snapshot_sent: Callable[[NodeId, bool], None] | None = None,
        snapshot_received: Callable[[SnapshotMeta, str], Awaitable[None]] | None = None,
        incoming_dir: str | None = None,
        accept_peer: Callable[[NodeId], bool] | None = None,
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.own_address = str(peers.get(node_id, ""))
        """Where this node listens for peers, as the others dial it (sent in every header)."""
        self.accept_peer = accept_peer
        """Whether a node outside ``peers`` that names its address may be linked (see ``admit``)."""
        self.peers = dict(peers)
        """Every member and where this node reaches it (its own entry included): who may talk to us."""
        self.on_messages = on_messages
        self.term = term
        self.client_address = client_address
        self.etcd_address = etcd_address
        """The URL where this node serves etcd's gRPC API (``http://`` or ``https://``; "" if it does not):
        told to peers in the handshake, so that any node's gateway can list every member's etcd endpoint (etcd's
        clientURLs)."""
        self.streams = streams
        tls = streams.server_tls
        self.verify_names = tls is not None and tls.verify_mode == ssl.CERT_REQUIRED
        """Peer mutual TLS: each sender must be named by its connection's certificate (``_check_header``)."""
        self.snapshot_source = snapshot_source
        """Leader side: the newest snapshot (metadata and a chunk iterator); called in a worker thread."""
        self.on_snapshot_sent = on_snapshot_sent
        self.snapshot_received = snapshot_received
        """Follower side: durably keep the verified snapshot at this temporary path (then it is installed)."""
        self.inbox = SnapshotInbox(incoming_dir)
        self.on_peer_down = on_peer_down
        """Called when an established connection to a peer breaks (not for a peer that was never reached)."""
        self.settings = settings or TransportSettings()
        self.counters = TransportCounters()
        self.once = _Once()
        self.links = {p: PeerLink(self, p, a) for p, a in self.peers.items() if p != node_id}
        self._link_tasks: dict[NodeId, asyncio.Task[None]] = {}
        self._tasks = TaskSet(f"node {node_id} transport")
        self._started = False
        self._listener: Listener | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def listen(self, address: Address) -> None:
        """Serve the peer port: capnp ``Peer`` connections and data plane frames on the same address."""
        self._listener = await self.streams.listen(
            address,
            lambda close, names: PeerService(self, close, names),
            name=f"node {self.node_id} peer port",
            plain=lambda: FrameReceiver(self._deliver_frame, self._malformed_frame),
            magic=FRAME_MAGIC,
            sniff_timeout_s=SNIFF_TIMEOUT_S,
            max_connections=self.settings.max_connections,
        )

    def start(self) -> None:
        """Start one link task per peer (and for every peer added later)."""
        self._started = True
        for link in self.links.values():
            self._start_link(link)

    def _start_link(self, link: PeerLink) -> None:
        self._link_tasks[link.peer] = self._tasks.spawn(link.run(), name=f"raftkv-link-{self.node_id}-{link.peer}")

    async def close(self) -> None:
        """Stop every link and the listener, and close every connection. Idempotent."""
        await self._tasks.aclose()
        self._link_tasks.clear()
        if self._listener is not None:
            await self._listener.aclose()
            self._listener = None
        self.inbox.discard_all()

    # --- membership ------------------------------------------------------------------------------------------

    def admit(self, peer: NodeId, address: str) -> bool:
        """A node not among our peers talks to us: link it (and serve it) if it says where it listens and
        ``accept_peer`` allows it — a member added by entries our log does not hold yet (a new leader, for a
        node that was down while it was added). A member removed by a committed change is refused."""
        if not address or self.accept_peer is None or peer == self.node_id or not self.accept_peer(peer):
            return False
        try:
            where = Address.parse(address, f"node {peer}'s peer address")
        except AddressError:
            return False
        self.once.info(
            f"admit-{peer}",
            "node %s: linking node %s at %s (it is not in our configuration yet)",
            self.node_id,
            peer,
            where,
        )
        self.add_peer(peer, where)
        return True

    def add_peer(self, peer: NodeId, address: Address) -> None:
        """Make ``peer`` a member reachable at ``address``: it may talk to us, and a link to it starts."""
        if peer in self.peers:
            self.update_peer(peer, address)
            return
        self.peers[peer] = address
        if peer == self.node_id:
            return
        link = self.links[peer] = PeerLink(self, peer, address)
        if self._started:
            self._start_link(link)

    def update_peer(self, peer: NodeId, address: Address) -> None:
        """``peer`` moved to ``address``: its link drops the old connection and dials the new address."""
        if peer not in self.peers:
            self.add_peer(peer, address)
            return
        self.peers[peer] = address
        old = self.links.get(peer)
        if old is None or old.address == address:
            return
        link = self.links[peer] = PeerLink(self, peer, address)
        task = self._link_tasks.pop(peer, None)
        if task is not None:
            task.cancel()  # its finally closes the old connections and reports the peer down
            self._start_link(link)

    def remove_peer(self, peer: NodeId) -> None:
        """``peer`` is no longer a member: its link stops and its requests are refused from now on."""
        self.peers.pop(peer, None)
        self.links.pop(peer, None)
        task = self._link_tasks.pop(peer, None)
        if task is not None:
            task.cancel()

    # --- sending ---------------------------------------------------------------------------------------------

    def send(self, messages: Iterable[Message]) -> None:
        links = self.links
        touched: set[PeerLink] = set()
        for msg in messages:
            link = links.get(msg.dst)
            if link is not None:
                link.enqueue(msg, wake=False)
                touched.add(link)
        for link in touched:
            link.flush()

    def snapshot_sent(self, peer: NodeId, ok: bool) -> None:
        if self.on_snapshot_sent is not None:
            self.on_snapshot_sent(peer, ok)

    def connected(self, peer: NodeId) -> bool:
        link = self.links.get(peer)
        return link is not None and link.connected

    def client_address_of(self, peer: NodeId) -> str:
        """The client address ``peer`` announced in its handshake ("" if unknown)."""
        link = self.links.get(peer)
        return link.client_address if link is not None else ""

    def etcd_address_of(self, peer: NodeId) -> str:
        """The etcd gateway address ``peer`` announced in its handshake ("" if it has none or is unknown)."""
        if peer == self.node_id:
            return self.etcd_address
        link = self.links.get(peer)
        return link.etcd_address if link is not None else ""

    # --- receiving frames ------------------------------------------------------------------------------------

    def _deliver_frame(self, data: bytes, names: frozenset[str] = frozenset()) -> bool:
        """Decode one data plane frame and hand its messages to the node; False refuses the sender."""
        try:
            with schema.MessageBatch.from_bytes(
                data,
                traversal_limit_in_words=TRAVERSAL_LIMIT_WORDS,
                nesting_limit=NESTING_LIMIT,
            ) as mb:
                code, why, src = _check_header(self, mb.header, names)
                if code != "none":
                    self.counters.refused += 1
                    self.once.warn(f"refuse-{code}-{why}", "node %s refused a peer frame: %s", self.node_id, why)
                    return False
                batch = [decode(m, src, self.node_id) for m in mb.messages]
        except (DecodeError, capnp.KjException, ValueError) as e:
            self._malformed_frame(str(e))
            return False
        self.counters.received_msgs += len(batch)
        try:
            self.on_messages(batch)
        except Exception:  # a bug: keep it local to this batch
            log.exception("node %s: failed to process a peer frame", self.node_id)
        return True

    def _malformed_frame(self, why: str) -> None:
        self.counters.malformed += 1
        self.once.warn(
            f"malformed-{why}", "node %s: malformed peer frame, closing that connection: %s", self.node_id, why
        )
