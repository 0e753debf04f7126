"""The storage protocol under the state machine, and the in-memory backend.

Theory of operation
-------------------
The state machine (``machine.py``) owns every rule — revisions, versions, sessions, events; a backend only
stores three things and makes a batch of changes to them atomic:

* the key space: ``key -> KeyValue``, ordered by key, with range scans and counts;
* the session table: ``session_id -> SessionRecord``;
* :class:`Meta`: the store revision, the state machine's clock, and ``applied_index``, the last log index whose
  effects are included. Written in the same transaction as the data, so after a restart the state machine
  resumes exactly after the last batch that reached the backend and never applies an entry twice.

Writes go through a :class:`WriteTxn` from :meth:`Backend.begin`: one per applied batch, reading its own writes,
then :meth:`WriteTxn.commit` (all of it becomes visible and, for a durable backend, as durable as the backend
promises) or :meth:`WriteTxn.abort` (none of it happened). Reads outside ``apply`` use :meth:`Backend.read`, a
consistent view of the last committed state. One write transaction at a time; callers are single-threaded.

:class:`MemoryBackend` keeps a dict and a sorted key list (``bisect``: O(log n) lookups of a range's bounds,
O(n) memmove on creating or deleting a key, fine for the simulator and tests). It applies writes in place and
keeps an undo log, so commit is free and abort replays the log backwards.

``raftkv.storage.kv_lmdb.LMDBBackend`` is the durable implementation; ``tests/kv/test_backend_conformance.py``
runs one suite against both.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Protocol

import msgspec

from raftkv.kv.commands import KeyValue
from raftkv.kv.sessions import SessionRecord
from raftkv.raft.errors import invariant


class Meta(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The state machine's scalars, stored with the data. A fresh backend holds ``Meta()``."""

    applied_index: int = 0
    revision: int = 0
    clock_ms: int = 0


class ReadView(Protocol):
    """A consistent view of the store. ``end is None`` means "no upper bound" in scans and counts."""

    def meta(self) -> Meta: ...

    def get(self, key: bytes) -> KeyValue | None: ...

    def scan(self, start: bytes, end: bytes | None, limit: int = 0, keys_only: bool = False) -> list[KeyValue]:
        """Pairs with ``start <= key < end`` in key order, at most ``limit`` of them (0: all).

        With ``keys_only`` the values are ``b""`` (the bookkeeping fields are kept).
        """
        ...

    def count(self, start: bytes, end: bytes | None) -> int:
        """How many keys satisfy ``start <= key < end``."""
        ...

    def sessions(self) -> list[SessionRecord]:
        """Every stored session, in id order."""
        ...


class WriteTxn(ReadView, Protocol):
    """A read-your-writes transaction; exactly one of :meth:`commit` / :meth:`abort` ends it."""

    def put(self, kv: KeyValue) -> None: ...

    def delete(self, key: bytes) -> None:
        """Remove ``key``, which must exist."""
        ...

    def put_session(self, record: SessionRecord) -> None: ...

    def delete_session(self, session_id: int) -> None:
        """Remove a session, which must exist."""
        ...

    def set_meta(self, meta: Meta) -> None: ...

    def clear(self) -> None:
        """Remove every key and session and reset the meta (a snapshot restore starts with this)."""
        ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class Backend(Protocol):
    def read(self) -> AbstractContextManager[ReadView]:
        """A consistent view of the last committed state, valid inside the ``with`` block."""
        ...

    def begin(self) -> WriteTxn:
        """Start the (only) write transaction."""
        ...

    def close(self) -> None:
        """Release resources; idempotent."""
        ...


# --- the in-memory backend --------------------------------------------------------------------------------


class MemoryBackend:
    """Dict + sorted key list, with an undo log for abort. Not thread-safe; pure."""

    __slots__ = ("_data", "_keys", "_meta", "_sessions", "_txn")

    def __init__(self) -> None:
        self._data: dict[bytes, KeyValue] = {}
        self._keys: list[bytes] = []
        """Every key of ``_data``, sorted. Invariant: ``set(_keys) == set(_data)`` and strictly increasing."""
        self._sessions: dict[int, SessionRecord] = {}
        self._meta = Meta()
        self._txn: _MemoryTxn | None = None

    @contextmanager
    def _view(self) -> Iterator[ReadView]:
        invariant(self._txn is None, "MemoryBackend.read() while a write transaction is open")
        yield _MemoryView(self)

    def read(self) -> AbstractContextManager[ReadView]:
        return self._view()

    def begin(self) -> WriteTxn:
        invariant(self._txn is None, "MemoryBackend.begin() while a write transaction is open")
        self._txn = _MemoryTxn(self)
        return self._txn

    def close(self) -> None:
        pass


