"""One randomized simulation run per seed: swarm-drawn faults, a nemesis, clients, then a liveness phase.

Theory of operation
-------------------
*Swarm testing* (Groce et al., 2012): instead of one fixed mix of faults, every seed draws its own — cluster
size, loss, duplication, delay, disk latency, how often partitions, crashes and pauses happen — so that some
seeds hammer one fault hard while others combine them gently. The options are printed first, and
``python -m raftkv.sim --seed N`` (plus any options fixed on the command line) replays the run bit for bit.

A run has two phases:

1. **Chaos** (``duration_ms``): clients propose unique commands; the nemesis partitions (any shape), crashes
   and restarts, and pauses nodes, with a bias towards the leader, and (in a membership run) changes the
   membership: adds spare or removed nodes as learners or voters, promotes, removes (the leader too). The
   checker verifies every safety property after every event.
2. **Liveness** (at most ``liveness_ms``): faults stop, the network heals, every node is up. Within the bound
   there must be exactly one leader that all members follow, its whole log committed, and every member must
   have applied all of it, which includes every proposal ever acknowledged to a client.
"""

from __future__ import annotations

import functools
import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import msgspec

from raftkv.check import Kind, Operation
from raftkv.check import cas as check_cas
from raftkv.check import check as check_history
from raftkv.check import delete as check_delete
from raftkv.check import get as check_get
from raftkv.check import put as check_put
from raftkv.kv.commands import Compact, Compare, DeleteRange, Put, Range, Txn, TxnResult, encode_command
from raftkv.kv.keys import FROM_KEY
from raftkv.raft.errors import RaftError
from raftkv.raft.membership import ChangeType, ConfChange
from raftkv.raft.ready import Ready, Role
from raftkv.raft.types import Index, NodeId
from raftkv.sim.checker import SafetyViolation
from raftkv.sim.cluster import Cluster, NodeSettings, Proposal, ProposalState, SimNode
from raftkv.sim.leases import LeaseWorkload
from raftkv.sim.network import LinkFaults, random_partition


