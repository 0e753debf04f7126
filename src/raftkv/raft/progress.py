"""The leader's view of each follower: ``match_index``/``next_index`` (Raft Figure 2) plus flow control.

Theory of operation
-------------------
After etcd-io/raft's ``tracker`` package, a follower's progress is in one of three states:

* ``PROBE``: the leader does not know where the follower's log agrees with its own. It sends one AppendEntries
  at a time (``probe_sent``) and waits for the answer (or the next heartbeat reply) before sending another,
  walking ``next_index`` back on rejections (§5.3).
* ``REPLICATE``: the follower acknowledged an append, so the leader streams entries optimistically, advancing
  ``next_index`` as it sends, with at most ``max_inflight_msgs`` unacknowledged appends, holding at most
  ``max_inflight_bytes`` of entries (``Inflights``; etcd-io/raft's ``MaxInflightBytes``). The byte bound is what
  keeps a far-behind follower (a learner that just installed a snapshot) from making the leader read, encode
  and send its whole backlog in one step: that step would hold the event loop past an election timeout.
* ``SNAPSHOT``: the follower needs entries the leader has compacted away; the leader sent its snapshot (§7)
  and sends nothing else until the follower acknowledges it (or a timeout says it was lost).

Invariants: ``0 <= match_index < next_index``; in REPLICATE every index in ``inflights`` is ``< next_index``
and the indexes are increasing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from raftkv.raft.types import Index


class ProgressState(Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """The last index and entry bytes of each unacknowledged AppendEntries sent in REPLICATE state, oldest
    first. Full at ``capacity`` appends or at ``max_bytes`` of entries (0: no byte bound); the append that
    crosses the byte bound is still sent, so one entry larger than the bound can always go.

    Invariant: ``bytes`` is the sum of the sizes held."""

    __slots__ = ("_capacity", "_indexes", "_max_bytes", "bytes")

    def __init__(self, capacity: int, max_bytes: int = 0) -> None:
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._indexes: deque[tuple[Index, int]] = deque()
        self.bytes = 0

    def add(self, last_index: Index, size: int = 0) -> None:
        self._indexes.append((last_index, size))
        self.bytes += size

    def free_le(self, index: Index) -> None:
        """Forget every append whose last entry is ``<= index`` (acknowledged, cumulatively)."""
        q = self._indexes
        while q and q[0][0] <= index:
            self.bytes -= q.popleft()[1]

    def free_first_one(self) -> None:
        if self._indexes:
            self.bytes -= self._indexes.popleft()[1]

    def full(self) -> bool:
        return len(self._indexes) >= self._capacity or (0 < self._max_bytes <= self.bytes)

    def reset(self) -> None:
        self._indexes.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._indexes)


@dataclass(slots=True)
class Progress:
    """Replication state of one peer, kept by the leader only."""

    match: Index
    next: Index
    inflights: Inflights
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    """PROBE only: an append is outstanding; send no other until a reply or a heartbeat reply arrives."""
    recent_active: bool = False
    """Heard from since the last check-quorum round (dissertation §6.2)."""
    pending_snapshot: Index = field(default=Index(0))
    """SNAPSHOT only: the index of the snapshot sent; replication resumes once the follower has it."""
    snapshot_ticks: int = 0
    """SNAPSHOT only: ticks since the snapshot was sent (it is sent again if no answer comes: it may be lost)."""
    snapshot_delivered: bool = False
    """SNAPSHOT only: the transport reported the whole snapshot delivered; the follower is installing it."""

    def become_probe(self) -> None:
        # From REPLICATE the follower's state is unknown past match; restart just after it.
        self.state = ProgressState.PROBE
        self.next = Index(max(self.match + 1, self.pending_snapshot + 1))
        self.pending_snapshot = Index(0)
        self.probe_sent = False
        self.inflights.reset()

    def become_snapshot(self, index: Index) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_ticks = 0
        self.snapshot_delivered = False
        self.probe_sent = False
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = Index(self.match + 1)
        self.probe_sent = False
        self.inflights.reset()

    def maybe_update(self, index: Index) -> bool:
        """Record an acknowledgement up to ``index``. Returns False (and changes nothing) for a stale one."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = Index(index + 1)
        return updated

    def maybe_decr_to(self, rejected: Index, hint: Index) -> bool:
        """Handle a rejection of the append whose ``prev_index`` was ``rejected``; False if it is stale.

        In REPLICATE a rejection at or below ``match`` is an old, reordered reply. In PROBE only the answer to the
        append we are waiting for (``prev_index == next - 1``) counts; ``hint`` (from the follower's conflict
        hint) lets ``next`` jump back over a whole divergent term at once instead of one index per round trip.
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = Index(self.match + 1)
            return True
        if self.next - 1 != rejected:
            return False
        self.next = Index(max(min(rejected, hint + 1), self.match + 1))
        self.probe_sent = False
        return True

    def sent_entries(self, last_index: Index, n_entries: int, n_bytes: int = 0) -> None:
        """Account for an AppendEntries just sent, whose last entry is ``last_index`` and whose entries hold
        ``n_bytes`` (``Entry.size_bytes``)."""
        if self.state is ProgressState.REPLICATE:
            if n_entries:
                self.next = Index(last_index + 1)
                self.inflights.add(last_index, n_bytes)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True
