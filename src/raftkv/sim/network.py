"""The simulated network: per-link blocking (partitions of any shape), loss, duplication, delay and reordering.

Theory of operation
-------------------
The network decides, when a message is sent, whether it is lost and when each copy arrives; the cluster's event
queue does the delivering. Reordering is a consequence of independent random delays. A *partition* is a set of
blocked directed links ``(src, dst)``, so symmetric splits, one-way links, an isolated node and Jepsen's
"bridge" are all the same mechanism. A blocked link is checked both at send and at delivery time: a message
in flight when a partition forms is lost, like a TCP connection cut mid-stream.

All randomness comes from the ``random.Random`` the cluster passes in: the same seed gives the same losses.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from raftkv.raft.types import NodeId


@dataclass(slots=True)
class LinkFaults:
    """Fault rates applied to every message while no partition blocks its link."""

    drop_rate: float = 0.0
    dup_rate: float = 0.0
    min_delay_ms: int = 1
    max_delay_ms: int = 5
    fifo: bool = False
    """Deliver in send order on each link (as one TCP connection does); otherwise delays reorder freely."""


class Network:
    __slots__ = ("_last_arrival", "blocked", "delivered", "disconnected", "dropped", "faults", "rng", "sent")

    def __init__(self, rng: random.Random, faults: LinkFaults) -> None:
        self.rng = rng
        self.faults = faults
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.disconnected: set[NodeId] = set()
        """Nodes unplugged from the network entirely (independent of the link-level partition)."""
        self.sent = 0
        self.dropped = 0
        self.delivered = 0
        self._last_arrival: dict[tuple[NodeId, NodeId], int] = {}

    def link_ok(self, src: NodeId, dst: NodeId) -> bool:
        if self.disconnected and (src in self.disconnected or dst in self.disconnected):
            return False
        return (src, dst) not in self.blocked

    def plan(self, src: NodeId, dst: NodeId, now: int) -> list[int]:
        """Arrival times (ms) of the copies of one message; empty if it is lost."""
        self.sent += 1
        if not self.link_ok(src, dst):
            self.dropped += 1
            return []
        f = self.faults
        rng = self.rng
        if f.drop_rate and rng.random() < f.drop_rate:
            self.dropped += 1
            return []
        arrival = now + rng.randint(f.min_delay_ms, f.max_delay_ms)
        if f.fifo:
            link = (src, dst)
            arrival = max(arrival, self._last_arrival.get(link, 0))
            self._last_arrival[link] = arrival
            return [arrival]
        arrivals = [arrival]
        if f.dup_rate and rng.random() < f.dup_rate:
            arrivals.append(now + rng.randint(f.min_delay_ms, f.max_delay_ms))
        return arrivals

    # --- partition shapes --------------------------------------------------------------------------------

    def heal(self) -> None:
        """Remove every partition and plug every node back in."""
        self.blocked.clear()
        self.disconnected.clear()

    def cut(self, a: Iterable[NodeId], b: Iterable[NodeId], both_ways: bool = True) -> None:
        """Block every link from group ``a`` to group ``b`` (and back, if ``both_ways``)."""
        bs = list(b)
        for x in a:
            for y in bs:
                if x != y:
                    self.blocked.add((x, y))
                    if both_ways:
                        self.blocked.add((y, x))

    def isolate(self, node: NodeId, all_nodes: Sequence[NodeId]) -> None:
        self.cut([node], [n for n in all_nodes if n != node])

    def unplug(self, node: NodeId) -> None:
        self.disconnected.add(node)

    def plug(self, node: NodeId) -> None:
        self.disconnected.discard(node)

    def partition(self, groups: Sequence[Sequence[NodeId]]) -> None:
        """Only nodes in the same group can talk (replaces any earlier link-level partition)."""
        self.blocked.clear()
        for i, g in enumerate(groups):
            for h in groups[i + 1 :]:
                self.cut(g, h)

    def describe(self) -> str:
        if not self.blocked:
            return "fully connected" if not self.disconnected else f"unplugged {sorted(self.disconnected)}"
        return "blocked " + " ".join(f"{s}->{d}" for s, d in sorted(self.blocked))


def random_partition(rng: random.Random, nodes: Sequence[NodeId], net: Network) -> str:
    """Form a random partition shape (the nemesis' menu); returns a description for the trace."""
    shape = rng.choice(("isolate", "split", "one-way", "bridge", "random-links"))
    ids = list(nodes)
    n = len(ids)
    net.heal()
    if shape == "isolate":
        victim = rng.choice(ids)
        net.isolate(victim, ids)
        return f"isolate {victim}"
    if shape == "split":
        rng.shuffle(ids)
        k = rng.randint(1, n // 2)
        minority, majority = sorted(ids[:k]), sorted(ids[k:])
        net.partition([minority, majority])
        return f"split {minority} | {majority}"
    if shape == "one-way":
        victim = rng.choice(ids)
        others = [x for x in ids if x != victim]
        if rng.random() < 0.5:
            net.cut([victim], others, both_ways=False)
            return f"one-way: {victim} cannot send"
        net.cut(others, [victim], both_ways=False)
        return f"one-way: {victim} cannot receive"
    if shape == "bridge" and n >= 3:
        rng.shuffle(ids)
        bridge = ids[0]
        rest = ids[1:]
        half = len(rest) // 2
        left, right = sorted(rest[:half]), sorted(rest[half:])
        net.cut(left, right)
        return f"bridge {bridge} between {left} and {right}"
    count = rng.randint(1, n * (n - 1) // 2)
    for _ in range(count):
        s, d = rng.sample(ids, 2)
        net.blocked.add((s, d))
    return "random links: " + net.describe()
