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
    PERMISSION_DENIED = "permission_denied"
    """The user's roles do not give it the permission the command needs (etcd's ``permission denied``); nothing
    was applied."""
    USER_EMPTY = "user_empty"
    """Authentication is on and the request names no user: authenticate first (etcd's ``user name is
    empty``)."""
    AUTH_FAILED = "auth_failed"
    """Wrong user name or password (etcd's ``authentication failed, invalid user ID or password``)."""
    INVALID_TOKEN = "invalid_token"
    """The request's token is not one this cluster issued, or it expired, or its user changed since (etcd's
    ``invalid auth token``): authenticate again."""
    AUTH_NOT_ENABLED = "auth_not_enabled"
    """Authenticate while authentication is off (etcd's ``authentication is not enabled``)."""
    USER_EXISTS = "user_exists"
    """etcd's ``user name already exists``."""
    USER_NOT_FOUND = "user_not_found"
    """etcd's ``user name not found``."""
    ROLE_EXISTS = "role_exists"
    """etcd's ``role name already exists``."""
    ROLE_NOT_FOUND = "role_not_found"
    """etcd's ``role name not found``."""
    ROLE_NOT_GRANTED = "role_not_granted"
    """etcd's ``role is not granted to the user``."""
    PERMISSION_NOT_GRANTED = "permission_not_granted"
    """etcd's ``permission is not granted to the role``."""
    ROOT_USER_NOT_EXIST = "root_user_not_exist"
    """Enabling authentication needs a user ``root`` (etcd's ``root user does not exist``)."""
    ROOT_ROLE_NOT_EXIST = "root_role_not_exist"
    """... and that user needs role ``root`` (etcd's ``root user does not have root role``)."""
    INVALID_AUTH_MGMT = "invalid_auth_mgmt"
    """A change that would lock everyone out while authentication is on: deleting user ``root``, its role
    ``root`` or that role (etcd's ``invalid auth management``)."""


class KVError(RaftError):
    """Base class of every exception the key-value package raises on purpose (re-exported by ``raftkv.errors``)."""


class CommandError(KVError, ValueError):
    """A command (or result) that cannot be built or decoded: invalid fields, unknown tag, garbage bytes."""


class SnapshotError(KVError):
    """Bytes handed to ``restore`` are not a snapshot this version understands."""


class LimitExceeded(KVError):
    """A request over one of the node's limits; the message names the limit and the flag that sets it.
    Retrying the same request will not help: make it smaller, or raise the limit on every node."""


class AuthError(KVError):
    """A request refused by authentication or authorization; ``code`` is the :class:`ErrorCode` (user empty,
    invalid token, wrong password, permission denied...), the message says what to do."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code = code
        super().__init__(message)


class PermissionDenied(AuthError):
    """The user's roles do not allow this request (etcd's ``permission denied``)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.PERMISSION_DENIED, message)


class InvalidToken(AuthError):
    """The request's token does not check out (expired, its user changed, another cluster's): the client
    authenticates again by itself when it has the password."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_TOKEN, message)


def auth_error(code: ErrorCode, message: str) -> AuthError:
    """The exception of an auth ``ErrorResult`` code."""
    if code == ErrorCode.PERMISSION_DENIED:
        return PermissionDenied(message)
    if code == ErrorCode.INVALID_TOKEN:
        return InvalidToken(message)
    return AuthError(code, message)


AUTH_CODES = frozenset(
    {
        ErrorCode.PERMISSION_DENIED,
        ErrorCode.USER_EMPTY,
        ErrorCode.AUTH_FAILED,
        ErrorCode.INVALID_TOKEN,
        ErrorCode.AUTH_NOT_ENABLED,
        ErrorCode.USER_EXISTS,
        ErrorCode.USER_NOT_FOUND,
        ErrorCode.ROLE_EXISTS,
        ErrorCode.ROLE_NOT_FOUND,
        ErrorCode.ROLE_NOT_GRANTED,
        ErrorCode.PERMISSION_NOT_GRANTED,
        ErrorCode.ROOT_USER_NOT_EXIST,
        ErrorCode.ROOT_ROLE_NOT_EXIST,
        ErrorCode.INVALID_AUTH_MGMT,
    }
)
"""The ``ErrorResult`` codes of authentication and of the auth store's rules (:class:`AuthError` on a client)."""


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
