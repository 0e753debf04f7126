"""Leases in the simulator: every node runs the runtime's lessor rules on its own drifting clock, clients keep
leases alive through whichever node believes it leads, and a checker holds expiry to the guarantee.

Theory of operation
-------------------
Each node gets a clock that runs at its own rate (drawn per seed, within ``±MAX_DRIFT``): its lessor
(:class:`~raftkv.kv.lessor.Lessor`, the very rules ``kvserver/leases.py`` runs) reads ``sim time × rate``. Every
10 ms of simulated time each node checks its role as the runtime's keeper does: a node that leads promotes its
lessor (every stored lease extended by the longest election timeout, with a margin for the drift) or follows
its store; one that does not, demotes it; a leader proposes ``LeaseRevoke(id, expired=True)`` for each lease
past its deadline. Clients grant leases, attach a key to each, keep some alive through a node that believes it
leads (possibly a deposed one that has not noticed yet), and let the others lapse.

The checker. For each lease, the last keep-alive acknowledged (sim time) and the moment the first node is seen
to have applied its revocation. An expiry must come no earlier than ``TTL / (1 + MAX_DRIFT)`` after the last
acknowledgement: "a lease expires no earlier than TTL after the last keep-alive the cluster acknowledged", on
clocks that may run fast by up to the drift. The guarantee leans on check-quorum (a leader cut off from the
majority stops acknowledging within an election timeout), so seeds without it do not run leases.

The other side, in the liveness phase (:meth:`LeaseWorkload.settle`): once the cluster has healed and one
leader leads, every lease the client stopped keeping alive must be gone, with its keys, from every member's
store (within the run's liveness bound). And the leader must decide each expiry in time: it must propose the
revocation no later than ``TTL / (1 - MAX_DRIFT)`` after the latest of
* the last acknowledged keep-alive,
* the moment the leader first held the lease,
* the moment it took office (here the bound is TTL plus the extension),
* the moment it was last resumed from a pause,
plus one keeper period. That is "while a leader is up, no later than TTL plus the time to commit the revoke";
the commit itself takes what the log takes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from raftkv.kv.commands import LeaseGrant, LeaseRevoke, Put, encode_command
from raftkv.kv.lessor import Lessor
from raftkv.raft.ready import Role
from raftkv.raft.types import NodeId
from raftkv.sim.checker import SafetyViolation
from raftkv.sim.cluster import Cluster

MAX_DRIFT = 0.1
"""Node clocks run at rates within ``1 ± MAX_DRIFT``."""
CHECK_MS = 10
TTL_S = 1


@dataclass
class _LeaseState:
    id: int
    keep_alive_until_ms: int
    """The client keeps this lease alive until then (0: never), and lets it lapse after."""
    last_ack_ms: int
    """When the cluster last acknowledged a keep-alive (or the grant was proposed: earlier, so weaker)."""
    explicitly_revoked: bool = False
    gone_ms: int | None = None
    seen_on: dict[NodeId, int] = field(default_factory=dict)
    """Nodes whose store holds the lease, with the incarnation that saw it (a restarted node rebuilds its store
    from an older point: the lease missing there for a while is no revocation)."""
    first_seen: dict[NodeId, int] = field(default_factory=dict)
    """When each node's current incarnation first held the lease (sim time)."""


