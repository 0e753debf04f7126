"""``Ready``: everything the core asks its driver to do, and the contract for doing it.

The persistence contract (after etcd-io/raft; Raft dissertation §10.2.1)
-----------------------------------------------------------------------
For each ``Ready`` returned by ``RawNode.ready()``, the driver must, in this order:

1. **Persist.** If ``snapshot`` is not None, install it first: the leader's snapshot data (received by the
   transport) is saved, the log is reset to start after it (``LogStorage.apply_snapshot``) and the state
   machine is restored from it. Then append ``entries`` to stable storage (overwriting any conflicting
   suffix), then save ``hard_state`` if it is not None. If ``must_sync``, make all of it durable (fsync) before
   step 2b.
2. **Send.**
   a. ``messages`` may be sent at once, even while step 1 is still running: they are the leader's replication
      traffic, and a leader may write its own log in parallel with its followers (§10.2.1). The leader counts
      itself toward the commit quorum only after ``advance()`` tells it the write is durable.
   b. ``messages_after_sync`` only once step 1 is durable: they promise something about this node's disk — a
      granted vote (§5.2: ``votedFor`` is persisted before replying), an acknowledged append, a candidate's
      vote request for a term it must not forget. Sending them earlier breaks safety after a crash.
3. **Apply** ``committed_entries`` to the state machine, in order, exactly once. They may include entries
   from this same Ready's ``entries``, which is why step 1 comes first. When the Ready has no ``entries`` and
   no ``snapshot``, every committed entry is already in the durable log (earlier Readies were persisted
   before their ``advance``), so the driver may apply them *before* or during step 1 (the runtime does, so a
   Ready that only moves the commit index answers clients without waiting for its hard-state write).
4. Call ``advance()``. Until then ``ready()`` may not be called again; ``step``/``tick``/``propose`` may.

``events`` are human-readable decisions ("became leader at term 7 with votes from 1,3") for the driver's log.

``read_states`` answer ``read_index`` requests: serve each read once the state machine has applied its
``index`` (dissertation §6.4). They promise nothing about this node's disk, so they need no persistence step.
``dropped_reads`` are the contexts of requests that can no longer be answered (leadership was lost): fail them.

``conf_state``, when not None, is the configuration now in effect on this node (it changed: an entry was
appended or truncated away, or a snapshot installed). It needs no persistence step of its own — it is in the
log — but the driver acts on it: dial new members, drop links to removed ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from raftkv.raft.messages import Message
from raftkv.raft.types import ConfState, Entry, HardState, Index, NodeId, SnapshotMeta, Term


class Role(Enum):
    """The roles of the Raft paper (§5.1), plus pre-candidate (§9.6) and the seed's Dead (stopped)."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "precandidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting when it changes (not persisted)."""

    role: Role
    leader: NodeId
    term: Term


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read point: a read requested with ``ctx`` may be served once ``index`` is applied."""

    index: Index
    ctx: bytes


@dataclass(frozen=True, slots=True)
class Ready:
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    committed_entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    messages_after_sync: tuple[Message, ...]
    must_sync: bool
    soft_state: SoftState | None
    events: tuple[str, ...]
    read_states: tuple[ReadState, ...] = ()
    dropped_reads: tuple[bytes, ...] = ()
    snapshot: SnapshotMeta | None = None
    conf_state: ConfState | None = None
