"""The Ready planner: the runtime's shortcuts, decided in one place the simulator runs too."""

from __future__ import annotations

import pytest

from raftkv.raft.driver import ReadyPlanner
from raftkv.raft.errors import InvariantViolation
from raftkv.raft.ready import Ready, Role
from raftkv.raft.types import NO_NODE, ConfState, Entry, HardState, Index, NodeId, SnapshotMeta, Term


def ready(
    *,
    hs: HardState | None = None,
    entries: tuple[Entry, ...] = (),
    committed: tuple[Entry, ...] = (),
    sync: bool = False,
    snapshot: SnapshotMeta | None = None,
) -> Ready:
    return Ready(hs, entries, committed, (), (), sync, None, (), snapshot=snapshot)


E5 = Entry(Term(2), Index(5), b"x")
E6 = Entry(Term(2), Index(6), b"y")


def test_committed_entries_already_in_the_log_are_applied_before_the_write() -> None:
    p = ReadyPlanner()
    assert p.plan(ready(committed=(E5,), hs=HardState(Term(2), NO_NODE, Index(5))), Role.LEADER).apply_early
    # New entries in the same Ready (committed ones may be among them): apply only after the write.
    assert not p.plan(ready(entries=(E6,), committed=(E5,), sync=True), Role.FOLLOWER).apply_early
    meta = SnapshotMeta(Index(4), Term(1), ConfState.of_voters((NodeId(1),)))
    assert not p.plan(ready(committed=(E5,), snapshot=meta, sync=True), Role.FOLLOWER).apply_early


def test_a_commit_only_hard_state_waits_for_the_next_write() -> None:
    p = ReadyPlanner()
    first = p.plan(ready(hs=HardState(Term(2), NodeId(1), Index(5)), committed=(E5,)), Role.LEADER)
    assert not first.write and first.hard_state is None and p.deferred == HardState(Term(2), NodeId(1), Index(5))
    second = p.plan(ready(hs=HardState(Term(2), NodeId(1), Index(6)), committed=(E6,)), Role.LEADER)
    assert not second.write and p.deferred is not None and p.deferred.commit == 6
    # The next write carries the newest deferred hard state, and only once.
    write = p.plan(ready(entries=(Entry(Term(2), Index(7)),), sync=True), Role.LEADER)
    assert write.write and write.hard_state == HardState(Term(2), NodeId(1), Index(6)) and p.deferred is None
    again = p.plan(ready(entries=(Entry(Term(2), Index(8)),), sync=True), Role.LEADER)
    assert again.hard_state is None


def test_a_hard_state_of_its_own_wins_over_a_deferred_one() -> None:
    p = ReadyPlanner()
    p.plan(ready(hs=HardState(Term(2), NodeId(1), Index(5))), Role.FOLLOWER)
    plan = p.plan(ready(hs=HardState(Term(3), NO_NODE, Index(5)), sync=True), Role.FOLLOWER)
    assert plan.write and plan.hard_state == HardState(Term(3), NO_NODE, Index(5)) and p.deferred is None


def test_without_deferral_every_hard_state_is_written() -> None:
    p = ReadyPlanner(defer_commit_only=False)
    plan = p.plan(ready(hs=HardState(Term(2), NodeId(1), Index(5))), Role.LEADER)
    assert plan.write and plan.hard_state == HardState(Term(2), NodeId(1), Index(5))


def test_a_deferred_hard_state_that_changed_term_or_vote_is_a_bug() -> None:
    p = ReadyPlanner()
    p.plan(ready(hs=HardState(Term(2), NodeId(1), Index(5))), Role.FOLLOWER)
    with pytest.raises(InvariantViolation, match="may differ only in its commit"):
        p.plan(ready(hs=HardState(Term(3), NodeId(1), Index(6))), Role.FOLLOWER)


def test_only_a_leaders_or_a_followers_plain_write_runs_on_the_loop() -> None:
    p = ReadyPlanner()
    w = ready(entries=(E5,), sync=True)
    assert p.plan(w, Role.FOLLOWER).on_loop
    assert p.plan(w, Role.LEADER).on_loop
    assert not p.plan(w, Role.LEADER, writes_queued=True).on_loop
    assert not p.plan(w, Role.CANDIDATE).on_loop
    assert not p.plan(w, Role.FOLLOWER, writes_queued=True).on_loop
    meta = SnapshotMeta(Index(4), Term(1), ConfState.of_voters((NodeId(1),)))
    assert not p.plan(ready(snapshot=meta, sync=True), Role.FOLLOWER).on_loop
    assert not p.plan(ready(committed=(E5,)), Role.FOLLOWER).on_loop, "nothing to write: nothing on the loop"
