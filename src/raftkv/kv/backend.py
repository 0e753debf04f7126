"""The storage protocol under the state machine, and the in-memory backend.

Theory of operation
-------------------
The state machine (``machine.py``) owns every rule — revisions, versions, sessions, events; a backend only
stores four things and makes a batch of changes to them atomic:

* the key space: ``key -> KeyValue``, the current value of each live key, ordered by key, with range scans and
  counts (reads at the current revision, the common case, touch nothing else);
* the history (etcd's MVCC): every write as a :class:`HistoryRecord` at its revision ``(main, sub)`` — the
  key-value written, or a tombstone for a delete — until compaction removes it. It is indexed twice: by
  revision (watches replay it in order) and by key, then revision (a read at a past revision finds, per key,
  the newest record at or below it);
* the session table: ``session_id -> SessionRecord``;
* the lease table (etcd's leases): ``lease_id -> LeaseRecord``, and which live keys each lease holds. The
  backend keeps that attachment itself, from the ``lease`` of each key's current value: a write that changes a
  key's lease (or deletes the key) moves it;
* the auth store (users, roles, permissions: ``auth.py``) as one encoded blob, rewritten whole on each of its
  (rare) changes;
* :class:`Meta`: the store revision, the compaction revision, the state machine's clock, and
  ``applied_index``, the last log index whose effects are included. Written in the same transaction as the
  data, so after a restart the state machine resumes exactly after the last batch that reached the backend and
  never applies an entry twice.

History invariants (both backends; ``tests/kv/test_backend_conformance.py`` holds them to a model):

* the newest record of every key with a current value is a put of exactly that value; a key without one has
  no records, or a tombstone as its newest;
* records of one key are in increasing revision order, and revisions only grow (the state machine's
  discipline: each write gets a revision above every earlier one).

Compaction (etcd's ``Compact``). Compacting at revision ``C`` promises that reads at any revision ``>= C`` and
watches from any revision ``>= C`` are answered exactly as before; only older ones are refused. So a record
may go once it cannot be the newest record at or below any revision ``>= C`` and is older than ``C``:
:func:`garbage_from` gives, for each record, the smallest compaction revision that makes it garbage (a put
from its successor's revision on, a tombstone from the revision after its own). The *logical* compaction
(``Meta.compact_revision``, which reads check) happens at once and is what every replica agrees on; the
physical one, :meth:`WriteTxn.compact`, runs in bounded steps and costs the history written since the last
compaction, never what it keeps. It walks the records in revision order from where the last compaction
finished (the *scan position*, a per-node, physical fact kept outside ``Meta``): every record at or below the
compaction revision ``C`` makes its predecessor garbage if ``garbage_from`` says so, and is garbage itself if it
is a tombstone older than ``C``. Records older than the previous compaction revision were settled by it (their
predecessors' garbage revisions are at most their own), so a finished compaction at ``C`` leaves the position at
``(C, 0)``. Writes then cost no garbage bookkeeping at all.

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
    """The state machine's scalars, stored with the data. A fresh backend holds ``Meta()``.

    ``compact_revision``: reads below it are refused (``Compacted``); 0 until the first compaction."""

    applied_index: int = 0
    revision: int = 0
    clock_ms: int = 0
    compact_revision: int = 0


class LeaseRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A lease: its ``id`` and granted ``ttl_s``. When it expires is the leader's business, not stored state
    (``raftkv.kv.lessor``); revoking it deletes its keys."""

    id: int
    ttl_s: int


class HistoryRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One write in the history: ``kv`` as written at revision ``(main, sub)`` (``kv.mod_revision == main``), or,
    for a delete, a tombstone whose ``kv`` holds only the key and ``mod_revision``.

    ``sub`` orders the writes of one revision (the keys of a delete-range, the ops of a transaction), as in
    etcd's ``revision{main, sub}``."""

    main: int
    sub: int
    kv: KeyValue
    tombstone: bool = False

    @property
    def rev(self) -> tuple[int, int]:
        return (self.main, self.sub)


def tombstone(key: bytes, main: int, sub: int) -> HistoryRecord:
    return HistoryRecord(main, sub, KeyValue(key, b"", 0, main, 0), True)


