"""Majority arithmetic: the quorum index and vote tallies (§5.2, §5.3).

A quorum is a strict majority of the voters, so any two quorums intersect — the fact every Raft safety
argument rests on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum

from raftkv.raft.types import Index, NodeId


class VoteResult(Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(n_voters: int) -> int:
    """Smallest number of voters that forms a quorum."""
    return n_voters // 2 + 1


def committed_index(voters: Iterable[NodeId], match: Mapping[NodeId, Index]) -> Index:
    """The largest index held by a quorum of ``voters`` (durably, as reported in ``match``)."""
    indexes = sorted((match.get(v, Index(0)) for v in voters), reverse=True)
    return indexes[majority(len(indexes)) - 1]


def vote_result(voters: Iterable[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """WON once a quorum granted, LOST once a quorum can no longer be reached, PENDING otherwise."""
    granted = rejected = missing = 0
    for v in voters:
        vote = votes.get(v)
        if vote is None:
            missing += 1
        elif vote:
            granted += 1
        else:
            rejected += 1
    q = majority(granted + rejected + missing)
    if granted >= q:
        return VoteResult.WON
    if granted + missing >= q:
        return VoteResult.PENDING
    return VoteResult.LOST
