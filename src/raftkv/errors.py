"""Every error a raftkv user handles, in one hierarchy; each name is defined once.

Theory of operation
-------------------
:class:`RaftError` is the root of everything raftkv raises on purpose. The errors that pure layers raise are
defined there (the consensus core in ``raftkv.raft.errors``, the key-value state machine in
``raftkv.kv.errors``, durable storage in ``raftkv.storage.errors``) and re-exported here; the errors of the
runtime and the client are defined here. The client maps every wire error code to one of these classes in one
table (``raftkv.client.errors``) and never defines its own.

Expected outcomes are typed: a proposal on a follower raises :class:`NotLeader` (with the leader's id, and its
client address when known), a proposal refused before it was appended raises :class:`ProposalDropped` (safe to
retry), and one that did not complete in time raises :class:`Timeout` (it may or may not have been applied:
retry only if the command is idempotent, or use the KV store's exactly-once sessions).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from raftkv.raft.errors import (
    ConfigError,
    EntryUnavailable,
    InvariantViolation,
    LogCompacted,
    NotLeader,
    ProposalDropped,
    RaftError,
)
from raftkv.raft.membership import ConfChangeInProgress, InvalidConfChange
from raftkv.storage.errors import (
    CorruptLogError,
    CorruptSnapshotError,
    DiskFullError,
    StorageError,
    StorageInUseError,
    StorageIOError,
    UnsupportedFormatError,
)

if TYPE_CHECKING:
    from raftkv.kv.commands import TxnResult
    from raftkv.kv.errors import (
        CommandError,
        Compacted,
        FutureRevision,
        KVError,
        LeaseNotFound,
        LimitExceeded,
    )

_KV_ERRORS = (
    "AuthError",
    "CommandError",
    "Compacted",
    "FutureRevision",
    "InvalidToken",
    "KVError",
    "LeaseNotFound",
    "LimitExceeded",
    "AuthError",
    "InvalidToken",
    "PermissionDenied",
    "PermissionDenied",
)
"""Defined by the key-value state machine (``raftkv.kv.errors``); loaded on first use, so that an embedder of
the runtime who never touches the KV store does not import it."""


def __getattr__(name: str) -> Any:
    if name in _KV_ERRORS:
        return getattr(importlib.import_module("raftkv.kv.errors"), name)
    raise AttributeError(f"module 'raftkv.errors' has no attribute {name!r}")


class Timeout(RaftError):
    """The operation did not complete before its deadline; it may still take effect."""


class NodeFailed(RaftError):
    """The node stopped because of an unrecoverable error (e.g. its disk), or is not serving; the message says
    which."""


class Unavailable(RaftError):
    """No endpoint answered (or none leads) before the deadline. A write's outcome is unknown."""

    def __init__(self, message: str, last_error: str = "") -> None:
        super().__init__(message)
        self.last_error = last_error
        """What went wrong at the last attempt ("endpoint: why"), "" if unknown."""


class SessionExpired(RaftError):
    """The client's session expired (idle longer than its TTL); the write's outcome is unknown."""


class WatchCancelled(RaftError):
    """The server ended a watch (for example, the watcher fell too far behind); the message says why."""


class TxnFailed(RaftError):
    """``txn(..., require_success=True)``: the comparison did not hold; ``result`` holds the failure branch's."""

    def __init__(self, message: str, result: TxnResult) -> None:
        super().__init__(message)
        self.result = result


class WrongCluster(RaftError):
    """The node belongs to another cluster, or does not know the sender (a misconfigured endpoint)."""


class InvalidRequest(RaftError):
    """The node could not execute the request as sent (it does not decode, or this node does not run that
    service); retrying the same request will not help."""


class InternalError(RaftError):
    """A bug on the answering node; the message says what failed there."""


class BackupError(RaftError):
    """A backup cannot be taken, read or restored; the message is one line saying what and what to do."""


__all__ = [
    "BackupError",
    "CommandError",
    "Compacted",
    "ConfChangeInProgress",
    "ConfigError",
    "CorruptLogError",
    "CorruptSnapshotError",
    "DiskFullError",
    "EntryUnavailable",
    "FutureRevision",
    "InternalError",
    "InvalidConfChange",
    "InvalidRequest",
    "InvariantViolation",
    "KVError",
    "LeaseNotFound",
    "LimitExceeded",
    "LogCompacted",
    "NodeFailed",
    "NotLeader",
    "ProposalDropped",
    "RaftError",
    "SessionExpired",
    "StorageError",
    "StorageIOError",
    "StorageInUseError",
    "Timeout",
    "TxnFailed",
    "Unavailable",
    "UnsupportedFormatError",
    "WatchCancelled",
    "WrongCluster",
]