def garbage_from(record: HistoryRecord, successor: HistoryRecord | None) -> int | None:
    """The smallest compaction revision at which ``record`` is garbage (``successor`` is the next record of the
    same key, if any); None: never (the newest put of a live key).

    A put is garbage once its successor is at or below the compaction revision ``C``: no read at ``>= C`` can
    see it, and it is older than ``C`` (a successor in the same revision makes it garbage only from the next
    one, so that a watch from that revision still gets both). A tombstone is garbage once it is older than
    ``C``: a read at ``>= C`` finds nothing for the key either way, once the puts before it are gone too
    (which are garbage no later than it is)."""
    if record.tombstone:
        return record.main + 1
    if successor is None:
        return None
    return successor.main if successor.main > record.main else record.main + 1


_RECORD_ENCODER = msgspec.msgpack.Encoder()


def encode_record(record: HistoryRecord) -> bytes:
    """A record's bytes: what LMDB stores, and what a snapshot image carries (the same on every node)."""
    return _RECORD_ENCODER.encode(record)


def retained(records: list[HistoryRecord], compact_revision: int) -> list[HistoryRecord]:
    """The records of one key (oldest first) that compaction at ``compact_revision`` keeps."""
    out = []
    for k, r in enumerate(records):
        due = garbage_from(r, records[k + 1] if k + 1 < len(records) else None)
        if due is None or due > compact_revision:
            out.append(r)
    return out


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

    def leases(self) -> list[LeaseRecord]:
        """Every lease, in id order."""
        ...

    def get_lease(self, lease_id: int) -> LeaseRecord | None: ...

    def auth(self) -> bytes:
        """The auth store's encoded state (``b""``: never written)."""
        ...

    def lease_keys(self, lease_id: int) -> list[bytes]:
        """The live keys attached to ``lease_id``, in key order."""
        ...

    # --- the history ---

    def get_at(self, key: bytes, revision: int) -> KeyValue | None:
        """``key`` as it was at ``revision`` (None: absent then), from the history."""
        ...

    def scan_at(
        self, start: bytes, end: bytes | None, revision: int, limit: int = 0, keys_only: bool = False
    ) -> list[KeyValue]:
        """Like :meth:`scan`, as the range was at ``revision``, from the history."""
        ...

    def count_at(self, start: bytes, end: bytes | None, revision: int) -> int:
        """How many keys in the range were live at ``revision``."""
        ...

    def history(self, main: int, sub: int = 0, limit: int = 0) -> list[HistoryRecord]:
        """Records at revisions ``>= (main, sub)`` in revision order, at most ``limit`` (0: all)."""
        ...

    def previous(self, record: HistoryRecord) -> HistoryRecord | None:
        """The record of the same key just before ``record``, if it is still held."""
        ...

    def key_histories(self, start: bytes, limit: int) -> list[list[HistoryRecord]]:
        """The records of each key ``>= start`` that has any, key by key in key order (each oldest first), for
        at most ``limit`` keys."""
        ...

    def history_size(self) -> int:
        """How many records the history holds (garbage not yet removed included)."""
        ...

    def history_image(self, start: tuple[int, int], limit: int) -> tuple[list[bytes], tuple[int, int] | None]:
        """For a snapshot: the encoded records (``encode_record``) at revisions ``>= start`` that compaction at
        ``meta().compact_revision`` keeps, in revision order, from at most ``limit`` records read; and where to
        continue (None: the end). Garbage that physical compaction has not removed yet is left out, so every
        node writes the same image."""
        ...


class WriteTxn(ReadView, Protocol):
    """A read-your-writes transaction; exactly one of :meth:`commit` / :meth:`abort` ends it."""

    def put(self, kv: KeyValue, sub: int = 0) -> None:
        """Make ``kv`` its key's current value, written at revision ``(kv.mod_revision, sub)``."""
        ...

    def delete(self, key: bytes, revision: int, sub: int = 0) -> None:
        """Remove ``key``, which must exist, at revision ``(revision, sub)`` (a tombstone in the history)."""
        ...

    def restore(self, record: HistoryRecord) -> None:
        """Put a record from a snapshot back (each key's records in order): the history and the current value
        follow it, as if it had just been written."""
        ...

    def compact(self, revision: int, budget: int) -> bool:
        """Physical compaction at ``revision``: examine at most ``budget`` records from the scan position,
        removing the garbage they reveal; True when none is left for ``revision``."""
        ...

    def put_session(self, record: SessionRecord) -> None: ...

    def put_lease(self, record: LeaseRecord) -> None: ...

    def delete_lease(self, lease_id: int) -> None:
        """Remove a lease, which must exist (its keys are deleted first, which detaches them)."""
        ...

    def delete_session(self, session_id: int) -> None:
        """Remove a session, which must exist."""
        ...

    def set_meta(self, meta: Meta) -> None: ...

    def set_auth(self, data: bytes) -> None:
        """Replace the auth store's encoded state."""
        ...

    def clear(self) -> None:
        """Remove every key, record and session and reset the meta (a snapshot restore starts with this)."""
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


