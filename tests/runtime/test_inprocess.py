"""Real nodes (WAL on disk, Cap'n Proto over loopback) in one process: elect, replicate, fail over, restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from raftkv.errors import NotLeader, ProposalDropped, Timeout
from raftkv.raft.types import Index, Term
from raftkv.runtime.node import RaftNode
from raftkv.runtime.statemachine import CommandLog
from tests.runtime.cluster import configs, leader_of, start_all, start_and_elect, wait_until


def commands(node: RaftNode) -> list[bytes]:
    sm = node.state_machine
    assert isinstance(sm, CommandLog)
    return [sm.commands[i] for i in sorted(sm.commands)]


async def test_three_nodes_elect_replicate_and_fail_over(tmp_path: Path) -> None:
    cfgs = configs(tmp_path, 3)
    nodes = start_all(cfgs)
    started = time.perf_counter()
    for n in nodes:
        await n.start()
    try:
        await wait_until(lambda: leader_of(nodes) is not None, 2.0, "a leader")
        elected_s = time.perf_counter() - started
        assert elected_s < 1.0, f"leader took {elected_s:.2f} s"
        lead = leader_of(nodes)
        assert lead is not None
        results = await asyncio.gather(*(lead.propose(f"cmd{k}".encode()) for k in range(50)))
        assert len(set(results)) == 50  # CommandLog returns each command's index
        await wait_until(lambda: all(len(commands(n)) == 50 for n in nodes), 2.0, "all applied")
        assert commands(nodes[0]) == commands(nodes[1]) == commands(nodes[2])

        follower = next(n for n in nodes if n is not lead)
        with pytest.raises(NotLeader) as info:
            await follower.propose(b"x")
        assert info.value.leader_hint == lead.id

        # Stop the leader without a handover: the other two elect a new one and carry on.
        await lead.aclose(transfer_leadership=False)
        rest = [n for n in nodes if n is not lead]
        await wait_until(lambda: leader_of(rest) is not None, 2.0, "a new leader")
        new = leader_of(rest)
        assert new is not None and new is not lead
        await new.propose(b"after")
        await wait_until(lambda: all(commands(n)[-1:] == [b"after"] for n in rest), 2.0, "after applied")

        # Restart the old leader on its data dir: it catches up from the log.
        again = RaftNode(cfgs[nodes.index(lead)], CommandLog())
        await again.start()
        nodes[nodes.index(lead)] = again
        await wait_until(lambda: commands(again)[-1:] == [b"after"], 3.0, "restarted node caught up")
        assert len(commands(again)) == 51
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)


async def test_graceful_stop_hands_leadership_over(tmp_path: Path) -> None:
    nodes = start_all(configs(tmp_path, 3))
    try:
        lead = await start_and_elect(nodes)
        await lead.propose(b"x")
        term = lead.core.term if lead.core else 0
        t0 = time.perf_counter()
        await lead.aclose()
        assert time.perf_counter() - t0 < 2.0
        rest = [n for n in nodes if n is not lead]
        # The handover elected a successor at once (term + 1), without waiting for an election timeout.
        await wait_until(lambda: leader_of(rest) is not None, 0.5, "successor leads")
        new = leader_of(rest)
        assert new is not None and new.core is not None and new.core.term == term + 1
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)


async def test_proposals_that_cannot_commit_time_out_on_time(tmp_path: Path) -> None:
    # check_quorum off: the leader, left alone, stays leader and keeps its proposals pending.
    nodes = start_all(configs(tmp_path, 3, check_quorum=False))
    try:
        lead = await start_and_elect(nodes)
        assert await lead.propose(b"committed") is not None
        for n in nodes:
            if n is not lead:
                await n.aclose(transfer_leadership=False)
        # Proposals made together share one deadline timer; all fail with Timeout, on time, leaving no waiter.
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(lead.propose(b"lost %d" % k, timeout=0.3) for k in range(5)),
            lead.propose(b"later", timeout=0.6),
            return_exceptions=True,
        )
        elapsed = time.monotonic() - started
        assert all(isinstance(o, Timeout) for o in outcomes), outcomes
        assert "not applied within 0.3 s" in str(outcomes[0]) and "within 0.6 s" in str(outcomes[5])
        assert 0.6 <= elapsed < 1.5 and not lead._waiters
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)


async def test_read_barrier_is_linearizable_and_only_on_a_confirmed_leader(tmp_path: Path) -> None:
    nodes = start_all(configs(tmp_path, 3))
    for n in nodes:
        await n.start()
    try:
        await wait_until(lambda: leader_of(nodes) is not None, 2.0, "a leader")
        lead = leader_of(nodes)
        assert lead is not None and lead.core is not None
        index, _term, _ = await lead.propose_indexed(b"w")
        barrier = await lead.read_barrier()
        assert barrier >= index and lead.core.log.applied >= barrier
        assert await asyncio.gather(*(lead.read_barrier() for _ in range(20))) == [barrier] * 20
        follower = next(n for n in nodes if n is not lead)
        with pytest.raises(NotLeader):
            await follower.read_barrier()
        for n in nodes:
            if n is not lead:
                await n.aclose(transfer_leadership=False)
        # Alone, the leader cannot confirm it still leads: the read never completes.
        with pytest.raises((Timeout, ProposalDropped)):
            await lead.read_barrier(timeout=1.0)
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)


async def test_a_proposal_whose_index_is_taken_again_fails_instead_of_hanging(tmp_path: Path) -> None:
    # Regression (review): a proposal from an earlier term whose entry was truncated, at an index this node
    # proposes again after winning leadership back, was overwritten in the waiter table and never resolved.
    nodes = start_all(configs(tmp_path, 3))
    try:
        lead = await start_and_elect(nodes)
        assert lead.core is not None
        index = Index(lead.core.log.last_index() + 1)
        orphan: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        lead._waiters[index] = (Term(lead.core.term - 1), orphan)  # proposed at this index in an earlier term
        assert await lead.propose_indexed(b"new") is not None
        with pytest.raises(ProposalDropped, match="taken by a later leader"):
            await asyncio.wait_for(orphan, 1.0)
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)
