"""Named scenarios on the simulator: the Raft paper's claims and the classic election/replication/persistence tests.

Each test asserts its outcome; the simulator's checker verifies every safety property after every event on top.
Times are simulated milliseconds (tick 10 ms, heartbeat 50 ms, election timeout 150–300 ms).
"""

from __future__ import annotations

import random

from raftkv.raft.errors import NotLeader
from raftkv.raft.ready import Role
from raftkv.raft.types import NodeId
from raftkv.sim.cluster import Proposal, ProposalState
from raftkv.sim.network import LinkFaults
from tests.sim.harness import applied_data, leaders_among, make_cluster, max_term, one, wait_one_leader

# --- elections ------------------------------------------------------------------------------------------------


def test_initial_election_elects_one_leader_and_then_stays_quiet() -> None:
    c = make_cluster(3)
    leader = wait_one_leader(c, timeout_ms=1000)
    term = max_term(c)
    assert set(c.terms().values()) == {term}
    c.run_for(3000)  # no failures: nobody should start another election
    assert max_term(c) == term
    assert wait_one_leader(c) == leader


def test_reelection_after_leader_is_cut_off_and_no_leader_without_quorum() -> None:
    c = make_cluster(3)
    first = wait_one_leader(c)
    c.disconnect(first)
    others = [i for i in c.ids if i != first]
    second = wait_one_leader(c, among=others, timeout_ms=1500)
    assert second != first

    # The old leader rejoins: it must not disturb the new one, and must itself step down.
    c.connect(first)
    assert wait_one_leader(c) == second
    assert c.core(first).role is Role.FOLLOWER

    # With two of three gone there is no quorum: no leader may be elected.
    third = next(i for i in c.ids if i != second)
    c.disconnect(second)
    c.disconnect(third)
    lone = next(i for i in c.ids if i not in (second, third))
    c.run_for(3000)
    assert leaders_among(c, [lone]) == []

    c.connect(third)
    wait_one_leader(c, among=[lone, third], timeout_ms=2000)
    c.connect(second)
    wait_one_leader(c)


def test_many_elections_with_random_disconnects_seven_nodes() -> None:
    c = make_cluster(7, seed=7)
    rng = random.Random(7)
    wait_one_leader(c)
    for _ in range(10):
        cut = rng.sample(list(c.ids), 3)
        for i in cut:
            c.disconnect(i)
        # Four of seven form a quorum: they must (re)elect a leader among themselves.
        wait_one_leader(c, among=[i for i in c.ids if i not in cut], timeout_ms=3000)
        for i in cut:
            c.connect(i)
    wait_one_leader(c, timeout_ms=3000)


def test_partitioned_node_with_prevote_does_not_raise_the_term() -> None:
    c = make_cluster(5)
    leader = wait_one_leader(c)
    term = max_term(c)
    victim = next(i for i in c.ids if i != leader)
    c.disconnect(victim)
    c.run_for(5000)  # ~20 election timeouts alone
    assert c.core(victim).term == term, "pre-vote must keep an isolated node from bumping its term"
    c.connect(victim)
    c.run_for(1000)
    assert wait_one_leader(c) == leader
    assert max_term(c) == term


def test_without_prevote_an_isolated_node_does_raise_its_term() -> None:
    """The control for the test above: the same scenario with pre-vote off shows what pre-vote prevents."""
    c = make_cluster(5, pre_vote=False)
    leader = wait_one_leader(c)
    term = max_term(c)
    victim = next(i for i in c.ids if i != leader)
    c.disconnect(victim)
    c.run_for(5000)
    assert c.core(victim).term > term + 5


def test_check_quorum_makes_an_isolated_leader_step_down() -> None:
    c = make_cluster(3)
    leader = wait_one_leader(c)
    c.disconnect(leader)
    # Within about two election timeouts the cut-off leader notices it hears from no quorum.
    assert c.run_until(lambda: c.core(leader).role is not Role.LEADER, 600)


