"""Node-to-node transport: an inbound ``Peer`` service and one supervised outbound link per peer.

Theory of operation
-------------------
Raft messages are one-way (see ``raftkv.capnp``). ``Transport.send`` never blocks: it puts each message on its
destination's bounded queue and wakes that peer's link. Each :class:`PeerLink` is a supervisor task that

1. connects (with a timeout) and checks who answers with a ``ping`` (cluster id and node id), so a wrong
   address in ``--peers`` is reported once, clearly, instead of silently talking to the wrong node;
2. opens the **data plane**: a second connection to the same port that starts with ``FRAME_MAGIC`` and then
   carries length-prefixed ``MessageBatch`` frames (Cap'n Proto serialization, no RPC), each holding every
   queued message up to a size bound. Raft's messages are one-way — the answer to an AppendEntries is another
   message, sent after the follower's fsync — so the reply every capnp call carries is pure cost: measured on
   this project's machine, a capnp call costs ~140 µs of CPU for the caller and ~100 µs for the callee, a frame
   ~35 µs to send and ~25 µs to receive (docs/runtime.md, "The peer data plane"). One connection keeps the
   messages in order; the control connection stays Cap'n Proto RPC (handshake, a keepalive ``ping`` with a
   deadline that notices a SIGSTOPped peer, snapshots). With ``TransportSettings.frames`` off, messages travel
   as ``send`` calls instead, at most ``max_inflight_calls`` unanswered (calls on one capability are
   delivered in order);
3. on any error or timeout (a SIGSTOPped peer never errors by itself: every call has a deadline) drops the
   connections, and reconnects after a jittered exponential backoff.

A message that cannot be sent is dropped: Raft is built for lossy networks and retransmits what matters. While a
link is down nothing is queued for it (it would be stale on reconnection), and a full queue (a slow peer) drops
the newest messages; both are counted.

Inbound, the peer port peeks at the first four bytes of each new connection: ``FRAME_MAGIC`` makes it a data
plane connection (:class:`_FrameReceiver`), anything else is handed to Cap'n Proto, where each connection gets
its own :class:`PeerService`. Both check the header (cluster id, a known sender, addressed to us), decode every
message at the edge, and hand the batch to the node. Malformed input closes that one connection and is counted;
requests from another cluster or an unknown member are refused with a typed error (a frame, which has no reply,
by closing its connection) and logged once. No Python traceback ever crosses the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import capnp  # type: ignore[import-untyped]
import crc32c

from raftkv.raft.messages import AppendEntries, InstallSnapshot, Message
from raftkv.raft.types import Index, NodeId, SnapshotMeta, Term
from raftkv.transport.address import Address
from raftkv.transport.codec import DecodeError, decode, encode_into, schema

log = logging.getLogger("raftkv.transport")

# Equal on both sides of every connection: 64 MiB of pointers, nesting as deep as our schema needs.
TRAVERSAL_LIMIT_WORDS = 8 * 1024 * 1024
NESTING_LIMIT = 16

FRAME_MAGIC = b"RKF1"
"""First bytes of a data plane connection. A Cap'n Proto stream starts with its segment count minus one, a small
little-endian integer, so the two can never be confused."""
_FRAME_LEN = struct.Struct("<I")
MAX_FRAME_BYTES = TRAVERSAL_LIMIT_WORDS * 8
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


def _header(cluster_id: str, src: NodeId, dst: NodeId) -> dict[str, object]:
    return {"clusterId": cluster_id, "from": int(src), "to": int(dst)}


def _check_header(t: Transport, header: Any) -> tuple[str, str, NodeId]:
    """(error code, message, sender) of an inbound header; the code is "none" when it may be served."""
    src = NodeId(int(getattr(header, "from")))  # "from" is a Python keyword
    if header.clusterId != t.cluster_id:
        return "wrongCluster", f"this is cluster {t.cluster_id!r}, not {header.clusterId!r}", src
    if src not in t.peers:
        return "unknownMember", f"node {src} is not a member of cluster {t.cluster_id!r}", src
    if header.to not in (0, t.node_id):
        return "wrongNode", f"this is node {t.node_id}, not node {header.to}", src
    return "none", "", src


class _FrameSender(asyncio.Protocol):
    """Outbound data plane connection: the link writes frames; the peer never writes back."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(FRAME_MAGIC)

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()  # wake a pump waiting for the buffer to drain: it finds the connection gone
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def close(self) -> None:
        # abort, not close: close would keep sending the buffered (stale) frames to a slow peer alongside the
        # next connection, and keep the socket open for as long as that peer does not read.
        if self.transport is not None:
            self.transport.abort()


