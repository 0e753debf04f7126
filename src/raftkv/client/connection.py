"""``Connection``: the client's one connection class, to one node's client port.

Theory of operation
-------------------
A connection is dialled through a :class:`~raftkv.transport.streams.StreamLayer` (plain TCP by default; the one
seam where TLS will plug in) and holds the node's bootstrap capability, cast to ``schema.Client``. Each method is
one RPC of that interface, but for the hot path: ``execute`` batches travel as frames on a second connection to
the same port, the client data plane (:mod:`raftkv.client.frames`), at a fraction of a capnp call's cost
(``execute_rpc`` keeps the capnp call, for comparison). Every method has a deadline: a stopped node never
answers by itself, so every await on the network here is bounded. A call's wire error becomes the exception of
the client's one table (:mod:`raftkv.client.errors`); a broken or closed connection raises ``OSError``,
``TimeoutError`` or ``capnp.KjException``, which the retry loop treats as "drop this connection and try
elsewhere" (:data:`BROKEN`).

The ``Header`` every call carries is built once per connection, as a capnp struct: pycapnp copies a struct ~9x
faster than it converts a dict. For the same reason ``execute`` fills its request field by field (a list of
dicts costs pycapnp ~5 µs per request to convert).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Sequence
from typing import Any, Final

import capnp  # type: ignore[import-untyped]

from raftkv.client.errors import check
from raftkv.client.frames import ExecuteChannel, KvRequest, fill_execute
from raftkv.errors import RaftError
from raftkv.transport.address import Address
from raftkv.transport.streams import PLAIN, StreamLayer
from raftkv.transport.wire import schema

BROKEN: Final[tuple[type[BaseException], ...]] = (OSError, TimeoutError, capnp.KjException)
"""What a call raises when the connection (not the node's answer) failed: refused, reset, closed, no answer in
time. The outcome of the call is unknown."""

FAILED: Final[tuple[type[BaseException], ...]] = (*BROKEN, RaftError)
"""What a call raises when it failed, whether the connection did or the node answered with an error."""

RPC_SLACK_S: Final = 0.5
"""How much longer than the node's own deadline the client waits for an answer that carries one (``propose``,
``execute``): the node's ``timeout`` error is more useful than a local one."""


