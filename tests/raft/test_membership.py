"""Membership changes in the core (dissertation ch. 4), as transcripts: a few cores wired by a lossless in-test
network, one change at a time, the configuration of every node checked after each step.

Modelled on etcd-raft's confchange testdata: each test states a configuration, a change, and what every node
must believe afterwards. The rules themselves are in ``raftkv.raft.membership``.
"""

from __future__ import annotations

import random
from collections import deque

import pytest

from raftkv.raft.config import RaftConfig
from raftkv.raft.errors import NotLeader
from raftkv.raft.membership import (
    ChangeType,
    ConfChange,
    ConfChangeInProgress,
    InvalidConfChange,
    apply_change,
    decode_conf,
    encode_conf,
)
from raftkv.raft.messages import Message, RequestVote, RequestVoteResponse, TimeoutNow
from raftkv.raft.node import RawNode
from raftkv.raft.ready import Role
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import ConfState, EntryType, Index, Member, NodeId, Term


def _ids(*ids: int) -> tuple[NodeId, ...]:
    return tuple(NodeId(i) for i in ids)


class Net:
    """Cores that exchange messages at once, in order, except across ``cut`` links. Deterministic."""

    def __init__(self, voters: tuple[int, ...], **kw: object) -> None:
        kw.setdefault("check_quorum", False)  # so that a test can elect any node at once
        self.kw = kw
        self.storage: dict[NodeId, MemoryStorage] = {}
        self.nodes: dict[NodeId, RawNode] = {}
        self.cut: set[frozenset[NodeId]] = set()
        self.sent: list[Message] = []
        for v in voters:
            self.start(v, voters)

    def start(self, id: int, voters: tuple[int, ...] = (), unsafe: frozenset[str] = frozenset()) -> RawNode:
        """Start (or restart, from its storage) node ``id``; ``voters=()`` is a node joining a cluster."""
        nid = NodeId(id)
        storage = self.storage.setdefault(nid, MemoryStorage())
        cfg = RaftConfig(id=nid, voters=_ids(*voters), rng=random.Random(id), pre_vote=False, **self.kw)  # type: ignore[arg-type]
        self.nodes[nid] = n = RawNode(cfg, storage, unsafe=unsafe)
        return n

    def isolate(self, id: int) -> None:
        for other in self.nodes:
            if other != id:
                self.cut.add(frozenset((NodeId(id), other)))

    def heal(self) -> None:
        self.cut.clear()

    def pump(self, rounds: int = 200) -> None:
        """Carry out Readies and deliver messages until nothing is left to do (bounded)."""
        queue: deque[Message] = deque()
        for _ in range(rounds):
            progressed = False
            for n in list(self.nodes.values()):
                if n.role is Role.DEAD or not n.has_ready():
                    continue
                progressed = True
                rd = n.ready()
                storage = self.storage[n.id]
                if rd.snapshot is not None:
                    storage.apply_snapshot(rd.snapshot)
                storage.append(rd.entries)
                if rd.hard_state is not None:
                    storage.set_hard_state(rd.hard_state)
                queue.extend(rd.messages)
                queue.extend(rd.messages_after_sync)
                n.advance()
            while queue:
                progressed = True
                m = queue.popleft()
                self.sent.append(m)
                dst = self.nodes.get(m.dst)
                if dst is not None and frozenset((m.src, m.dst)) not in self.cut:
                    dst.step(m)
            if not progressed:
                return
        raise AssertionError("the network did not settle")

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for node in list(self.nodes.values()):
                node.tick()
            self.pump()

    def elect(self, id: int) -> RawNode:
        node = self.nodes[NodeId(id)]
        node.campaign()
        self.pump()
        assert node.role is Role.LEADER, f"node {id} did not win"
        return node

    def change(self, leader: RawNode, type_: ChangeType, node: int, peer: str = "") -> Index:
        peer = peer or f"127.0.0.1:{7000 + node}"
        index = leader.propose_conf_change(ConfChange(type_, NodeId(node), peer, f"127.0.0.1:{8000 + node}"))
        self.pump()
        return index

    def confs(self) -> dict[int, tuple[tuple[int, ...], tuple[int, ...]]]:
        return {int(i): (tuple(map(int, n.voters)), tuple(map(int, n.learners))) for i, n in self.nodes.items()}


