"""The peer data plane's framing: one-way ``MessageBatch`` frames on a plain stream.

Theory of operation
-------------------
Raft's messages are one-way — the answer to an AppendEntries is another message, sent after the follower's
fsync — so the reply a Cap'n Proto call carries is pure cost (measured here: a call ~140 µs of CPU for the
caller and ~100 µs for the callee, a frame ~35 µs to send and ~25 µs to receive; docs/runtime.md). A data
plane connection starts with :data:`FRAME_MAGIC`, then carries frames: a 4-byte little-endian length and a
``MessageBatch`` (Cap'n Proto serialization, no RPC). One connection keeps the messages in order.

:class:`FrameSender` is the outbound protocol: the peer link writes frames into it and watches its flow
control; the peer never writes back. :class:`FrameReceiver` is the inbound protocol: it reassembles frames
split anywhere and hands each whole frame to ``deliver``. A bad length closes the connection (reported to
``malformed``); so does a frame ``deliver`` refuses. The sender reconnects, and its handshake tells it why if it
is a configuration error. What a frame *means* (decoding, header checks) is the peer transport's business.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

from raftkv.transport.tls import cert_names
from raftkv.transport.wire import MAX_FRAME_BYTES

FRAME_MAGIC = b"RKF1"
"""First bytes of a data plane connection (the peer port tells it from a Cap'n Proto stream by them)."""
CLIENT_FRAME_MAGIC = b"RKC1"
"""First bytes of a client data plane connection to a node's client port (``ExecuteCall`` frames in,
``ExecuteReturn`` frames out; raftkv/kvserver/frames_api.py)."""
FRAME_LEN = struct.Struct("<I")


def frame(data: bytes) -> bytes:
    """``data`` (one serialized ``MessageBatch``) with its length prefix."""
    return FRAME_LEN.pack(len(data)) + data


class FrameSender(asyncio.Protocol):
    """Outbound data plane connection: the link writes frames; the peer never writes back."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):  # pragma: no cover - create_connection gives one
            raise TypeError(f"a stream transport is needed, got {type(transport).__name__}")
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


class FrameTooLarge(ValueError):
    """A length prefix over the limit: the stream cannot be a frame stream (or the sender is hostile)."""


class FrameBuffer:
    """Reassembles length-prefixed frames from a byte stream split anywhere (both data planes use it)."""

    __slots__ = ("buf", "limit")

    def __init__(self, limit: int = MAX_FRAME_BYTES) -> None:
        self.buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; the frames it completed, in order. Raises :class:`FrameTooLarge` (the stream is
        unusable after that: the caller closes the connection)."""
        self.buf += data
        out: list[bytes] = []
        while (one := self.pop()) is not None:
            out.append(one)
        return out

    def pop(self) -> bytes | None:
        """The next whole frame, or None until more bytes come (``buf += data`` adds them). Raises
        :class:`FrameTooLarge`."""
        buf = self.buf
        if len(buf) < FRAME_LEN.size:
            return None
        (size,) = FRAME_LEN.unpack_from(buf)
        if size > self.limit:
            raise FrameTooLarge(f"a frame of {size} bytes exceeds the {self.limit}-byte limit")
        end = FRAME_LEN.size + size
        if len(buf) < end:
            return None
        out = bytes(buf[FRAME_LEN.size : end])
        del buf[:end]
        return out


class FrameReceiver(asyncio.Protocol):
    """Inbound data plane connection: ``FRAME_MAGIC``, then length-prefixed frames, each given to ``deliver``.

    ``deliver(frame, names)`` returns False to refuse the sender (the connection closes); ``names`` are what
    the connection's TLS client certificate names. ``malformed(why)`` is told about a frame that cannot be one
    (before the connection closes).
    """

    def __init__(self, deliver: Callable[[bytes, frozenset[str]], bool], malformed: Callable[[str], None]) -> None:
        self._deliver = deliver
        self._malformed = malformed
        self.frames = FrameBuffer()
        self.transport: asyncio.Transport | None = None
        self.magic_seen = False
        self.names: frozenset[str] = frozenset()
        """What the connection's verified TLS client certificate names (``tls.cert_names``; empty without)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):  # pragma: no cover - the listener gives one
            raise TypeError(f"a stream transport is needed, got {type(transport).__name__}")
        self.transport = transport
        self.names = cert_names(transport.get_extra_info("peercert"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if not self.magic_seen:
            buf = self.frames.buf
            buf += data
            if len(buf) < len(FRAME_MAGIC):
                return
            self.magic_seen = True
            del buf[: len(FRAME_MAGIC)]  # peeked at by the listener, so it is certainly ours
            data = b""
        try:
            frames = self.frames.feed(data)
        except FrameTooLarge as e:
            self._malformed(str(e))
            self.close()
            return
        for data_frame in frames:
            if self.transport is None:
                return
            if not self._deliver(data_frame, self.names):
                self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