@dataclass(slots=True)
class SimOptions:
    nodes: int = 3
    duration_ms: int = 4000
    liveness_ms: int = 10_000
    drop_rate: float = 0.0
    dup_rate: float = 0.0
    min_delay_ms: int = 1
    max_delay_ms: int = 5
    disk_min_ms: int = 0
    disk_max_ms: int = 2
    partition_every_ms: int = 0
    """Mean time between partitions (0: none)."""
    partition_hold_ms: int = 500
    crash_every_ms: int = 0
    down_ms: int = 300
    pause_every_ms: int = 0
    pause_ms: int = 300
    clients: int = 2
    pipeline: int = 4
    """Proposals a client keeps outstanding (closed loop: it waits for an outcome or a timeout)."""
    propose_every_ms: int = 20
    client_timeout_ms: int = 1000
    read_ratio: float = 0.0
    snapshot_every: int = 0
    """Nodes snapshot every this many applied entries and compact their logs (0: never)."""
    kv_workload: bool = False
    """Clients use the real KV store (put/get/cas/delete on a few keys); the history is checked for
    linearizability with raftkv.check at the end of the run."""
    unsafe_follower_reads: bool = False
    """Test-only: answer reads from the most lagging node's state, as a follower serving "linearizable" reads
    locally would (the bug the verification harness must catch; see tests/sim/test_checker_bites.py)."""
    snapshot_trailing: int = 10
    """Share of client operations that are linearizable reads (ReadIndex) instead of proposals."""
    max_msg_entries: int = 64
    max_inflight_msgs: int = 64
    max_inflight_bytes: int = 1 << 20
    """Entry bytes in flight per follower; the sim's entries are small, so only a small bound binds."""
    election_ticks: int = 15
    heartbeat_ticks: int = 5
    crash_in_write_rate: float = 0.0
    """Buggify: chance that a node is killed during (or just after) a Ready's disk write, then restarted."""
    crash_after_vote_rate: float = 0.0
    """Buggify, targeted: the same, for a Ready that records a new term or vote (election safety rests on it)."""
    pre_vote: bool = True
    check_quorum: bool = True
    lazy_commit: bool = True
    unsafe: tuple[str, ...] = ()
    membership_every_ms: int = 0
    """Mean time between membership changes the nemesis proposes (0: none)."""
    spare_nodes: int = 0
    """Nodes beyond ``nodes`` that start with no configuration, for membership changes to add."""
    compact_every_ms: int = 0
    """KV workload: mean time between history compactions (``Compact`` commands) the nemesis proposes."""
    lease_every_ms: int = 0
    """KV workload with check-quorum: mean time between lease client steps (``raftkv.sim.leases``; 0: none)."""

    @classmethod
    def draw(cls, seed: int, **fixed: Any) -> SimOptions:
        """The swarm: every fault rate drawn from the seed, except the options fixed by the caller."""
        r = random.Random(f"raftkv-sim-options-{seed}")
        o = cls(
            nodes=r.choice((3, 3, 3, 5, 5, 7)),
            drop_rate=r.choice((0.0, 0.0, 0.01, 0.05, 0.1, 0.2, 0.3)),
            dup_rate=r.choice((0.0, 0.0, 0.02, 0.1)),
            min_delay_ms=r.choice((0, 1, 2)),
            max_delay_ms=r.choice((2, 5, 10, 20, 50)),
            disk_min_ms=0,
            disk_max_ms=r.choice((0, 1, 3, 10, 25)),
            partition_every_ms=r.choice((0, 300, 1000, 2000)),
            partition_hold_ms=r.choice((100, 400, 1500)),
            crash_every_ms=r.choice((0, 0, 200, 700, 2000)),
            down_ms=r.choice((20, 300, 1500)),
            pause_every_ms=r.choice((0, 0, 0, 500, 2000)),
            pause_ms=r.choice((50, 400, 1500)),
            clients=r.choice((1, 2, 4)),
            pipeline=r.choice((1, 4, 16)),
            read_ratio=r.choice((0.0, 0.2, 0.5)),
            snapshot_every=r.choice((0, 0, 10, 50, 200)),
            snapshot_trailing=r.choice((0, 5, 50)),
            kv_workload=r.random() < 0.35,
            propose_every_ms=r.choice((5, 20, 60)),
            max_msg_entries=r.choice((1, 3, 64)),
            max_inflight_msgs=r.choice((1, 4, 64)),
            crash_in_write_rate=r.choice((0.0, 0.0, 0.002, 0.01, 0.03)),
            crash_after_vote_rate=r.choice((0.0, 0.0, 0.05, 0.3)),
            # Both default on, but users may turn them off, and the core must stay safe either way.
            pre_vote=r.random() >= 0.25,
            check_quorum=r.random() >= 0.2,
        )
        if r.random() < 0.25:
            # Elections as short as the network is slow: split votes and competing candidates are common.
            o.election_ticks, o.heartbeat_ticks = r.choice(((4, 1), (6, 2), (8, 3)))
            # §5.6 timing requirement: broadcast time << election timeout, or no leader can ever win.
            limit_ms = o.election_ticks * 10 // 10
            o.max_delay_ms = min(o.max_delay_ms, limit_ms)
            o.min_delay_ms = min(o.min_delay_ms, o.max_delay_ms)
            o.disk_max_ms = min(o.disk_max_ms, limit_ms)
        # Drawn last, so that every other option of a seed stays what it was before this option existed.
        o.lazy_commit = r.random() >= 0.3
        # Membership changes (issue 15), drawn after everything else for the same reason.
        o.membership_every_ms = r.choice((0, 0, 150, 400, 1200))
        o.spare_nodes = r.choice((1, 2, 3)) if o.membership_every_ms else 0
        # Flow control by bytes (issue 15's learner join), drawn last: a bound of a few entries in a quarter of
        # the seeds, the default (which the sim's small entries never reach) or none in the rest.
        o.max_inflight_bytes = r.choice((0, 1 << 20, 1 << 20, 200))
        # History compaction (issue 16), drawn last; it only acts on seeds with the KV workload.
        o.compact_every_ms = r.choice((0, 0, 0, 150, 600))
        # Leases on drifting clocks (issue 16), drawn last; only with the KV workload and check-quorum.
        o.lease_every_ms = r.choice((0, 0, 50, 200))
        for name, value in fixed.items():
            if value is not None:
                setattr(o, name, value)
        return o

    def describe(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)]
        return " ".join(parts)