# --- the pure validation ------------------------------------------------------------------------------------


def _conf(voters: tuple[int, ...], learners: tuple[int, ...] = ()) -> ConfState:
    members = [Member(NodeId(v), f"h:{v}", f"c:{v}") for v in voters]
    members += [Member(NodeId(v), f"h:{v}", f"c:{v}", learner=True) for v in learners]
    return ConfState(tuple(sorted(members, key=lambda m: m.id)))


@pytest.mark.parametrize(
    ("conf", "change", "error"),
    [
        (_conf((1, 2, 3)), ConfChange(ChangeType.ADD_VOTER, NodeId(2), "h:9"), "node 2 is already a member"),
        (_conf((1,), (2,)), ConfChange(ChangeType.ADD_LEARNER, NodeId(2), "h:9"), r"already a member \(a learner\)"),
        (_conf((1, 2)), ConfChange(ChangeType.ADD_LEARNER, NodeId(3)), "needs a peer address"),
        (_conf((1, 2)), ConfChange(ChangeType.ADD_LEARNER, NodeId(3), "h:2"), "address h:2 is already used by node 2"),
        (_conf((1, 2)), ConfChange(ChangeType.REMOVE, NodeId(5)), r"node 5 is not a member \(members: 1,2\)"),
        (_conf((1,), (2,)), ConfChange(ChangeType.REMOVE, NodeId(1)), "node 1 is the last voter"),
        (_conf((1, 2)), ConfChange(ChangeType.PROMOTE, NodeId(2)), "node 2 is already a voter"),
        (_conf((1, 2)), ConfChange(ChangeType.PROMOTE, NodeId(3)), "node 3 is not a member"),
        (_conf((1, 2)), ConfChange(ChangeType.ADD_VOTER, NodeId(0), "h:0"), "positive integers"),
    ],
)
def test_an_invalid_change_is_refused_with_one_line_naming_it(conf: ConfState, change: ConfChange, error: str) -> None:
    with pytest.raises(InvalidConfChange, match=error) as info:
        apply_change(conf, change)
    assert "\n" not in str(info.value)


def test_valid_changes_and_the_entry_encoding_round_trip() -> None:
    c = _conf((1, 2, 3))
    c = apply_change(c, ConfChange(ChangeType.ADD_LEARNER, NodeId(4), "h:4", "c:4"))
    assert (c.voters, c.learners) == (_ids(1, 2, 3), _ids(4))
    c = apply_change(c, ConfChange(ChangeType.PROMOTE, NodeId(4)))
    c = apply_change(c, ConfChange(ChangeType.REMOVE, NodeId(1)))
    c = apply_change(c, ConfChange(ChangeType.UPDATE, NodeId(2), "h:22"))
    assert c.voters == _ids(2, 3, 4)
    assert c.member(NodeId(2)) == Member(NodeId(2), "h:22", "c:2")
    assert decode_conf(encode_conf(c)) == c
    with pytest.raises(InvalidConfChange, match="damaged configuration entry"):
        decode_conf(b'{"v":1,"members":[{"id":2}]}')
    with pytest.raises(InvalidConfChange, match="not a version 1"):
        decode_conf(b'{"v":7}')


# --- bootstrap: the configuration enters the log --------------------------------------------------------------


def test_the_first_leader_writes_the_bootstrap_configuration_and_later_leaders_a_noop() -> None:
    net = Net((1, 2, 3))
    leader = net.elect(1)
    first = leader.log.entries(Index(1), Index(2))[0]
    assert first.type is EntryType.CONF_CHANGE
    assert decode_conf(first.data).voters == _ids(1, 2, 3)
    net.tick()  # followers hear of the commit at the next tick (lazy commit)
    assert all(n.conf_index == 1 and n.log.committed == 1 for n in net.nodes.values())
    second = net.elect(2)
    entry = second.log.entries(Index(2), Index(3))[0]
    assert entry.type is EntryType.NOOP


# --- learners ------------------------------------------------------------------------------------------------


