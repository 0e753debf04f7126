"""The safety checker: Raft's properties (paper Figure 3), checked incrementally while the simulation runs.

Theory of operation
-------------------
Checking every log against every other after every step would cost O(nodes² × log) per step. Instead each
property is checked where it can first break, in O(1) or O(entries) per event:

* **Election safety** (at most one leader per term): after every event, the node it touched, if leader, is
  recorded as *the* leader of its term.
* **Leader append-only**: while a node stays leader of one term, its last index never decreases and the term
  at the last index seen never changes.
* **Log matching**: every entry enters a log through a ``Ready``; when it does, ``(index, term)`` must map to
  the same payload and the same predecessor term as everywhere else. By induction on the index this is the
  full property (same index and term ⇒ identical prefixes).
* **Leader completeness**: every entry committed in term T is in the log of every leader of a term > T. The
  checker learns the term an entry was committed in: only a leader commits by counting, and the checker
  looks at every node after every event that touches it, so the committing leader is seen first, or a
  follower that heard of the commit at that leader's term (a leader that commits its own removal steps down
  in the same event; a term learnt later only weakens the check, never fails it wrongly). When a node
  becomes leader of term L, it must
  hold every entry committed in a term < L. (A leader of an *older* term may appear late — a candidate paused
  mid-election and resumed — and need not hold entries committed after its term.)
* **State machine safety**: no two nodes apply different entries at one index (a global applied map).
* **Applied = committed prefix**: each node applies indexes 1, 2, 3, ... in order, each at most its commit.
* **Commit monotonic**: within one incarnation of a node, its commit index never decreases.
* **Configuration = the log's** (dissertation §4.1, "a server always uses the latest configuration in its
  log"): after every event, the entry a node's configuration comes from is in its log, is a configuration
  entry and holds exactly that configuration (so a truncated-away change was undone); and no configuration
  entry a Ready hands out is newer than it (so an appended change took effect). Election safety, log matching
  and leader completeness above hold across configurations unchanged: they are global properties.
* **Linearizable read points** (ReadIndex, dissertation §6.4): a read's index covers every entry committed
  anywhere before the read was requested, and the answering leader has committed that index.

A broken property raises :class:`SafetyViolation` at once, naming the property, the nodes and the index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftkv.raft.membership import decode_conf
from raftkv.raft.node import RawNode
from raftkv.raft.ready import Ready, Role
from raftkv.raft.types import ConfState, Entry, EntryType, Index, NodeId, SnapshotMeta, Term


class SafetyViolation(AssertionError):
    """A Raft safety property failed in the simulation."""


@dataclass(slots=True)
class _NodeView:
    incarnation: int = -1
    commit: Index = Index(0)
    leader_term: Term = Term(0)
    leader_last: Index = Index(0)
    leader_last_term: Term | None = None
    applied: Index = Index(0)


@dataclass(slots=True)
class Checker:
    leaders: dict[Term, NodeId] = field(default_factory=dict)
    entries: dict[tuple[Index, Term], tuple[bytes, EntryType, Term | None]] = field(default_factory=dict)
    applied: list[Entry] = field(default_factory=list)
    """``applied[i - 1]`` is the entry applied at index ``i`` (by whichever node applied it first)."""
    committed: list[tuple[Term, Term]] = field(default_factory=list)
    """``committed[i - 1]`` is ``(term of the entry at i, term of the leader that first committed it)``."""
    views: dict[NodeId, _NodeView] = field(default_factory=dict)
    checks: int = 0
    reads: dict[bytes, tuple[NodeId, int]] = field(default_factory=dict)
    """Read requests in flight: context -> (node asked, commit watermark when it was asked)."""
    reads_served: int = 0
    confs: dict[tuple[Index, Term], ConfState] = field(default_factory=dict)
    """Decoded configuration entries, by (index, term)."""

    def fail(self, prop: str, detail: str) -> None:
        raise SafetyViolation(f"{prop} violated: {detail}")

    def restarted(self, node: NodeId, incarnation: int, core: RawNode | None = None) -> None:
        """A node restarted with an empty state machine: it will re-apply from the start of its log.

        The log it recovered from disk is checked against log matching too: entries enter a log through a Ready
        (checked in ``on_ready``), but a storage bug could bring back entries the node had discarded.
        """
        self.views[node] = _NodeView(incarnation=incarnation)
        if core is None:
            return
        log = core.log
        first, last = log.first_index(), log.last_index()
        prev_term = log.term_or_none(Index(first - 1))
        table = self.entries
        for e in log.entries(first, Index(last + 1)) if last >= first else []:
            known = table.get((e.index, e.term))
            if known is not None and (known[0], known[1], known[2]) != (e.data, e.type, prev_term):
                self.fail(
                    "log matching",
                    f"node {node} recovered entry {e.index} (term {e.term}) after a restart with a different "
                    f"payload or predecessor term ({prev_term} vs {known[2]})",
                )
            prev_term = e.term

    def after_event(self, node: NodeId, core: RawNode) -> None:
        """Cheap checks run after every event that touched ``node``."""
        self.checks += 1
        view = self.views.get(node)
        if view is None:
            view = self.views[node] = _NodeView()
        log = core.log
        commit = log.committed
        prev_commit = view.commit
        if commit < prev_commit:
            self.fail("commit monotonic", f"node {node} commit went from {prev_commit} to {commit}")
        view.commit = commit
        conf_index = core.conf_index
        if conf_index >= log.first_index():
            self._check_conf_entry(node, core, conf_index)
        # Learn the term each index was committed in. Any node's commit index will do, with its current term:
        # a follower's moves only on a message of its leader's term, and a leader that committed its own
        # removal has stepped down by the time we look (so leaders alone would miss those commits).
        committed = self.committed
        leading = core.role is Role.LEADER
        for i in range(len(committed) + 1, commit + 1):
            t = log.term_or_none(Index(i))
            if t is None:
                if leading:
                    self.fail("leader completeness", f"leader {node} committed index {i} it does not hold")
                break  # a follower that installed a snapshot: the leader records these
            committed.append((t, core.term))
        if not leading:
            view.leader_term = Term(0)
            return
        term = core.term
        other = self.leaders.setdefault(term, node)
        if other != node:
            self.fail("election safety", f"nodes {other} and {node} both became leader at term {term}")
        last = log.last_index()
        if view.leader_term != term:
            view.leader_term = term
            view.leader_last = last
            view.leader_last_term = log.term_or_none(last)
            self._check_leader_completeness(node, core)
            return
        if last < view.leader_last or log.term_or_none(view.leader_last) != view.leader_last_term:
            self.fail(
                "leader append-only",
                f"leader {node} at term {term} lost or rewrote index {view.leader_last} (last index now {last})",
            )
        if last != view.leader_last:
            view.leader_last = last
            view.leader_last_term = log.term_or_none(last)

    def _check_conf_entry(self, node: NodeId, core: RawNode, index: Index) -> None:
        log = core.log
        term = log.term_or_none(index)
        if term is None:
            self.fail("configuration", f"node {node} uses the configuration of index {index}, which its log lacks")
        assert term is not None
        conf = self.confs.get((index, term))
        if conf is None:
            (entry,) = log.entries(index, Index(index + 1))
            if entry.type is not EntryType.CONF_CHANGE:
                self.fail("configuration", f"node {node} uses index {index} as its configuration, a {entry.type.name}")
            conf = self.confs[(index, term)] = decode_conf(entry.data)
        if conf != core.conf:
            self.fail(
                "configuration",
                f"node {node} acts on {core.conf.describe()}, but its entry {index} says {conf.describe()}",
            )

    def _check_leader_completeness(self, node: NodeId, core: RawNode) -> None:
        log = core.log
        first = log.first_index()
        term = core.term
        for i in range(first, len(self.committed) + 1):
            entry_term, commit_term = self.committed[i - 1]
            if commit_term >= term:
                continue
            t = log.term_or_none(Index(i))
            if t != entry_term:
                self.fail(
                    "leader completeness",
                    f"node {node} became leader at term {term} without entry {i} (term {entry_term}) "
                    f"committed at term {commit_term}; it has term {t} there",
                )

    def on_read_request(self, node: NodeId, ctx: bytes) -> None:
        self.reads[ctx] = (node, len(self.committed))

    def forget_reads(self, node: NodeId) -> None:
        """The node crashed: its pending reads die with it (their clients time out)."""
        self.reads = {ctx: v for ctx, v in self.reads.items() if v[0] != node}

    def on_ready(self, node: NodeId, core: RawNode, rd: Ready) -> None:
        """Read points are checked here; then log matching: each new entry agrees with every other copy."""
        for rs in rd.read_states:
            asked, watermark = self.reads.pop(rs.ctx, (node, 0))
            if asked != node:
                self.fail("linearizable read", f"node {node} answered a read asked of node {asked}")
            if rs.index < watermark:
                self.fail(
                    "linearizable read",
                    f"node {node} served a read at index {rs.index}, but index {watermark} was committed before "
                    "the read was asked (a stale read)",
                )
            if rs.index > core.log.committed:
                self.fail("linearizable read", f"node {node} gave read index {rs.index} beyond its commit")
            self.reads_served += 1
        for ctx in rd.dropped_reads:
            self.reads.pop(ctx, None)
        if not rd.entries:
            return
        newest = max((e.index for e in rd.entries if e.type is EntryType.CONF_CHANGE), default=Index(0))
        if newest > core.conf_index:
            self.fail(
                "configuration",
                f"node {node} appended a configuration at index {newest} but acts on the one of {core.conf_index}",
            )
        prev_term = core.log.term_or_none(Index(rd.entries[0].index - 1))
        table = self.entries
        for e in rd.entries:
            key = (e.index, e.term)
            record = (e.data, e.type, prev_term)
            known = table.setdefault(key, record)
            if known != record:
                self.fail(
                    "log matching",
                    f"node {node} holds a different entry at index {e.index} term {e.term} "
                    f"(or a different predecessor term: {prev_term} vs {known[2]})",
                )
            prev_term = e.term

    def check_snapshot(
        self,
        node: NodeId,
        meta: SnapshotMeta,
        state: tuple[tuple[Index, Term, bytes], ...],
        known: tuple[tuple[Index, Term, bytes], ...] | None = None,
    ) -> None:
        """A snapshot at ``meta.index`` holds exactly the committed commands up to it (state machine safety)."""
        if known is not None and known != state:
            self.fail("state machine safety", f"node {node} snapshot at {meta.index} differs from another node's")
        if meta.index > len(self.applied):
            self.fail("state machine safety", f"node {node} has a snapshot at {meta.index} past the applied log")
        expected = tuple((e.index, e.term, e.data) for e in self.applied[: meta.index] if e.type is EntryType.NORMAL)
        if state != expected:
            self.fail("state machine safety", f"node {node} snapshot at {meta.index} is not the committed prefix")
        if meta.index and self.applied[meta.index - 1].term != meta.term:
            self.fail("state machine safety", f"node {node} snapshot at {meta.index} has term {meta.term}")

    def on_snapshot(self, node: NodeId, meta: SnapshotMeta, state: tuple[tuple[Index, Term, bytes], ...]) -> None:
        """The node's state machine was restored from a snapshot: check it, then continue after its index."""
        self.check_snapshot(node, meta, state)
        view = self.views.setdefault(node, _NodeView())
        if meta.index < view.applied:
            self.fail("applied = committed prefix", f"node {node} went back from {view.applied} to {meta.index}")
        view.applied = meta.index

    def on_apply(self, node: NodeId, core: RawNode, entries: tuple[Entry, ...]) -> None:
        view = self.views.setdefault(node, _NodeView())
        commit = core.log.committed
        applied = self.applied
        for e in entries:
            if e.index != view.applied + 1:
                self.fail(
                    "applied = committed prefix",
                    f"node {node} applied index {e.index} after {view.applied} (a gap or a repeat)",
                )
            if e.index > commit:
                self.fail("applied = committed prefix", f"node {node} applied {e.index} beyond commit {commit}")
            if e.index <= len(applied):
                first = applied[e.index - 1]
                if first.term != e.term or first.data != e.data or first.type != e.type:
                    self.fail(
                        "state machine safety",
                        f"node {node} applied {e!r} at index {e.index} where another node applied {first!r}",
                    )
            else:
                applied.append(e)
            view.applied = e.index
