"""Unit tests of the consensus core, driven by hand: one rule per test, cited from the paper."""

from __future__ import annotations

import random

import pytest

from raftkv.raft.config import RaftConfig
from raftkv.raft.errors import ConfigError, InvariantViolation, NotLeader, ProposalDropped
from raftkv.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from raftkv.raft.node import RawNode
from raftkv.raft.ready import ReadState, Ready, Role
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import NO_NODE, ConfState, Entry, EntryType, HardState, Index, NodeId, SnapshotMeta, Term

N1, N2, N3 = NodeId(1), NodeId(2), NodeId(3)


def node(
    id: int = 1,
    voters: tuple[int, ...] = (1, 2, 3),
    storage: MemoryStorage | None = None,
    **kw: object,
) -> RawNode:
    cfg = RaftConfig(
        id=NodeId(id),
        voters=tuple(NodeId(v) for v in voters),
        rng=random.Random(id),
        **kw,  # type: ignore[arg-type]
    )
    return RawNode(cfg, storage or MemoryStorage())


def persist(n: RawNode, rd: Ready) -> None:
    """Step 1 of the Ready contract, into the node's own storage."""
    n.log.storage.append(rd.entries)
    if rd.hard_state is not None:
        n.log.storage.set_hard_state(rd.hard_state)


def drain(n: RawNode) -> Ready:
    """Carry out one Ready (persist, then advance) and return it."""
    rd = n.ready()
    persist(n, rd)
    n.advance()
    return rd


def sent(rd: Ready) -> list[Message]:
    return [*rd.messages, *rd.messages_after_sync]


def elect(n: RawNode) -> None:
    """Make ``n`` (node 1 of 3, pre-vote off) leader with node 2's vote."""
    n.campaign()
    drain(n)
    n.step(RequestVoteResponse(n.term, N2, n.id, True))
    assert n.role is Role.LEADER


def test_config_is_validated_with_clear_errors() -> None:
    with pytest.raises(ConfigError, match="not among the voters"):
        node(id=4)
    with pytest.raises(ConfigError, match="must exceed heartbeat_ticks"):
        node(election_ticks=5, heartbeat_ticks=5)
    with pytest.raises(ConfigError, match="duplicates"):
        node(voters=(1, 1, 2))
    with pytest.raises(ConfigError, match="max_inflight_bytes must be >= 0"):
        node(max_inflight_bytes=-1)


def test_election_timeout_is_randomized_in_range() -> None:
    seen = set()
    for seed in range(200):
        cfg = RaftConfig(id=N1, voters=(N1, N2, N3), rng=random.Random(seed), election_ticks=10)
        seen.add(RawNode(cfg, MemoryStorage()).randomized_election_timeout)
    assert min(seen) == 10 and max(seen) == 19  # [election_ticks, 2 * election_ticks)


def test_follower_campaigns_after_its_timeout_with_prevote_first() -> None:
    n = node()
    timeout = n.randomized_election_timeout
    for _ in range(timeout - 1):
        n.tick()
    assert n.role is Role.FOLLOWER
    n.tick()
    assert n.role is Role.PRE_CANDIDATE
    assert n.term == 0, "a pre-vote round changes no term (§9.6)"
    rd = drain(n)
    votes = [m for m in sent(rd) if isinstance(m, RequestVote)]
    assert {m.dst for m in votes} == {N2, N3}
    assert all(m.pre_vote and m.term == 1 for m in votes)
    n.step(RequestVoteResponse(Term(1), N2, N1, True, pre_vote=True))
    assert n.role is Role.CANDIDATE and n.term == 1 and n.vote == N1


def _pre_candidate(id: int, storage: MemoryStorage | None = None) -> RawNode:
    n = node(id=id, storage=storage)
    while n.role is not Role.PRE_CANDIDATE:
        n.tick()
    drain(n)
    return n


