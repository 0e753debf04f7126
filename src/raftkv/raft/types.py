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

from collections.abc import Iterable, Mapping
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
    CONF_CHANGE = 2
    """A new cluster configuration (``data`` is ``raftkv.raft.membership.encode_conf``); it takes effect as soon
    as it is appended to a log (dissertation §4.1). Like a no-op it commits its predecessors (§5.4.2)."""


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
class Member:
    """One server of the configuration: its id, how to reach it, and whether it votes."""

    id: NodeId
    peer_address: str = ""
    """Where peers dial it ("host:port"); "" when unknown (a bootstrap member's, until the runtime fills it)."""
    client_address: str = ""
    """Where clients reach it; "" when unknown."""
    learner: bool = False
    """A learner receives the log but never votes or counts toward a quorum."""


@dataclass(frozen=True, slots=True)
class ConfState:
    """A cluster configuration. Invariant: ``members`` sorted by id, ids unique and positive.

    The joint consensus of dissertation §4.3 would add the outgoing voters of a joint configuration here; with
    single-server changes there never is one (see ``raftkv.raft.membership``).
    """

    members: tuple[Member, ...] = ()

    def __post_init__(self) -> None:
        ids = [m.id for m in self.members]
        if ids != sorted(set(ids)) or any(i <= 0 for i in ids):
            raise ValueError(f"a configuration needs unique positive ids in order, got {ids}")

    @property
    def voters(self) -> tuple[NodeId, ...]:
        return tuple(m.id for m in self.members if not m.learner)

    @property
    def learners(self) -> tuple[NodeId, ...]:
        return tuple(m.id for m in self.members if m.learner)

    @property
    def ids(self) -> tuple[NodeId, ...]:
        return tuple(m.id for m in self.members)

    def member(self, node: NodeId) -> Member | None:
        for m in self.members:
            if m.id == node:
                return m
        return None

    def is_empty(self) -> bool:
        return not self.members

    def describe(self) -> str:
        """``voters 1,2,3 learners 4`` — for logs and events."""
        text = "voters " + (",".join(map(str, self.voters)) or "none")
        if self.learners:
            text += " learners " + ",".join(map(str, self.learners))
        return text

    @classmethod
    def of_voters(cls, voters: Iterable[NodeId], peer_addresses: Mapping[NodeId, str] | None = None) -> ConfState:
        """A configuration of voters only (a bootstrap from the command line); addresses where known."""
        addrs = peer_addresses or {}
        return cls(tuple(Member(NodeId(v), addrs.get(NodeId(v), "")) for v in sorted(set(voters))))

    def with_member(self, member: Member) -> ConfState:
        """This configuration with ``member`` added, or replacing the member with its id."""
        rest = [m for m in self.members if m.id != member.id]
        return ConfState(tuple(sorted([*rest, member], key=lambda m: m.id)))

    def without(self, node: NodeId) -> ConfState:
        return ConfState(tuple(m for m in self.members if m.id != node))


EMPTY_CONF = ConfState()


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot covers: every entry up to and including ``index`` (whose term was ``term``).

    ``conf`` is the cluster configuration at that point (the latest configuration entry at or below
    ``index``). An empty snapshot (index 0) means "no snapshot".
    """

    index: Index = Index(0)
    term: Term = Term(0)
    conf: ConfState = EMPTY_CONF

    @property
    def voters(self) -> tuple[NodeId, ...]:
        return self.conf.voters


EMPTY_SNAPSHOT = SnapshotMeta()