@dataclass(slots=True)
class RunResult:
    seed: int
    options: SimOptions
    ok: bool
    failure: str = ""
    phase: str = ""
    stats: dict[str, int] = field(default_factory=dict)
    trace: list[str] | None = None

    def replay_command(self, fixed: dict[str, Any]) -> str:
        flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in fixed.items() if v is not None)
        return f"python -m raftkv.sim --seed {self.seed}{flags}"


class _Driver:
    """The nemesis and the clients of one run."""

    def __init__(self, cluster: Cluster, opts: SimOptions, rng: random.Random) -> None:
        self.c = cluster
        self.o = opts
        self.rng = rng
        self.chaos = True
        self.partitions = 0
        self.pauses = 0
        self.counter = 0
        self.leader_guess: dict[int, NodeId] = {}
        self.outstanding: dict[int, list[Proposal]] = {}
        self.kv_busy: dict[int, int] = {}
        self.kv_last: dict[int, Proposal] = {}
        self.kv_seen: dict[str, str] = {}
        self.kv_reads: list[Operation] = []
        self.kv_ops: list[tuple[int, str, str, str, str | None, int, Proposal]] = []

    def _next(self, mean_ms: int) -> int:
        return max(1, int(self.rng.expovariate(1.0 / mean_ms)))

    def _victim(self) -> NodeId:
        leader = self.c.leader()
        if leader is not None and self.rng.random() < 0.5:
            return leader
        return self.rng.choice(self.c.ids)

    def start(self) -> None:
        o = self.o
        if o.partition_every_ms:
            self.c.schedule(self._next(o.partition_every_ms), self.partition)
        if o.crash_every_ms:
            self.c.schedule(self._next(o.crash_every_ms), self.crash)
        if o.pause_every_ms:
            self.c.schedule(self._next(o.pause_every_ms), self.pause)
        if o.crash_in_write_rate or o.crash_after_vote_rate:
            self.c.after_ready = self.crash_in_write
        if o.membership_every_ms:
            self.c.schedule(self._next(o.membership_every_ms), self.change_membership)
        if o.compact_every_ms and o.kv_workload:
            self.c.schedule(self._next(o.compact_every_ms), self.compact)
        for client in range(o.clients):
            self.outstanding[client] = []
            op = self.kv_op if o.kv_workload else self.propose
            self.c.schedule(self.rng.randint(0, o.propose_every_ms), functools.partial(op, client))

    def partition(self) -> None:
        if not self.chaos:
            return
        self.partitions += 1
        desc = random_partition(self.rng, self.c.ids, self.c.net)
        self.c._record(f"nemesis partition: {desc}")
        self.c.schedule(self.rng.randint(1, self.o.partition_hold_ms), self.heal)

    def compact(self) -> None:
        """Propose a compaction of the KV history a few revisions back from what some node holds (which may be
        refused: at or below the last compaction, or in the future where that node is ahead of the leader)."""
        if not self.chaos:
            return
        node = self.c.nodes[self.rng.choice(self.c.ids)]
        if node.kv is not None and node.kv.revision > 1:
            revision = max(1, node.kv.revision - self.rng.randint(0, 8))
            self.c.propose(encode_command(Compact(revision)))
            self.c._record(f"nemesis compact at revision {revision}")
        self.c.schedule(self._next(self.o.compact_every_ms), self.compact)

    def heal(self) -> None:
        self.c.net.heal()
        self.c._record("nemesis heal")
        if self.chaos:
            self.c.schedule(self._next(self.o.partition_every_ms), self.partition)

    def crash(self) -> None:
        if not self.chaos:
            return
        victim = self._victim()
        self.c.crash(victim)
        self.c.schedule(self.rng.randint(1, self.o.down_ms), lambda: self.restart(victim))
        self.c.schedule(self._next(self.o.crash_every_ms), self.crash)

    def crash_in_write(self, node: SimNode, rd: Ready, write_ms: int) -> None:
        """Kill the node during this write or just after it (its replies may be out), then restart it."""
        if not self.chaos:
            return
        hs = rd.hard_state
        on_disk, _ = node.disk.initial_state()
        # Targeted: a new term or vote (election safety rests on it) or a snapshot install (log reset).
        voting = rd.snapshot is not None or (hs is not None and (hs.term, hs.vote) != (on_disk.term, on_disk.vote))
        rate = max(self.o.crash_in_write_rate, self.o.crash_after_vote_rate if voting else 0.0)
        if self.rng.random() >= rate:
            return
        victim = node.id
        at = self.rng.randint(0, write_ms + 5)
        inc = node.incarnation

        def kill() -> None:
            if self.c.nodes[victim].incarnation == inc:
                self.c.crash(victim)
                self.c.schedule(self.rng.randint(1, self.o.down_ms), lambda: self.restart(victim))

        self.c.schedule(at, kill)

    def restart(self, victim: NodeId) -> None:
        if self.c.nodes[victim].core is None:
            self.c.restart(victim)

    def pause(self) -> None:
        if not self.chaos:
            return
        self.pauses += 1
        victim = self._victim()
        self.c.pause(victim)
        self.c.schedule(self.rng.randint(1, self.o.pause_ms), lambda: self.c.resume(victim))
        self.c.schedule(self._next(self.o.pause_every_ms), self.pause)

    def change_membership(self) -> None:
        """Propose one membership change on the leader (sometimes on a random node: it must refuse)."""
        if not self.chaos:
            return
        self.c.schedule(self._next(self.o.membership_every_ms), self.change_membership)
        leader = self.c.leader()
        if leader is None:
            return
        conf = self.c.core(leader).conf
        voters, learners = conf.voters, conf.learners
        outside = [i for i in self.c.ids if conf.member(i) is None]
        choices: list[ConfChange] = []
        for i in outside:  # a spare, or a removed node coming back
            kind = ChangeType.ADD_LEARNER if self.rng.random() < 0.7 else ChangeType.ADD_VOTER
            choices.append(ConfChange(kind, i, f"sim:{i}", f"sim-client:{i}"))
        choices += [ConfChange(ChangeType.PROMOTE, i) for i in learners]
        choices += [ConfChange(ChangeType.REMOVE, i) for i in learners]
        if len(voters) > 1:
            # Bias towards the bootstrap size: removals are likelier when above it, and the leader is a
            # favourite victim (it must step down and hand over).
            weight = 3 if len(voters) > self.o.nodes else 1
            choices += [ConfChange(ChangeType.REMOVE, i) for i in voters for _ in range(weight)]
            choices += [ConfChange(ChangeType.REMOVE, leader)] * weight
        if not choices:
            return
        cc = self.rng.choice(choices)
        via = leader if self.rng.random() < 0.9 else self.rng.choice(self.c.ids)
        self.c.change(cc, via=via)

    def propose(self, client: int) -> None:
        if not self.chaos:
            return
        now = self.c.now
        timeout = self.o.client_timeout_ms
        waiting = [
            p for p in self.outstanding[client] if p.state is ProposalState.PENDING and now - p.submitted_ms < timeout
        ]
        self.outstanding[client] = waiting
        if len(waiting) >= self.o.pipeline:
            # Closed loop: a real client waits for answers (or gives up after a timeout) before sending more.
            self.c.schedule(self.o.propose_every_ms, functools.partial(self.propose, client))
            return
        self.counter += 1
        target = self.leader_guess.get(client) or self.rng.choice(self.c.ids)
        if self.o.read_ratio and self.rng.random() < self.o.read_ratio:
            read = self.c.read(target)
            if isinstance(read, bytes):
                self.leader_guess[client] = target
            else:
                self.leader_guess[client] = read if read else self.rng.choice(self.c.ids)
            self.c.schedule(self.rng.randint(1, 2 * self.o.propose_every_ms), lambda: self.propose(client))
            return
        result = self.c.propose(f"c{client}-{self.counter}".encode(), via=target)
        if isinstance(result, Proposal):
            self.leader_guess[client] = target
            waiting.append(result)
        else:
            # Follow the hint like a real client; with no hint, try a random node next time.
            self.leader_guess[client] = result if result else self.rng.choice(self.c.ids)
        self.c.schedule(self.rng.randint(1, 2 * self.o.propose_every_ms), lambda: self.propose(client))

    # --- the KV workload: a history for the linearizability checker --------------------------------------

    KEYS = ("a", "b", "c")

    def kv_op(self, client: int) -> None:
        """One operation at a time per client: issue the next once the last is answered (or given up on)."""
        if not self.chaos:
            return
        now = self.c.now
        last = self.kv_last.get(client)
        if last is not None and last.state is not ProposalState.PENDING:
            self.kv_busy.pop(client, None)  # the last write was answered (acknowledged or refused)
            del self.kv_last[client]
        busy = self.kv_busy.get(client)
        if busy is not None and now - busy < self.o.client_timeout_ms:
            self.c.schedule(self.o.propose_every_ms, functools.partial(self.kv_op, client))
            return
        self.counter += 1
        target = self.leader_guess.get(client) or self.rng.choice(self.c.ids)
        if self.rng.random() < 0.2:
            # Real clients reconnect and spread over nodes; without this, every client keeps talking to a deposed
            # leader that accepts (but cannot commit) and no history could show its stale reads.
            target = self.rng.choice(self.c.ids)
        key = self.rng.choice(self.KEYS)
        kind = self.rng.choice(("put", "put", "get", "get", "cas", "delete"))
        self.kv_busy[client] = now
        if kind == "get":
            ctx = self.c.read(target)
            if isinstance(ctx, bytes):
                self.leader_guess[client] = target
                self.c.read_served[ctx] = functools.partial(self._got, client, key, now)
            else:
                self.leader_guess[client] = ctx if ctx else self.rng.choice(self.c.ids)
                self.kv_busy.pop(client, None)
        else:
            value = f"v{self.counter}"
            if kind == "put":
                cmd: Put | DeleteRange | Txn = Put(key.encode(), value.encode())
            elif kind == "delete":
                cmd = DeleteRange(key.encode())
            else:
                expected = self.kv_seen.get(key)
                cmp = (
                    Compare(key.encode(), "version", "=", 0)
                    if expected is None
                    else Compare(key.encode(), "value", "=", expected.encode())
                )
                cmd = Txn([cmp], [Put(key.encode(), value.encode())], [])
            result = self.c.propose(encode_command(cmd), via=target)
            if isinstance(result, Proposal):
                self.leader_guess[client] = target
                expected_value = self.kv_seen.get(key) if kind == "cas" else None
                self.kv_ops.append((client, kind, key, value, expected_value, now, result))
                self.kv_last[client] = result
            else:
                self.leader_guess[client] = result if result else self.rng.choice(self.c.ids)
                self.kv_busy.pop(client, None)
        self.c.schedule(self.rng.randint(1, 2 * self.o.propose_every_ms), functools.partial(self.kv_op, client))

    def _got(self, client: int, key: str, call_ms: int, node: SimNode) -> None:
        if self.o.unsafe_follower_reads:  # UNSAFE (test hook)
            live = [n for n in self.c.nodes.values() if n.kv is not None and n.core is not None]
            node = min(live, key=lambda n: n.applied_index)
        assert node.kv is not None
        kv = node.kv.get(key.encode())
        value = kv.value.decode() if kv is not None else None
        self.kv_reads.append(check_get(client, key, value, call_ms / 1000, self.c.now / 1000))
        if value is not None:
            self.kv_seen[key] = value
        self.kv_busy.pop(client, None)

    def history(self) -> list[Operation]:
        """Every read that returned, and every write: acknowledged (with its answer) or of unknown outcome
        (pending). Writes known to have failed — their log slot went to another entry — are left out."""
        ops = list(self.kv_reads)
        for client, kind, key, value, expected, call_ms, p in self.kv_ops:
            call = call_ms / 1000
            if p.state is ProposalState.FAILED:
                continue
            ret = p.acked_ms / 1000 if p.state is ProposalState.ACKED else None
            if kind == "put":
                ops.append(check_put(client, key, value, call, ret))
            elif kind == "delete":
                ops.append(check_delete(client, key, call, ret))
            else:
                ok = p.result.succeeded if ret is not None and isinstance(p.result, TxnResult) else None
                ops.append(check_cas(client, key, expected, value, ok, call, ret if ok is not None else None))
        return ops

    def stop_chaos(self) -> None:
        self.chaos = False
        c = self.c
        c.net.heal()
        # Healed links are reliable and ordered, as the runtime's one TCP connection per peer is.
        c.set_faults(LinkFaults(0.0, 0.0, self.o.min_delay_ms, self.o.max_delay_ms, fifo=True))
        for i in c.ids:
            node = c.nodes[i]
            if node.core is None:
                c.restart(i)
            elif node.paused:
                c.resume(i)