def test_pre_candidate_steps_back_for_a_higher_ranked_pre_candidate() -> None:
    """Liveness (docs/election-time.md, b2): of two pre-candidates with equal logs, the lower id steps back
    (follower, same term, no vote cast, fresh timer) and grants the other's pre-vote; the higher id does not."""
    low = _pre_candidate(1)
    low.step(RequestVote(Term(1), N2, N1, Index(0), Term(0), pre_vote=True))
    assert low.role is Role.FOLLOWER and low.term == 0 and low.vote == NO_NODE
    assert low.election_elapsed == 0
    rd = drain(low)
    assert rd.hard_state is None, "stepping back changes nothing durable"
    assert [(m.dst, m.granted, m.pre_vote) for m in sent(rd) if isinstance(m, RequestVoteResponse)] == [
        (N2, True, True)
    ]
    # A late grant of its own abandoned round must not make it a candidate.
    low.step(RequestVoteResponse(Term(1), N3, N1, True, pre_vote=True))
    assert low.role is Role.FOLLOWER and low.term == 0

    high = _pre_candidate(3)
    high.step(RequestVote(Term(1), N2, N3, Index(0), Term(0), pre_vote=True))
    assert high.role is Role.PRE_CANDIDATE, "a lower-ranked requester is granted but not yielded to"
    high.step(RequestVoteResponse(Term(1), N1, N3, True, pre_vote=True))
    assert high.role is Role.CANDIDATE and high.term == 1


def test_pre_candidate_ranks_by_log_before_id() -> None:
    """A longer log outranks a higher id (§5.4.1 order first); a shorter log never makes anyone step back."""
    storage = MemoryStorage()
    storage.append([Entry(Term(1), Index(1))])
    storage.set_hard_state(HardState(Term(1), NO_NODE, Index(0)))
    n = _pre_candidate(3, storage)
    n.step(RequestVote(Term(2), N1, N3, Index(0), Term(0), pre_vote=True))  # shorter log, lower id
    assert n.role is Role.PRE_CANDIDATE
    n.step(RequestVote(Term(2), N2, N3, Index(1), Term(0), pre_vote=True))  # older last term: still behind
    assert n.role is Role.PRE_CANDIDATE
    n.step(RequestVote(Term(2), N1, N3, Index(2), Term(1), pre_vote=True))  # longer log, lower id: steps back
    assert n.role is Role.FOLLOWER and n.term == 1


def test_vote_is_persisted_before_it_is_sent() -> None:
    """§5.2: the granted vote leaves only after the hard state holding it is durable."""
    n = node(id=2)
    n.step(RequestVote(Term(5), N1, N2, Index(0), Term(0)))
    rd = n.ready()
    assert rd.hard_state == HardState(Term(5), N1, Index(0))
    assert rd.must_sync
    assert rd.messages == ()
    assert rd.messages_after_sync == (RequestVoteResponse(Term(5), N2, N1, True),)


def test_one_vote_per_term() -> None:
    n = node(id=3)
    n.step(RequestVote(Term(2), N1, N3, Index(0), Term(0)))
    n.step(RequestVote(Term(2), N2, N3, Index(0), Term(0)))
    n.step(RequestVote(Term(2), N1, N3, Index(0), Term(0)))  # a retransmission from the same candidate
    grants = [(m.dst, m.granted) for m in sent(n.ready()) if isinstance(m, RequestVoteResponse)]
    assert grants == [(N1, True), (N2, False), (N1, True)]


def test_vote_restriction_up_to_date_log() -> None:
    """§5.4.1: deny a candidate whose last term is lower, or equal with a shorter log."""
    storage = MemoryStorage()
    storage.append([Entry(Term(1), Index(1)), Entry(Term(2), Index(2)), Entry(Term(2), Index(3))])
    storage.set_hard_state(HardState(Term(2), NO_NODE, Index(0)))
    n = node(id=3, storage=storage)
    n.step(RequestVote(Term(3), N1, N3, Index(5), Term(1)))  # longer log, older last term: deny
    n.step(RequestVote(Term(4), N1, N3, Index(2), Term(2)))  # same last term, shorter: deny
    n.step(RequestVote(Term(5), N2, N3, Index(3), Term(2)))  # same last term, same length: grant
    answers = [(m.term, m.granted) for m in sent(n.ready()) if isinstance(m, RequestVoteResponse)]
    assert answers == [(3, False), (4, False), (5, True)]