class _FrameReceiver(asyncio.Protocol):
    """Inbound data plane connection: ``FRAME_MAGIC``, then frames of a 4-byte little-endian length and a
    ``MessageBatch``. Anything wrong (a bad length, bytes that are not a valid batch, a stranger's header) closes
    this connection; the sender reconnects, and its handshake tells it why if it is a configuration error."""

    def __init__(self, t: Transport) -> None:
        self.t = t
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.magic_seen = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.t._frame_conns.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.t._frame_conns.discard(self.transport)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.magic_seen:
            if len(buf) < len(FRAME_MAGIC):
                return
            self.magic_seen = True
            del buf[: len(FRAME_MAGIC)]  # peeked at by the listener, so it is certainly ours
        while self.transport is not None and len(buf) >= _FRAME_LEN.size:
            (size,) = _FRAME_LEN.unpack_from(buf)
            if size > MAX_FRAME_BYTES:
                self._malformed(f"a frame of {size} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
                return
            end = _FRAME_LEN.size + size
            if len(buf) < end:
                return
            frame = bytes(buf[_FRAME_LEN.size : end])
            del buf[:end]
            self._deliver(frame)

    def _deliver(self, frame: bytes) -> None:
        t = self.t
        try:
            with schema.MessageBatch.from_bytes(
                frame, traversal_limit_in_words=TRAVERSAL_LIMIT_WORDS, nesting_limit=NESTING_LIMIT
            ) as mb:
                code, why, src = _check_header(t, mb.header)
                if code != "none":
                    t.counters.refused += 1
                    t.once.warn(f"refuse-{code}-{why}", "node %s refused a peer frame: %s", t.node_id, why)
                    self._close()
                    return
                batch = [decode(m, src, t.node_id) for m in mb.messages]
        except (DecodeError, capnp.KjException, ValueError) as e:
            self._malformed(str(e))
            return
        t.counters.received_msgs += len(batch)
        try:
            t.on_messages(batch)
        except Exception:  # a bug: keep it local to this batch
            log.exception("node %s: failed to process a peer frame", t.node_id)

    def _malformed(self, why: str) -> None:
        t = self.t
        t.counters.malformed += 1
        t.once.warn(f"malformed-{why}", "node %s: malformed peer frame, closing that connection: %s", t.node_id, why)
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.t._frame_conns.discard(self.transport)
            self.transport = None


class _Refused(Exception):
    """The peer answered the handshake but refused us (or is not the node we expected)."""


class PeerLink:
    """The connection to one peer, with its outbound queue and its supervisor."""

    def __init__(self, transport: Transport, peer: NodeId, address: Address) -> None:
        self.t = transport
        self.peer = peer
        self.address = address
        self.queue: deque[Message] = deque()
        self.wake = asyncio.Event()
        self.connected = False
        self.ever_connected = False
        self.client_address = ""
        """The peer's client address, as it told us in the handshake ("" if it has none or is unknown)."""
        self.snapshot_request: InstallSnapshot | None = None
        """The core asked to send this peer a snapshot; streamed by its own task, beside the normal traffic."""
        self.snapshot_wake = asyncio.Event()
        self._rng = random.Random()
        self._frames: _FrameSender | None = None
        """The data plane connection while the pump runs on it."""
        header = _header(transport.cluster_id, transport.node_id, peer)
        self._wire_header = schema.Header.new_message(**header).as_reader()
        """Built once: pycapnp copies a struct ~9x faster than it converts a dict (measured: 0.9 vs 8.5 µs)."""

    def enqueue(self, msg: Message, wake: bool = True) -> None:
        if type(msg) is InstallSnapshot:
            if not self.connected:
                self.t.snapshot_sent(self.peer, False)
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
        backoff = s.backoff_initial_s
        while True:
            client: Any = None
            frames: _FrameSender | None = None
            try:
                async with asyncio.timeout(s.connect_timeout_s):
                    stream = await capnp.AsyncIoStream.create_connection(host=self.address.host, port=self.address.port)
                client = capnp.TwoPartyClient(
                    stream, traversal_limit_in_words=TRAVERSAL_LIMIT_WORDS, nesting_limit=NESTING_LIMIT
                )
                cap = client.bootstrap().cast_as(schema.Peer)
                if not await self._handshake(cap):
                    # A configuration error (wrong cluster, wrong node at that address): retry slowly. Falls
                    # through to the backoff below — a `continue` here once skipped it and spun reconnecting.
                    raise _Refused()
                if s.frames:
                    async with asyncio.timeout(s.connect_timeout_s):
                        _tr, frames = await asyncio.get_running_loop().create_connection(
                            _FrameSender, host=self.address.host, port=self.address.port
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
                    _describe(e),
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
            r = await cap.ping(header=_header(self.t.cluster_id, self.t.node_id, self.peer), payload=b"")
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
        return True

    async def _pump_until_disconnect(self, client: Any, cap: Any, frames: _FrameSender | None) -> None:
        """Send until a call fails or a connection drops, whichever comes first.

        A follower sends to its leader only in reply to the leader's messages: if the leader's process dies it
        would never send again, and only watching the connections themselves tells it at once.
        """
        closed = asyncio.ensure_future(client.on_disconnect())
        snapshots = asyncio.ensure_future(self._snapshot_loop(cap))
        if frames is None:
            workers = [asyncio.ensure_future(self._pump(cap))]
        else:
            # Frames have no replies, so nothing else would notice a peer that stopped answering (SIGSTOP).
            workers = [asyncio.ensure_future(self._pump_frames(frames)), asyncio.ensure_future(self._keepalive(cap))]
        tasks = {closed, snapshots, *workers} | ({frames.closed} if frames is not None else set())
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (closed, snapshots, *workers):
                task.cancel()
            await asyncio.gather(closed, snapshots, *workers, return_exceptions=True)
            if self.snapshot_request is not None:
                self.snapshot_request = None
                self.t.snapshot_sent(self.peer, False)
        for task in (snapshots, *workers):
            if task in done:
                task.result()  # re-raise the failure
        raise ConnectionError("the peer closed the connection")

    async def _keepalive(self, cap: Any) -> None:
        s = self.t.settings
        header = _header(self.t.cluster_id, self.t.node_id, self.peer)
        while True:
            await asyncio.sleep(s.call_timeout_s / 2)
            async with asyncio.timeout(s.call_timeout_s):
                await cap.ping(header=header, payload=b"")

    async def _pump_frames(self, frames: _FrameSender) -> None:
        s = self.t.settings
        transport = frames.transport
        assert transport is not None
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

    def _write_frames(self, frames: _FrameSender) -> None:
        transport = frames.transport
        c = self.t.counters
        if transport is None or transport.is_closing():
            self._drop_queue()  # stale by the time the link is back (the pump notices and reconnects)
            return
        while self.queue and frames.writable.is_set():
            batch = self._take_batch()
            mb = schema.MessageBatch.new_message()
            self._fill(mb, batch)
            data = mb.to_bytes()
            transport.write(_FRAME_LEN.pack(len(data)) + data)
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
            try:
                ok = await self._stream_snapshot(cap, request)
            finally:
                if self.snapshot_request is request:
                    self.snapshot_request = None
                self.t.snapshot_sent(self.peer, ok)

    async def _stream_snapshot(self, cap: Any, request: InstallSnapshot) -> bool:
        source = self.t.snapshot_source
        snapshot = await asyncio.to_thread(source) if source is not None else None
        if snapshot is None:
            log.warning("node %s: asked to send node %s a snapshot, but none is available", self.t.node_id, self.peer)
            return False
        meta, chunks = snapshot
        header = _header(self.t.cluster_id, self.t.node_id, self.peer)
        log.info("node %s: sending snapshot at index %s to node %s", self.t.node_id, meta.index, self.peer)
        offset = 0
        crc = 0
        chunk_iter = iter(chunks)
        data: bytes = await asyncio.to_thread(next, chunk_iter, b"")
        while True:
            following: bytes | None = await asyncio.to_thread(next, chunk_iter, None)
            crc = crc32c.crc32c(data, crc)
            done = following is None
            chunk = {
                "term": int(request.term),
                "lastIndex": int(meta.index),
                "lastTerm": int(meta.term),
                "voters": [int(v) for v in meta.voters],
                "offset": offset,
                "data": data,
                "done": done,
                "crc32c": crc if done else 0,
            }
            async with asyncio.timeout(self.t.settings.snapshot_call_timeout_s):
                r = await cap.installSnapshot(header=header, chunk=chunk)
            if str(r.error.code) != "none":
                log.warning("node %s: node %s refused the snapshot: %s", self.t.node_id, self.peer, r.error.message)
                return False
            offset += len(data)
            if following is None:
                return True
            data = following

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
            # The call leaves now, in order; the task only waits for its answer (with a deadline).
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
    """The inbound side of one connection."""

    def __init__(self, transport: Transport) -> None:
        self.t = transport
        self.server: Any = None  # the TwoPartyServer of this connection, to close it on malformed input

    def _check(self, header: Any) -> tuple[str, str, NodeId]:
        return _check_header(self.t, header)

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

    async def installSnapshot(self, header: Any, chunk: Any, _context: Any, **_kw: Any) -> None:  # noqa: N802
        """Follower side of §7: collect the chunks in a temporary file; on the last, verify and hand it over."""
        results = _context.results
        t = self.t
        try:
            code, why, src = self._check(header)
            if code != "none":
                self._refuse(code, why, results)
                return
            results.term = t.term()
            if t.incoming_dir is None or t.snapshot_received is None:
                results.error.code = "stopped"
                results.error.message = "this node does not accept snapshots"
                return
            if int(chunk.term) < t.term():
                results.error.code = "wrongNode"
                results.error.message = f"stale term {int(chunk.term)} (this node is at term {t.term()})"
                return
            meta = SnapshotMeta(
                Index(int(chunk.lastIndex)), Term(int(chunk.lastTerm)), tuple(NodeId(int(v)) for v in chunk.voters)
            )
            offset = int(chunk.offset)
            incoming = t._incoming.get(src)
            if offset == 0:
                if incoming is not None:
                    incoming.discard()
                incoming = _Incoming(os.path.join(t.incoming_dir, f"incoming-from-{int(src)}.tmp"), meta)
                t._incoming[src] = incoming
            if incoming is None or incoming.meta != meta or offset != incoming.size:
                # Out of order (a restarted stream, a lost chunk): the sender starts again from 0.
                results.error.code = "malformed"
                results.error.message = f"snapshot chunk at offset {offset} out of order; restart from 0"
                if incoming is not None:
                    incoming.discard()
                    t._incoming.pop(src, None)
                return
            await asyncio.to_thread(incoming.write, bytes(chunk.data))
            results.nextOffset = incoming.size
            if not chunk.done:
                return
            t._incoming.pop(src, None)
            await asyncio.to_thread(incoming.close)
            if incoming.crc != int(chunk.crc32c):
                incoming.discard()
                results.error.code = "malformed"
                results.error.message = "snapshot checksum mismatch; restart from 0"
                return
            await t.snapshot_received(meta, incoming.path)
            t.on_messages([InstallSnapshot(Term(int(chunk.term)), src, t.node_id, meta)])
        except (ValueError, capnp.KjException, OSError) as e:
            log.warning("node %s: failed to receive a snapshot: %s", t.node_id, e)
            results.error.code = "internal"
            results.error.message = f"{type(e).__name__}: {e}"[:200]

    def _close_soon(self) -> None:
        # Close after the typed reply has left: pycapnp writes it only once this handler has returned, and a
        # close scheduled for the very next loop turn would overtake it.
        server = self.server
        if server is not None:
            asyncio.get_running_loop().call_later(0.05, _close_quietly, server)


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _close_quietly(server: Any) -> None:
    with contextlib.suppress(Exception):
        server.close()


def _describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class _Incoming:
    """A snapshot being received from one leader: a temporary file and a running CRC32C."""

    def __init__(self, path: str, meta: SnapshotMeta) -> None:
        self.path = path
        self.meta = meta
        self.size = 0
        self.crc = 0
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()/discard()

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)
        self.crc = crc32c.crc32c(data, self.crc)

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


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
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.peers = peers
        self.on_messages = on_messages
        self.term = term
        self.client_address = client_address
        self.snapshot_source: Callable[[], tuple[SnapshotMeta, Iterator[bytes]] | None] | None = None
        """Leader side: the newest snapshot (metadata and a chunk iterator); called in a worker thread."""
        self.on_snapshot_sent: Callable[[NodeId, bool], None] | None = None
        self.snapshot_received: Callable[[SnapshotMeta, str], Awaitable[None]] | None = None
        """Follower side: durably keep the verified snapshot at this temporary path (then it is installed)."""
        self.incoming_dir: str | None = None
        self._incoming: dict[NodeId, _Incoming] = {}
        self.on_peer_down = on_peer_down
        """Called when an established connection to a peer breaks (not for a peer that was never reached)."""
        self.settings = settings or TransportSettings()
        self.counters = TransportCounters()
        self.once = _Once()
        self.links = {p: PeerLink(self, p, a) for p, a in peers.items() if p != node_id}
        self._listeners: list[socket.socket] = []
        self._accepting: list[asyncio.Future[None]] = []
        self._sniffing: set[asyncio.Future[None]] = set()
        self._unsniffed: set[socket.socket] = set()
        """Accepted sockets not yet handed to a protocol (closed by ``close`` if their sniff never ran)."""
        self._connections: set[Any] = set()
        self._frame_conns: set[asyncio.Transport] = set()

    async def listen(self, address: Address) -> None:
        async def on_connection(stream: Any) -> None:
            service = PeerService(self)
            server = capnp.TwoPartyServer(
                stream,
                bootstrap=service,
                traversal_limit_in_words=TRAVERSAL_LIMIT_WORDS,
                nesting_limit=NESTING_LIMIT,
            )
            service.server = server
            self._connections.add(server)
            try:
                await server.on_disconnect()
            except asyncio.CancelledError:
                # The event loop is shutting down under us. This task belongs to pycapnp's accept callback,
                # which would print the cancellation as an error: end quietly, there is nobody to tell.
                pass
            except Exception as e:  # a connection ending badly concerns that connection only
                log.debug("node %s: peer connection ended: %s", self.node_id, _describe(e))
            finally:
                self._connections.discard(server)

        # Like loop.create_server: one listener per address the host resolves to (localhost may be ::1 and
        # 127.0.0.1), IPv6 ones IPv6-only; but accepting ourselves, so that each connection can be sniffed.
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        seen: set[tuple[int, Any]] = set()
        try:
            for family, kind, proto, _name, sockaddr in infos:
                if (family, sockaddr) in seen:
                    continue
                seen.add((family, sockaddr))
                listener = socket.socket(family, kind, proto)
                self._listeners.append(listener)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listener.bind(sockaddr)
                listener.listen(128)
                listener.setblocking(False)
        except OSError:
            for listener in self._listeners:
                listener.close()
            self._listeners.clear()
            raise
        self._accepting = [
            asyncio.ensure_future(self._accept_loop(listener, on_connection)) for listener in self._listeners
        ]

    async def _accept_loop(self, listener: socket.socket, on_connection: Callable[[Any], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = await loop.sock_accept(listener)
            except OSError as e:  # e.g. out of file descriptors: keep serving the connections we have
                self.once.warn("accept", "node %s: cannot accept a peer connection: %s", self.node_id, e)
                await asyncio.sleep(0.1)
                continue
            self.once.clear("accept")
            self._unsniffed.add(conn)
            task = asyncio.ensure_future(self._sniff(conn, on_connection))
            self._sniffing.add(task)
            task.add_done_callback(self._sniffing.discard)

    async def _sniff(self, conn: socket.socket, on_connection: Callable[[Any], Awaitable[None]]) -> None:
        """Tell a data plane connection from a Cap'n Proto one by its first four bytes, without consuming them."""
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        head = b""
        pause = 0.001
        try:
            async with asyncio.timeout(SNIFF_TIMEOUT_S):
                while True:
                    readable: asyncio.Future[None] = loop.create_future()
                    loop.add_reader(conn.fileno(), _set_once, readable)
                    try:
                        await readable
                    finally:
                        loop.remove_reader(conn.fileno())
                    head = conn.recv(len(FRAME_MAGIC), socket.MSG_PEEK)
                    if len(head) == len(FRAME_MAGIC) or not head:
                        break
                    # A partial first segment: the rest is normally on its way; back off for a peer that stalls.
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.1)
            if not head:
                conn.close()
                return
            if head == FRAME_MAGIC:
                await loop.connect_accepted_socket(lambda: _FrameReceiver(self), conn)
            else:
                # What capnp.AsyncIoStream.create_server does for each connection it accepts (pycapnp's own
                # protocol factory; pyproject pins pycapnp below 3 for this private name).
                await loop.connect_accepted_socket(lambda: capnp.AsyncIoStream._connect(on_connection), conn)
        except (TimeoutError, OSError) as e:
            log.debug("node %s: dropped a peer connection before it spoke: %s", self.node_id, _describe(e))
            conn.close()
        except Exception as e:  # e.g. the KJ loop is gone: this connection only
            log.warning("node %s: could not serve a peer connection: %s", self.node_id, _describe(e))
            conn.close()
        except BaseException:
            conn.close()
            raise
        finally:
            self._unsniffed.discard(conn)

    def start_links(self, tg: asyncio.TaskGroup) -> list[asyncio.Task[None]]:
        return [
            tg.create_task(link.run(), name=f"raftkv-link-{self.node_id}-{link.peer}") for link in self.links.values()
        ]

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

    async def close(self) -> None:
        pending = [*self._accepting, *self._sniffing]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._accepting = []
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        for conn in list(self._unsniffed):
            conn.close()
        self._unsniffed.clear()
        for transport in list(self._frame_conns):
            transport.close()
        self._frame_conns.clear()
        for server in list(self._connections):
            _close_quietly(server)
        self._connections.clear()