def test_a_learner_receives_the_log_but_never_votes_campaigns_or_counts() -> None:
    net = Net((1, 2, 3))
    leader = net.elect(1)
    net.start(4)  # joining: no bootstrap configuration, it learns it from the leader
    assert net.nodes[NodeId(4)].voters == ()
    net.change(leader, ChangeType.ADD_LEARNER, 4)
    learner = net.nodes[NodeId(4)]
    assert net.confs() == {i: ((1, 2, 3), (4,)) for i in (1, 2, 3, 4)}
    assert learner.log.last_index() == leader.log.last_index()  # it caught up from index 1
    # It never campaigns, however long it hears nothing ...
    net.isolate(4)
    net.sent.clear()
    net.tick(100)
    assert learner.role is Role.FOLLOWER
    assert not [m for m in net.sent if m.src == 4 and isinstance(m, RequestVote)]
    # ... and never counts toward a commit: with two voters cut off, its acknowledgement commits nothing.
    net.heal()
    net.isolate(2)
    net.isolate(3)
    index = leader.propose(b"x")
    net.pump()
    assert learner.log.last_index() == index
    assert leader.log.committed < index
    net.heal()
    net.tick(10)
    assert leader.log.committed >= index


def test_a_leader_asks_voters_only_and_a_learners_granted_vote_does_not_count() -> None:
    net = Net((1, 2, 3))
    leader = net.elect(1)
    net.start(4)
    net.change(leader, ChangeType.ADD_LEARNER, 4)
    candidate = net.nodes[NodeId(3)]
    net.isolate(3)
    candidate.campaign()
    net.pump()
    asked = {m.dst for m in net.sent if m.src == 3 and isinstance(m, RequestVote)}
    assert asked == {NodeId(1), NodeId(2)}
    # A learner's yes (it would grant: its log is no fresher) is not a vote: 3 + 4 are not 2 of {1,2,3}.
    candidate.step(RequestVoteResponse(candidate.term, NodeId(4), NodeId(3), True))
    assert candidate.role is Role.CANDIDATE


def test_the_unsafe_learners_vote_hook_counts_them() -> None:
    """What tests/sim/test_checker_bites.py relies on: the hook really breaks the rule."""
    net = Net((1, 2, 3))
    leader = net.elect(1)
    net.start(4)
    net.start(5)
    net.change(leader, ChangeType.ADD_LEARNER, 4)
    net.change(leader, ChangeType.ADD_LEARNER, 5)
    net.start(3, unsafe=frozenset({"learners_vote"}))  # restart node 3 with the hook, from its storage
    candidate = net.nodes[NodeId(3)]
    net.isolate(1)
    net.isolate(2)
    candidate.campaign()
    for learner in (4, 5):
        candidate.step(RequestVoteResponse(candidate.term, NodeId(learner), NodeId(3), True))
    assert candidate.role is Role.LEADER  # 3 of {1..5}: wrong, and what the hook is for


# --- the two rules of single-server changes --------------------------------------------------------------------


def test_one_change_at_a_time() -> None:
    net = Net((1, 2, 3))
    leader = net.elect(1)
    net.isolate(2)
    net.isolate(3)
    index = leader.propose_conf_change(ConfChange(ChangeType.ADD_LEARNER, NodeId(4), "h:4"))
    net.pump()
    assert leader.conf_index == index > leader.log.committed
    last = leader.log.last_index()
    with pytest.raises(ConfChangeInProgress, match=f"change at index {index} is not committed yet"):
        leader.propose_conf_change(ConfChange(ChangeType.ADD_LEARNER, NodeId(5), "h:5"))
    assert leader.log.last_index() == last and leader.conf.learners == _ids(4)  # nothing changed
    net.heal()
    net.tick(10)
    assert leader.log.committed >= index
    leader.propose_conf_change(ConfChange(ChangeType.ADD_LEARNER, NodeId(5), "h:5"))
    assert leader.conf.learners == _ids(4, 5)


