"""A simulated Raft cluster: N cores, a simulated clock, network and disk, all driven from one seed.

Theory of operation
-------------------
Time is an integer number of simulated milliseconds. Everything that happens is an event in one heap ordered by
``(time, sequence number)``: a node's tick, a message arriving, a disk write completing, a client request, a
fault. The loop pops the next event, applies it to one core, then *pumps* that core: it takes its ``Ready`` and
carries it out as the contract in ``raftkv.raft.ready`` says a real driver must, taking the same decisions
as the node runtime (``raftkv.raft.driver.ReadyPlanner``: apply early, defer a commit-only hard state) —

1. ``messages`` go on the network at once (the leader's parallel write, §10.2.1);
2. committed entries that are all in the durable log already are applied now (the runtime's early apply);
3. the entries and hard state, if the plan writes, go to the node's simulated disk, which takes
   ``disk_latency_ms``; a commit-only hard state waits for the next write, as in the runtime;
4. only when that write completes do ``messages_after_sync`` leave, the other committed entries get applied,
   and the core is told ``advance()``.

Membership: ``spare`` nodes beyond the ``n`` bootstrap members run from the start with no configuration (as
``raftkv serve --join`` does) until a change adds them; :meth:`Cluster.change` proposes a change on the leader.
Removed nodes keep running (and may come back). In such a run a wiped node restarts empty *joining*, never
bootstrapping a cluster of its own.

A crash discards the core (all volatile state) and any write in flight; optionally a *prefix* of that write
survives (a torn write cut at a record boundary, which is what the write-ahead log's recovery leaves). A
restart builds a new core from what the disk holds. A pause (SIGSTOP) freezes a node: its ticks stop and
messages for it wait, then all arrive on resume.

The same seed yields the same run: the only randomness is ``self.rng`` (and per-node generators derived from
it), nothing iterates over hash-ordered sets of objects, and no wall clock is read. With ``trace=True`` every
event is also recorded, so a test can compare two runs of one seed event by event.

The :class:`~raftkv.sim.checker.Checker` runs after every event; a safety violation raises at once.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import cast

from raftkv.kv.backend import MemoryBackend
from raftkv.kv.machine import KVStateMachine
from raftkv.raft.config import RaftConfig
from raftkv.raft.driver import ReadyPlan, ReadyPlanner
from raftkv.raft.errors import NotLeader, ProposalDropped
from raftkv.raft.membership import ConfChange, ConfChangeInProgress, InvalidConfChange
from raftkv.raft.messages import AppendEntriesResponse, Message
from raftkv.raft.node import RawNode
from raftkv.raft.ready import Ready, Role
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import NO_NODE, Entry, EntryType, Index, NodeId, SnapshotMeta, Term
from raftkv.sim.checker import Checker, SafetyViolation
from raftkv.sim.network import LinkFaults, Network


@dataclass(slots=True)
class NodeSettings:
    """Core settings every simulated node uses (ticks are ``tick_ms`` of simulated time)."""

    tick_ms: int = 10
    election_ticks: int = 15
    election_jitter_ticks: int | None = None
    heartbeat_ticks: int = 5
    pre_vote: bool = True
    check_quorum: bool = True
    lazy_commit: bool = True
    max_msg_entries: int = 64
    max_inflight_msgs: int = 64
    max_inflight_bytes: int = 1 << 20
    disk_latency_ms: tuple[int, int] = (0, 2)
    """Range of the time a persist takes (a write plus fsync)."""
    partial_writes: bool = True
    """On a crash, let a random prefix of the in-flight write survive."""
    snapshot_every: int = 0
    """Take a snapshot each time this many entries were applied since the last one (0: never), then compact."""
    snapshot_trailing: int = 10
    """Entries kept in the log below a snapshot, so a briefly lagging follower gets entries, not a snapshot."""
    kv: bool = False
    """Run the real key-value state machine on every node (rebuilt from the snapshot and the log on restart)."""


class ProposalState(Enum):
    PENDING = "pending"
    ACKED = "acked"
    FAILED = "failed"


@dataclass(slots=True)
class Proposal:
    """A client command submitted to one node; acknowledged when that node applies it at its index."""

    data: bytes
    node: NodeId
    incarnation: int
    index: Index
    term: Term
    submitted_ms: int
    state: ProposalState = ProposalState.PENDING
    acked_ms: int = -1
    result: object = None
    """With the KV store: the state machine's result for the entry, once acknowledged."""