def converged(c: Cluster) -> bool:
    """One leader followed by all, its log fully committed (including its own no-op) and applied everywhere,
    and every read request answered or explicitly dropped (a read left hanging is a liveness bug)."""
    if c.checker.reads:
        return False
    leaders = c.leaders()
    if len(leaders) != 1:
        return False
    lead = c.core(leaders[0])
    last = lead.log.last_index()
    if lead.log.committed != last or lead.log.term_or_none(last) != lead.term:
        return False
    for i in lead.conf.ids:  # nodes outside the configuration are not followers: nothing is sent to them
        node = c.nodes[i]
        core = node.core
        if core is None or node.paused:
            return False
        if core.term != lead.term or core.leader != lead.id or node.applied_index != last:
            return False
    return True


def check_acknowledged(c: Cluster) -> None:
    """Every proposal acknowledged to a client is applied, with its data at its index, on every member."""
    members = c.members()
    for p in c.proposals:
        if p.state is not ProposalState.ACKED:
            continue
        for i in members:
            node = c.nodes[i]
            if node.applied_index < p.index:
                raise SafetyViolation(f"acknowledged {p.data!r} at index {p.index} not applied on node {i}")
        got = c.checker.applied[p.index - 1]
        if got.data != p.data:
            raise SafetyViolation(f"acknowledged {p.data!r} at index {p.index} was replaced by {got.data!r}")


