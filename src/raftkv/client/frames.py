"""``ExecuteChannel``: the client's end of a node's client data plane (``Kv.execute`` as frames).

Theory of operation
-------------------
A :class:`~raftkv.client.connection.Connection` sends every ``execute`` batch through one of these, opened on
first use beside its Cap'n Proto connection (raftkv/kvserver/frames_api.py says why: a frame costs a fraction
of a capnp call, on the critical path of every sequential write). The channel writes
:data:`~raftkv.transport.frames.CLIENT_FRAME_MAGIC`, then one ``ExecuteCall`` frame per batch with an id of its
own; the node's ``ExecuteReturn`` frames come back in any order and resolve the future of their id. The
answer's ``error`` raises the client's usual exception (:func:`raftkv.client.errors.check`), so the retry loop
sees exactly what it saw from the capnp call.

A broken channel (closed by the node, reset, or a frame that does not decode) fails every call in flight with
``ConnectionResetError``, one of :data:`~raftkv.client.connection.BROKEN`: the outcome is unknown, and the retry
loop drops the connection and tries again (writes are exactly-once through their session). The caller bounds
each wait with its deadline and :meth:`forget`\\ s the call afterwards, so a node that never answers costs a
timeout, not a leak.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any, Protocol

import capnp  # type: ignore[import-untyped]

from raftkv.client.errors import check
from raftkv.errors import RaftError
from raftkv.transport.frames import CLIENT_FRAME_MAGIC, FrameBuffer, FrameTooLarge, frame
from raftkv.transport.wire import NESTING_LIMIT, TRAVERSAL_LIMIT_WORDS, schema


class KvRequest(Protocol):
    """One command of an ``execute`` batch."""

    @property
    def command(self) -> bytes: ...

    @property
    def serializable(self) -> bool: ...


def fill_execute(builder: Any, header: Any, requests: Sequence[KvRequest], timeout_ms: int) -> None:
    """The arguments of ``Kv.execute`` into ``builder`` (an ``ExecuteCall`` or the capnp call's request), field
    by field: a list of dicts costs pycapnp ~5 µs per request to convert."""
    builder.header = header
    builder.timeoutMs = timeout_ms
    items = builder.init("requests", len(requests))
    for k, request in enumerate(requests):
        item = items[k]
        item.command = request.command
        if request.serializable:
            item.serializable = True


class ExecuteChannel(asyncio.Protocol):
    """One client data plane connection, client side."""

    def __init__(self) -> None:
        self._stream: asyncio.Transport | None = None
        self.frames = FrameBuffer()
        self.pending: dict[int, asyncio.Future[list[bytes]]] = {}
        self._ids = itertools.count(1)
        self.broken: str = ""
        """Why the channel is unusable ("" while it is open)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):  # pragma: no cover - create_connection gives one
            raise TypeError(f"a stream transport is needed, got {type(transport).__name__}")
        self._stream = transport
        transport.write(CLIENT_FRAME_MAGIC)

    def connection_lost(self, exc: Exception | None) -> None:
        self._break(f"the node closed the connection{f': {exc}' if exc else ''}")

    @property
    def usable(self) -> bool:
        return not self.broken and self._stream is not None

    def call(
        self, header: Any, requests: Sequence[KvRequest], timeout_ms: int
    ) -> tuple[int, asyncio.Future[list[bytes]]]:
        """Send one batch; its id (for :meth:`forget`) and the future of its encoded results."""
        transport = self._stream
        if self.broken or transport is None:
            raise ConnectionResetError(self.broken or "the connection is not open")
        call_id = next(self._ids)
        msg = schema.ExecuteCall.new_message()
        msg.id = call_id
        fill_execute(msg, header, requests, timeout_ms)
        fut: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = fut
        transport.write(frame(msg.to_bytes()))
        return call_id, fut

    def forget(self, call_id: int) -> None:
        """The caller stopped waiting for ``call_id`` (answered, timed out or cancelled)."""
        self.pending.pop(call_id, None)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.frames.feed(data)
        except FrameTooLarge as e:
            self._break(f"the node sent a bad frame: {e}")
            return
        for data_frame in frames:
            try:
                with schema.ExecuteReturn.from_bytes(
                    data_frame, traversal_limit_in_words=TRAVERSAL_LIMIT_WORDS, nesting_limit=NESTING_LIMIT
                ) as r:
                    fut = self.pending.pop(int(r.id), None)
                    if fut is None or fut.done():
                        continue  # its caller gave up waiting
                    try:
                        check(r.error)
                    except RaftError as e:
                        fut.set_exception(e)
                        continue
                    fut.set_result([bytes(x) for x in r.results])
            except (capnp.KjException, ValueError) as e:
                self._break(f"the node sent an answer that does not decode: {e}")
                return

    def _break(self, why: str) -> None:
        """Make the channel unusable: every call in flight fails as a broken connection, the socket closes."""
        if not self.broken:
            self.broken = why
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionResetError(self.broken))
        transport, self._stream = self._stream, None
        if transport is not None:
            transport.abort()

    def close(self) -> None:
        """Hang up (idempotent); calls still waiting fail with ``ConnectionResetError``."""
        self._break("the connection was closed")