def test_stale_term_messages_are_never_acted_on() -> None:
    n = node(id=2)
    n.step(RequestVote(Term(5), N1, N2, Index(0), Term(0)))
    drain(n)
    n.step(RequestVoteResponse(Term(4), N3, N2, True))
    n.step(AppendEntries(Term(3), N3, N2, Index(0), Term(0), (Entry(Term(3), Index(1)),), Index(1)))
    assert n.log.last_index() == 0 and n.log.committed == 0
    # The stale leader is told our term so it steps down (with pre-vote/check-quorum on).
    (reply,) = sent(n.ready())
    assert reply == AppendEntriesResponse(Term(5), N2, N3, Index(0), reject=True)


def test_higher_term_vote_request_is_judged_at_the_new_term() -> None:
    """Regression (simulator seed 208): a pre-candidate granted a vote for term 1 while staying at term 0."""
    n = node(id=3)
    n.campaign()  # pre-candidate at term 0
    drain(n)
    n.step(RequestVote(Term(1), N2, N3, Index(0), Term(0)))
    assert (n.term, n.vote, n.role) == (1, N2, Role.FOLLOWER)
    n.step(RequestVoteResponse(Term(1), N1, N3, True, pre_vote=True))  # its old pre-vote round is over
    assert n.role is Role.FOLLOWER and n.vote == N2


def test_lease_ignores_vote_requests_while_the_leader_is_alive() -> None:
    """Dissertation §4.2.3: a follower that heard from its leader recently ignores a disruptive candidate."""
    n = node(id=2)
    n.step(Heartbeat(Term(3), N1, N2, Index(0)))
    drain(n)
    n.step(RequestVote(Term(4), N3, N2, Index(0), Term(0)))
    assert n.term == 3 and n.vote == NO_NODE
    assert not any(isinstance(m, RequestVoteResponse) for m in sent(n.ready()))


def test_new_leader_appends_a_noop_and_may_send_before_its_write() -> None:
    storage = MemoryStorage()
    n = node(pre_vote=False, storage=storage)
    elect(n)
    rd = n.ready()
    # A fresh cluster's first leader writes its bootstrap configuration in place of the no-op (membership.py).
    assert [e.type for e in rd.entries] == [EntryType.CONF_CHANGE]
    # The leader's appends go out at once (§10.2.1) ...
    assert {m.dst for m in rd.messages if isinstance(m, AppendEntries)} == {N2, N3}
    assert rd.messages_after_sync == ()
    persist(n, rd)
    n.advance()
    # ... but the entry is committed only by a quorum including durable copies: follower 2 + the leader.
    assert n.log.committed == 0
    n.step(AppendEntriesResponse(n.term, N2, N1, Index(1)))
    assert n.log.committed == 1


def test_leader_counts_itself_only_after_its_write_is_durable() -> None:
    storage = MemoryStorage()
    n = node(pre_vote=False, storage=storage, voters=(1, 2, 3))
    elect(n)
    rd = n.ready()  # the no-op's write is "in flight": advance() not called yet
    n.step(AppendEntriesResponse(n.term, N2, N1, Index(1)))
    assert n.log.committed == 0, "only one durable copy (node 2) of three: not committed"
    persist(n, rd)
    n.advance()
    assert n.log.committed == 1


def test_old_term_entries_commit_only_through_a_current_term_entry() -> None:
    """§5.4.2 and Figure 8: replicas of an old-term entry are not counted until a current-term entry is."""
    storage = MemoryStorage()
    storage.append([Entry(Term(1), Index(1)), Entry(Term(2), Index(2))])
    storage.set_hard_state(HardState(Term(3), NO_NODE, Index(1)))
    n = node(pre_vote=False, storage=storage)
    elect(n)  # leader at term 4, appends its no-op at index 3
    drain(n)
    n.step(AppendEntriesResponse(n.term, N2, N1, Index(2)))  # node 2 holds index 2 (term 2) only
    assert n.log.committed == 1, "index 2 is on a majority but from term 2: not committed by counting"
    n.step(AppendEntriesResponse(n.term, N2, N1, Index(3)))
    assert n.log.committed == 3, "committing the no-op commits index 2 with it"


