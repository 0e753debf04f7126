"""The client data plane of a node's client port: ``Kv.execute`` as frames on a plain stream.

Theory of operation
-------------------
Every KV operation a client makes travels as one ``Kv.execute`` batch, so that call is the client's hot path.
As a Cap'n Proto call it costs ~140 µs of CPU for the caller and ~100 µs for the node, on the critical path of
every sequential write (``bench/trace_put.py``: the two client legs were the slowest of a put's four). The peers
moved their hot path to frames long ago (``raftkv.transport.frames``); this is the same for the client: a
connection that starts with :data:`~raftkv.transport.frames.CLIENT_FRAME_MAGIC` carries length-prefixed
``ExecuteCall`` frames from the client and ``ExecuteReturn`` frames back, matched by the id the client chose
(answers may come in any order: a read batch need not wait for a write batch sent before it). Everything
else on the port (admin calls, watches, the seed's ping) stays Cap'n Proto RPC: only the hot path moved.

The frames carry the very arguments and results of ``Kv.execute`` and run through the same
:meth:`~raftkv.kvserver.capnp_api.ClientService.execute_into`: one code path decides, two encodings carry.

Flow control, per connection:

* at most :data:`MAX_IN_FLIGHT` calls run at once; past that the calls received wait in the buffer and the
  node stops reading the connection (TCP pushes back on the client) until one finishes;
* while the client does not read its answers (the transport's buffer is over its high-water mark), the node
  stops reading its calls as well.

A frame that does not decode closes the connection (one warning per kind); the client's calls on it fail as a
broken connection, which its retry loop handles. A closed connection cancels the calls still running for it:
their outcome is unknown to the client either way, and writes are exactly-once through their session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final, Protocol

import capnp  # type: ignore[import-untyped]

from raftkv.transport.frames import CLIENT_FRAME_MAGIC, FrameBuffer, FrameTooLarge, frame
from raftkv.transport.tls import cert_names
from raftkv.transport.wire import MAX_FRAME_BYTES, NESTING_LIMIT, TRAVERSAL_LIMIT_WORDS, schema

log = logging.getLogger("raftkv.client")

BATCH_BYTES: Final = 4 << 20
"""What the client puts in one batch at most (``raftkv.client.kv.MAX_BATCH_BYTES``; one bigger command goes
alone)."""


def frame_limit(max_request_bytes: int) -> int:
    """The longest ``ExecuteCall`` frame a node reads: a client's fullest batch, or its one biggest command a
    node may still answer with ``LimitExceeded`` (twice ``--max-request-bytes``), and room for the frame's own
    fields. A longer one closes the connection before it is read: a 50 MB put is not buffered."""
    return max(BATCH_BYTES, 2 * max_request_bytes) + (256 << 10)


MAX_IN_FLIGHT: Final = 256
"""``execute`` calls one connection may have running at once (the client coalesces its calls into batches of up
to 1,024 commands, so this is far more than a well-behaved client uses)."""


_warned: set[str] = set()
"""Kinds of malformed frames already logged as a warning by this process (later ones go to debug)."""


class Executor(Protocol):
    """What serves the calls: ``ClientService.execute_into``."""

    cert_user: str
    """The common name of the connection's verified TLS client certificate (set when it connects)."""

    async def execute_into(
        self, cluster: str, requests: Sequence[tuple[bytes, bool]], timeout_ms: int, r: Any, token: str = ""
    ) -> None:
        """Fill ``r`` (an ``ExecuteReturn`` builder) with the batch's results or its error; never raises."""


class ExecuteFrames(asyncio.Protocol):
    """One client data plane connection, node side."""

    def __init__(self, service: Executor, node_id: int, frame_limit: int = MAX_FRAME_BYTES) -> None:
        self.service = service
        self.node_id = node_id
        self._stream: asyncio.Transport | None = None
        self.frames = FrameBuffer(frame_limit)
        self.magic_seen = False
        self.running: set[asyncio.Task[None]] = set()
        self.reading = True
        self.writing = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):  # pragma: no cover - the listener gives one
            raise TypeError(f"a stream transport is needed, got {type(transport).__name__}")
        self._stream = transport
        self.service.cert_user = cert_names(transport.get_extra_info("peercert")).common_name

    def connection_lost(self, exc: Exception | None) -> None:
        self._stream = None
        for task in self.running:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        buf = self.frames.buf
        buf += data
        if not self.magic_seen:
            if len(buf) < len(CLIENT_FRAME_MAGIC):
                return
            self.magic_seen = True
            del buf[: len(CLIENT_FRAME_MAGIC)]  # peeked at by the listener, so it is certainly ours
        self._drain()

    def _drain(self) -> None:
        """Start the calls received so far, as many as the limit allows (the rest wait in the buffer)."""
        try:
            while self._stream is not None and len(self.running) < MAX_IN_FLIGHT:
                data_frame = self.frames.pop()
                if data_frame is None:
                    break
                self._start(data_frame)
        except FrameTooLarge as e:
            self._malformed(str(e))
            return
        self._flow()

    def _start(self, data: bytes) -> None:
        try:
            with schema.ExecuteCall.from_bytes(
                data, traversal_limit_in_words=TRAVERSAL_LIMIT_WORDS, nesting_limit=NESTING_LIMIT
            ) as call:
                call_id = int(call.id)
                cluster = str(call.header.clusterId)
                token = str(call.header.token)
                timeout_ms = int(call.timeoutMs)
                requests = [(bytes(q.command), bool(q.serializable)) for q in call.requests]
        except (capnp.KjException, ValueError) as e:
            self._malformed(f"an ExecuteCall frame that does not decode: {e}")
            return
        task = asyncio.get_running_loop().create_task(self._run(call_id, cluster, requests, timeout_ms, token))
        self.running.add(task)
        task.add_done_callback(self._finished)

    async def _run(
        self, call_id: int, cluster: str, requests: list[tuple[bytes, bool]], timeout_ms: int, token: str
    ) -> None:
        r = schema.ExecuteReturn.new_message(id=call_id)
        await self.service.execute_into(cluster, requests, timeout_ms, r, token)
        transport = self._stream
        if transport is not None and not transport.is_closing():
            transport.write(frame(r.to_bytes()))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            e = task.exception()
            log.error("node %s: a client data plane call failed: %s: %s", self.node_id, type(e).__name__, e, exc_info=e)
            self.close()  # the client sees a broken connection and retries elsewhere or again
            return
        self._drain()

    def _flow(self) -> None:
        """Read while fewer than MAX_IN_FLIGHT calls run and the client reads its answers; else push back."""
        transport = self._stream
        if transport is None:
            return
        want = self.writing and len(self.running) < MAX_IN_FLIGHT
        if want != self.reading:
            self.reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def pause_writing(self) -> None:
        self.writing = False
        self._flow()

    def resume_writing(self) -> None:
        self.writing = True
        self._flow()

    def _malformed(self, why: str) -> None:
        kind = why.split(":", maxsplit=1)[0]
        level = logging.DEBUG if kind in _warned else logging.WARNING  # a hostile client cannot flood the log
        _warned.add(kind)
        log.log(level, "node %s: malformed client data plane frame, closing that connection: %s", self.node_id, why)
        self.close()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
