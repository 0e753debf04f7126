"""Typed errors of the key-value state machine.

Theory of operation
-------------------
Two kinds of failure, kept strictly apart:

* **Outcomes of a command** (a stale sequence number, an expired session, a malformed command found in the log)
  are *values*: :class:`~raftkv.kv.commands.ErrorResult` with an :class:`ErrorCode`. They never escape
  ``apply``, because every replica must reach the same state from the same log, including the bad entries.
* **Exceptions** are for callers outside the replicated path: :class:`CommandError` when encoding or decoding a
  command (a client building an invalid one, garbage bytes), :class:`Compacted` when a watch asks for history
  that is gone, :class:`SnapshotError` for an unreadable snapshot. A backend failure (disk full) raises from
  ``apply`` after the batch was rolled back; the runtime stops the node rather than diverge.
"""

from __future__ import annotations

from enum import StrEnum

from raftkv.raft.errors import RaftError


class ErrorCode(StrEnum):
    """The ``code`` of an :class:`~raftkv.kv.commands.ErrorResult`: stable strings, safe to put on the wire."""

    INVALID_COMMAND = "invalid_command"
    """The log entry does not decode to a valid command (nothing was applied)."""
    STALE_REQUEST = "stale_request"
    """``Request.seq`` is below what the client said it already has replies for; its result is no longer kept."""
    SESSION_EXPIRED = "session_expired"
    """No live session has that id: it expired, was closed, or never existed. Open a new session."""
    TOO_MANY_PENDING = "too_many_pending"
    """The session already holds the results of ``MAX_PENDING_RESULTS`` requests the client has not acknowledged
    (it is not advancing ``first_incomplete``); the request was not applied."""
    COMPACTED = "compacted"
    """A read or a compaction at a revision that compaction has removed (``ErrorResult.revision``: the oldest
    revision held). etcd's ``mvcc: required revision has been compacted``."""
    LEASE_NOT_FOUND = "lease_not_found"
    """A put, revoke or keep-alive named a lease that does not exist (never granted, revoked, or expired).
    etcd's ``requested lease not found``."""
    LEASE_EXISTS = "lease_exists"
    """A grant asked for an id already in use. etcd's ``lease already exists``."""
    LIMIT_EXCEEDED = "limit_exceeded"
    """The request is over one of the node's limits (``--max-request-bytes``, ``--max-txn-ops``); the message
    names the limit and its flag. Nothing was proposed. etcd's ``request is too large`` and ``too many
    operations in txn request``."""
    FUTURE_REVISION = "future_revision"
    """A read or a compaction at a revision the store has not reached (``ErrorResult.revision``: the store's
    revision). etcd's ``mvcc: required revision is a future revision``."""


class KVError(RaftError):
    """Base class of every exception the key-value package raises on purpose (re-exported by ``raftkv.errors``)."""


class CommandError(KVError, ValueError):
    """A command (or result) that cannot be built or decoded: invalid fields, unknown tag, garbage bytes."""


class SnapshotError(KVError):
    """Bytes handed to ``restore`` are not a snapshot this version understands."""


class LimitExceeded(KVError):
    """A request over one of the node's limits; the message names the limit and the flag that sets it.
    Retrying the same request will not help: make it smaller, or raise the limit on every node."""


class Compacted(KVError):
    """A read or watch asked for a revision older than the retained history; ``oldest_revision`` is the oldest
    still held.

    The one ``Compacted`` of the public API (``raftkv.Compacted``): the client raises this same class when a
    node answers ``compacted``. A compacted *log index* is the core's :class:`~raftkv.raft.errors.LogCompacted`.

    A watcher that gets this must re-read the keys it cares about (at some revision ``r``) and watch again from
    ``r + 1``: the events in between are gone (etcd's ``ErrCompacted``).
    """

    def __init__(self, requested_revision: int, oldest_revision: int) -> None:
        self.requested_revision = requested_revision
        self.oldest_revision = oldest_revision
        super().__init__(
            f"revision {requested_revision} is compacted; the oldest revision still held is {oldest_revision}"
        )


class FutureRevision(KVError):
    """A read asked for a revision the store has not reached yet (``current_revision``)."""

    def __init__(self, requested_revision: int, current_revision: int) -> None:
        self.requested_revision = requested_revision
        self.current_revision = current_revision
        super().__init__(f"revision {requested_revision} is in the future: the store is at revision {current_revision}")


class LeaseNotFound(KVError):
    """A lease that does not exist: never granted, revoked, or expired (etcd's ``requested lease not found``)."""

    def __init__(self, lease_id: int, message: str = "") -> None:
        self.lease_id = lease_id
        super().__init__(message or f"lease {lease_id} not found: it was never granted, or was revoked or expired")