def check_history_agrees(c: Cluster) -> None:
    """MVCC: every member holds the same history (its snapshot image, which holds the retained history, is the
    same bytes), answers a range at every retained revision alike, and replays the same events from it."""
    nodes = [c.nodes[i] for i in c.members()]
    kvs = [(n.id, n.kv) for n in nodes if n.kv is not None]
    if len(kvs) < 2:
        return
    first_id, first = kvs[0]
    image = first.snapshot()
    low = max(1, first.compact_revision)
    revisions = sorted({low, first.revision, *range(low, first.revision + 1, max(1, (first.revision - low) // 8))})
    everything = Range(b"\0", FROM_KEY)
    answers = [first.read(msgspec.structs.replace(everything, revision=r)) for r in revisions]
    events = first.history_events(b"\0", FROM_KEY, low, max_records=1 << 30)[0]
    for node_id, kv in kvs[1:]:
        if (kv.revision, kv.compact_revision) != (first.revision, first.compact_revision):
            raise SafetyViolation(
                f"MVCC: node {node_id} is at revision {kv.revision} compacted at {kv.compact_revision}, node "
                f"{first_id} at {first.revision} compacted at {first.compact_revision}"
            )
        for r, answer in zip(revisions, answers, strict=True):
            got = kv.read(msgspec.structs.replace(everything, revision=r))
            if got != answer:
                raise SafetyViolation(f"MVCC: at revision {r} node {node_id} reads {got}, node {first_id} {answer}")
        if kv.history_events(b"\0", FROM_KEY, low, max_records=1 << 30)[0] != events:
            raise SafetyViolation(f"MVCC: nodes {first_id} and {node_id} replay different events from {low}")
        if kv.snapshot() != image:
            raise SafetyViolation(f"MVCC: nodes {first_id} and {node_id} hold different state (snapshot images)")


def build_cluster(seed: int, opts: SimOptions, trace: bool = False) -> Cluster:
    settings = NodeSettings(
        pre_vote=opts.pre_vote,
        check_quorum=opts.check_quorum,
        lazy_commit=opts.lazy_commit,
        disk_latency_ms=(opts.disk_min_ms, opts.disk_max_ms),
        max_msg_entries=opts.max_msg_entries,
        max_inflight_msgs=opts.max_inflight_msgs,
        max_inflight_bytes=opts.max_inflight_bytes,
        election_ticks=opts.election_ticks,
        heartbeat_ticks=opts.heartbeat_ticks,
        snapshot_every=opts.snapshot_every,
        snapshot_trailing=opts.snapshot_trailing,
        kv=opts.kv_workload,
    )
    faults = LinkFaults(opts.drop_rate, opts.dup_rate, opts.min_delay_ms, opts.max_delay_ms)
    return Cluster(
        opts.nodes,
        seed,
        settings=settings,
        faults=faults,
        unsafe=frozenset(opts.unsafe),
        trace=trace,
        spare=opts.spare_nodes,
        membership=opts.membership_every_ms > 0,
    )


def run_seed(seed: int, opts: SimOptions, trace: bool = False) -> RunResult:
    c = build_cluster(seed, opts, trace)
    driver = _Driver(c, opts, random.Random(c.rng.getrandbits(64)))
    leases = None
    if opts.lease_every_ms and opts.kv_workload and opts.check_quorum:
        leases = LeaseWorkload(c, seed, opts.lease_every_ms, opts.election_ticks, c.settings.tick_ms)
    result = RunResult(seed, opts, ok=True, trace=c.trace)
    phase = "chaos"
    try:
        driver.start()
        if leases is not None:
            leases.start()
        c.run_for(opts.duration_ms)
        phase = "liveness"
        driver.stop_chaos()
        if leases is not None:
            leases.stop()
        if not c.run_until(lambda: converged(c), opts.liveness_ms, check_every_ms=10):
            raise SafetyViolation(
                f"liveness: no stable, fully applied leader within {opts.liveness_ms} ms "
                f"after healing ({_describe_nodes(c)}; {len(c.checker.reads)} reads unanswered)"
            )
        check_acknowledged(c)
        if opts.kv_workload:
            check_history_agrees(c)
            history = driver.history()
            verdict = check_history(history, timeout_s=30)
            result.stats["history_ops"] = len(history)
            if verdict.kind is Kind.ILLEGAL:
                raise SafetyViolation(f"linearizability: {verdict.reason}")
        if leases is not None:  # after the safety checks: a diverged store can also leave a lease behind
            leases.settle(c.leaders()[0], opts.liveness_ms)
            # The revocations it waited for are commands: let every member apply them, then compare again.
            if not c.run_until(lambda: converged(c), opts.liveness_ms, check_every_ms=10):
                raise SafetyViolation("liveness: the cluster did not settle again after the leases expired")
            check_history_agrees(c)
    except (SafetyViolation, RaftError) as e:  # RaftError: any error escaping the core is a bug found
        result.ok = False
        result.failure = f"{type(e).__name__}: {e}"
        result.phase = phase
    acked = sum(1 for p in c.proposals if p.state is ProposalState.ACKED)
    result.stats = {
        "sim_ms": c.now,
        "events": c.events,
        "messages": c.net.sent,
        "dropped": c.net.dropped,
        "terms_with_leader": len(c.checker.leaders),
        "max_term": max((int(t) for t in c.checker.leaders), default=0),
        "proposals": len(c.proposals),
        "acked": acked,
        "applied": len(c.checker.applied),
        "reads": c.checker.reads_served,
        "snapshots": c.snapshots_taken,
        "installs": c.snapshots_installed,
        "crashes": c.crashes,
        "partitions": driver.partitions,
        "pauses": driver.pauses,
        "conf_changes": c.conf_changes,
        "members": len(c.members()),
        "leases": len(leases.leases) if leases is not None else 0,
        "leases_expired": leases.expired if leases is not None else 0,
    }
    return result


def _describe_nodes(c: Cluster) -> str:
    parts = []
    for i in c.ids:
        node = c.nodes[i]
        if node.core is None:
            parts.append(f"{i}:down")
            continue
        s = node.core.status()
        role = "L" if s.role is Role.LEADER else s.role.value[0].upper()
        parts.append(f"{i}:{role} t{s.term} c{s.commit} a{node.applied_index} last{s.last_index}")
    return ", ".join(parts)


def options_dict(o: SimOptions) -> dict[str, Any]:
    return asdict(o)


def last_index_of(c: Cluster, node: NodeId) -> Index:
    return c.core(node).log.last_index()
