"""The vocabulary of the consensus core: ids, terms, indexes, log entries and the hard state.

Theory of operation
-------------------
Everything the Raft paper (Ongaro & Ousterhout, 2014) calls *persistent state on all servers* (Figure 2) lives
here as plain immutable values: ``HardState`` holds ``currentTerm`` and ``votedFor`` (plus the commit index, which
is not required for safety but saves re-deriving it after a restart), and ``Entry`` is one slot of the log.

Conventions
-----------
* ``NodeId``, ``Term`` and ``Index`` are distinct ``NewType``s over ``int`` so that mypy refuses to mix them.
* Node ids start at 1; ``NO_NODE`` (0) means "nobody" (no vote cast, no known leader).
* Log indexes start at 1; index 0 is the empty prefix, whose term is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NewType

NodeId = NewType("NodeId", int)
Term = NewType("Term", int)
Index = NewType("Index", int)

ENTRY_OVERHEAD_BYTES = 16
"""Bytes counted per entry on top of its payload when capping messages by size (term, index, type)."""

NO_NODE = NodeId(0)
"""Stands for "no node": no vote cast in this term, or no leader known."""


class EntryType(IntEnum):
    """What an entry carries. The state machine sees only ``NORMAL`` entries' data."""

    NORMAL = 0
    """An application command (``data`` is opaque to Raft)."""
    NOOP = 1
    """The empty entry a new leader appends to commit its predecessors' entries (§5.4.2, §8)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One log slot. Invariant: ``index >= 1`` and ``term >= 1`` for any entry stored in a log."""

    term: Term
    index: Index
    data: bytes = b""
    type: EntryType = EntryType.NORMAL

    def size_bytes(self) -> int:
        """Approximate encoded size, used to cap messages by bytes (payload plus a fixed header)."""
        return len(self.data) + ENTRY_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class HardState:
    """State that must reach stable storage before the node acts on it (Raft Figure 2, "persistent state").

    ``term`` and ``vote`` must be durable before a vote or any message of a new term leaves the node, otherwise a
    restarted node could vote twice in one term (§5.2). ``commit`` may lag behind what is persisted; it is saved
    so that a restart does not have to wait for a leader before applying known-committed entries.
    """

    term: Term = Term(0)
    vote: NodeId = NO_NODE
    commit: Index = Index(0)


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot covers: every entry up to and including ``index`` (whose term was ``term``).

    ``voters`` is the cluster membership at that point. An empty snapshot (index 0) means "no snapshot".
    """

    index: Index = Index(0)
    term: Term = Term(0)
    voters: tuple[NodeId, ...] = ()


EMPTY_SNAPSHOT = SnapshotMeta()