class LeaseWorkload:
    """The lessors, the lease clients and the checker of one run (see the module docstring)."""

    def __init__(self, cluster: Cluster, seed: int, every_ms: int, election_ticks: int, tick_ms: int) -> None:
        self.c = cluster
        self.rng = random.Random(f"raftkv-sim-leases-{seed}")
        self.every_ms = every_ms
        self.drift = MAX_DRIFT
        """The clocks' bound, as the checker assumes it (a scenario that fixes every rate at 1 sets it to 0)."""
        self.rates = {i: 1 + self.rng.uniform(-MAX_DRIFT, MAX_DRIFT) for i in cluster.ids}
        # The longest election timeout, on the slowest clock's terms: the extension a new leader grants.
        self.extend_s = 2 * election_ticks * tick_ms / 1000 * (1 + 2 * MAX_DRIFT)
        self.lessors: dict[NodeId, Lessor] = {i: Lessor() for i in cluster.ids}
        self.revoking: dict[tuple[NodeId, int], int] = {}
        self.leases: dict[int, _LeaseState] = {}
        self.next_id = 1
        self.active = True
        self.expired = 0
        self.via: NodeId | None = None
        """The node the lease client keeps its leases alive through."""
        self.promoted_ms: dict[NodeId, int] = {}
        """When each node last took office as leader (its lessor promoted), sim time."""
        self.stopped_ms: int | None = None
        self.first_revoke: dict[tuple[NodeId, int], int] = {}
        self.down: set[NodeId] = set()
        self.back_ms: dict[NodeId, int] = {}
        """When each node last came back from a pause or a crash (sim time)."""
        """When each node first proposed each lease's expiry (sim time)."""

    def start(self) -> None:
        self.c.schedule(CHECK_MS, self.check)
        self.c.schedule(self.every_ms, self.client)

    def stop(self) -> None:
        self.active = False
        self.stopped_ms = self.c.now

    def _all_gone(self, members: tuple[NodeId, ...]) -> bool:
        for i in members:
            kv = self.c.nodes[i].kv
            if kv is None:
                return False
            ttls = kv.lease_ttls
            for state in self.leases.values():
                if state.id in ttls or kv.get(b"lease/%d" % state.id) is not None:
                    return False
        return True

    def settle(self, leader: NodeId, within_ms: int) -> None:
        """The liveness side (module docstring): raise :class:`SafetyViolation` if a lapsed lease is still there
        ``within_ms`` after the keep-alives stopped, or if the leader decided an expiry late. Runs the cluster
        on; call once it has converged under ``leader``."""
        c = self.c
        members = c.members()
        stopped = self.stopped_ms if self.stopped_ms is not None else c.now
        if not c.run_until(lambda: self._all_gone(members), max(1, stopped + within_ms - c.now), CHECK_MS):
            stores = [kv for i in members if (kv := c.nodes[i].kv) is not None]
            left = sorted(s.id for s in self.leases.values() if any(s.id in kv.lease_ttls for kv in stores))
            raise SafetyViolation(
                f"liveness: leases {left[:5]} (or their keys) still there {c.now - stopped} ms after their "
                f"keep-alives stopped, with node {leader} leading"
            )
        since = self.promoted_ms.get(leader, c.now)
        ttl_ms = TTL_S * 1000 / (1 - self.drift)
        for state in self.leases.values():
            if state.explicitly_revoked or state.gone_ms is None or state.gone_ms < since:
                continue  # revoked by the client, or expired under an earlier leader
            proposed = self.first_revoke.get((leader, state.id))
            if proposed is None or any(t < since for (_i, lease), t in self.first_revoke.items() if lease == state.id):
                continue  # an earlier leader's revocation, committed late
            # The latest the leader's lessor can hold it to: a TTL after the last keep-alive, after the leader
            # first saw the lease (a grant committed late starts late), or TTL plus the extension after taking
            # office, each on a clock up to MAX_DRIFT slow. Its keeper must propose the revocation by then.
            due = max(
                state.last_ack_ms + ttl_ms,
                state.first_seen.get(leader, since) + ttl_ms,
                since + (TTL_S + self.extend_s) * 1000 / (1 - self.drift),
                self.back_ms.get(leader, 0),
            )
            if proposed > due + CHECK_MS:
                raise SafetyViolation(
                    f"lease {state.id}: leader {leader} proposed its expiry {proposed - state.last_ack_ms} ms after "
                    f"its last acknowledged keep-alive, {proposed - due:.0f} ms past the latest its TTL allows"
                )

    def _local_s(self, node_id: NodeId) -> float:
        return self.c.now / 1000 * self.rates.get(node_id, 1.0)

    def check(self) -> None:
        """Every node's keeper step, and the checker's observation of revocations."""
        c = self.c
        for i in c.ids:
            node = c.nodes[i]
            lessor = self.lessors.setdefault(i, Lessor())
            self.rates.setdefault(i, 1 + self.rng.uniform(-self.drift, self.drift))
            if node.core is None or node.kv is None or node.paused:
                if node.core is None:
                    lessor.demote()
                self.down.add(i)
                continue
            if i in self.down:
                self.down.discard(i)
                self.back_ms[i] = c.now  # a paused keeper decides nothing: its expiries wait for this moment
            now = self._local_s(i)
            if node.core.role is Role.LEADER:
                if not lessor.leading:
                    lessor.promote(now, node.kv.lease_ttls, self.extend_s)
                    self.promoted_ms[i] = c.now
                else:
                    lessor.sync(now, node.kv.lease_ttls)
                for lease in lessor.expired(now):
                    if c.now - self.revoking.get((i, lease), -(10**9)) >= 200:
                        self.revoking[(i, lease)] = c.now
                        self.first_revoke.setdefault((i, lease), c.now)
                        c.propose(encode_command(LeaseRevoke(lease, expired=True)), via=i)
            elif lessor.leading:
                lessor.demote()
            ttls = node.kv.lease_ttls
            for state in self.leases.values():
                if state.id in ttls:
                    if state.seen_on.get(i) != node.incarnation:
                        state.first_seen[i] = c.now
                    state.seen_on[i] = node.incarnation
                elif state.seen_on.get(i) == node.incarnation and state.gone_ms is None:
                    state.gone_ms = c.now  # the first node seen to have applied the revocation
                    self._judge(state)
        c.schedule(CHECK_MS, self.check)

    def _judge(self, state: _LeaseState) -> None:
        if state.explicitly_revoked:
            return
        self.expired += 1
        assert state.gone_ms is not None
        lived_ms = state.gone_ms - state.last_ack_ms
        floor_ms = TTL_S * 1000 / (1 + self.drift)
        if lived_ms < floor_ms:
            raise SafetyViolation(
                f"lease {state.id} expired {lived_ms} ms after the last keep-alive the cluster acknowledged, "
                f"less than its TTL ({TTL_S} s) allows even on a clock {self.drift:.0%} fast ({floor_ms:.0f} ms)"
            )

    def client(self) -> None:
        """Grant, keep alive, revoke."""
        if not self.active:
            return
        c, rng = self.c, self.rng
        roll = rng.random()
        if roll < 0.3 or not self.leases:
            lease_id = self.next_id
            self.next_id += 1
            c.propose(encode_command(LeaseGrant(TTL_S, id=lease_id)))
            c.propose(encode_command(Put(b"lease/%d" % lease_id, b"held", lease=lease_id)))
            until = c.now + rng.randint(200, 2500) if rng.random() < 0.7 else 0
            self.leases[lease_id] = _LeaseState(lease_id, keep_alive_until_ms=until, last_ack_ms=c.now)
        elif roll < 0.35:
            live = [s for s in self.leases.values() if s.gone_ms is None and not s.explicitly_revoked]
            if live:
                state = rng.choice(live)
                state.explicitly_revoked = True  # from now on its disappearance is not an expiry
                c.propose(encode_command(LeaseRevoke(state.id)))
        # Through the node the client talks to, as long as that node believes it leads (a real client stays on
        # its connection until told "not leader"): maybe a deposed leader that has not noticed yet.
        leaders = [i for i in c.ids if c.nodes[i].core is not None and not c.nodes[i].paused]
        leaders = [i for i in leaders if c.nodes[i].core.role is Role.LEADER]  # type: ignore[union-attr]
        if self.via not in leaders and leaders:
            self.via = rng.choice(leaders)
        for state in self.leases.values():
            if c.now > state.keep_alive_until_ms or state.gone_ms is not None or self.via not in leaders:
                continue
            if self.lessors[self.via].keep_alive(state.id, self._local_s(self.via)) is not None:
                state.last_ack_ms = c.now
        c.schedule(max(1, int(rng.expovariate(1.0 / self.every_ms))), self.client)