def _leader_with_one_committed_write(lazy: bool) -> RawNode:
    """Leader 1 of 3 whose no-op is committed and known to both followers, then a proposal at index 2 sent,
    made durable on the leader and acknowledged by node 2: index 2 is committed and nothing new is pending."""
    n = node(pre_vote=False, lazy_commit=lazy)
    elect(n)
    drain(n)
    n.step(AppendEntriesResponse(n.term, N2, N1, Index(1)))
    n.step(AppendEntriesResponse(n.term, N3, N1, Index(1)))
    n.tick()  # lazy: the no-op's commit goes out
    drain(n)
    n.propose(b"x")
    drain(n)
    n.step(AppendEntriesResponse(n.term, N2, N1, Index(2)))
    assert n.log.committed == 2
    return n


def _commit_notices(rd: Ready) -> dict[NodeId, Index]:
    return {m.dst: m.commit for m in rd.messages if isinstance(m, AppendEntries) and not m.entries}


def test_without_lazy_commit_followers_hear_of_a_new_commit_index_at_once() -> None:
    n = _leader_with_one_committed_write(lazy=False)
    assert n.has_ready()
    assert _commit_notices(drain(n)) == {N2: 2, N3: 2}


def test_lazy_commit_tells_followers_at_the_next_tick_when_no_append_carries_it() -> None:
    n = _leader_with_one_committed_write(lazy=True)
    rd = drain(n)  # applies index 2 on the leader, but sends no empty append
    assert [e.index for e in rd.committed_entries] == [2]
    assert _commit_notices(rd) == {}
    assert not n.has_ready()
    n.tick()
    assert n.has_ready()
    assert _commit_notices(drain(n)) == {N2: 2, N3: 2}
    n.tick()
    assert _commit_notices(drain(n)) == {}, "told once: no empty append on later ticks"


def test_lazy_commit_rides_on_the_next_append_with_entries() -> None:
    n = _leader_with_one_committed_write(lazy=True)
    drain(n)
    n.propose(b"y")
    appends = [m for m in drain(n).messages if isinstance(m, AppendEntries)]
    assert {m.dst: (m.commit, [e.index for e in m.entries]) for m in appends} == {N2: (2, [3]), N3: (2, [3])}
    n.tick()
    assert _commit_notices(drain(n)) == {}, "the append already carried the commit index"


def test_follower_truncates_only_a_conflicting_suffix() -> None:
    n = node(id=2)
    e = [Entry(Term(1), Index(i), f"e{i}".encode()) for i in (1, 2, 3)]
    n.step(AppendEntries(Term(1), N1, N2, Index(0), Term(0), tuple(e), Index(0)))
    drain(n)
    # A stale, duplicated append covering only a prefix must not cut off entry 3.
    n.step(AppendEntries(Term(1), N1, N2, Index(0), Term(0), tuple(e[:2]), Index(0)))
    drain(n)
    assert n.log.last_index() == 3
    # A conflicting entry (term 2 at index 2) from a newer leader replaces the suffix from there.
    n.step(AppendEntries(Term(2), N3, N2, Index(1), Term(1), (Entry(Term(2), Index(2), b"new"),), Index(0)))
    rd = drain(n)
    assert n.log.last_index() == 2 and n.log.term_or_none(Index(2)) == 2
    assert any("truncated conflicting entries from index 2" in ev for ev in rd.events)


def test_append_ack_is_sent_after_persisting_and_commit_follows_leader() -> None:
    n = node(id=2)
    n.step(AppendEntries(Term(1), N1, N2, Index(0), Term(0), (Entry(Term(1), Index(1), b"x"),), Index(1)))
    rd = n.ready()
    assert rd.entries == (Entry(Term(1), Index(1), b"x"),)
    assert rd.messages == ()
    assert rd.messages_after_sync == (AppendEntriesResponse(Term(1), N2, N1, Index(1)),)
    assert rd.committed_entries == (Entry(Term(1), Index(1), b"x"),)  # applied after this Ready's write