def test_leadership_transfer_hands_over_within_an_election_timeout() -> None:
    c = make_cluster(3)
    leader = wait_one_leader(c)
    one(c, b"before", 3)
    target = next(i for i in c.ids if i != leader)
    c.core(leader).transfer_leadership(target)
    c._pump(c.nodes[leader])
    assert c.run_until(lambda: leaders_among(c, c.ids) == [target], 300)
    one(c, b"after", 3)


# --- replication ----------------------------------------------------------------------------------------------


def test_basic_agreement() -> None:
    c = make_cluster(3)
    wait_one_leader(c)
    indexes = [one(c, f"cmd{k}".encode(), 3) for k in range(3)]
    # Index 1 is the first leader's no-op; commands follow at consecutive indexes.
    assert indexes == [2, 3, 4]
    for i in c.ids:
        assert applied_data(c, i) == [b"cmd0", b"cmd1", b"cmd2"]


def test_agreement_despite_a_failed_follower() -> None:
    c = make_cluster(3)
    leader = wait_one_leader(c)
    one(c, b"a", 3)
    follower = next(i for i in c.ids if i != leader)
    c.disconnect(follower)
    one(c, b"b", 2)
    one(c, b"c", 2)
    c.connect(follower)
    one(c, b"d", 3)
    assert applied_data(c, follower) == [b"a", b"b", b"c", b"d"]


def test_no_commit_without_quorum_then_recovery() -> None:
    c = make_cluster(5)
    leader = wait_one_leader(c)
    one(c, b"a", 5)
    followers = [i for i in c.ids if i != leader][:3]
    for i in followers:
        c.disconnect(i)
    p = c.propose(b"lonely", via=leader)
    assert isinstance(p, Proposal)
    c.run_for(2000)
    count, _ = c.applied_count(p.index)
    assert count == 0, "an entry on 2 of 5 nodes must not be committed"
    for i in followers:
        c.connect(i)
    one(c, b"after", 5)


def test_concurrent_proposals_get_distinct_indexes() -> None:
    c = make_cluster(3)
    leader = wait_one_leader(c)
    ps = [c.propose(f"p{k}".encode(), via=leader) for k in range(20)]
    assert all(isinstance(p, Proposal) for p in ps)
    proposals = [p for p in ps if isinstance(p, Proposal)]
    assert len({p.index for p in proposals}) == 20
    assert c.run_until(lambda: all(p.state is ProposalState.ACKED for p in proposals), 2000)
    for i in c.ids:
        assert c.run_until(lambda i=i: len(applied_data(c, i)) == 20, 1000)
        assert sorted(applied_data(c, i)) == sorted(f"p{k}".encode() for k in range(20))


def test_rejoining_old_leader_uncommitted_entries_are_replaced() -> None:
    c = make_cluster(3)
    one(c, b"101", 3)
    leader1 = wait_one_leader(c)
    c.disconnect(leader1)
    for data in (b"x102", b"x103", b"x104"):
        assert isinstance(c.propose(data, via=leader1), Proposal)  # cannot commit: it is alone
    one(c, b"103", 2, among=[i for i in c.ids if i != leader1])
    leader2 = wait_one_leader(c, among=[i for i in c.ids if i != leader1])
    c.disconnect(leader2)
    c.connect(leader1)
    one(c, b"104", 2, among=[i for i in c.ids if i != leader2])
    c.connect(leader2)
    one(c, b"105", 3)
    for i in c.ids:
        assert applied_data(c, i) == [b"101", b"103", b"104", b"105"]


