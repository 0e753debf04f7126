"""The Raft consensus core: pure, deterministic, no I/O. See ``node.py`` for the driver API."""

from raftkv.raft.errors import (
    Compacted,
    InvariantViolation,
    NotLeader,
    ProposalDropped,
    RaftError,
    Unavailable,
    invariant,
)
from raftkv.raft.storage import LogStorage, MemoryStorage
from raftkv.raft.types import NO_NODE, Entry, EntryType, HardState, Index, NodeId, SnapshotMeta, Term

__all__ = [
    "NO_NODE",
    "Compacted",
    "Entry",
    "EntryType",
    "HardState",
    "Index",
    "InvariantViolation",
    "LogStorage",
    "MemoryStorage",
    "NodeId",
    "NotLeader",
    "ProposalDropped",
    "RaftError",
    "SnapshotMeta",
    "Term",
    "Unavailable",
    "invariant",
]