@dataclass(slots=True)
class SimNode:
    id: NodeId
    disk: MemoryStorage = field(default_factory=MemoryStorage)
    core: RawNode | None = None
    incarnation: int = 0
    paused: bool = False
    writing: Ready | None = None
    """A Ready whose write is in flight on the simulated disk."""
    plan: ReadyPlan | None = None
    """The plan of the Ready in ``writing`` (what it writes, whether its entries were applied early)."""
    planner: ReadyPlanner = field(default_factory=ReadyPlanner)
    """This incarnation's Ready planner (the runtime's): it holds a deferred commit-only hard state."""
    applied: list[tuple[Index, Term, bytes]] = field(default_factory=list)
    """What this incarnation's state machine applied (NORMAL entries only), in order."""
    applied_index: Index = Index(0)
    held: list[Message] = field(default_factory=list)
    """Messages that arrived while paused, delivered on resume (like a socket buffer)."""
    snapshot: tuple[SnapshotMeta, tuple[tuple[Index, Term, bytes], ...]] | None = None
    """The node's durable snapshot: its metadata and the state machine's contents (written atomically)."""
    kv: KVStateMachine | None = None
    """With ``NodeSettings.kv``: the key-value store, fed the same commands as ``applied``."""
    reads: list[tuple[Index, bytes]] = field(default_factory=list)
    """Confirmed read points waiting for the state machine to reach their index."""
    bootstrap: bool = True
    """Starts as a bootstrap member (the cluster's initial voters) when its disk holds no configuration; False
    for a spare node, and for any node wiped in a membership run: it then joins, learning from the leader."""
    tick_token: int = 0
    """Identifies the live tick chain; a tick event carrying an older token is ignored (pause/resume)."""
    write_token: int = 0
    """Identifies the write in flight; a completion carrying an older token is ignored."""

    @property
    def up(self) -> bool:
        return self.core is not None


# Event kinds (small ints keep the heap tuples cheap to compare).
_TICK, _DELIVER, _PERSISTED, _CALL = range(4)