def test_rejection_carries_a_conflict_hint() -> None:
    storage = MemoryStorage()
    storage.append([Entry(Term(1), Index(1)), *(Entry(Term(3), Index(i)) for i in range(2, 7))])
    storage.set_hard_state(HardState(Term(3), NO_NODE, Index(1)))
    n = node(id=2, storage=storage)
    # The leader (term 5) probes at index 6 with term 4: our entries 2..6 are all term 3, so any of them may
    # match; the hint names the last index with term <= 4, i.e. 6 (term 3), for the leader to resolve.
    n.step(AppendEntries(Term(5), N1, N2, Index(6), Term(4), (), Index(1)))
    (reply,) = sent(n.ready())
    assert isinstance(reply, AppendEntriesResponse) and reply.reject
    assert (reply.index, reply.hint_index, reply.hint_term) == (6, 6, 3)


def test_proposals_only_on_the_leader() -> None:
    n = node(id=2)
    n.step(Heartbeat(Term(1), N1, N2, Index(0)))
    with pytest.raises(NotLeader) as info:
        n.propose(b"x")
    assert info.value.leader_hint == N1


def test_single_node_cluster_commits_alone() -> None:
    storage = MemoryStorage()
    n = node(voters=(1,), storage=storage)
    n.campaign()
    assert n.role is Role.LEADER
    drain(n)
    index = n.propose(b"solo")
    applied = []
    while n.has_ready():
        applied += [e.data for e in drain(n).committed_entries if e.type is EntryType.NORMAL]
    assert index == 2 and n.log.committed == 2
    assert applied == [b"solo"]


def test_check_quorum_steps_down_without_a_quorum() -> None:
    storage = MemoryStorage()
    n = node(pre_vote=False, storage=storage)
    elect(n)
    for _ in range(n._cfg.election_ticks - 1):
        n.tick()
    assert n.role is Role.LEADER
    n.tick()  # an election timeout without hearing from anyone: step down
    assert n.role is Role.FOLLOWER
    assert any("no quorum heard" in ev for ev in n.ready().events)


def test_heartbeat_responses_keep_a_leader_in_office() -> None:
    storage = MemoryStorage()
    n = node(pre_vote=False, storage=storage)
    elect(n)
    for _ in range(5 * n._cfg.election_ticks):
        n.tick()
        n.step(HeartbeatResponse(n.term, N2, N1))
    assert n.role is Role.LEADER


def test_stop_is_the_dead_state() -> None:
    n = node()
    n.stop()
    n.tick()
    n.step(RequestVote(Term(9), N2, N1, Index(0), Term(0)))
    assert n.role is Role.DEAD and n.term == 0 and not n.has_ready()
    with pytest.raises(ProposalDropped):
        n.propose(b"x")


def test_ready_twice_without_advance_is_a_bug() -> None:
    n = node()
    n.campaign()
    n.ready()
    with pytest.raises(InvariantViolation):
        n.ready()


def test_status_reports_progress_on_the_leader() -> None:
    storage = MemoryStorage()
    n = node(pre_vote=False, storage=storage)
    elect(n)
    drain(n)
    n.step(AppendEntriesResponse(n.term, N2, N1, Index(1)))
    s = n.status()
    assert s.role is Role.LEADER and s.leader == N1 and s.commit == 1 and s.last_index == 1
    assert s.progress[N2].match == 1 and s.progress[N2].state == "replicate"
    assert s.progress[N3].match == 0 and s.progress[N3].state == "probe"


# --- ReadIndex (dissertation §6.4) --------------------------------------------------------------------------


def leader_with_noop_committed() -> RawNode:
    n = node(pre_vote=False)
    elect(n)
    drain(n)
    n.step(AppendEntriesResponse(n.term, N2, N1, Index(1)))
    drain(n)
    assert n.log.committed == 1
    return n


