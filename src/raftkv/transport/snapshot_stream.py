"""Streaming a snapshot between peers (Raft §7): the leader's sender and the follower's inbox.

Theory of operation
-------------------
A leader whose follower needs entries it has compacted away sends its newest snapshot file as a sequence of
``installSnapshot`` calls on the peer's control connection, beside the normal traffic: each chunk carries its
offset and the snapshot's metadata, the last one the CRC32C of the whole file. :func:`send_snapshot` reads
the file in a worker thread (``source`` opens it there) and stops at the first refusal.

The follower's :class:`SnapshotInbox` writes the chunks of each sender into its own temporary file in order;
a chunk out of order (a restarted stream, a lost chunk) discards the file and tells the sender to start again
from 0. When the last chunk arrives the file is fsync'd and its checksum compared: only a complete, intact
snapshot is handed on (the runtime then keeps it durably before the core may install it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import crc32c

from raftkv.raft.types import ConfState, Member, NodeId, SnapshotMeta, Term

log = logging.getLogger("raftkv.transport")

SnapshotSource = Callable[[], tuple[SnapshotMeta, Iterator[bytes]] | None]
"""Leader side: the newest snapshot (metadata and a chunk iterator), or None; called in a worker thread."""


def conf_to_wire(conf: ConfState) -> list[dict[str, Any]]:
    """``conf`` as the value of a capnp ``List(Member)`` field (a ``SnapshotChunk``'s, a ``backupChunk``'s)."""
    return [
        {"id": int(m.id), "peerAddress": m.peer_address, "clientAddress": m.client_address, "learner": m.learner}
        for m in conf.members
    ]


def conf_from_wire(members: Iterable[Any]) -> ConfState:
    """The configuration in a capnp ``List(Member)``; ``ValueError`` if its ids are not unique, positive and in
    order (the sender always sends a ``ConfState``'s members, which are)."""
    return ConfState(
        tuple(Member(NodeId(int(m.id)), str(m.peerAddress), str(m.clientAddress), bool(m.learner)) for m in members)
    )


async def send_snapshot(
    cap: Any, header: Any, term: Term, source: SnapshotSource, timeout_s: float
) -> tuple[bool, str]:
    """Stream the snapshot ``source`` gives over ``cap`` (a ``Peer``); (sent, why not)."""
    snapshot = await asyncio.to_thread(source)
    if snapshot is None:
        return False, "no snapshot is available"
    meta, chunks = snapshot
    offset = 0
    crc = 0
    chunk_iter = iter(chunks)
    data: bytes = await asyncio.to_thread(next, chunk_iter, b"")
    while True:
        following: bytes | None = await asyncio.to_thread(next, chunk_iter, None)
        crc = crc32c.crc32c(data, crc)
        done = following is None
        chunk = {
            "term": int(term),
            "lastIndex": int(meta.index),
            "lastTerm": int(meta.term),
            "conf": conf_to_wire(meta.conf),
            "offset": offset,
            "data": data,
            "done": done,
            "crc32c": crc if done else 0,
        }
        async with asyncio.timeout(timeout_s):
            r = await cap.installSnapshot(header=header, chunk=chunk)
        if str(r.error.code) != "none":
            return False, f"refused: {r.error.message}"
        offset += len(data)
        if following is None:
            return True, ""
        data = following


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


class SnapshotInbox:
    """Follower side: one temporary file per sender in ``directory`` (None: this node takes no snapshots)."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self._incoming: dict[NodeId, _Incoming] = {}

    def path_for(self, src: NodeId) -> str:
        if self.directory is None:
            raise ValueError("this node does not accept snapshots")
        return os.path.join(self.directory, f"incoming-from-{int(src)}.tmp")

    async def receive(
        self, src: NodeId, meta: SnapshotMeta, offset: int, data: bytes, done: bool, crc: int
    ) -> tuple[str, str, int, str | None]:
        """Take one chunk: (error code, message, next offset, path of the complete file once ``done``)."""
        incoming = self._incoming.get(src)
        if offset == 0:
            if incoming is not None:
                incoming.discard()
            incoming = _Incoming(self.path_for(src), meta)
            self._incoming[src] = incoming
        if incoming is None or incoming.meta != meta or offset != incoming.size:
            if incoming is not None:
                incoming.discard()
                self._incoming.pop(src, None)
            return "malformed", f"snapshot chunk at offset {offset} out of order; restart from 0", 0, None
        await asyncio.to_thread(incoming.write, data)
        if not done:
            return "none", "", incoming.size, None
        self._incoming.pop(src, None)
        await asyncio.to_thread(incoming.close)
        if incoming.crc != crc:
            incoming.discard()
            return "malformed", "snapshot checksum mismatch; restart from 0", 0, None
        return "none", "", incoming.size, incoming.path

    def discard_all(self) -> None:
        for incoming in self._incoming.values():
            incoming.discard()
        self._incoming.clear()
