"""Messages exchanged between Raft nodes: frozen dataclasses, one class per RPC and per reply.

Theory of operation
-------------------
Every message carries ``term`` (the sender's current term, or for a pre-vote request the term the sender *would*
campaign in), ``src`` and ``dst``. The core rejects or ignores anything whose term is stale (§5.1: "if a server
receives a request with a stale term number, it rejects the request"), so a reply from an old term can never
be counted. The transport converts these to and from Cap'n Proto; the simulator delivers them as they are.

Heartbeats are separate from ``AppendEntries`` (as in etcd-io/raft): they carry no log position, only
``commit = min(leader commit, follower match)`` so that a follower never commits an index its log may not match,
and they keep flowing when a follower's append window is full.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.raft.types import Entry, Index, NodeId, SnapshotMeta, Term


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Leader → follower: append ``entries`` after ``(prev_index, prev_term)`` (§5.3)."""

    term: Term
    src: NodeId
    dst: NodeId
    prev_index: Index
    prev_term: Term
    entries: tuple[Entry, ...]
    commit: Index


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """Follower → leader.

    On success ``index`` is the last index the follower now holds that matches the leader's log (it is only ever
    sent after those entries are durable). On rejection ``index`` echoes the rejected ``prev_index`` and
    ``(hint_index, hint_term)`` is the follower's best guess of where the logs may agree: the largest index
    ``<= min(prev_index, last_index)`` whose term is ``<= prev_term`` (fast backtracking, §5.3's optimization).
    """

    term: Term
    src: NodeId
    dst: NodeId
    index: Index
    reject: bool = False
    hint_index: Index = Index(0)
    hint_term: Term = Term(0)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader → follower: "I am still the leader"; ``commit`` is capped at the follower's match index."""

    term: Term
    src: NodeId
    dst: NodeId
    commit: Index
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    """Follower → leader: proves the follower still accepts this leader (check-quorum, ReadIndex).

    ``reject``: the heartbeat's commit index is beyond this follower's log. The leader caps that commit at the
    follower's match index, so within a term this means the follower lost entries it had acknowledged (its
    data was wiped); ``last_index`` says where its log now ends, and the leader replicates again from there.
    """

    term: Term
    src: NodeId
    dst: NodeId
    context: bytes = b""
    reject: bool = False
    last_index: Index = Index(0)


@dataclass(frozen=True, slots=True)
class RequestVote:
    """Candidate → voter (§5.2), or pre-candidate → voter when ``pre_vote`` (dissertation §9.6).

    ``transfer`` marks a campaign started by a leadership transfer (``TimeoutNow``): voters then grant it even
    while they still hear from the current leader (dissertation §3.10).
    """

    term: Term
    src: NodeId
    dst: NodeId
    last_index: Index
    last_term: Term
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    """Voter → candidate. A granted vote is only ever sent after the voter persisted it (§5.2, Figure 2)."""

    term: Term
    src: NodeId
    dst: NodeId
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Leader → follower whose next entry the leader has compacted away (Raft §7).

    ``meta`` describes the leader's latest snapshot. The runtime streams the snapshot's bytes alongside and steps
    this message into the follower's core only once they have all arrived intact, so for the core the message
    means "a snapshot covering everything up to ``meta.index`` is available here, install it".
    """

    term: Term
    src: NodeId
    dst: NodeId
    meta: SnapshotMeta


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leader → chosen successor: start an election now, skipping pre-vote (dissertation §3.10)."""

    term: Term
    src: NodeId
    dst: NodeId


Message = (
    AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | RequestVote
    | RequestVoteResponse
    | InstallSnapshot
    | TimeoutNow
)
"""Any message the core consumes with ``step`` or emits in ``Ready``."""