def _backlog_sent_to_node_3(max_inflight_bytes: int) -> tuple[RawNode, list[AppendEntries]]:
    """A leader holding 200 entries of ~1 KB that node 3 lacks; node 3 has just acknowledged index 1, so it is
    in replicate state: the appends it gets in that one step."""
    n = node(pre_vote=False, max_msg_entries=4, max_inflight_bytes=max_inflight_bytes)
    elect(n)
    drain(n)
    n.step(AppendEntriesResponse(n.term, N2, N1, Index(1)))
    drain(n)
    for k in range(200):
        n.propose(b"%04d" % k + b"v" * 1000)
    drain(n)
    n.step(AppendEntriesResponse(n.term, N2, N1, n.log.last_index()))
    drain(n)
    n.step(AppendEntriesResponse(n.term, N3, N1, Index(1)))
    rd = drain(n)
    return n, [m for m in sent(rd) if isinstance(m, AppendEntries) and m.dst == N3 and m.entries]


def _entry_bytes(apps: list[AppendEntries]) -> int:
    return sum(e.size_bytes() for m in apps for e in m.entries)


def test_in_flight_bytes_bound_the_backlog_a_far_behind_follower_gets_at_once() -> None:
    """Flow control by bytes (etcd-io/raft MaxInflightBytes): the step that finds node 3 200 KB behind sends
    it about ``max_inflight_bytes`` (the append crossing the bound still goes), and each acknowledgement lets
    as much again go; without the bound the whole backlog leaves in that one step."""
    unbounded, apps = _backlog_sent_to_node_3(0)
    assert apps[-1].entries[-1].index == unbounded.log.last_index(), "no byte bound: everything at once"
    n, apps = _backlog_sent_to_node_3(20_000)
    size = apps[0].entries[0].size_bytes()
    assert 20_000 <= _entry_bytes(apps) < 20_000 + 4 * size
    last_sent = apps[-1].entries[-1].index
    assert last_sent < n.log.last_index()
    # Node 3 acknowledges the first append: about that much more may go, and no more.
    n.step(AppendEntriesResponse(n.term, N3, N1, apps[0].entries[-1].index))
    more = [m for m in sent(drain(n)) if isinstance(m, AppendEntries) and m.dst == N3 and m.entries]
    assert more and more[0].prev_index == last_sent
    assert _entry_bytes(more) <= _entry_bytes(apps[:1]) + 4 * size


def test_read_index_waits_for_a_heartbeat_quorum() -> None:
    n = leader_with_noop_committed()
    n.read_index(b"r1")
    rd = drain(n)
    beats = [m for m in rd.messages if isinstance(m, Heartbeat)]
    assert {m.dst for m in beats} == {N2, N3} and len({m.context for m in beats}) == 1
    assert rd.read_states == ()
    n.step(HeartbeatResponse(n.term, N3, N1, b"unrelated"))
    assert not drain(n).read_states
    n.step(HeartbeatResponse(n.term, N2, N1, beats[0].context))
    assert drain(n).read_states == (ReadState(Index(1), b"r1"),)


def test_read_index_waits_for_the_leaders_first_commit() -> None:
    n = node(pre_vote=False)
    elect(n)
    n.read_index(b"early")
    rd = drain(n)
    assert not any(isinstance(m, Heartbeat) for m in rd.messages), "no round before the no-op commits"
    n.step(AppendEntriesResponse(n.term, N2, N1, Index(1)))  # the no-op commits: the round starts
    rd = drain(n)
    (beat, *_) = [m for m in rd.messages if isinstance(m, Heartbeat)]
    n.step(HeartbeatResponse(n.term, N2, N1, beat.context))
    assert drain(n).read_states == (ReadState(Index(1), b"early"),)


def test_a_read_arriving_during_a_round_waits_for_the_next_one() -> None:
    n = leader_with_noop_committed()
    n.read_index(b"first")
    first = next(m for m in drain(n).messages if isinstance(m, Heartbeat)).context
    n.propose(b"w")  # a write that commits while the first round is in flight ...
    drain(n)
    n.step(AppendEntriesResponse(n.term, N2, N1, Index(2)))
    drain(n)
    n.read_index(b"second")  # ... must be visible to a read asked after it
    n.step(HeartbeatResponse(n.term, N2, N1, first))
    rd = drain(n)
    assert rd.read_states == (ReadState(Index(1), b"first"),)
    second = next(m for m in rd.messages if isinstance(m, Heartbeat)).context
    assert second != first
    n.step(HeartbeatResponse(n.term, N3, N1, second))
    assert drain(n).read_states == (ReadState(Index(2), b"second"),)


