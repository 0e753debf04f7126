"""The state machine protocol the runtime replicates, and a simple default.

A state machine must be deterministic: applying the same commands in the same order from the same state must
give the same state and results on every node. The runtime calls :meth:`apply` with committed commands in log
order, exactly once each, and resolves each proposal with the result at its position.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from raftkv.raft.types import Entry, Index


class StateMachine(Protocol):
    def apply(self, entries: Sequence[Entry]) -> Sequence[Any]:
        """Apply committed commands (``entry.data``) in order; return one result per entry."""
        ...

    def snapshot(self) -> bytes:
        """The whole state, for log compaction (Raft §7). The runtime calls it on the event loop right after
        applying, so it must be quick or the node stalls meanwhile; the KV store streams its own instead."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's."""
        ...


class CommandLog:
    """A state machine that records every command: the default of ``raftkv serve`` until the KV store.

    The result of a command is its log index. ``digest`` is a running CRC32 over (index, command) so nodes can
    compare their applied state cheaply.
    """

    def __init__(self) -> None:
        self.commands: dict[Index, bytes] = {}
        self.last_index = Index(0)
        self.digest = 0

    def apply(self, entries: Sequence[Entry]) -> list[Any]:
        out: list[Any] = []
        for e in entries:
            self.commands[e.index] = e.data
            self.last_index = e.index
            self.digest = zlib.crc32(e.index.to_bytes(8, "little") + e.data, self.digest)
            out.append(int(e.index))
        return out

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode((int(self.last_index), self.digest, sorted(self.commands.items())))

    def restore(self, data: bytes) -> None:
        last_index, digest, commands = msgspec.msgpack.decode(data, type=tuple[int, int, list[tuple[int, bytes]]])
        self.commands = {Index(i): c for i, c in commands}
        self.last_index = Index(last_index)
        self.digest = digest


class ReplicatedDict:
    """A replicated ``dict`` of bytes to bytes: the object PySyncObj's examples replicate, with bounded state.

    The library benchmarks compare raftkv's embedding API with PySyncObj on this same object (``CommandLog``
    keeps every command, so its state and its snapshots grow with the run, which PySyncObj's dict does not).
    It is also the smallest useful example of a state machine: a command is :meth:`put_command` (a msgpack
    ``[key, value]`` pair); its result is the command's log index, or ``None`` for a command that does not
    decode, which every node ignores alike (determinism: a bad command must not split the replicas).
    """

    _decoder = msgspec.msgpack.Decoder(tuple[bytes, bytes])

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.last_index = Index(0)

    @staticmethod
    def put_command(key: bytes, value: bytes) -> bytes:
        return msgspec.msgpack.encode((key, value))

    def apply(self, entries: Sequence[Entry]) -> list[Any]:
        out: list[Any] = []
        data, decode = self.data, self._decoder.decode
        for e in entries:
            self.last_index = e.index
            try:
                key, value = decode(e.data)
            except msgspec.DecodeError:
                out.append(None)
                continue
            data[key] = value
            out.append(int(e.index))
        return out

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode((int(self.last_index), sorted(self.data.items())))

    def restore(self, data: bytes) -> None:
        last_index, items = msgspec.msgpack.decode(data, type=tuple[int, list[tuple[bytes, bytes]]])
        self.data = dict(items)
        self.last_index = Index(last_index)
