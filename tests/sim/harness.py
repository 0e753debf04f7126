"""Scenario helpers over the simulated cluster, in the spirit of the classic Raft lab tests.

Every helper waits on a condition with a simulated-time deadline; nothing sleeps on a wall clock. The cluster's
safety checker runs after every event throughout, so each scenario also checks every safety property.
"""

from __future__ import annotations

from collections.abc import Iterable

from raftkv.raft.ready import Role
from raftkv.raft.types import Index, NodeId
from raftkv.sim.cluster import Cluster, NodeSettings, Proposal
from raftkv.sim.network import LinkFaults


def make_cluster(n: int, seed: int = 1, unsafe: frozenset[str] = frozenset(), **settings: object) -> Cluster:
    """A cluster on a reliable network (1–5 ms delays) with the given ``NodeSettings`` overrides."""
    return Cluster(
        n,
        seed,
        settings=NodeSettings(**settings),  # type: ignore[arg-type]
        faults=LinkFaults(0.0, 0.0, 1, 5),
        unsafe=unsafe,
    )


def leaders_among(c: Cluster, ids: Iterable[NodeId]) -> list[NodeId]:
    """Leaders of the highest term among ``ids`` (live, unpaused)."""
    best_term = -1
    found: list[NodeId] = []
    for i in ids:
        node = c.nodes[i]
        core = node.core
        if core is None or node.paused or core.role is not Role.LEADER:
            continue
        if core.term > best_term:
            best_term, found = core.term, [i]
        elif core.term == best_term:
            found.append(i)
    return found


def wait_one_leader(c: Cluster, among: Iterable[NodeId] | None = None, timeout_ms: int = 2000) -> NodeId:
    """Wait until exactly one node among ``among`` leads and every other one of them follows it."""
    ids = list(among) if among is not None else list(c.ids)

    def settled() -> bool:
        found = leaders_among(c, ids)
        if len(found) != 1:
            return False
        lead = c.core(found[0])
        return all(
            (core := c.nodes[i].core) is not None and core.term == lead.term and core.leader == found[0] for i in ids
        )

    assert c.run_until(settled, timeout_ms), f"no single agreed leader among {ids} within {timeout_ms} ms"
    return leaders_among(c, ids)[0]


def one(
    c: Cluster, data: bytes, expected: int, timeout_ms: int = 10_000, among: Iterable[NodeId] | None = None
) -> Index:
    """Submit ``data`` through whichever node leads until ``expected`` live nodes applied it (lab 2's ``one``)."""
    ids = list(among) if among is not None else list(c.ids)
    deadline = c.now + timeout_ms
    while c.now < deadline:
        found = leaders_among(c, ids)
        if found:
            p = c.propose(data, via=found[0])
            if isinstance(p, Proposal):
                index = p.index

                def applied(index: Index = index) -> bool:
                    count, got = c.applied_count(index)
                    return count >= expected and got == data

                if c.run_until(applied, min(2000, deadline - c.now)):
                    return index
        c.run_for(50)
    raise AssertionError(f"{data!r} was not applied on {expected} nodes within {timeout_ms} ms")


def applied_data(c: Cluster, node: NodeId) -> list[bytes]:
    return [d for (_i, _t, d) in c.nodes[node].applied]


def max_term(c: Cluster) -> int:
    return max(int(t) for t in c.terms().values())