def test_lost_round_heartbeats_are_repeated_by_periodic_heartbeats() -> None:
    """Regression (simulator, 20% loss): a round whose heartbeats were lost left every later read hanging."""
    n = leader_with_noop_committed()
    n.read_index(b"r")
    ctx = next(m for m in drain(n).messages if isinstance(m, Heartbeat)).context  # lost in the network
    for _ in range(n._cfg.heartbeat_ticks):
        n.tick()
    again = [m for m in drain(n).messages if isinstance(m, Heartbeat)]
    assert again and all(m.context == ctx for m in again)


def test_reads_are_dropped_when_leadership_is_lost_and_refused_on_followers() -> None:
    n = leader_with_noop_committed()
    n.read_index(b"r")
    drain(n)
    n.step(AppendEntries(Term(n.term + 1), N2, N1, Index(1), n.term, (), Index(1)))
    rd = drain(n)
    assert rd.dropped_reads == (b"r",) and rd.read_states == ()
    with pytest.raises(NotLeader):
        n.read_index(b"again")


def test_losing_the_leaders_connection_ends_its_lease_at_once() -> None:
    n = node(id=2)
    n.step(Heartbeat(Term(3), N1, N2, Index(0)))
    drain(n)
    n.report_unreachable(N3)  # not the leader: nothing changes
    assert n.leader == N1
    n.report_unreachable(N1)
    assert n.leader == NO_NODE
    # The lease is over: a candidate's vote request is no longer ignored ...
    n.step(RequestVote(Term(4), N3, N2, Index(0), Term(0)))
    assert n.vote == N3
    # ... and without a vote to give, the node campaigns within its jitter, not a whole timeout.
    m = node(id=2, pre_vote=False)
    m.step(Heartbeat(Term(3), N1, N2, Index(0)))
    drain(m)
    m.report_unreachable(N1)
    jitter = m.randomized_election_timeout - m._cfg.election_ticks
    for _ in range(jitter + 1):
        m.tick()
    assert m.role is Role.CANDIDATE


def test_a_spurious_unreachable_report_cannot_unseat_a_healthy_leader() -> None:
    """The other followers still hear the leader and refuse the pre-vote (dissertation §9.6)."""
    follower = node(id=3)
    follower.step(Heartbeat(Term(3), N1, N3, Index(0)))
    drain(follower)
    follower.step(RequestVote(Term(4), N2, N3, Index(0), Term(0), pre_vote=True))
    assert not any(isinstance(m, RequestVoteResponse) and m.granted for m in sent(follower.ready()))


# --- snapshots (Raft §7) ------------------------------------------------------------------------------------


def test_leader_sends_its_snapshot_when_a_follower_needs_compacted_entries() -> None:
    n = leader_with_noop_committed()
    for k in range(5):
        n.propose(f"e{k}".encode())
    drain(n)
    n.step(AppendEntriesResponse(n.term, N2, N1, Index(6)))
    drain(n)
    assert n.log.committed == 6
    meta = SnapshotMeta(Index(5), n.log.term_or_none(Index(5)) or Term(0), ConfState.of_voters((N1, N2, N3)))
    n.log.storage.compact(Index(5))
    n.set_snapshot(meta)
    # Node 3 never answered: it needs entry 1, long gone.
    n.step(HeartbeatResponse(n.term, N3, N1))
    rd = drain(n)
    snaps = [m for m in rd.messages if isinstance(m, InstallSnapshot)]
    assert [(m.dst, m.meta) for m in snaps] == [(N3, meta)]
    assert n.status().progress[N3].state == "snapshot"
    assert not any(isinstance(m, AppendEntries) and m.dst == N3 for m in rd.messages), "paused while installing"
    # The follower acknowledges the install: replication resumes with the entries after the snapshot.
    n.step(AppendEntriesResponse(n.term, N3, N1, Index(5)))
    rd = drain(n)
    (app,) = [m for m in rd.messages if isinstance(m, AppendEntries) and m.dst == N3]
    assert app.prev_index == 5 and [e.index for e in app.entries] == [6]


