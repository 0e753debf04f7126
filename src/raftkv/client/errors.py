"""The client's one table from wire error codes to the exception classes of :mod:`raftkv.errors`.

Theory of operation
-------------------
A node answers every request with an ``Error`` struct (``ErrorCode`` in ``raftkv/transport/raftkv.capnp``).
:data:`ERRORS` maps each code to the class a caller catches; :func:`check` raises it (``none`` raises nothing).
The client defines no exception class of its own: everything it raises comes from ``raftkv.errors``.

:data:`RETRYABLE_CODES` are the codes after which the outcome of a request is unknown but retrying the very same
request is safe (writes carry their session's sequence numbers): the retry loop tries again, possibly on another
node. ``notLeader`` is neither an error for the caller nor a plain retry: the loop follows the redirection at
once. Every other code is final and reaches the caller. Because the loop decides by class, a retryable class is
never produced by a final code (checked below, at import).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from raftkv.errors import (
    Compacted,
    ConfChangeInProgress,
    InternalError,
    InvalidConfChange,
    InvalidRequest,
    InvariantViolation,
    NodeFailed,
    NotLeader,
    ProposalDropped,
    RaftError,
    Timeout,
    WrongCluster,
)
from raftkv.kv.errors import InvalidToken, LimitExceeded, PermissionDenied
from raftkv.raft.types import NodeId

ERRORS: Final[Mapping[str, type[RaftError]]] = MappingProxyType(
    {
        "wrongCluster": WrongCluster,
        "unknownMember": WrongCluster,
        "wrongNode": WrongCluster,
        "malformed": InvalidRequest,
        "internal": InternalError,
        "stopped": NodeFailed,
        "notLeader": NotLeader,
        "timeout": Timeout,
        "proposalDropped": ProposalDropped,
        "compacted": Compacted,
        "invalid": InvalidRequest,
        "invalidConfChange": InvalidConfChange,
        "confChangeInProgress": ConfChangeInProgress,
        "unauthenticated": InvalidToken,
        "permissionDenied": PermissionDenied,
        "limitExceeded": LimitExceeded,
    }
)
"""Every wire ``ErrorCode`` but ``none``, and the ``raftkv.errors`` class a caller gets for it."""

RETRYABLE_CODES: Final = frozenset({"timeout", "proposalDropped", "stopped"})
"""Outcome unknown, the same request may be sent again (to the same node or another one)."""

RETRYABLE: Final[tuple[type[RaftError], ...]] = tuple(sorted({ERRORS[c] for c in RETRYABLE_CODES}, key=str))
"""The classes of :data:`RETRYABLE_CODES`: what the retry loop catches to try again."""

if any(issubclass(cls, RETRYABLE) for code, cls in ERRORS.items() if code not in RETRYABLE_CODES):
    raise InvariantViolation("a final wire error code maps to a retryable class: the retry loop cannot tell them apart")


def error_for(
    code: str,
    message: str,
    *,
    leader_id: int = 0,
    leader_address: str = "",
    requested_revision: int = 0,
    oldest_revision: int = 0,
) -> RaftError:
    """The exception for one wire error (``code`` other than ``none``)."""
    cls = ERRORS.get(code)
    if cls is NotLeader:
        return NotLeader(NodeId(leader_id), leader_address)
    if cls is Compacted:
        return Compacted(requested_revision, oldest_revision)
    if cls is None:  # a newer node's code: final, since nothing says a retry is safe
        return InternalError(f"unknown error code {code!r}: {message}")
    if cls in (InvalidToken, PermissionDenied, LimitExceeded):
        return cls(message or code)  # the node's message is the whole story (etcd's words)
    return cls(f"{code}: {message}" if message else code)


def check(error: Any, *, requested_revision: int = 0, oldest_revision: int = 0) -> None:
    """Raise the exception for a wire ``Error`` struct, if it holds one (``Compacted`` takes the revisions)."""
    code = str(error.code)
    if code == "none":
        return
    raise error_for(
        code,
        str(error.message),
        leader_id=int(error.leaderId),
        leader_address=str(error.leaderAddress),
        requested_revision=requested_revision,
        oldest_revision=oldest_revision,
    )