Rev = tuple[int, int]


class MemoryBackend:
    """Dicts + sorted lists, with an undo log for abort. Not thread-safe; pure."""

    __slots__ = (
        "_auth",
        "_by_key",
        "_data",
        "_hist",
        "_hist_keys",
        "_keys",
        "_lease_keys",
        "_leases",
        "_meta",
        "_revs",
        "_scan",
        "_sessions",
        "_txn",
    )

    def __init__(self) -> None:
        self._data: dict[bytes, KeyValue] = {}
        self._keys: list[bytes] = []
        """Every key of ``_data``, sorted. Invariant: ``set(_keys) == set(_data)`` and strictly increasing."""
        self._hist: dict[Rev, HistoryRecord] = {}
        self._revs: list[Rev] = []
        """Every revision of ``_hist``, sorted."""
        self._by_key: dict[bytes, list[Rev]] = {}
        """Each key's revisions in ``_hist``, sorted; no empty lists."""
        self._hist_keys: list[bytes] = []
        """Every key of ``_by_key``, sorted."""
        self._scan: Rev = (0, 0)
        """Physical compaction's scan position (see the module docstring)."""
        self._sessions: dict[int, SessionRecord] = {}
        self._leases: dict[int, LeaseRecord] = {}
        self._lease_keys: dict[int, set[bytes]] = {}
        """Invariant: ``k in _lease_keys[l]`` iff ``_data[k].lease == l != 0``; no empty sets."""
        self._auth = b""
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


def _strip(kv: KeyValue) -> KeyValue:
    return KeyValue(kv.key, b"", kv.create_revision, kv.mod_revision, kv.version, kv.lease)


class _MemoryView:
    __slots__ = ("_b",)

    def __init__(self, backend: MemoryBackend) -> None:
        self._b = backend

    def meta(self) -> Meta:
        return self._b._meta

    def get(self, key: bytes) -> KeyValue | None:
        return self._b._data.get(key)

    @staticmethod
    def _bounds(keys: list[bytes], start: bytes, end: bytes | None) -> tuple[int, int]:
        lo = bisect_left(keys, start)
        hi = len(keys) if end is None else max(lo, bisect_left(keys, end, lo))
        return lo, hi

    def scan(self, start: bytes, end: bytes | None, limit: int = 0, keys_only: bool = False) -> list[KeyValue]:
        lo, hi = self._bounds(self._b._keys, start, end)
        if limit > 0:
            hi = min(hi, lo + limit)
        data = self._b._data
        kvs = [data[k] for k in self._b._keys[lo:hi]]
        return [_strip(kv) for kv in kvs] if keys_only else kvs

    def count(self, start: bytes, end: bytes | None) -> int:
        lo, hi = self._bounds(self._b._keys, start, end)
        return hi - lo

    def sessions(self) -> list[SessionRecord]:
        s = self._b._sessions
        return [s[sid] for sid in sorted(s)]

    def leases(self) -> list[LeaseRecord]:
        leases = self._b._leases
        return [leases[i] for i in sorted(leases)]

    def get_lease(self, lease_id: int) -> LeaseRecord | None:
        return self._b._leases.get(lease_id)

    def lease_keys(self, lease_id: int) -> list[bytes]:
        return sorted(self._b._lease_keys.get(lease_id, ()))

    def auth(self) -> bytes:
        return self._b._auth

    def _at(self, key: bytes, revision: int) -> HistoryRecord | None:
        revs = self._b._by_key.get(key)
        if not revs:
            return None
        k = bisect_left(revs, (revision + 1, 0))
        return self._b._hist[revs[k - 1]] if k else None

    def get_at(self, key: bytes, revision: int) -> KeyValue | None:
        r = self._at(key, revision)
        return None if r is None or r.tombstone else r.kv

    def scan_at(
        self, start: bytes, end: bytes | None, revision: int, limit: int = 0, keys_only: bool = False
    ) -> list[KeyValue]:
        keys = self._b._hist_keys
        lo, hi = self._bounds(keys, start, end)
        out: list[KeyValue] = []
        for key in keys[lo:hi]:
            kv = self.get_at(key, revision)
            if kv is not None:
                out.append(_strip(kv) if keys_only else kv)
                if len(out) == limit:
                    break
        return out

    def count_at(self, start: bytes, end: bytes | None, revision: int) -> int:
        return len(self.scan_at(start, end, revision, keys_only=True))

    def history(self, main: int, sub: int = 0, limit: int = 0) -> list[HistoryRecord]:
        revs = self._b._revs
        lo = bisect_left(revs, (main, sub))
        hi = len(revs) if limit <= 0 else min(len(revs), lo + limit)
        hist = self._b._hist
        return [hist[r] for r in revs[lo:hi]]

    def previous(self, record: HistoryRecord) -> HistoryRecord | None:
        revs = self._b._by_key.get(record.kv.key, [])
        k = bisect_left(revs, record.rev)
        return self._b._hist[revs[k - 1]] if k else None

    def key_histories(self, start: bytes, limit: int) -> list[list[HistoryRecord]]:
        keys = self._b._hist_keys
        lo = bisect_left(keys, start)
        hist, by_key = self._b._hist, self._b._by_key
        return [[hist[r] for r in by_key[k]] for k in keys[lo : lo + limit]]

    def history_size(self) -> int:
        return len(self._b._hist)

    def history_image(self, start: Rev, limit: int) -> tuple[list[bytes], Rev | None]:
        b = self._b
        compact = b._meta.compact_revision
        revs = b._revs
        lo = bisect_left(revs, start)
        following = revs[lo + limit] if lo + limit < len(revs) else None
        out = []
        for rev in revs[lo : lo + limit]:
            record = b._hist[rev]
            if record.main < compact and b._scan < (compact, 0):
                due = garbage_from(record, self._after(record))
                if due is not None and due <= compact:
                    continue  # garbage physical compaction has not removed yet
            out.append(encode_record(record))
        return out, following

    def _after(self, record: HistoryRecord) -> HistoryRecord | None:
        revs = self._b._by_key[record.kv.key]
        k = bisect_left(revs, record.rev) + 1
        return self._b._hist[revs[k]] if k < len(revs) else None