def _leader_sending_node_3_a_snapshot() -> RawNode:
    """A leader whose log was compacted past what node 3 holds: it has just sent node 3 its snapshot."""
    n = leader_with_noop_committed()
    n.propose(b"x")
    drain(n)
    n.step(AppendEntriesResponse(n.term, N2, N1, Index(2)))
    drain(n)
    n.log.storage.compact(Index(2))
    n.set_snapshot(SnapshotMeta(Index(2), n.term, ConfState.of_voters((N1, N2, N3))))
    n.step(HeartbeatResponse(n.term, N3, N1))
    assert any(isinstance(m, InstallSnapshot) for m in drain(n).messages)
    return n


def test_a_lost_snapshot_is_sent_again() -> None:
    n = _leader_sending_node_3_a_snapshot()
    for _ in range(3 * n._cfg.election_ticks):
        n.tick()
        n.step(HeartbeatResponse(n.term, N2, N1))  # keep the quorum: only node 3 is silent
        n.step(HeartbeatResponse(n.term, N3, N1))
    resent = [m for m in drain(n).messages if isinstance(m, InstallSnapshot)]
    assert resent, "after a timeout without acknowledgement the snapshot goes out again"


def test_a_delivered_snapshot_gets_time_to_install_before_it_is_sent_again() -> None:
    """Once the transport reports the whole snapshot delivered, the follower may take seconds to install a
    large store: asking again after 3 election timeouts streamed the whole file a second time
    (bench/learner_join.py, 1M keys). The leader waits 20 election timeouts then."""
    n = _leader_sending_node_3_a_snapshot()
    n.report_snapshot(N3, True)
    sent = 0
    for tick in range(20 * n._cfg.election_ticks):
        n.tick()
        n.step(HeartbeatResponse(n.term, N2, N1))
        n.step(HeartbeatResponse(n.term, N3, N1))
        again = [m for m in drain(n).messages if isinstance(m, InstallSnapshot)]
        if again:
            sent = tick + 1
            break
    assert sent == 20 * n._cfg.election_ticks, f"sent again after {sent} ticks"


def test_follower_installs_a_snapshot_its_log_does_not_match() -> None:
    storage = MemoryStorage()
    storage.append([Entry(Term(1), Index(1)), Entry(Term(1), Index(2), b"stale")])
    storage.set_hard_state(HardState(Term(1), NO_NODE, Index(1)))
    n = node(id=2, storage=storage)
    meta = SnapshotMeta(Index(10), Term(3), ConfState.of_voters((N1, N2, N3)))
    n.step(InstallSnapshot(Term(3), N1, N2, meta))
    rd = n.ready()
    assert rd.snapshot == meta and rd.entries == () and rd.committed_entries == ()
    assert rd.messages_after_sync == (AppendEntriesResponse(Term(3), N2, N1, Index(10)),)
    storage.apply_snapshot(meta)
    persist(n, rd)
    n.advance()
    assert (n.log.committed, n.log.applied, n.log.first_index(), n.log.last_index()) == (10, 10, 11, 10)
    # Entries after the snapshot are then appended and applied as usual.
    n.step(AppendEntries(Term(3), N1, N2, Index(10), Term(3), (Entry(Term(3), Index(11), b"next"),), Index(11)))
    assert [e.data for e in drain(n).committed_entries] == [b"next"]


def test_a_snapshot_our_log_already_holds_only_advances_the_commit_index() -> None:
    """§7: "retain log entries following it"; and acknowledge only what is known to match: the snapshot's index."""
    n = node(id=2)
    entries = (*tuple(Entry(Term(1), Index(i)) for i in range(1, 6)), Entry(Term(2), Index(6), b"maybe"))
    n.step(AppendEntries(Term(2), N1, N2, Index(0), Term(0), entries, Index(0)))
    drain(n)
    n.step(InstallSnapshot(Term(3), N3, N2, SnapshotMeta(Index(5), Term(1), ConfState.of_voters((N1, N2, N3)))))
    rd = drain(n)
    assert rd.snapshot is None and n.log.committed == 5 and n.log.last_index() == 6
    assert rd.messages_after_sync[-1] == AppendEntriesResponse(Term(3), N2, N3, Index(5))