def test_a_new_leader_changes_nothing_before_it_commits_an_entry_of_its_term() -> None:
    net = Net((1, 2, 3))
    net.elect(1)
    n2 = net.nodes[NodeId(2)]
    net.isolate(1)
    net.isolate(3)
    n2.campaign()
    net.pump()
    net.heal()
    n2.step(RequestVoteResponse(n2.term, NodeId(3), NodeId(2), True))
    assert n2.role is Role.LEADER and n2.log.term_or_none(n2.log.committed) != n2.term
    with pytest.raises(ConfChangeInProgress, match="has not committed an entry of its term"):
        n2.propose_conf_change(ConfChange(ChangeType.ADD_LEARNER, NodeId(4), "h:4"))
    net.pump()  # its no-op commits
    assert n2.log.term_or_none(n2.log.committed) == n2.term
    n2.propose_conf_change(ConfChange(ChangeType.ADD_LEARNER, NodeId(4), "h:4"))


def test_only_the_leader_changes_membership() -> None:
    net = Net((1, 2, 3))
    net.elect(1)
    with pytest.raises(NotLeader):
        net.nodes[NodeId(2)].propose_conf_change(ConfChange(ChangeType.REMOVE, NodeId(3)))


# --- effective when appended, undone when truncated ------------------------------------------------------------


def test_a_configuration_takes_effect_when_appended_and_reverts_when_truncated() -> None:
    net = Net((1, 2, 3, 4, 5))
    leader = net.elect(1)
    n2 = net.nodes[NodeId(2)]
    before = leader.conf
    minority, majority = (1, 2), (3, 4, 5)
    net.cut = {frozenset((NodeId(a), NodeId(b))) for a in minority for b in majority}
    index = leader.propose_conf_change(ConfChange(ChangeType.ADD_LEARNER, NodeId(6), "h:6"))
    net.pump()
    # In effect on the leader and on node 2 as soon as they appended it, although nobody committed it.
    assert leader.conf.learners == n2.conf.learners == _ids(6)
    assert n2.conf_index == index and n2.log.committed < index
    # The majority side elects one of its own, whose log never had the entry; its no-op takes ``index``.
    for _ in range(200):
        net.tick()
        winners = [n for i, n in net.nodes.items() if i in majority and n.role is Role.LEADER]
        if winners:
            break
    (n3,) = winners
    net.heal()
    net.tick(10)
    entry = n2.log.entries(index, Index(index + 1))[0]
    assert entry.type is EntryType.NOOP and entry.term == n3.term  # node 2's entry was truncated away ...
    assert n2.conf == before and n2.learners == ()  # ... and with it its configuration
    assert leader.conf == before and leader.role is Role.FOLLOWER


# --- removing members, the leader included ------------------------------------------------------------------


def test_a_removed_leader_leads_until_its_removal_commits_then_hands_over_and_never_campaigns() -> None:
    net = Net((1, 2, 3))
    leader = net.elect(1)
    net.sent.clear()
    index = net.change(leader, ChangeType.REMOVE, 1)
    # Committed by 2 and 3 alone (the new voters); then node 1 stepped down, handing over with TimeoutNow.
    assert leader.role is Role.FOLLOWER
    assert [m.dst for m in net.sent if isinstance(m, TimeoutNow)] == [NodeId(2)]
    new = net.nodes[NodeId(2)]
    assert new.role is Role.LEADER and new.log.committed >= index
    assert net.confs()[2] == ((2, 3), ())
    net.tick(200)
    assert leader.role is Role.FOLLOWER and new.role is Role.LEADER  # the removed node never campaigned
    assert not [m for m in net.sent if m.src == 1 and isinstance(m, RequestVote)]


def test_removing_a_follower_shrinks_the_quorum() -> None:
    net = Net((1, 2, 3))
    leader = net.elect(1)
    net.change(leader, ChangeType.REMOVE, 3)
    net.isolate(3)
    net.isolate(2)
    index = leader.propose(b"alone")
    net.pump()
    assert leader.log.committed < index  # 1 of {1,2} is no quorum
    net.heal()
    net.isolate(3)
    net.tick(5)
    assert leader.log.committed >= index  # 1 and 2 are