def test_fast_backup_over_fifty_divergent_entries() -> None:
    c = make_cluster(5, seed=3)
    one(c, b"start", 5)
    leader1 = wait_one_leader(c)
    follower1 = next(i for i in c.ids if i != leader1)
    rest = [i for i in c.ids if i not in (leader1, follower1)]
    # Leader 1 and one follower are cut off with 50 uncommitted entries of an old term.
    c.partition([[leader1, follower1], rest])
    for k in range(50):
        c.propose(f"stale{k}".encode(), via=leader1)
    c.run_for(500)
    # The other three elect a leader and commit 50 entries of their own.
    for k in range(50):
        one(c, f"good{k}".encode(), 3, among=rest)
    leader2 = wait_one_leader(c, among=rest)
    x, y = (i for i in rest if i != leader2)
    # Leader 2 keeps one follower but loses its majority, and piles up 50 entries that will never commit.
    c.partition([[leader2, x], [y], [leader1, follower1]])
    for k in range(50):
        c.propose(f"lost{k}".encode(), via=leader2)
    c.run_for(500)
    # y holds the newest committed log: with the old pair it forms a majority, wins, and must back the old
    # pair up over their 50 divergent entries.
    c.partition([[leader1, follower1, y], [leader2, x]])
    rejections_before = c.append_rejections
    for k in range(50):
        one(c, f"more{k}".encode(), 3, among=[leader1, follower1, y])
    # Everyone back: leader 2 and x must drop their 50 lost entries.
    c.connect_all()
    one(c, b"end", 5)
    # Conflict hints skip a whole divergent term per round trip, instead of one entry per round trip
    # (which would take over 100 rejections here).
    assert c.append_rejections - rejections_before < 20
    expected = [b"start", *(f"good{k}".encode() for k in range(50)), *(f"more{k}".encode() for k in range(50))]
    for i in c.ids:
        assert applied_data(c, i) == [*expected, b"end"]