class _MemoryView:
    __slots__ = ("_b",)

    def __init__(self, backend: MemoryBackend) -> None:
        self._b = backend

    def meta(self) -> Meta:
        return self._b._meta

    def get(self, key: bytes) -> KeyValue | None:
        return self._b._data.get(key)

    def _bounds(self, start: bytes, end: bytes | None) -> tuple[int, int]:
        keys = self._b._keys
        lo = bisect_left(keys, start)
        hi = len(keys) if end is None else max(lo, bisect_left(keys, end, lo))
        return lo, hi

    def scan(self, start: bytes, end: bytes | None, limit: int = 0, keys_only: bool = False) -> list[KeyValue]:
        lo, hi = self._bounds(start, end)
        if limit > 0:
            hi = min(hi, lo + limit)
        data = self._b._data
        kvs = [data[k] for k in self._b._keys[lo:hi]]
        if keys_only:
            return [KeyValue(kv.key, b"", kv.create_revision, kv.mod_revision, kv.version) for kv in kvs]
        return kvs

    def count(self, start: bytes, end: bytes | None) -> int:
        lo, hi = self._bounds(start, end)
        return hi - lo

    def sessions(self) -> list[SessionRecord]:
        s = self._b._sessions
        return [s[sid] for sid in sorted(s)]


class _MemoryTxn(_MemoryView):
    """Writes in place; ``_undo`` holds one closure per change that puts it back, run backwards by :meth:`abort`."""

    __slots__ = ("_undo",)

    def __init__(self, backend: MemoryBackend) -> None:
        super().__init__(backend)
        self._undo: list[Callable[[], None]] = []

    def _live(self) -> MemoryBackend:
        invariant(self._b._txn is self, "use of a finished MemoryBackend transaction")
        return self._b

    def put(self, kv: KeyValue) -> None:
        b = self._live()
        old = b._data.get(kv.key)
        self._undo.append(partial(_restore_kv, b, kv.key, old))
        if old is None:
            insort(b._keys, kv.key)
        b._data[kv.key] = kv

    def delete(self, key: bytes) -> None:
        b = self._live()
        old = b._data.pop(key, None)
        invariant(old is not None, f"delete of a missing key {key!r}")
        self._undo.append(partial(_restore_kv, b, key, old))
        keys = b._keys
        del keys[bisect_left(keys, key)]

    def put_session(self, record: SessionRecord) -> None:
        b = self._live()
        self._undo.append(partial(_restore_session, b, record.session_id, b._sessions.get(record.session_id)))
        b._sessions[record.session_id] = record

    def delete_session(self, session_id: int) -> None:
        b = self._live()
        old = b._sessions.pop(session_id, None)
        invariant(old is not None, f"delete of a missing session {session_id}")
        self._undo.append(partial(_restore_session, b, session_id, old))

    def set_meta(self, meta: Meta) -> None:
        b = self._live()
        self._undo.append(partial(_restore_meta, b, b._meta))
        b._meta = meta

    def clear(self) -> None:
        b = self._live()
        self._undo.append(partial(_restore_all, b, b._data, b._keys, b._sessions, b._meta))
        b._data, b._keys, b._sessions, b._meta = {}, [], {}, Meta()

    def commit(self) -> None:
        self._live()._txn = None
        self._undo.clear()

    def abort(self) -> None:
        b = self._live()
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        b._txn = None


def _restore_kv(b: MemoryBackend, key: bytes, old: KeyValue | None) -> None:
    present = key in b._data
    if old is None:
        if present:
            del b._data[key]
            del b._keys[bisect_left(b._keys, key)]
        return
    if not present:
        insort(b._keys, key)
    b._data[key] = old


def _restore_session(b: MemoryBackend, session_id: int, old: SessionRecord | None) -> None:
    if old is None:
        b._sessions.pop(session_id, None)
    else:
        b._sessions[session_id] = old


def _restore_all(
    b: MemoryBackend,
    data: dict[bytes, KeyValue],
    keys: list[bytes],
    sessions: dict[int, SessionRecord],
    meta: Meta,
) -> None:
    b._data, b._keys, b._sessions, b._meta = data, keys, sessions, meta


def _restore_meta(b: MemoryBackend, meta: Meta) -> None:
    b._meta = meta
