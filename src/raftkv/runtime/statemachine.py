"""What the runtime replicates: the ``StateMachine`` protocol, two optional ones, and two small machines.

Theory of operation
-------------------
A state machine must be deterministic: applying the same commands in the same order from the same state must
give the same state and results on every node. The runtime calls :meth:`StateMachine.apply` with committed
commands in log order, exactly once each, and resolves each proposal with the result at its position.

Two optional protocols say more about a state machine; the runtime checks for them with ``isinstance`` (they
are ``runtime_checkable``) and never probes for undeclared methods:

* :class:`KeepsAppliedIndex` — its state survives a restart (it lives on disk, like the KV store on LMDB), and
  ``applied_index`` says which log index it reflects: the runtime resumes applying after it instead of from
  the last snapshot.
* :class:`StreamsSnapshots` — its snapshot is a stream that a worker thread may read while the event loop goes
  on applying (one LMDB read transaction is a consistent view), and it restores from a file-like stream in a
  worker thread. Without it the runtime calls ``snapshot()`` on the loop right after applying, and
  ``restore(bytes)``.

``CommandLog`` and ``ReplicatedDict`` are small machines for tests and benchmarks (``raftkv serve
--state-machine commandlog|dict``).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import IO, Any, Protocol, runtime_checkable

import msgspec

from raftkv.raft.types import Entry, Index


class StateMachine(Protocol):
    def apply(self, entries: Sequence[Entry]) -> Sequence[Any]:
        """Apply committed commands (``entry.data``) in order; return one result per entry."""
        ...

    def snapshot(self) -> bytes:
        """The whole state, for log compaction (Raft §7). The runtime calls it on the event loop right after
        applying, so it must be quick or the node stalls meanwhile (see :class:`StreamsSnapshots`)."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's."""
        ...


@runtime_checkable
class KeepsAppliedIndex(Protocol):
    """A state machine whose state survives a restart; ``applied_index`` is the last log index it reflects."""

    @property
    def applied_index(self) -> int: ...


class SnapshotStream(Protocol):
    """An open, consistent image of a state machine: the log index it reflects and its bytes, in chunks."""

    @property
    def index(self) -> int: ...

    def chunks(self) -> Iterator[bytes]: ...


@runtime_checkable
class StreamsSnapshots(Protocol):
    """A state machine whose snapshot is streamed from (and restored in) a worker thread."""

    def open_snapshot(self) -> AbstractContextManager[SnapshotStream]:
        """A consistent image, opened, read and closed in one worker thread while the loop keeps applying."""
        ...

    def load_snapshot(self, reader: IO[bytes]) -> None:
        """Replace the stored state with the snapshot read from ``reader``, in a worker thread (nothing is
        applied meanwhile); then the runtime calls :meth:`finish_restore` on the loop."""
        ...

    def finish_restore(self) -> None: ...


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
