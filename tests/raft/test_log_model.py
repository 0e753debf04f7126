"""Hypothesis: the optimized log against naive models.

``RaftLog.maybe_append`` (fast paths, stable/unstable split, writes in flight while new appends arrive) must
behave exactly like the paper's AppendEntries receiver rules (Figure 2) applied to a plain list, and what ends
up in storage must be that list. ``committed_index``/``vote_result`` are checked against brute force.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.raft.log import RaftLog
from raftkv.raft.quorum import VoteResult, committed_index, majority, vote_result
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import Entry, Index, NodeId, Term


def entry(index: int, term: int) -> Entry:
    # Log Matching holds across the generated universe: (index, term) determines the entry.
    return Entry(Term(term), Index(index), f"{index}@{term}".encode())


@st.composite
def universes(draw: st.DrawFn) -> list[list[int]]:
    """Leaders' logs as lists of terms: each new log extends a prefix of an earlier one with a higher term."""
    logs: list[list[int]] = [[]]
    term = 0
    for _ in range(draw(st.integers(1, 5))):
        base = logs[draw(st.integers(0, len(logs) - 1))]
        cut = draw(st.integers(0, len(base)))
        term = max(term, *base, 0) + 1
        logs.append(base[:cut] + [term] * draw(st.integers(0, 8)))
    return logs


def naive_append(model: list[int], prev: int, prev_term: int, ents: list[Entry]) -> bool:
    """Figure 2, AppendEntries receiver, steps 2-4, on a list of terms (model[i - 1] is index i's term)."""
    if prev > len(model) or (prev > 0 and model[prev - 1] != prev_term):
        return False
    for e in ents:
        if e.index <= len(model):
            if model[e.index - 1] != e.term:
                del model[e.index - 1 :]
                model.append(e.term)
        else:
            model.append(e.term)
    return True


actions = st.lists(
    st.tuples(
        st.sampled_from(["append", "append", "append", "begin_write", "finish_write"]),
        st.integers(0, 5),  # which leader log
        st.integers(0, 40),  # prev index
        st.integers(0, 10),  # entry count
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(universe=universes(), steps=actions)
def test_follower_log_matches_the_papers_rules(
    universe: list[list[int]], steps: list[tuple[str, int, int, int]]
) -> None:
    storage = MemoryStorage()
    log = RaftLog(storage, Index(0), max_apply_bytes=1 << 20)
    model: list[int] = []
    in_flight: list[Entry] | None = None
    for action, which, prev, count in steps:
        leader = universe[which % len(universe)]
        if action == "append":
            prev %= len(leader) + 1  # noqa: PLW2901 - any position in this leader's log
            ents = [entry(i, leader[i - 1]) for i in range(prev + 1, min(len(leader), prev + count) + 1)]
            prev_term = leader[prev - 1] if prev else 0
            accepted, _ = log.maybe_append(Index(prev), Term(prev_term), Index(0), ents)
            assert (accepted is not None) == naive_append(model, prev, prev_term, ents)
        elif action == "begin_write" and in_flight is None:
            in_flight = list(log.unstable)  # a Ready's entries, handed to the disk
        elif action == "finish_write" and in_flight is not None:
            storage.append(in_flight)
            if in_flight:
                log.stable_to(in_flight[-1].index, in_flight[-1].term)
            in_flight = None
        assert [e.term for e in log.entries(Index(1), Index(log.last_index() + 1))] == model
        assert log.last_index() == len(model)
    # Drain: after the last writes complete, storage holds exactly the model's log.
    if in_flight is not None:
        storage.append(in_flight)
        if in_flight:
            log.stable_to(in_flight[-1].index, in_flight[-1].term)
    storage.append(list(log.unstable))
    assert storage.last_index() == len(model)
    assert [storage.term(Index(i)) for i in range(1, len(model) + 1)] == model


@settings(max_examples=300, deadline=None)
@given(terms=st.lists(st.integers(1, 4), max_size=30).map(sorted), commits=st.lists(st.integers(0, 40), max_size=10))
def test_commit_follows_min_of_leader_commit_and_last_new_entry(terms: list[int], commits: list[int]) -> None:
    """§5.3: commitIndex = min(leaderCommit, index of last new entry), and it never goes down."""
    log = RaftLog(MemoryStorage(), Index(0), max_apply_bytes=1 << 20)
    ents = [entry(i + 1, t) for i, t in enumerate(terms)]
    expected = 0
    for k, commit in enumerate(commits):
        upto = min(len(ents), 3 * (k + 1))
        last_new, _ = log.maybe_append(Index(0), Term(0), Index(commit), ents[:upto])
        assert last_new == upto
        expected = max(expected, min(commit, upto))
        assert log.committed == expected


@given(st.dictionaries(st.integers(1, 9), st.integers(0, 50), min_size=1))
def test_committed_index_is_the_largest_index_a_majority_holds(match: dict[int, int]) -> None:
    voters = [NodeId(v) for v in match]
    got = committed_index(voters, {NodeId(v): Index(m) for v, m in match.items()})
    brute = max(i for i in range(0, 51) if sum(m >= i for m in match.values()) >= majority(len(voters)))
    assert got == brute


@given(st.dictionaries(st.integers(1, 7), st.sampled_from([True, False, None]), min_size=1))
def test_vote_result_matches_counting(votes: dict[int, bool | None]) -> None:
    voters = [NodeId(v) for v in votes]
    cast = {NodeId(v): b for v, b in votes.items() if b is not None}
    q = majority(len(voters))
    yes = sum(1 for b in votes.values() if b is True)
    no = sum(1 for b in votes.values() if b is False)
    expected = VoteResult.WON if yes >= q else VoteResult.LOST if len(voters) - no < q else VoteResult.PENDING
    assert vote_result(voters, cast) is expected
