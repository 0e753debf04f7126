"""The Raft consensus core: pure, deterministic, no I/O. See ``node.py`` for the driver API."""

from raftkv.raft.errors import (
    EntryUnavailable,
    InvariantViolation,
    LogCompacted,
    NotLeader,
    ProposalDropped,
    RaftError,
    invariant,
)
from raftkv.raft.storage import LogStorage, MemoryStorage
from raftkv.raft.types import NO_NODE, Entry, EntryType, HardState, Index, NodeId, SnapshotMeta, Term

__all__ = [
    "NO_NODE",
    "Entry",
    "EntryType",
    "EntryUnavailable",
    "HardState",
    "Index",
    "InvariantViolation",
    "LogCompacted",
    "LogStorage",
    "MemoryStorage",
    "NodeId",
    "NotLeader",
    "ProposalDropped",
    "RaftError",
    "SnapshotMeta",
    "Term",
    "invariant",
]
