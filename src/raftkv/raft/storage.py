"""The ``LogStorage`` protocol between the core and stable storage, and an in-memory implementation.

Theory of operation
-------------------
The core keeps entries it has not yet handed out for persistence in memory (``log.Unstable``); everything that
was persisted through :class:`~raftkv.raft.ready.Ready` lives behind this protocol. The core only *reads*
(``initial_state``, ``first_index``, ``last_index``, ``term``, ``entries``); the driver (the simulator, or the
runtime in ``raftkv.runtime``) *writes*, following the Ready contract:

1. ``append(ready.entries)`` — may overwrite a conflicting suffix: appending entries that start at index ``i``
   first discards every stored entry with index ``>= i``;
2. ``set_hard_state(ready.hard_state)`` — after the entries, so that a crash between the two never leaves a
   durable commit index pointing past the durable log;
3. ``sync()`` when ``ready.must_sync`` — after it returns, everything above is durable.

Index layout (both implementations)::

    snapshot.index   first_index              last_index
          |              |                        |
          v              v                        v
     ... [boundary] [entry] [entry] ... [entry] [entry]

``term(snapshot.index)`` stays answerable after compaction (it is the boundary a consistency check against the
first entry needs, §5.3); anything below it raises :class:`~raftkv.raft.errors.LogCompacted`, anything above
``last_index`` raises :class:`~raftkv.raft.errors.EntryUnavailable`.

A durable write-ahead log implementing this protocol lives in ``raftkv.storage``; one conformance suite
(``tests/raft/test_storage_conformance.py``) runs against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raftkv.raft.errors import EntryUnavailable, LogCompacted, invariant
from raftkv.raft.membership import decode_conf
from raftkv.raft.types import (
    EMPTY_SNAPSHOT,
    ENTRY_OVERHEAD_BYTES,
    Entry,
    EntryType,
    HardState,
    Index,
    SnapshotMeta,
    Term,
)


class LogStorage(Protocol):
    """Stable storage for the Raft log and hard state. See the module docstring for the write order."""

    def initial_state(self) -> tuple[HardState, SnapshotMeta]:
        """The last saved hard state and the metadata of the snapshot the log starts after."""
        ...

    def first_index(self) -> Index:
        """Index of the first entry held (``snapshot.index + 1``; equals ``last_index + 1`` when empty)."""
        ...

    def last_index(self) -> Index:
        """Index of the last entry held (``snapshot.index`` when no entry is held)."""
        ...

    def term(self, index: Index) -> Term:
        """Term of the entry at ``index``; valid for ``first_index - 1 <= index <= last_index``."""
        ...

    def entries(self, lo: Index, hi: Index, max_bytes: int | None = None) -> list[Entry]:
        """Entries with ``lo <= index < hi``, stopping once ``max_bytes`` is exceeded (always at least one)."""
        ...

    def append(self, entries: Sequence[Entry]) -> None:
        """Store contiguous ``entries``, first discarding every held entry at or after ``entries[0].index``.

        Requires ``first_index <= entries[0].index <= last_index + 1``. Not durable until :meth:`sync`.
        """
        ...

    def set_hard_state(self, hard_state: HardState) -> None:
        """Record the hard state. Not durable until :meth:`sync`."""
        ...

    def conf_indexes(self) -> Sequence[Index]:
        """The indexes of the ``CONF_CHANGE`` entries held (above the boundary), ascending: the core reads
        the configuration back from them on restart (``initial_state`` gives the one at the boundary)."""
        ...

    def compact(self, index: Index) -> None:
        """Discard entries up to and including ``index``; ``term(index)`` remains answerable, and the boundary
        metadata then carries the configuration as of ``index`` (the latest configuration entry at or below it,
        or the boundary's before)."""
        ...

    def apply_snapshot(self, meta: SnapshotMeta) -> None:
        """The log now starts after ``meta.index`` (§7): entries after it are kept only if the log holds
        ``(meta.index, meta.term)``, otherwise all are discarded. Durable when it returns."""
        ...

    def sync(self) -> None:
        """Make every preceding ``append``/``set_hard_state`` durable."""
        ...


class MemoryStorage:
    """``LogStorage`` in memory: used by the simulator (as the simulated *disk*) and by tests.

    Invariant: ``self._entries[0]`` is a boundary placeholder at ``snapshot.index`` carrying the snapshot's term;
    ``self._entries[k].index == snapshot.index + k`` for every ``k``.
    """

    __slots__ = ("_entries", "_hard_state", "_snapshot")

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = EMPTY_SNAPSHOT
        self._entries: list[Entry] = [Entry(Term(0), Index(0))]

    # --- reads -------------------------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, SnapshotMeta]:
        return self._hard_state, self._snapshot

    def first_index(self) -> Index:
        return Index(self._entries[0].index + 1)

    def last_index(self) -> Index:
        return Index(self._entries[0].index + len(self._entries) - 1)

    def term(self, index: Index) -> Term:
        offset = self._entries[0].index
        if index < offset:
            raise LogCompacted(f"index {index} is compacted (first held index is {offset + 1})")
        k = index - offset
        if k >= len(self._entries):
            raise EntryUnavailable(f"index {index} is beyond the last index {self.last_index()}")
        return self._entries[k].term

    def entries(self, lo: Index, hi: Index, max_bytes: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise LogCompacted(f"index {lo} is compacted (first held index is {offset + 1})")
        if hi > self.last_index() + 1:
            raise EntryUnavailable(f"index {hi - 1} is beyond the last index {self.last_index()}")
        selected = self._entries[lo - offset : hi - offset]
        return limit_size(selected, max_bytes)

    def conf_indexes(self) -> list[Index]:
        return [e.index for e in self._entries[1:] if e.type is EntryType.CONF_CHANGE]

    # --- writes ------------------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        offset = self._entries[0].index
        invariant(
            offset < first <= self.last_index() + 1,
            f"append at index {first} outside [{offset + 1}, {self.last_index() + 1}]",
        )
        del self._entries[first - offset :]
        self._entries.extend(entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def compact(self, index: Index) -> None:
        offset = self._entries[0].index
        invariant(offset <= index <= self.last_index(), f"compact({index}) outside [{offset}, {self.last_index()}]")
        boundary = self._entries[index - offset]
        conf = self._snapshot.conf
        for e in self._entries[1 : index - offset + 1]:
            if e.type is EntryType.CONF_CHANGE:
                conf = decode_conf(e.data)
        self._entries = [Entry(boundary.term, boundary.index), *self._entries[index - offset + 1 :]]
        self._snapshot = SnapshotMeta(boundary.index, boundary.term, conf)

    def apply_snapshot(self, meta: SnapshotMeta) -> None:
        offset = self._entries[0].index
        invariant(meta.index >= offset, f"apply_snapshot({meta.index}) is older than the boundary {offset}")
        k = meta.index - offset
        keep = k < len(self._entries) and self._entries[k].term == meta.term
        rest = self._entries[k + 1 :] if keep else []
        self._entries = [Entry(meta.term, meta.index), *rest]
        self._snapshot = meta

    def sync(self) -> None:
        """Memory is as durable as it gets; the simulator models lost unsynced writes itself."""


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` within ``max_bytes`` (but always the first entry)."""
    if max_bytes is None or len(entries) <= 1:
        return entries
    total = 0
    # Hot path (every AppendEntries): the size arithmetic of Entry.size_bytes, inlined.
    for k, entry in enumerate(entries):
        total += len(entry.data) + ENTRY_OVERHEAD_BYTES
        if total > max_bytes and k > 0:
            return entries[:k]
    return entries