class _MemoryTxn(_MemoryView):
    """Writes in place; ``_undo`` holds one closure per change that puts it back, run backwards by :meth:`abort`."""

    __slots__ = ("_undo",)

    def __init__(self, backend: MemoryBackend) -> None:
        super().__init__(backend)
        self._undo: list[Callable[[], None]] = []

    def _live(self) -> MemoryBackend:
        invariant(self._b._txn is self, "use of a finished MemoryBackend transaction")
        return self._b

    def _set_current(self, key: bytes, kv: KeyValue | None) -> None:
        b = self._b
        old = b._data.get(key)
        old_lease, new_lease = (old.lease if old else 0), (kv.lease if kv else 0)
        if old_lease != new_lease:
            if old_lease:
                self._detach(old_lease, key)
            if new_lease:
                self._attach(new_lease, key)
        self._undo.append(partial(_restore_kv, b, key, old))
        if kv is None:
            if old is not None:
                del b._data[key]
                del b._keys[bisect_left(b._keys, key)]
            return
        if old is None:
            insort(b._keys, key)
        b._data[key] = kv

    def _record(self, record: HistoryRecord) -> None:
        b = self._b
        key, rev = record.kv.key, record.rev
        revs = b._by_key.get(key)
        last = b._hist[revs[-1]] if revs else None
        invariant(last is None or last.rev < rev, f"history of {key!r} out of order: {rev} after {last}")
        invariant(rev not in b._hist, f"two records at revision {rev}")
        b._hist[rev] = record
        insort(b._revs, rev)
        if revs is None:
            b._by_key[key] = [rev]
            insort(b._hist_keys, key)
        else:
            revs.append(rev)
        self._undo.append(partial(_unrecord, b, record))

    def put(self, kv: KeyValue, sub: int = 0) -> None:
        self._live()
        self._set_current(kv.key, kv)
        self._record(HistoryRecord(kv.mod_revision, sub, kv))

    def delete(self, key: bytes, revision: int, sub: int = 0) -> None:
        self._live()
        invariant(key in self._b._data, f"delete of a missing key {key!r}")
        self._set_current(key, None)
        self._record(tombstone(key, revision, sub))

    def restore(self, record: HistoryRecord) -> None:
        self._live()
        self._set_current(record.kv.key, None if record.tombstone else record.kv)
        self._record(record)

    def compact(self, revision: int, budget: int) -> bool:
        b = self._live()
        revs = b._revs
        k = bisect_left(revs, b._scan)
        doomed: list[Rev] = []
        examined = 0
        done = True
        while k < len(revs) and revs[k][0] <= revision:
            if examined == budget:
                done = False
                break
            record = b._hist[revs[k]]
            before = self.previous(record)
            if before is not None and not before.tombstone:
                due = garbage_from(before, record)
                if due is not None and due <= revision:
                    doomed.append(before.rev)
            if record.tombstone and record.main < revision:
                doomed.append(record.rev)
            examined += 1
            k += 1
        self._undo.append(partial(setattr, b, "_scan", b._scan))
        b._scan = (revision, 0) if done else revs[k]
        for rev in doomed:
            self._remove(rev)
        return done

    def _remove(self, rev: Rev) -> None:
        b = self._b
        record = b._hist.pop(rev)
        del b._revs[bisect_left(b._revs, rev)]
        key = record.kv.key
        revs = b._by_key[key]
        revs.remove(rev)
        if not revs:
            del b._by_key[key]
            del b._hist_keys[bisect_left(b._hist_keys, key)]
        self._undo.append(partial(_uncompact, b, record))

    def _attach(self, lease_id: int, key: bytes) -> None:
        keys = self._b._lease_keys.setdefault(lease_id, set())
        keys.add(key)
        self._undo.append(partial(_detach, self._b, lease_id, key))

    def _detach(self, lease_id: int, key: bytes) -> None:
        _detach(self._b, lease_id, key)
        self._undo.append(partial(_attach, self._b, lease_id, key))

    def put_lease(self, record: LeaseRecord) -> None:
        b = self._live()
        self._undo.append(partial(_restore_lease, b, record.id, b._leases.get(record.id)))
        b._leases[record.id] = record

    def delete_lease(self, lease_id: int) -> None:
        b = self._live()
        old = b._leases.pop(lease_id, None)
        invariant(old is not None, f"delete of a missing lease {lease_id}")
        self._undo.append(partial(_restore_lease, b, lease_id, old))

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

    def set_auth(self, data: bytes) -> None:
        b = self._live()
        self._undo.append(partial(_restore_auth, b, b._auth))
        b._auth = data

    def clear(self) -> None:
        b = self._live()
        saved = tuple(getattr(b, name) for name in _STATE)
        self._undo.append(partial(_restore_all, b, saved))
        b._data, b._keys, b._sessions, b._meta = {}, [], {}, Meta()
        b._hist, b._revs, b._by_key, b._hist_keys, b._scan = {}, [], {}, [], (0, 0)
        b._leases, b._lease_keys, b._auth = {}, {}, b""

    def commit(self) -> None:
        self._live()._txn = None
        self._undo.clear()

    def abort(self) -> None:
        b = self._live()
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        b._txn = None