def test_message_counts_are_bounded() -> None:
    c = make_cluster(3)
    wait_one_leader(c)
    election_msgs = sum(c.sent_by_type.values())
    assert election_msgs <= 30, f"electing the first leader took {election_msgs} messages"
    c.run_for(500)
    before = dict(c.sent_by_type)
    c.run_for(10_000)
    delta = {k: v - before.get(k, 0) for k, v in c.sent_by_type.items()}
    delta = {k: v for k, v in delta.items() if v}
    # An idle cluster sends only heartbeats and their replies: 2 followers, every 50 ms, both ways.
    assert set(delta) == {"Heartbeat", "HeartbeatResponse"}
    assert delta["Heartbeat"] <= 2 * (10_000 // 50) + 4
    # Replicating one command costs a bounded number of messages too.
    before = sum(c.sent_by_type.values())
    one(c, b"x", 3)
    assert sum(c.sent_by_type.values()) - before <= 20


# --- the paper's Figure 8 -------------------------------------------------------------------------------------


def run_figure_8(seed: int, iterations: int, unreliable: bool, unsafe: frozenset[str] = frozenset()) -> None:
    """Lab 2C's Figure 8 test: propose on the leader, then crash it (or cut it off) at a random moment, keeping
    at least a majority up; ``max_msg_entries=1`` splits appends so old-term entries can be acknowledged
    separately from the new leader's no-op (the window in which counting them would be unsafe)."""
    c = make_cluster(5, seed=seed, unsafe=unsafe, max_msg_entries=1, max_inflight_msgs=2)
    if unreliable:
        c.set_faults(LinkFaults(drop_rate=0.1, dup_rate=0.05, min_delay_ms=0, max_delay_ms=30))
    rng = random.Random(seed)
    up = set(c.ids)
    one(c, b"first", 1)
    for k in range(iterations):
        leader = c.leader()
        if leader is not None and leader in up:
            c.propose(f"f8-{k}".encode(), via=leader)
        c.run_for(rng.randint(0, 13) if rng.random() < 0.9 else rng.randint(0, 500))
        leader = c.leader()
        if leader is not None and leader in up:
            if unreliable:
                c.disconnect(leader)
            else:
                c.crash(leader)
            up.discard(leader)
        if len(up) < 3:
            back = rng.choice(sorted(set(c.ids) - up))
            if unreliable:
                c.connect(back)
            else:
                c.restart(back)
            up.add(back)
    for i in c.ids:
        if c.nodes[i].core is None:
            c.restart(i)
        c.connect(i)
    c.set_faults(LinkFaults(0.0, 0.0, 1, 5, fifo=True))
    one(c, b"last", 5, timeout_ms=20_000)


def test_figure_8_thousand_leader_crashes() -> None:
    run_figure_8(seed=8, iterations=1000, unreliable=False)


def test_figure_8_unreliable_network() -> None:
    run_figure_8(seed=88, iterations=400, unreliable=True)


# --- persistence ----------------------------------------------------------------------------------------------


def test_restart_all_keeps_committed_entries() -> None:
    c = make_cluster(3)
    one(c, b"11", 3)
    for i in c.ids:
        c.restart(i)
    one(c, b"12", 3)
    leader = wait_one_leader(c)
    c.restart(leader)
    one(c, b"13", 3)
    follower = next(i for i in c.ids if i != wait_one_leader(c))
    c.crash(follower)
    one(c, b"14", 2)
    c.restart(follower)
    one(c, b"15", 3)
    for i in c.ids:
        assert applied_data(c, i) == [b"11", b"12", b"13", b"14", b"15"]


def test_partitioned_leader_and_crashed_follower() -> None:
    c = make_cluster(3)
    one(c, b"101", 3)
    leader = wait_one_leader(c)
    f1, f2 = (i for i in c.ids if i != leader)
    c.disconnect(f2)
    one(c, b"102", 2)
    c.crash(leader)
    c.crash(f1)
    c.connect(f2)
    c.restart(f1)
    one(c, b"103", 2, among=[f1, f2])
    c.restart(leader)
    one(c, b"104", 3)
    for i in c.ids:
        assert applied_data(c, i) == [b"101", b"102", b"103", b"104"]


def test_crash_right_after_a_proposal() -> None:
    c = make_cluster(3, disk_latency_ms=(3, 3))
    leader = wait_one_leader(c)
    one(c, b"before", 3)
    p = c.propose(b"maybe", via=leader)
    assert isinstance(p, Proposal)
    c.crash(leader)  # before its own write completed; followers may or may not have it
    c.restart(leader)
    one(c, b"after", 3)
    for i in c.ids:
        got = applied_data(c, i)
        # Either committed everywhere or nowhere; never applied on some nodes only.
        assert got in ([b"before", b"maybe", b"after"], [b"before", b"after"])
    assert len({tuple(applied_data(c, i)) for i in c.ids}) == 1


def test_vote_survives_restart() -> None:
    """A node that voted and restarts remembers its vote: it refuses another candidate in the same term."""
    c = make_cluster(3)
    wait_one_leader(c)
    term = max_term(c)
    voter = NodeId(1)
    c.restart(voter)
    core = c.core(voter)
    assert core.term == term
    assert core.vote != 0, "the vote cast in this term must come back from disk"


def test_follower_rejects_proposals_with_a_leader_hint() -> None:
    c = make_cluster(3)
    leader = wait_one_leader(c)
    follower = next(i for i in c.ids if i != leader)
    try:
        c.core(follower).propose(b"x")
    except NotLeader as e:
        assert e.leader_hint == leader
    else:
        raise AssertionError("a follower accepted a proposal")


def test_the_simulator_takes_the_runtimes_shortcuts_and_survives_crashes_with_them() -> None:
    # The simulator carries out Readies through the runtime's own planner (raftkv.raft.driver): committed entries
    # applied before the write, commit-only hard states deferred to the next write. Crash nodes while writes
    # keep coming: a lost deferred hard state must cost nothing acknowledged (the checker runs after each event).
    c = make_cluster(3, seed=11)
    assert c.run_until(lambda: c.leader() is not None, 2_000)
    acked: list[bytes] = []
    for round_ in range(6):
        for k in range(20):
            p = c.propose(f"r{round_}-{k}".encode())
            if isinstance(p, Proposal):
                c.run_until(lambda p=p: p.state is not ProposalState.PENDING, 500)
                if p.state is ProposalState.ACKED:
                    acked.append(p.data)
        victim = c.ids[round_ % 3]
        c.crash(victim)
        c.run_for(50)
        c.restart(victim)
        assert c.run_until(lambda: c.leader() is not None, 3_000)
    assert len(acked) >= 60
    assert c.applied_early > 0 and c.hard_states_deferred > 0
    one(c, b"final", expected=3)
    for i in c.ids:
        assert set(acked) <= set(applied_data(c, i)), f"node {i} lost an acknowledged command"
