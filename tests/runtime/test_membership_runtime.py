"""Membership changes on real RaftNodes over loopback TCP: a node joins empty, catches up as a learner, is
promoted; members are removed (the leader too) and leadership moves on request — with writes committed
throughout and every change visible in each node's configuration and peer links."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from raftkv.cli.local import free_ports
from raftkv.raft.errors import NotLeader
from raftkv.raft.membership import ConfChangeInProgress, InvalidConfChange
from raftkv.raft.types import NodeId
from raftkv.runtime.node import RaftNode
from raftkv.runtime.statemachine import CommandLog
from raftkv.transport.address import Address
from tests.runtime.cluster import configs, leader_of, wait_until


async def _cluster(tmp: Path, n: int = 3) -> tuple[list[RaftNode], list[CommandLog]]:
    cfgs = configs(tmp, n)
    machines = [CommandLog() for _ in cfgs]
    nodes = [RaftNode(cfg, sm) for cfg, sm in zip(cfgs, machines, strict=True)]
    for node in nodes:
        await node.start()
    await wait_until(lambda: leader_of(nodes) is not None, 3.0, "a leader")

    def committed_in_its_term() -> bool:
        # A leader changes membership only once it has committed an entry of its own term (raft-dev, 2015).
        lead = leader_of(nodes)
        core = lead.core if lead is not None else None
        return core is not None and core.log.term_or_none(core.log.committed) == core.term

    await wait_until(committed_in_its_term, 3.0, "the leader's first commit")
    return nodes, machines


async def _joiner(tmp: Path, nodes: list[RaftNode], nid: int) -> tuple[RaftNode, CommandLog]:
    """A node started empty with --join: it knows the members' peer addresses (what the join fetch gives)."""
    peer_port, client_port = free_ports(2)
    base = nodes[0].config
    peers = {n.id: n.config.listen_peer for n in nodes}
    peers[NodeId(nid)] = Address("127.0.0.1", peer_port)
    cfg = dataclasses.replace(
        base,
        id=NodeId(nid),
        data_dir=tmp / f"node{nid}",
        listen_peer=peers[NodeId(nid)],
        listen_client=Address("127.0.0.1", client_port),
        peers=peers,
        join=(nodes[0].config.listen_client,),  # type: ignore[arg-type]
    )
    sm = CommandLog()
    node = RaftNode(cfg, sm)
    await node.start()
    return node, sm


def _leader(nodes: list[RaftNode]) -> RaftNode:
    lead = leader_of([n for n in nodes if not n.stopped.is_set()])
    assert lead is not None
    return lead


async def test_join_as_learner_promote_then_remove_with_writes_throughout(tmp_path: Path) -> None:
    nodes, _machines = await _cluster(tmp_path)
    joiner: RaftNode | None = None
    try:
        lead = _leader(nodes)
        for k in range(20):
            await lead.propose(b"before %d" % k)
        joiner, sm4 = await _joiner(tmp_path, nodes, 4)
        assert joiner.conf.is_empty() and joiner.voters == ()  # it bootstraps nothing of its own
        conf = await lead.add_learner(NodeId(4), str(joiner.config.listen_peer), str(joiner.config.listen_client))
        assert conf.learners == (4,) and conf.voters == (1, 2, 3)
        await lead.propose(b"while a learner")
        await wait_until(lambda: joiner.applied_index >= lead.applied_index, 5.0, "the learner catching up")
        assert [c for c in sm4.commands.values() if c.startswith(b"before")] == [b"before %d" % k for k in range(20)]
        assert joiner.conf.learners == (4,)  # it learnt the configuration from the log
        conf = await lead.promote(NodeId(4))
        assert conf.voters == (1, 2, 3, 4)
        members = {m["id"]: m for m in lead.members()}
        assert members[4]["learner"] is False and members[4]["reachable"] is True
        # Remove a follower: its link goes, and the cluster keeps committing with the three others.
        gone = next(n for n in nodes if n is not lead)
        conf = await lead.remove(gone.id)
        assert gone.id not in conf.ids
        await wait_until(lambda: gone.id not in (lead.transport.peers if lead.transport else {}), 2.0, "link removed")
        await lead.propose(b"after the removal")
    finally:
        for n in [*nodes, *([joiner] if joiner else [])]:
            await n.aclose(transfer_leadership=False)


async def test_bad_changes_are_refused_with_one_line_and_change_nothing(tmp_path: Path) -> None:
    nodes, _ = await _cluster(tmp_path)
    try:
        lead = _leader(nodes)
        before = lead.conf
        follower = next(n for n in nodes if n is not lead)
        with pytest.raises(InvalidConfChange, match="already a member"):
            await lead.add_learner(follower.id, "127.0.0.1:1")
        with pytest.raises(InvalidConfChange, match="not a member"):
            await lead.remove(NodeId(9))
        with pytest.raises(InvalidConfChange, match="already used by node"):
            await lead.add_learner(NodeId(5), str(follower.config.listen_peer))
        with pytest.raises(NotLeader) as info:
            await follower.remove(NodeId(3))
        assert info.value.leader_hint == lead.id and info.value.leader_address
        assert lead.conf == before
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)


async def test_a_lagging_learner_is_not_promoted_and_a_second_change_waits(tmp_path: Path) -> None:
    nodes, _ = await _cluster(tmp_path)
    try:
        lead = _leader(nodes)
        for k in range(30):
            await lead.propose(b"x%d" % k)
        port = free_ports(1)[0]
        # Node 5 is never started: it stays behind, so promoting it is refused with its lag.
        await lead.add_learner(NodeId(5), f"127.0.0.1:{port}")
        with pytest.raises(InvalidConfChange, match="entries behind the leader"):
            await lead.promote(NodeId(5), max_lag=10)
        # Two changes at once: the second is refused while the first is not committed.
        first = asyncio.ensure_future(lead.remove(NodeId(5)))
        await asyncio.sleep(0)
        with pytest.raises(ConfChangeInProgress, match="one change at a time"):
            await lead.add_learner(NodeId(6), "127.0.0.1:1")
        await first
        assert lead.conf.ids == (1, 2, 3)
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)


