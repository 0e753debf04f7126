"""How a driver carries out a ``Ready``: the decisions, in one pure place that the runtime and the simulator share.

Theory of operation
-------------------
``raftkv.raft.ready`` states the contract (persist, send, apply, advance). Within it a driver still decides
three things for every Ready, and the node runtime (``raftkv.runtime.node``) takes shortcuts there that are
measured to matter. So that the deterministic simulator checks what production runs — TigerBeetle's simulator
runs the real replica; this is our version of that bar — both drivers ask :class:`ReadyPlanner` and do what
its :class:`ReadyPlan` says:

1. **Apply early.** A Ready with committed entries but no new ``entries`` and no ``snapshot``: every committed
   entry is already in the durable log (earlier Readies were persisted before their ``advance``), so they are
   applied *before* this Ready's write. Typically the leader's Ready that only moves the commit index: the
   client's answer leaves during the hard-state write instead of after it. Invariant: the applied index never
   passes the durable last index.
2. **Defer a commit-only hard state.** A Ready whose hard state changed only its commit index (a term or vote
   change always sets ``must_sync``) and that has nothing else to write costs no write at all: the commit
   index is volatile state (Raft Figure 2), so that hard state rides along with the next write. After a crash
   the node relearns its commit index from the leader, and a state machine that keeps its own progress is
   never behind the stored commit index in a harmful way (the log raises its commit to the applied index).
   Invariant: a deferred hard state differs from the durable one only in ``commit``; the next write carries
   the newest one.
3. **Write on the loop.** A follower's write is on the commit path (its acknowledgement waits for it), and so,
   in practice, is the leader's own (its vote is one of the two a 3-node commit needs, and a follower's write
   on the loop finishes first: ``bench/trace_put.py`` showed the commit waiting for it). So the runtime
   performs a leader's or a follower's plain write on the event loop thread instead of paying two thread
   hand-offs; candidates, snapshot installs and writes queued behind a compaction use the WAL thread. The
   simulator has no threads; it records the decision only.

The planner holds the deferred hard state between Readies, so a driver keeps one planner per core and makes
a new one when it builds a new core (a crash loses the deferred state, as a crash does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from raftkv.raft.errors import invariant
from raftkv.raft.ready import Ready, Role
from raftkv.raft.types import HardState


@dataclass(frozen=True, slots=True)
class ReadyPlan:
    """What to do with one Ready (see the module docstring)."""

    apply_early: bool
    """Apply ``committed_entries`` before the write (they are all in the durable log already)."""
    write: bool
    """Something must be written: entries, a snapshot, or a hard state that must be synced."""
    hard_state: HardState | None
    """The hard state to write with it: the Ready's own, or one deferred from an earlier Ready."""
    on_loop: bool
    """The runtime writes on the event loop thread (a leader's or a follower's plain write), not in the WAL
    thread."""


_WRITES_ON_LOOP: Final = frozenset({Role.FOLLOWER, Role.LEADER})


class ReadyPlanner:
    """Decides how each Ready of one core is carried out; keeps the deferred commit-only hard state."""

    __slots__ = ("defer_commit_only", "deferred")

    def __init__(self, *, defer_commit_only: bool = True) -> None:
        self.defer_commit_only = defer_commit_only
        self.deferred: HardState | None = None
        """A commit-only hard state not written yet: it goes with the next write."""

    def plan(self, rd: Ready, role: Role, *, writes_queued: bool = False) -> ReadyPlan:
        """The plan for ``rd``, taken by a core in ``role``; ``writes_queued``: a compaction holds the WAL."""
        apply_early = bool(rd.committed_entries) and not rd.entries and rd.snapshot is None
        write = bool(rd.entries) or rd.snapshot is not None or rd.must_sync
        hard_state: HardState | None = None
        if write:
            hard_state = rd.hard_state or self.deferred
            self.deferred = None
        elif rd.hard_state is not None:
            if self.defer_commit_only:
                previous = self.deferred
                invariant(
                    previous is None or (previous.term, previous.vote) == (rd.hard_state.term, rd.hard_state.vote),
                    f"a deferred hard state {previous} may differ only in its commit from {rd.hard_state}",
                )
                self.deferred = rd.hard_state
            else:
                write = True
                hard_state = rd.hard_state
        on_loop = write and role in _WRITES_ON_LOOP and rd.snapshot is None and not writes_queued
        return ReadyPlan(apply_early, write, hard_state, on_loop)
