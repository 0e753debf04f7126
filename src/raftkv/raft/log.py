"""The node's view of the Raft log: stable entries in storage, unstable ones in memory, commit and apply points.

Theory of operation
-------------------
Entries reach the log in memory first (the leader's proposals, a follower's accepted appends). They are
*unstable* until the driver has persisted them through a ``Ready`` and called ``advance()``; then they are
dropped from memory and read back from ``LogStorage`` when needed.

Index layout and invariants (``S`` = storage)::

    S.first_index - 1 <= applied <= committed <= last_index
    unstable[k].index == unstable_offset + k
    S holds every index < unstable_offset (it may hold stale entries >= unstable_offset, which the next
    persisted Ready overwrites: S.append truncates the conflicting suffix)
    if unstable is empty: last_index == unstable_offset - 1 == S.last_index

``committed`` is the highest index known to be committed (§5.3); ``applied`` the highest index handed to the
state machine. Committed entries may be delivered while still in ``unstable``: the Ready contract persists a
Ready's entries before applying its committed entries.

A snapshot received from the leader (§7) is *pending* until the driver has installed it: it then acts as the
log's boundary (``first_index = snapshot.index + 1``, ``term(snapshot.index) = snapshot.term``) and
``committed >= snapshot.index``, while ``applied`` only moves to ``snapshot.index`` once the driver confirms the
state machine was restored from it.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftkv.raft.errors import EntryUnavailable, LogCompacted, invariant
from raftkv.raft.storage import LogStorage, limit_size
from raftkv.raft.types import Entry, Index, SnapshotMeta, Term


class RaftLog:
    __slots__ = (
        "applied",
        "committed",
        "max_apply_bytes",
        "pending_snapshot",
        "storage",
        "unstable",
        "unstable_offset",
    )

    def __init__(self, storage: LogStorage, applied: Index, max_apply_bytes: int) -> None:
        self.storage = storage
        hard_state, snapshot = storage.initial_state()
        last = storage.last_index()
        self.unstable: list[Entry] = []
        self.unstable_offset = Index(last + 1)
        invariant(
            hard_state.commit <= last,
            f"stored commit index {hard_state.commit} is past the last stored entry {last}: the log is damaged",
        )
        first = storage.first_index()
        self.committed = Index(max(hard_state.commit, snapshot.index, first - 1))
        # A state machine that persists its own progress may be ahead of the stored commit index (the commit
        # index is saved lazily): it only applied committed entries, so they are committed.
        self.applied = Index(max(applied, snapshot.index, first - 1))
        if self.applied > self.committed:
            invariant(self.applied <= last, f"applied index {self.applied} is past the last stored entry {last}")
            self.committed = self.applied
        self.max_apply_bytes = max_apply_bytes
        self.pending_snapshot: SnapshotMeta | None = None
        """A snapshot to install (handed to the driver in a Ready); None once installed."""

    # --- positions ---------------------------------------------------------------------------------------

    def first_index(self) -> Index:
        if self.pending_snapshot is not None:
            return Index(self.pending_snapshot.index + 1)
        return self.storage.first_index()

    def last_index(self) -> Index:
        if self.unstable:
            return Index(self.unstable_offset + len(self.unstable) - 1)
        return Index(self.unstable_offset - 1)

    def stable_last_index(self) -> Index:
        """Last index that is both durable and part of this log (everything below ``unstable_offset``)."""
        return Index(self.unstable_offset - 1)

    def last_term(self) -> Term:
        t = self.term_or_none(self.last_index())
        invariant(t is not None, "the term of the last index must be known")
        assert t is not None  # for mypy; the invariant above already raised
        return t

    def term_or_none(self, index: Index) -> Term | None:
        """Term of the entry at ``index``; None if it is compacted away or beyond the last index."""
        offset = self.unstable_offset
        if index >= offset:
            k = index - offset
            if k < len(self.unstable):
                return self.unstable[k].term
            return None
        snap = self.pending_snapshot
        if snap is not None:
            return snap.term if index == snap.index else None
        try:
            return self.storage.term(index)
        except (LogCompacted, EntryUnavailable):
            return None

    def match_term(self, index: Index, term: Term) -> bool:
        return self.term_or_none(index) == term

    def is_up_to_date(self, last_index: Index, last_term: Term) -> bool:
        """§5.4.1: a log is at least as up to date if its last term is higher, or equal with index >= ours."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    # --- reading entries ---------------------------------------------------------------------------------

    def entries(self, lo: Index, hi: Index, max_bytes: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``, at most ``max_bytes`` (but at least one). Raises ``LogCompacted`` below first."""
        if lo >= hi:
            return []
        invariant(hi <= self.last_index() + 1, f"entries({lo}, {hi}) past last index {self.last_index()}")
        offset = self.unstable_offset
        if lo >= offset:
            return limit_size(self.unstable[lo - offset : hi - offset], max_bytes)
        if self.pending_snapshot is not None:
            raise LogCompacted(f"index {lo} is covered by the snapshot being installed")
        stored = self.storage.entries(lo, Index(min(hi, offset)), max_bytes)
        if hi <= offset or len(stored) < min(hi, offset) - lo:
            return stored
        tail = self.unstable[: hi - offset]
        if max_bytes is not None:
            budget = max_bytes - sum(e.size_bytes() for e in stored)
            tail = [] if budget <= 0 else limit_size(tail, budget)
            if tail and tail[0].size_bytes() > budget:
                tail = []
        return stored + tail

    def has_next_committed(self) -> bool:
        return self.committed > self.applied

    def next_committed_entries(self) -> list[Entry]:
        """Committed entries not yet applied, in order, bounded by ``max_apply_bytes`` per call.

        With a snapshot pending, only entries after it: the driver restores the snapshot first.
        """
        start = self.applied + 1
        if self.pending_snapshot is not None:
            start = max(start, self.pending_snapshot.index + 1)
        if self.committed < start:
            return []
        return self.entries(Index(start), Index(self.committed + 1), self.max_apply_bytes)

    def find_conflict_by_term(self, index: Index, term: Term) -> tuple[Index, Term]:
        """The largest ``i <= index`` whose term is ``<= term``, with that term (fast log backtracking).

        Every entry above the returned index has a term greater than ``term``, so it cannot match an entry of
        term ``<= term`` in the other log: the whole range can be skipped in one round trip.
        """
        while index > 0:
            t = self.term_or_none(index)
            if t is None:
                # Below the first held index: the boundary of compaction is the best we know.
                return index, Term(0)
            if t <= term:
                return index, t
            index = Index(index - 1)
        return Index(0), Term(0)

    # --- changing the log --------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Leader path: append entries directly after the last index."""
        if not entries:
            return
        invariant(
            entries[0].index == self.last_index() + 1,
            f"append at {entries[0].index} after last index {self.last_index()}",
        )
        self.unstable.extend(entries)

    def maybe_append(
        self, prev_index: Index, prev_term: Term, commit: Index, entries: Sequence[Entry]
    ) -> tuple[Index | None, Index]:
        """Follower path (§5.3, AppendEntries receiver steps 2–5).

        Returns ``(last_new_index, truncated_from)``: ``last_new_index`` is None when the consistency check
        fails; ``truncated_from`` is the first index of a conflicting suffix that was replaced (0 if none).
        Only a *conflicting* suffix is ever replaced: an append that is stale, duplicated, or a prefix of what
        we hold leaves the log untouched, so it can never erase entries a newer message already added.
        """
        if not self.match_term(prev_index, prev_term):
            return None, Index(0)
        last_new = Index(prev_index + len(entries))
        conflict = self._find_conflict(entries)
        if conflict:
            invariant(
                conflict > self.committed,
                f"entry at index {conflict} conflicts with the committed prefix (commit {self.committed})",
            )
            had_entry = conflict <= self.last_index()
            self._truncate_and_append(entries[conflict - (prev_index + 1) :])
            truncated_from = conflict if had_entry else Index(0)
        else:
            truncated_from = Index(0)
        self.commit_to(Index(min(commit, last_new)))
        return last_new, truncated_from

    def _find_conflict(self, entries: Sequence[Entry]) -> Index:
        """First index in ``entries`` absent from the log or present with another term; 0 if all present."""
        if not entries:
            return Index(0)
        last = entries[-1]
        # Log Matching (§5.3): if the last entry matches, every entry before it matches too.
        if self.match_term(last.index, last.term):
            return Index(0)
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return Index(0)

    def _truncate_and_append(self, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        offset = self.unstable_offset
        if first == offset + len(self.unstable):
            self.unstable.extend(entries)
        elif first <= offset:
            # The stored suffix from `first` is stale; the next Ready rewrites it (storage truncates on append).
            self.unstable_offset = first
            self.unstable = list(entries)
        else:
            del self.unstable[first - offset :]
            self.unstable.extend(entries)

    def commit_to(self, index: Index) -> bool:
        """Raise the commit index (never lower it). Returns whether it moved."""
        if index <= self.committed:
            return False
        invariant(index <= self.last_index(), f"commit index {index} past last index {self.last_index()}")
        self.committed = index
        return True

    def applied_to(self, index: Index) -> None:
        invariant(
            self.applied <= index <= self.committed,
            f"applied_to({index}) outside [{self.applied}, {self.committed}]",
        )
        self.applied = index

    def restore(self, meta: SnapshotMeta) -> None:
        """Replace the whole log by a snapshot from the leader (§7): nothing of ours is kept.

        Callers handle the other case first — a log that already holds ``(meta.index, meta.term)`` only commits
        up to it and keeps the rest (§7: "retain log entries following it").
        """
        invariant(meta.index > self.committed, f"restoring snapshot {meta.index} at or below commit {self.committed}")
        self.pending_snapshot = meta
        self.unstable = []
        self.unstable_offset = Index(meta.index + 1)
        self.committed = meta.index

    def snapshot_installed(self, meta: SnapshotMeta) -> None:
        """The driver installed ``meta`` (storage and state machine): it is stable and applied."""
        if self.pending_snapshot is not None and self.pending_snapshot.index == meta.index:
            self.pending_snapshot = None
        self.applied = max(self.applied, meta.index)

    def stable_to(self, index: Index, term: Term) -> None:
        """The driver persisted entries up to ``(index, term)``: drop them from memory.

        If the unstable entry at ``index`` no longer has ``term`` (a conflicting append replaced it while the
        write was in flight), nothing is dropped and the next Ready persists the replacement.
        """
        offset = self.unstable_offset
        if index < offset:
            return
        k = index - offset
        if k < len(self.unstable) and self.unstable[k].term == term:
            del self.unstable[: k + 1]
            self.unstable_offset = Index(index + 1)
