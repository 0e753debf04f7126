"""Typed outcomes of the consensus core.

Expected outcomes (asking a follower to propose, reading a compacted index) are exceptions a caller handles.
A broken invariant is a bug: :func:`invariant` raises :class:`InvariantViolation`, and unlike ``assert`` it
still fires under ``python -O``.
"""

from __future__ import annotations

from typing import NoReturn

from raftkv.raft.types import NO_NODE, NodeId


class RaftError(Exception):
    """Base class of every error the core raises on purpose."""


class ConfigError(RaftError, ValueError):
    """An invalid setting; the message is the one line to show the operator (it names the setting)."""


class NotLeader(RaftError):
    """The node is not the leader; ``leader_hint`` is the leader it knows of, or ``NO_NODE``.

    ``leader_address`` is that leader's client address when whoever raised this knows it (the core never does;
    a node's front end and the client fill it in), "" otherwise.
    """

    def __init__(self, leader_hint: NodeId = NO_NODE, leader_address: str = "") -> None:
        self.leader_hint = leader_hint
        self.leader_address = leader_address
        hint = f"the leader is node {leader_hint}" if leader_hint != NO_NODE else "no leader is known"
        if leader_address:
            hint += f" at {leader_address}"
        super().__init__(f"not the leader: {hint}")


class ProposalDropped(RaftError):
    """The proposal was refused without being appended (node stopped, leadership transfer under way...)."""


class LogCompacted(RaftError):
    """The requested log index lies below the first index still held (it is covered by a snapshot).

    etcd-raft's ErrCompacted. Named apart from :class:`raftkv.errors.Compacted` (a KV revision that is gone).
    """


class EntryUnavailable(RaftError):
    """The requested log index lies beyond the last index of the log (etcd-raft's ErrUnavailable)."""


class InvariantViolation(RaftError):
    """A rule that must always hold did not: a bug in raftkv, never a user error."""


def invariant(condition: bool, message: str) -> None:
    """Raise :class:`InvariantViolation` when ``condition`` is false (also under ``python -O``)."""
    if not condition:
        _fail(message)


def _fail(message: str) -> NoReturn:
    raise InvariantViolation(message)
