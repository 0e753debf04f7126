"""The errors a raftkv user handles, in one place.

Expected outcomes are typed: a proposal on a follower raises :class:`NotLeader` (with the leader's id when
known), a proposal refused before it was appended raises :class:`ProposalDropped` (safe to retry), and one that
did not complete in time raises :class:`Timeout` (it may or may not have been applied: retry only if the
command is idempotent, or use the KV store's exactly-once sessions).
"""

from raftkv.raft.errors import Compacted, NotLeader, ProposalDropped, RaftError


class Timeout(RaftError):
    """The operation did not complete before its deadline; it may still take effect."""


class NodeFailed(RaftError):
    """The node stopped because of an unrecoverable error (e.g. its disk); the message says which."""


__all__ = ["Compacted", "NodeFailed", "NotLeader", "ProposalDropped", "RaftError", "Timeout"]