_STATE = (
    "_auth",
    "_data",
    "_keys",
    "_sessions",
    "_meta",
    "_hist",
    "_revs",
    "_by_key",
    "_hist_keys",
    "_scan",
    "_leases",
    "_lease_keys",
)


def _attach(b: MemoryBackend, lease_id: int, key: bytes) -> None:
    b._lease_keys.setdefault(lease_id, set()).add(key)


def _detach(b: MemoryBackend, lease_id: int, key: bytes) -> None:
    keys = b._lease_keys[lease_id]
    keys.discard(key)
    if not keys:
        del b._lease_keys[lease_id]


def _restore_lease(b: MemoryBackend, lease_id: int, old: LeaseRecord | None) -> None:
    if old is None:
        b._leases.pop(lease_id, None)
    else:
        b._leases[lease_id] = old


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


def _unrecord(b: MemoryBackend, record: HistoryRecord) -> None:
    key, rev = record.kv.key, record.rev
    del b._hist[rev]
    del b._revs[bisect_left(b._revs, rev)]
    revs = b._by_key[key]
    revs.pop()
    if not revs:
        del b._by_key[key]
        del b._hist_keys[bisect_left(b._hist_keys, key)]


def _uncompact(b: MemoryBackend, record: HistoryRecord) -> None:
    rev = record.rev
    b._hist[rev] = record
    insort(b._revs, rev)
    key = record.kv.key
    if key not in b._by_key:
        b._by_key[key] = []
        insort(b._hist_keys, key)
    insort(b._by_key[key], rev)


def _restore_session(b: MemoryBackend, session_id: int, old: SessionRecord | None) -> None:
    if old is None:
        b._sessions.pop(session_id, None)
    else:
        b._sessions[session_id] = old


def _restore_all(b: MemoryBackend, saved: tuple[object, ...]) -> None:
    for name, value in zip(_STATE, saved, strict=True):
        setattr(b, name, value)


def _restore_meta(b: MemoryBackend, meta: Meta) -> None:
    b._meta = meta


def _restore_auth(b: MemoryBackend, data: bytes) -> None:
    b._auth = data