def test_a_removed_node_that_missed_its_removal_cannot_disrupt_the_cluster() -> None:
    """With check-quorum, a node removed while cut off campaigns with its stale configuration at a higher
    term; the members ignore its vote requests while they hear from their leader (dissertation §4.2.3)."""
    net = Net((1, 2, 3), check_quorum=True)
    leader = net.elect(1)
    net.isolate(3)
    net.change(leader, ChangeType.REMOVE, 3)
    term = leader.term
    removed = net.nodes[NodeId(3)]
    assert removed.voters == _ids(1, 2, 3)  # it never heard
    net.heal()
    for _ in range(5):
        removed.campaign()
        net.tick(3)
    assert leader.role is Role.LEADER and leader.term == term
    assert net.nodes[NodeId(2)].term == term


# --- restart: the log is the address book -----------------------------------------------------------------------


def test_the_configuration_is_read_back_from_the_log_and_the_boundary_on_restart() -> None:
    net = Net((1, 2, 3))
    leader = net.elect(1)
    net.start(4)
    net.change(leader, ChangeType.ADD_LEARNER, 4, peer="10.0.0.4:7000")
    # Restarted with a wrong bootstrap list, node 2 still takes the configuration from its log.
    n2 = net.start(2, (2, 9))
    assert n2.conf.voters == _ids(1, 2, 3) and n2.conf.member(NodeId(4)) == Member(
        NodeId(4), "10.0.0.4:7000", "127.0.0.1:8004", learner=True
    )
    # Compacted past every configuration entry: the boundary carries it.
    net.pump()
    storage = net.storage[NodeId(2)]
    storage.compact(storage.last_index())
    assert storage.conf_indexes() == []
    n2 = net.start(2, (2, 9))
    assert n2.conf == leader.conf and n2.conf_index == storage.first_index() - 1


def test_leadership_goes_to_the_most_caught_up_voter_by_default() -> None:
    net = Net((1, 2, 3))
    leader = net.elect(1)
    net.isolate(2)
    leader.propose(b"only 3 has this")
    net.pump()
    net.heal()
    net.isolate(2)
    assert leader.transfer_target() == NodeId(3)
    assert leader.transfer_leadership() == NodeId(3)
    net.pump()
    assert net.nodes[NodeId(3)].role is Role.LEADER


def test_a_removed_follower_receives_its_removal_and_learns_it_committed() -> None:
    """The leader keeps replicating to a member an uncommitted change removed, and tells it the commit
    before dropping it: the removed node then knows it is out and never campaigns (found in review)."""
    net = Net((1, 2, 3))
    leader = net.elect(1)
    index = net.change(leader, ChangeType.REMOVE, 3)
    net.tick(3)
    removed = net.nodes[NodeId(3)]
    assert removed.conf.member(NodeId(3)) is None and removed.conf_index == index
    assert removed.log.committed >= index
    assert NodeId(3) not in leader.progress
    net.sent.clear()
    net.tick(100)
    assert not [m for m in net.sent if m.src == 3 and isinstance(m, RequestVote)]


def test_a_leader_elected_by_its_own_vote_sends_nothing_before_its_term_is_durable() -> None:
    """Simulator seed 9131: the sole voter wins in the step that raises its term; if its appends left before
    that term and vote were written and it crashed, it could vote for another node in the term it led."""
    from raftkv.raft.messages import AppendEntriesResponse

    net = Net((1, 2, 3))
    leader = net.elect(1)
    net.start(4)
    net.change(leader, ChangeType.ADD_LEARNER, 4)
    net.change(leader, ChangeType.REMOVE, 3)
    net.change(leader, ChangeType.REMOVE, 2)
    assert (leader.voters, leader.learners) == ((NodeId(1),), (NodeId(4),))
    # A higher term makes node 1 step down; it then campaigns alone and wins on its own vote.
    leader.step(AppendEntriesResponse(Term(leader.term + 1), NodeId(4), NodeId(1), Index(0), reject=True))
    net.pump()
    assert leader.role is Role.FOLLOWER
    leader.campaign()
    assert leader.role is Role.LEADER
    rd = leader.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 1
    assert rd.messages == ()  # its appends to the learner wait for the write of the new term and vote
    assert any(m.dst == 4 for m in rd.messages_after_sync)
