"""Typed errors of the durable storage layer.

Theory of operation
-------------------
Every failure the storage layer reports on purpose is a :class:`StorageError`; each message is one line that
says what is wrong, where (file and offset when there is one) and what the operator should do. Three kinds:

* **Corruption** (:class:`CorruptLogError`, :class:`CorruptSnapshotError`): bytes on disk that were once
  written completely no longer verify. The storage refuses to open rather than silently dropping data that may
  be committed; the fix is operational (restore or wipe the node and let it rejoin).
* **I/O failure** (:class:`StorageIOError`, and :class:`DiskFullError` for ``ENOSPC``/``EDQUOT``): an
  ``OSError`` from a write, a truncate or an fsync. The call that failed had no effect on the in-memory view,
  everything written before it is intact, and the same call can be retried once the cause is gone.
* **Misuse** (:class:`StorageInUseError`, :class:`StorageClosedError`): another process holds the directory,
  or the object was closed.
* **Format** (:class:`UnsupportedFormatError`): a file written by another raftkv release, in a format this one
  does not read. Nothing is read past the version check and nothing is changed or dropped.

Precondition violations by the caller (appending out of range, compacting past the end) are bugs, not storage
errors: they raise :class:`raftkv.raft.errors.InvariantViolation` like the in-memory storage does.
"""

from __future__ import annotations

import errno
import os

from raftkv.raft.errors import RaftError

_WHAT_TO_DO_LOG = (
    "restore this node's data directory from a backup, or wipe it and let the node rejoin the cluster "
    "(a leader will send it a snapshot); committed data on this node is not silently dropped"
)


class StorageError(RaftError):
    """Base class of every error the storage layer raises on purpose (re-exported by ``raftkv.errors``)."""


class CorruptLogError(StorageError):
    """A write-ahead log record that was completely written no longer verifies (or a segment is missing).

    ``path`` names the segment file and ``offset`` the byte offset of the bad record in it.
    """

    def __init__(self, path: str | os.PathLike[str], offset: int, problem: str) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        self.problem = problem
        super().__init__(
            f"corrupt write-ahead log: {self.path} at offset {offset}: {problem}; refusing to open: {_WHAT_TO_DO_LOG}"
        )


class CorruptSnapshotError(StorageError):
    """No usable snapshot: the newest is damaged and no older one can stand in for it (see the message)."""

    def __init__(self, path: str | os.PathLike[str], problem: str, what_to_do: str = _WHAT_TO_DO_LOG) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"unusable snapshot: {self.path}: {problem}; {what_to_do}")


class StorageIOError(StorageError):
    """An ``OSError`` during a write, truncate, fsync or rename; ``errno`` and ``path`` say which.

    The failed call left the in-memory view unchanged and lost nothing written before it; retry it once the
    cause is gone.
    """

    def __init__(self, operation: str, path: str | os.PathLike[str], cause: OSError) -> None:
        self.operation = operation
        self.path = os.fspath(path)
        self.errno = cause.errno
        self.cause = cause
        reason = os.strerror(cause.errno) if cause.errno is not None else str(cause)
        super().__init__(f"{operation} failed on {self.path}: {reason}; {self._advice()}")

    def _advice(self) -> str:
        return "nothing written before this call was lost; check the disk and retry"


class DiskFullError(StorageIOError):
    """The disk (or quota) is full. Nothing is lost; free space and retry the same call."""

    def _advice(self) -> str:
        return "nothing written before this call was lost; free disk space and retry"


_WHAT_TO_DO_FORMAT = (
    "this release does not convert it in place: keep running the release that wrote it, or wipe this node's "
    "data directory and restore it from a backup (`raftkv snapshot restore`) or rejoin the cluster "
    "(`raftkv member remove`, `member add`, then `raftkv serve --join`)"
)


class UnsupportedFormatError(StorageError):
    """A file in an on-disk format this release does not read (written by an older or a newer raftkv).

    ``path`` names the file, ``found`` and ``expected`` the format versions. Opening refuses rather than
    guessing: nothing was read past the version and nothing was changed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        what: str,
        found: int,
        expected: int,
        what_to_do: str = _WHAT_TO_DO_FORMAT,
    ) -> None:
        self.path = os.fspath(path)
        self.found = found
        self.expected = expected
        age = "an older" if found < expected else "a newer"
        super().__init__(
            f"{self.path} was written by {age} raftkv ({what} format {found}, this one reads {expected}); {what_to_do}"
        )


class StorageInUseError(StorageError):
    """Another process (or another open object in this process) holds the storage directory."""


class StorageClosedError(StorageError):
    """The storage object was closed."""


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def io_error(operation: str, path: str | os.PathLike[str], cause: OSError) -> StorageIOError:
    """The typed error for ``cause``: :class:`DiskFullError` for ENOSPC/EDQUOT, else :class:`StorageIOError`."""
    if cause.errno in _DISK_FULL:
        return DiskFullError(operation, path, cause)
    return StorageIOError(operation, path, cause)