class Cluster:
    """A deterministic simulated cluster. See the module docstring."""

    def __init__(
        self,
        n: int = 3,
        seed: int = 1,
        *,
        settings: NodeSettings | None = None,
        faults: LinkFaults | None = None,
        unsafe: frozenset[str] = frozenset(),
        trace: bool = False,
        spare: int = 0,
        membership: bool = False,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.settings = settings or NodeSettings()
        self.unsafe = unsafe
        self.now = 0
        self._queue: list[tuple[int, int, int, object]] = []
        self._seq = 0
        self.net = Network(random.Random(self.rng.getrandbits(64)), faults or LinkFaults())
        self.checker = Checker()
        self.membership = membership or spare > 0
        self.initial: tuple[NodeId, ...] = tuple(NodeId(i) for i in range(1, n + 1))
        """The bootstrap voters."""
        self.ids: tuple[NodeId, ...] = tuple(NodeId(i) for i in range(1, n + spare + 1))
        """Every node of the run, member or not."""
        self.nodes: dict[NodeId, SimNode] = {i: SimNode(i, bootstrap=i <= n) for i in self.ids}
        self.conf_changes = 0
        """Membership changes appended by a leader."""
        self.proposals: list[Proposal] = []
        self._pending: dict[tuple[NodeId, Index], Proposal] = {}
        self.trace: list[str] | None = [] if trace else None
        self.events = 0
        self.crashes = 0
        self.sent_by_type: dict[str, int] = {}
        self.snapshot_states: dict[tuple[Index, Term], tuple[tuple[Index, Term, bytes], ...]] = {}
        self.kv_images: dict[tuple[Index, Term], bytes] = {}
        """The KV store's snapshot image at each snapshot (KV workload): installs and restarts restore from it,
        so the image format (the MVCC history in it) is under the same faults as the rest."""
        """Every snapshot taken, by (index, term): what an InstallSnapshot's data stream would carry."""
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        self.read_served: dict[bytes, Callable[[SimNode], None]] = {}
        """Called with the node once a read point was confirmed and applied there (the read is served)."""
        self._read_seq = 0
        self.append_rejections = 0
        self.applied_early = 0
        """Readies whose committed entries were applied before their write (the runtime's shortcut)."""
        self.hard_states_deferred = 0
        """Commit-only hard states that rode on a later write instead of costing one (the runtime's shortcut)."""
        self.after_ready: Callable[[SimNode, Ready, int], None] | None = None
        """Nemesis hook: called with each Ready once its write has begun, and the write's duration (ms)."""
        for i in self.ids:
            self._start(self.nodes[i])

    # ======================================================================================================
    # Running
    # ======================================================================================================

    def schedule(self, delay_ms: int, fn: Callable[[], None]) -> None:
        """Run ``fn`` at ``now + delay_ms`` (simulated)."""
        self._push(self.now + delay_ms, _CALL, fn)

    def run_for(self, ms: int) -> None:
        self.run_until(lambda: False, ms)

    def run_until(self, cond: Callable[[], bool], timeout_ms: int, check_every_ms: int = 5) -> bool:
        """Run events until ``cond()`` holds (checked every ``check_every_ms``) or ``timeout_ms`` passes."""
        deadline = self.now + timeout_ms
        next_check = self.now
        q = self._queue
        while True:
            if self.now >= next_check:
                if cond():
                    return True
                next_check = self.now + check_every_ms
            if not q or q[0][0] > deadline:
                self.now = deadline
                return cond()
            t = q[0][0]
            if t > next_check:
                # Nothing happens until t; check the condition at the intermediate time as well.
                self.now = next_check
                continue
            self._step_one()

    def _push(self, at: int, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, payload))

    def _step_one(self) -> None:
        at, _seq, kind, payload = heapq.heappop(self._queue)
        self.now = at
        self.events += 1
        if kind == _TICK:
            node_id, token = cast(tuple[NodeId, int], payload)
            self._on_tick(node_id, token)
        elif kind == _DELIVER:
            self._on_deliver(cast(Message, payload))
        elif kind == _PERSISTED:
            node_id, token = cast(tuple[NodeId, int], payload)
            self._on_persisted(node_id, token)
        else:
            cast(Callable[[], None], payload)()

    def _record(self, line: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.now} {line}")

    # ======================================================================================================
    # Node lifecycle
    # ======================================================================================================

    def _start(self, node: SimNode) -> None:
        s = self.settings
        cfg = RaftConfig(
            id=node.id,
            voters=self.initial if node.bootstrap else (),
            rng=random.Random(self.rng.getrandbits(64)),
            election_ticks=s.election_ticks,
            election_jitter_ticks=s.election_jitter_ticks,
            heartbeat_ticks=s.heartbeat_ticks,
            pre_vote=s.pre_vote,
            check_quorum=s.check_quorum,
            lazy_commit=s.lazy_commit,
            max_msg_entries=s.max_msg_entries,
            max_inflight_msgs=s.max_inflight_msgs,
            max_inflight_bytes=s.max_inflight_bytes,
        )
        node.incarnation += 1
        # The state machine is volatile: it restarts from the node's snapshot (if any), then replays the log.
        snap = node.snapshot
        if snap is not None:
            cfg.applied = snap[0].index
        node.core = RawNode(cfg, node.disk, unsafe=self.unsafe)
        node.applied = list(snap[1]) if snap is not None else []
        node.applied_index = snap[0].index if snap is not None else Index(0)
        node.kv = self._fresh_kv(node.applied, snap[0] if snap is not None else None)
        node.reads = []
        node.writing = None
        node.plan = None
        node.planner = ReadyPlanner()  # a deferred hard state is volatile: gone with the old core
        node.paused = False
        node.held = []
        self.checker.restarted(node.id, node.incarnation, node.core)
        if snap is not None:
            node.core.set_snapshot(snap[0])
            self.checker.on_snapshot(node.id, snap[0], snap[1])
        # Nodes' clocks are not in phase: the first tick comes at a random offset.
        self._start_ticker(node, self.rng.randint(1, s.tick_ms))
        self._record(f"start {node.id} inc={node.incarnation}")
        self._pump(node)

    def crash(self, node_id: NodeId) -> None:
        """SIGKILL: volatile state is gone; a write in flight is lost, or survives as a prefix."""
        node = self.nodes[node_id]
        if node.core is None:
            return
        self.crashes += 1
        rd = node.writing
        plan = node.plan
        if rd is not None and self.settings.partial_writes and rd.snapshot is not None:
            if self.rng.random() < 0.5:
                self._install(node, rd.snapshot)  # the install is atomic: all or nothing
            else:
                rd = None  # the crash came first: nothing of this write reached the disk
        if rd is not None and self.settings.partial_writes:
            # The write-ahead log appends entries, then the hard state: a crash mid-write leaves a prefix.
            k = self.rng.randint(0, len(rd.entries) + 1)
            if k > 0 and rd.entries:
                node.disk.append(rd.entries[: min(k, len(rd.entries))])
            if k == len(rd.entries) + 1 and plan is not None and plan.hard_state is not None:
                node.disk.set_hard_state(plan.hard_state)
        node.core = None
        node.writing = None
        node.plan = None
        node.held = []
        self.checker.forget_reads(node_id)
        self._record(f"crash {node_id}")

    def wipe(self, node_id: NodeId) -> None:
        """Crash the node and lose its disk entirely (an operator wiped its data dir); restart it empty."""
        node = self.nodes[node_id]
        self.crash(node_id)
        node.disk = MemoryStorage()
        node.snapshot = None
        if self.membership:
            node.bootstrap = False
        self._record(f"wipe {node_id}")
        self._start(node)

    def restart(self, node_id: NodeId) -> None:
        node = self.nodes[node_id]
        if node.core is not None:
            self.crash(node_id)
        self._start(node)

    def pause(self, node_id: NodeId) -> None:
        """SIGSTOP: the node keeps its state but does nothing; messages for it queue up."""
        node = self.nodes[node_id]
        if node.core is not None and not node.paused:
            node.paused = True
            self._record(f"pause {node_id}")

    def resume(self, node_id: NodeId) -> None:
        node = self.nodes[node_id]
        if node.core is None or not node.paused:
            return
        node.paused = False
        self._record(f"resume {node_id}")
        held, node.held = node.held, []
        for msg in held:
            self._push(self.now, _DELIVER, msg)
        self._start_ticker(node, 1)
        if node.writing is not None:
            self._push(self.now, _PERSISTED, (node.id, node.write_token))

    def _start_ticker(self, node: SimNode, first_delay_ms: int) -> None:
        node.tick_token += 1
        self._push(self.now + first_delay_ms, _TICK, (node.id, node.tick_token))

    # ======================================================================================================
    # Event handlers
    # ======================================================================================================

    def _on_tick(self, node_id: NodeId, token: int) -> None:
        node = self.nodes[node_id]
        core = node.core
        if core is None or node.tick_token != token or node.paused:
            return  # a paused node's ticker is restarted (with a new token) on resume
        core.tick()
        self._pump(node)
        self._push(self.now + self.settings.tick_ms, _TICK, (node_id, token))

    def _on_deliver(self, msg: Message) -> None:
        node = self.nodes[msg.dst]
        core = node.core
        if core is None or not self.net.link_ok(msg.src, msg.dst):
            self.net.dropped += 1
            return
        if node.paused:
            node.held.append(msg)
            return
        self.net.delivered += 1
        if self.trace is not None:
            self._record(f"deliver {msg!r}")
        core.step(msg)
        self._pump(node)

    def _on_persisted(self, node_id: NodeId, token: int) -> None:
        node = self.nodes[node_id]
        if node.core is None or node.write_token != token or node.writing is None or node.paused:
            return
        rd, plan = node.writing, node.plan
        node.writing = node.plan = None
        if plan is None:  # pragma: no cover - set together with writing
            raise AssertionError("a write in flight without its plan")
        self._finish_ready(node, rd, plan)
        self._pump(node)

    # ======================================================================================================
    # Carrying out a Ready (the contract of raftkv.raft.ready)
    # ======================================================================================================

    def _pump(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        checker = self.checker
        checker.after_event(node.id, core)
        while node.writing is None and core.has_ready():
            rd = core.ready()
            checker.on_ready(node.id, core, rd)
            if self.trace is not None:
                self._record(
                    f"ready {node.id} hs={rd.hard_state} ents={len(rd.entries)} "
                    f"commit={len(rd.committed_entries)} ev={list(rd.events)}"
                )
            for msg in rd.messages:
                self._send(msg)
            plan = node.planner.plan(rd, core.role)
            if rd.hard_state is not None and not plan.write:
                self.hard_states_deferred += 1
            if plan.apply_early:
                self.applied_early += 1
                self._apply_committed(node, rd)
            if plan.write:
                lo, hi = self.settings.disk_latency_ms
                delay = self.rng.randint(lo, hi) if hi > 0 else 0
                if self.after_ready is not None:
                    self.after_ready(node, rd, delay)
                if delay > 0:
                    node.writing = rd
                    node.plan = plan
                    node.write_token += 1
                    self._push(self.now + delay, _PERSISTED, (node.id, node.write_token))
                    return
                self._write(node, rd, plan)
            self._finish_ready(node, rd, plan, written=True)
            checker.after_event(node.id, core)

    def _write(self, node: SimNode, rd: Ready, plan: ReadyPlan) -> None:
        if rd.snapshot is not None:
            self._install(node, rd.snapshot)
        if rd.entries:
            node.disk.append(rd.entries)
        if plan.hard_state is not None:
            node.disk.set_hard_state(plan.hard_state)

    def _install(self, node: SimNode, meta: SnapshotMeta) -> None:
        """Install a leader's snapshot: saved durably, the log reset after it, the state machine restored."""
        state = self.snapshot_states[(meta.index, meta.term)]
        node.disk.apply_snapshot(meta)
        node.snapshot = (meta, state)
        node.applied = list(state)
        node.applied_index = meta.index
        node.kv = self._fresh_kv(node.applied, meta)
        self.snapshots_installed += 1
        self.checker.on_snapshot(node.id, meta, state)
        self._record(f"install snapshot {node.id} at {meta.index}")

    def _apply_committed(self, node: SimNode, rd: Ready) -> None:
        core = node.core
        assert core is not None
        if rd.committed_entries:
            self.checker.on_apply(node.id, core, rd.committed_entries)
            self._apply(node, rd)

    def _finish_ready(self, node: SimNode, rd: Ready, plan: ReadyPlan, written: bool = False) -> None:
        core = node.core
        assert core is not None
        if not written:
            self._write(node, rd, plan)
        for msg in rd.messages_after_sync:
            self._send(msg)
        if not plan.apply_early:
            self._apply_committed(node, rd)
        core.advance()
        if rd.read_states:
            node.reads.extend((rs.index, rs.ctx) for rs in rd.read_states)
        if node.reads:
            self._serve_reads(node)
        if self.settings.snapshot_every:
            self._maybe_snapshot(node)

    def _serve_reads(self, node: SimNode) -> None:
        """ReadIndex, last step (§6.4): serve a confirmed read once the state machine reached its index."""
        ready = [(i, ctx) for i, ctx in node.reads if i <= node.applied_index]
        if not ready:
            return
        node.reads = [(i, ctx) for i, ctx in node.reads if i > node.applied_index]
        for _i, ctx in ready:
            served = self.read_served.pop(ctx, None)
            if served is not None:
                served(node)

    def _fresh_kv(
        self, applied: list[tuple[Index, Term, bytes]], snapshot: SnapshotMeta | None = None
    ) -> KVStateMachine | None:
        """The KV store after ``applied``: restored from the image of ``snapshot`` (when one was taken there),
        then the entries after it applied."""
        if not self.settings.kv:
            return None
        kv = KVStateMachine(MemoryBackend())
        image = self.kv_images.get((snapshot.index, snapshot.term)) if snapshot is not None else None
        if image is not None and snapshot is not None:
            kv.restore(image)
            applied = [a for a in applied if a[0] > snapshot.index]
        if applied:
            kv.apply([Entry(t, i, d) for i, t, d in applied])
        return kv

    def _maybe_snapshot(self, node: SimNode) -> None:
        """Snapshot the state machine every ``snapshot_every`` entries, then compact the log below it."""
        s = self.settings
        core = node.core
        assert core is not None
        last = node.snapshot[0].index if node.snapshot is not None else 0
        index = node.applied_index
        if index - last < s.snapshot_every:
            return
        term = core.log.term_or_none(index)
        if term is None:
            return
        meta = SnapshotMeta(index, term, core.conf_at(index))
        state = tuple(node.applied)
        known = self.snapshot_states.setdefault((index, term), state)
        self.checker.check_snapshot(node.id, meta, state, known)
        if node.kv is not None:
            image = node.kv.snapshot()
            if self.kv_images.setdefault((index, term), image) != image:
                raise SafetyViolation(f"node {node.id}: the KV image at index {index} differs from another node's")
        node.snapshot = (meta, state)
        core.set_snapshot(meta)
        self.snapshots_taken += 1
        # Compact only what is durable in the log (applied entries were persisted before being applied).
        compact_to = Index(min(index - s.snapshot_trailing, node.disk.last_index()))
        if compact_to > node.disk.first_index() - 1:
            node.disk.compact(compact_to)

    def _apply(self, node: SimNode, rd: Ready) -> None:
        pending = self._pending
        results: dict[Index, object] = {}
        if node.kv is not None:
            normal = [e for e in rd.committed_entries if e.type is EntryType.NORMAL]
            if normal:
                results = dict(zip((e.index for e in normal), node.kv.apply(normal), strict=True))
        for e in rd.committed_entries:
            node.applied_index = e.index
            if e.type is EntryType.NORMAL:
                node.applied.append((e.index, e.term, e.data))
            p = pending.pop((node.id, e.index), None)
            if p is not None and p.incarnation == node.incarnation:
                if p.term == e.term and p.data == e.data:
                    p.state = ProposalState.ACKED
                    p.acked_ms = self.now
                    p.result = results.get(e.index)
                else:
                    p.state = ProposalState.FAILED

    def _send(self, msg: Message) -> None:
        kind = type(msg).__name__
        self.sent_by_type[kind] = self.sent_by_type.get(kind, 0) + 1
        if type(msg) is AppendEntriesResponse and msg.reject:
            self.append_rejections += 1
        for at in self.net.plan(msg.src, msg.dst, self.now):
            self._push(at, _DELIVER, msg)

    # ======================================================================================================
    # Clients and observation
    # ======================================================================================================

    def propose(self, data: bytes, via: NodeId | None = None) -> Proposal | NodeId:
        """Submit ``data`` to ``via`` (default: the current leader).

        Returns the Proposal, or — when the node is not leader — the leader it points to (``NO_NODE`` if none).
        """
        found = self._live(via)
        if found is None:
            return NO_NODE
        target, node, core = found
        try:
            index = core.propose(data)
        except NotLeader as e:
            return e.leader_hint
        except ProposalDropped:
            return NO_NODE
        p = Proposal(data, target, node.incarnation, index, core.term, self.now)
        old = self._pending.get((target, index))
        if old is not None:
            old.state = ProposalState.FAILED
        self._pending[(target, index)] = p
        self.proposals.append(p)
        self._record(f"propose {data!r} via {target} at {index}")
        self._pump(node)
        return p

    def _live(self, via: NodeId | None) -> tuple[NodeId, SimNode, RawNode] | None:
        """``via`` (default: the leader), its node and core, if it is up and not paused."""
        target = via if via is not None else self.leader()
        if target is None:
            return None
        node = self.nodes[target]
        core = node.core
        if core is None or node.paused:
            return None
        return target, node, core

    def change(self, cc: ConfChange, via: NodeId | None = None) -> Index | NodeId | str:
        """Propose a membership change on ``via`` (default: the leader): its index, the leader hint if ``via``
        does not lead (``NO_NODE`` if none), or the refusal's message."""
        found = self._live(via)
        if found is None:
            return NO_NODE
        target, node, core = found
        try:
            index = core.propose_conf_change(cc)
        except NotLeader as e:
            return e.leader_hint
        except (ProposalDropped, ConfChangeInProgress, InvalidConfChange) as e:
            return str(e)
        self.conf_changes += 1
        self._record(f"conf change {cc.type.value} {cc.node} via {target} at {index}")
        self._pump(node)
        return index

    def members(self) -> tuple[NodeId, ...]:
        """The configuration's members as the current leader sees it (else the bootstrap voters)."""
        leader = self.leader()
        return self.core(leader).conf.ids if leader is not None else self.initial

    def read(self, via: NodeId) -> bytes | NodeId:
        """Ask ``via`` for a linearizable read point; returns the request's context, or the leader hint."""
        node = self.nodes[via]
        core = node.core
        if core is None or node.paused:
            return NO_NODE
        self._read_seq += 1
        ctx = self._read_seq.to_bytes(8, "big")
        try:
            core.read_index(ctx)
        except NotLeader as e:
            return e.leader_hint
        except ProposalDropped:
            return NO_NODE
        self.checker.on_read_request(via, ctx)
        self._record(f"read via {via} ctx={self._read_seq}")
        self._pump(node)
        return ctx

    def leader(self) -> NodeId | None:
        """The live, unpaused leader with the highest term, if exactly one node leads that term."""
        best: tuple[Term, NodeId] | None = None
        for i in self.ids:
            node = self.nodes[i]
            core = node.core
            if (
                core is not None
                and not node.paused
                and core.role is Role.LEADER
                and (best is None or core.term > best[0])
            ):
                best = (core.term, i)
        return best[1] if best else None

    def leaders(self) -> list[NodeId]:
        """Every live node that currently believes it is leader (of any term)."""
        return [i for i in self.ids if (c := self.nodes[i].core) is not None and c.role is Role.LEADER]

    def core(self, node_id: NodeId) -> RawNode:
        c = self.nodes[node_id].core
        assert c is not None, f"node {node_id} is down"
        return c

    def up_ids(self) -> list[NodeId]:
        return [i for i in self.ids if self.nodes[i].core is not None]

    def applied_count(self, index: Index) -> tuple[int, bytes | None]:
        """How many live nodes applied ``index`` and the command there (the checker guarantees they agree)."""
        count = 0
        data: bytes | None = None
        for i in self.ids:
            node = self.nodes[i]
            if node.core is not None and node.applied_index >= index:
                count += 1
                if data is None:
                    data = self.checker.applied[index - 1].data
        return count, data

    def terms(self) -> dict[NodeId, Term]:
        return {i: c.term for i in self.ids if (c := self.nodes[i].core) is not None}

    def set_faults(self, faults: LinkFaults) -> None:
        self.net.faults = faults

    def connect_all(self) -> None:
        self.net.heal()

    def disconnect(self, node_id: NodeId) -> None:
        """Unplug the node: nothing reaches it or leaves it until ``connect`` (partitions aside)."""
        self.net.unplug(node_id)
        self._record(f"disconnect {node_id}")

    def connect(self, node_id: NodeId) -> None:
        self.net.plug(node_id)
        self._record(f"connect {node_id}")

    def partition(self, groups: Sequence[Sequence[NodeId]]) -> None:
        self.net.partition(groups)
        self._record(f"partition {groups}")