async def test_removing_the_leader_and_transferring_leadership(tmp_path: Path) -> None:
    nodes, _ = await _cluster(tmp_path)
    try:
        lead = _leader(nodes)
        await lead.propose(b"x")
        target = next(n for n in nodes if n is not lead)
        assert await lead.transfer_leadership(target.id) == target.id
        await wait_until(lambda: target.is_leader, 2.0, "the chosen node leading")
        old = lead
        lead = target
        await lead.remove(lead.id)
        rest = [n for n in nodes if n is not lead]
        await wait_until(lambda: leader_of(rest) is not None, 3.0, "a leader among the others")
        new = _leader(rest)
        assert lead.conf.member(lead.id) is None and not lead.is_leader
        await new.propose(b"after the leader left")
        assert new.id in (old.id, *[n.id for n in rest])
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)


async def test_a_node_that_was_down_while_the_leader_was_added_is_caught_up_by_it(tmp_path: Path) -> None:
    """Node X is down while node 4 is added, promoted and made leader. X comes back with a log and a --peers
    that know nothing of 4: it must still accept 4's appends (4 names its address in every header) and catch
    up, instead of refusing a sender its configuration does not list (found in review)."""
    nodes, _ = await _cluster(tmp_path)
    joiner: RaftNode | None = None
    back: RaftNode | None = None
    try:
        lead = _leader(nodes)
        down = next(n for n in nodes if n is not lead)
        await down.aclose(transfer_leadership=False)
        for k in range(5):
            await lead.propose(b"a%d" % k)
        joiner, _sm = await _joiner(tmp_path, nodes, 4)
        await lead.add_learner(NodeId(4), str(joiner.config.listen_peer), str(joiner.config.listen_client))
        await wait_until(lambda: joiner.applied_index >= lead.applied_index, 5.0, "the learner catching up")
        await lead.promote(NodeId(4))
        await lead.transfer_leadership(NodeId(4))
        await wait_until(lambda: joiner.is_leader, 3.0, "node 4 leading")
        for k in range(5):
            await joiner.propose(b"b%d" % k)
        back = RaftNode(down.config, CommandLog())
        await back.start()
        assert NodeId(4) not in back.config.peers
        await wait_until(lambda: back.applied_index >= joiner.applied_index, 8.0, "the node caught up by node 4")
        assert back.conf.voters == (1, 2, 3, 4)
    finally:
        for n in [*nodes, *([joiner] if joiner else []), *([back] if back else [])]:
            if not n.stopped.is_set():
                await n.aclose(transfer_leadership=False)


async def test_a_joiner_replaying_old_configurations_keeps_the_link_to_a_newer_leader(tmp_path: Path) -> None:
    """Node 4 is added and becomes leader; node 5 joins, and its first appends carry only the bootstrap
    configuration {1,2,3}: it must not drop its link to leader 4 (found in review)."""
    nodes, _ = await _cluster(tmp_path)
    extra: list[RaftNode] = []
    try:
        lead = _leader(nodes)
        for k in range(1500):  # more than one append's worth (1,024 entries) before the later changes
            await lead.propose(b"x%d" % k) if k % 100 == 0 else lead.submit_batch((b"y",))
        n4, _ = await _joiner(tmp_path, nodes, 4)
        extra.append(n4)
        await lead.add_learner(NodeId(4), str(n4.config.listen_peer), str(n4.config.listen_client))
        await wait_until(lambda: n4.applied_index >= lead.applied_index, 10.0, "node 4 catching up")
        await lead.promote(NodeId(4))
        await lead.transfer_leadership(NodeId(4))
        await wait_until(lambda: n4.is_leader, 3.0, "node 4 leading")
        n5, _ = await _joiner(tmp_path, [*nodes, n4], 5)
        extra.append(n5)
        await n4.add_learner(NodeId(5), str(n5.config.listen_peer), str(n5.config.listen_client))
        await wait_until(lambda: n5.applied_index >= n4.applied_index, 10.0, "node 5 catching up from node 4")
    finally:
        for n in [*nodes, *extra]:
            await n.aclose(transfer_leadership=False)


async def test_peers_that_disagree_with_the_log_get_one_warning_and_the_log_wins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After the first start the log is the address book: a node restarted with a --peers list that names
    another membership says so in one warning line and keeps the log's configuration."""
    nodes, _machines = await _cluster(tmp_path)
    try:
        lead = _leader(nodes)
        await lead.propose(b"x")
        follower = next(n for n in nodes if n is not lead)
        await wait_until(lambda: follower.conf_index >= 1, 2.0, "the follower holding the configuration entry")
        await follower.aclose(transfer_leadership=False)
        wrong = dict(follower.config.peers)
        wrong[NodeId(9)] = Address("127.0.0.1", free_ports(1)[0])
        caplog.clear()
        with caplog.at_level("WARNING", logger="raftkv.node"):
            back = RaftNode(dataclasses.replace(follower.config, peers=wrong), CommandLog())
            await back.start()
        nodes[nodes.index(follower)] = back
        warnings = [r.getMessage() for r in caplog.records if "the log wins" in r.getMessage()]
        assert len(warnings) == 1 and "1,2,3,9" in warnings[0]
        assert back.conf.ids == (1, 2, 3)
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)