def explain(e: BaseException) -> str:
    """One line for a failed call, saying what most likely went wrong."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return (
            f"TLS: the node's certificate did not verify ({e.verify_message or e}): is --cacert the CA that "
            "signed it, and does it name the address dialled?"
        )
    if isinstance(e, ssl.SSLError):
        return f"TLS handshake failed ({e.reason or e}): does the node serve TLS, and accept this client's certificate?"
    if isinstance(e, TimeoutError):
        return "no answer before the deadline (is the node stopped or overloaded?)"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (is the node running?)"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class Connection:
    """One connection to one node's client port. ``open`` it, call it, ``close`` it (idempotent)."""

    def __init__(self, endpoint: Address, cluster_id: str = "", streams: StreamLayer = PLAIN, token: str = "") -> None:
        self.endpoint = endpoint
        self.streams = streams
        self.cluster_id = cluster_id
        self.header: Any = None
        """Every call's header (``from`` and ``to`` 0: a client), built once per token."""
        self.set_token(token)
        self._rpc: Any = None
        self._cap: Any = None
        self._frames: ExecuteChannel | None = None
        self._frames_dial = asyncio.Lock()

    def set_token(self, token: str) -> None:
        """Carry ``token`` (from ``Authenticate``; ``""``: none) in every call from now on."""
        self.header = schema.Header.new_message(clusterId=self.cluster_id, token=token).as_reader()

    async def open(self, timeout: float) -> None:
        self._rpc = await self.streams.dial_rpc(self.endpoint, timeout)
        self._cap = self._rpc.bootstrap().cast_as(schema.Client)

    def close(self) -> None:
        frames, self._frames = self._frames, None
        if frames is not None:
            frames.close()
        rpc, self._rpc, self._cap = self._rpc, None, None
        if rpc is not None:
            with contextlib.suppress(*BROKEN):
                rpc.close()

    @property
    def cap(self) -> Any:
        """The node's ``Client`` capability; a closed connection raises ``ConnectionResetError`` (in BROKEN)."""
        if self._cap is None:
            raise ConnectionResetError(f"the connection to {self.endpoint} is closed")
        return self._cap

    # --- Admin ------------------------------------------------------------------------------------------------

    async def ping(self, timeout: float, payload: bytes = b"ping") -> tuple[int, int, float]:
        """Returns (node id, term, round trip in seconds)."""
        started = time.perf_counter()
        async with asyncio.timeout(timeout):
            r = await self.cap.ping(header=self.header, payload=payload)
        check(r.error)
        return int(r.nodeId), int(r.term), time.perf_counter() - started

    async def status(self, timeout: float) -> Any:
        """The node's ``NodeStatus`` struct."""
        async with asyncio.timeout(timeout):
            r = await self.cap.status(header=self.header)
        check(r.error)
        return r.status

    async def backup_chunk(self, offset: int, timeout: float) -> Any:
        """One chunk of the node's backup image (offset 0: the node takes a new image); the whole answer."""
        async with asyncio.timeout(timeout):
            r = await self.cap.backupChunk(header=self.header, offset=offset)
        check(r.error)
        return r

    async def members(self, timeout: float) -> Any:
        """The node's view of the configuration (``members``, ``leader``, ``confIndex``)."""
        async with asyncio.timeout(timeout):
            r = await self.cap.members(header=self.header)
        check(r.error)
        return r

    async def member_change(self, kind: str, node: int, peer: str, client: str, timeout: float) -> Any:
        """One membership change on the leader; the configuration (a ``List(Member)``) once committed. The
        node is given 90% of ``timeout``, so that an unknown outcome comes back as ``timeout``."""
        change = {"kind": kind, "id": node, "peerAddress": peer, "clientAddress": client}
        server_ms = max(1, int(timeout * 900))
        async with asyncio.timeout(timeout):
            r = await self.cap.memberChange(header=self.header, change=change, timeoutMs=server_ms)
        check(r.error)
        return r.members

    async def leader_transfer(self, to: int, timeout: float) -> int:
        async with asyncio.timeout(timeout):
            r = await self.cap.leaderTransfer(header=self.header, to=to, timeoutMs=max(1, int(timeout * 900)))
        check(r.error)
        return int(r.leader)

    # --- Replicated -------------------------------------------------------------------------------------------

    async def propose(self, data: bytes, timeout: float) -> tuple[int, int, bytes]:
        """Returns (index, term, result) or raises the node's error (``NotLeader``, ``Timeout``...)."""
        async with asyncio.timeout(timeout + RPC_SLACK_S):
            r = await self.cap.propose(header=self.header, data=data, timeoutMs=int(timeout * 1000))
        check(r.error)
        return int(r.index), int(r.term), bytes(r.result)

    # --- Kv ---------------------------------------------------------------------------------------------------

    async def execute(self, requests: Sequence[KvRequest], timeout: float) -> list[bytes]:
        """Run a batch of KV commands; returns their encoded results, in order. The batch goes as a frame on
        the client data plane (:mod:`raftkv.client.frames`), dialled beside the capnp connection on first use."""
        async with asyncio.timeout(timeout + RPC_SLACK_S):
            channel = await self._channel(timeout)
            call_id, answer = channel.call(self.header, requests, int(timeout * 1000))
            try:
                return await answer
            finally:
                channel.forget(call_id)

    async def _channel(self, timeout: float) -> ExecuteChannel:
        channel = self._frames
        if channel is None:
            async with self._frames_dial:  # one dial however many batches start at once
                channel = self._frames
                if channel is None:
                    _transport, channel = await self.streams.dial_plain(self.endpoint, ExecuteChannel, timeout)
                    if self._rpc is None:  # closed while dialling
                        channel.close()
                        raise ConnectionResetError(f"the connection to {self.endpoint} is closed")
                    self._frames = channel
        if not channel.usable:
            raise ConnectionResetError(f"{self.endpoint}: {channel.broken}")
        return channel

    async def execute_rpc(self, requests: Sequence[KvRequest], timeout: float) -> list[bytes]:
        """``execute`` as a Cap'n Proto call (the node serves both; ``bench/client_plane.py`` compares them)."""
        request = self.cap.execute_request()
        fill_execute(request, self.header, requests, int(timeout * 1000))
        async with asyncio.timeout(timeout + RPC_SLACK_S):
            r = await request.send()
        check(r.error)
        return [bytes(x) for x in r.results]

    async def watch(
        self, key: bytes, range_end: bytes | None, start_revision: int, watcher: Any, timeout: float
    ) -> int:
        """Start a watch whose events the node pushes to ``watcher`` (a ``schema.Watcher.Server``); its id."""
        async with asyncio.timeout(timeout):
            r = await self.cap.watch(
                header=self.header,
                key=key,
                rangeEnd=range_end or b"",
                hasRangeEnd=range_end is not None,
                startRevision=start_revision,
                watcher=watcher,
            )
        check(r.error, requested_revision=start_revision, oldest_revision=int(r.compactRevision))
        return int(r.watchId)

    async def cancel_watch(self, watch_id: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            r = await self.cap.cancelWatch(header=self.header, watchId=watch_id)
        check(r.error)
