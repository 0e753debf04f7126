"""The durable backend of the key-value state machine, on LMDB.

Theory of operation
-------------------
One LMDB environment per node, ``DATA_DIR/kv.lmdb`` (a directory holding ``data.mdb`` and ``lock.mdb``), with
seven named sub-databases:

* ``data``: user key -> 40-byte header ``>QQ (mod_revision, sub)`` (big-endian: the ``history`` key of the
  record holding this value) then ``<QQQ (create_revision, version, lease)``, followed by the value bytes: the
  current value of each live key. LMDB keeps keys sorted bytewise, which is exactly etcd's key order, so a
  range scan at the current revision is a cursor walk;
* ``history``: revision ``>QQ (main, sub)`` (big-endian, so key order is revision order) -> a 19-byte prefix
  ``<B tombstone><16 bytes: the revision of the key's record just before this one (a put or a tombstone), zeros
  if none><H key length>``, the user key, then the msgspec-encoded :class:`~raftkv.kv.backend.HistoryRecord` (the
  bytes a snapshot image carries). A watch from a past revision is a cursor walk from it. The prefixes chain each
  key's records newest to oldest;
* ``graves``: user key -> the 16-byte revision of its tombstone, for each key whose newest record is a delete
  (the head of its chain, as the ``data`` row is for a live key). A put that re-creates the key removes it.

  **The index is the chain** (etcd keeps a B-tree of every key's revisions in memory; layout 3 kept it on disk,
  as a ``dupsort`` table, and paid a random B-tree write on every put for it). A read at revision ``R`` starts
  at the key's head: a live key whose ``data`` row is at or below ``R`` is answered from that row alone (the
  common case: the key did not change after ``R``); otherwise it follows the prefixes back, one ``history`` get
  per record newer than ``R``, and a record missing from ``history`` means compaction removed it, which it only
  does to records no read at a retained revision can see. A range at ``R`` walks ``data`` and ``graves`` together
  in key order. So a read at ``R`` costs O(log n) plus one get for each later change of that key (bounded by the
  retention), and a put costs no index write at all: its predecessor is the ``data`` row the state machine just
  read (or, for a key that was deleted, its ``graves`` entry);
* physical compaction walks ``history`` from its scan position (``b"compact_scan"`` in ``meta``: a physical,
  per-node fact, outside :class:`~raftkv.kv.backend.Meta`), reading each record's predecessor from its prefix
  (see ``raftkv.kv.backend``), and drops a tombstone's ``graves`` entry with it;
* ``sessions``: session id (8 bytes, big-endian so that key order is id order) -> msgspec-encoded
  :class:`~raftkv.kv.sessions.SessionRecord`;
* ``leases``: lease id (8 bytes, big-endian) -> msgspec-encoded :class:`~raftkv.kv.backend.LeaseRecord`, and
  ``lease_keys``: lease id (8 bytes) + user key -> ``b""`` for each live key attached to a lease, kept by
  ``_write`` from the lease in the row it replaces and the one it writes (a put without a lease costs nothing
  more);
* ``meta``: ``b"meta"`` -> msgspec-encoded :class:`~raftkv.kv.backend.Meta` (applied index, revision, clock),
  ``b"auth"`` -> the auth store's encoded state (absent until its first change: no layout change), and
  ``b"format"`` -> the layout version.

Each applied batch is one LMDB write transaction, so the data, the sessions and ``Meta.applied_index`` change
together or not at all. Reads run in LMDB read transactions, which see a consistent committed snapshot and do
not block the writer (MVCC).

Durability. By default the environment is opened with ``sync=False`` (``MDB_NOSYNC``): a commit is a write into
the page cache, with no fsync. That is enough for correctness because the Raft write-ahead log is the source of
truth: every applied entry is durable in the WAL first, and after a restart the state machine resumes from the
``applied_index`` read back from LMDB, re-applying whatever later entries the page cache lost. The runtime's side
of the bargain: **never compact the Raft log past the ``applied_index`` that LMDB has made durable**, i.e. call
:meth:`LMDBBackend.sync` (an fsync of the environment) and only then compact up to the ``applied_index`` it
returns. A process crash (SIGKILL) loses nothing at all: the page cache survives the process. An operating-system
crash or power loss can lose the last transactions and, per LMDB's documentation of ``MDB_NOSYNC``, may even
damage the file on file systems that do not preserve write order. Where that risk is not acceptable, open with
``sync=True``: each commit then fsyncs the data pages (``MDB_NOMETASYNC`` for the meta page, which LMDB documents
as crash-safe, losing at most the last transaction); the cost is measured in ``docs/kv.md``.

Limits. ``map_size`` (16 GiB by default) is the most the file may grow to; the file is sparse and grows as
needed. A write that does not fit raises :class:`KVStoreFullError`, the batch is rolled back, and the node must
be restarted with a larger ``map_size`` (the data is intact). Keys longer than LMDB's maximum key size (511
bytes) never reach the backend: the state machine's commands refuse them on every node alike.

An environment must not be opened twice in one process (LMDB forbids it: its locks are per process); a second
:class:`LMDBBackend` on the same path raises :class:`~raftkv.storage.errors.StorageInUseError`.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Final

import lmdb
import msgspec

from raftkv.kv.backend import (
    HistoryRecord,
    LeaseRecord,
    Meta,
    ReadView,
    WriteTxn,
    encode_record,
    tombstone,
)
from raftkv.kv.commands import KeyValue
from raftkv.kv.keys import MAX_KEY_BYTES
from raftkv.kv.sessions import SessionRecord
from raftkv.raft.errors import invariant
from raftkv.storage.errors import StorageClosedError, StorageError, StorageInUseError

FILE_NAME: Final = "kv.lmdb"
"""The environment's directory inside a node's data dir."""

DEFAULT_MAP_SIZE: Final = 16 << 30
"""16 GiB of address space; the file only grows as data is written."""

_FORMAT: Final = b"raftkv-kv-lmdb/4"
"""2: sessions keep a window of results; 3: multi-version history, leases; 4: the history's prefixes chain each
key's records and ``graves`` heads deleted keys' chains, instead of the ``key_revs`` index (3 is converted on
open: :func:`_upgrade_from_3`)."""
_LAYOUT_3: Final = b"raftkv-kv-lmdb/3"
_HEADER_REST: Final = struct.Struct("<QQQ")  # create_revision, version, lease; after the 16-byte revision
_HEADER_SIZE: Final = 16 + _HEADER_REST.size
_META_KEY: Final = b"meta"
_AUTH_KEY: Final = b"auth"
_FORMAT_KEY: Final = b"format"

_REV: Final = struct.Struct(">QQ")
_SCAN_KEY: Final = b"compact_scan"
_PREFIX: Final = struct.Struct("<B16sH")
_NO_REV: Final = bytes(16)

_ENCODER: Final = msgspec.msgpack.Encoder()
_META_DECODER: Final = msgspec.msgpack.Decoder(Meta)
_RECORD_DECODER: Final = msgspec.msgpack.Decoder(HistoryRecord)
_LEASE_DECODER: Final = msgspec.msgpack.Decoder(LeaseRecord)
_SESSION_DECODER: Final = msgspec.msgpack.Decoder(SessionRecord)

_open_paths: set[str] = set()
"""Real paths of the environments open in this process (LMDB must not open one twice)."""


class KVBackendError(StorageError):
    """LMDB refused an operation; the message names the environment and LMDB's reason."""


class KVStoreFullError(KVBackendError):
    """The environment reached its ``map_size``. The failed batch was rolled back; the data is intact."""


def _session_key(session_id: int) -> bytes:
    return session_id.to_bytes(8, "big")


def _decode_kv(key: bytes, raw: bytes) -> KeyValue:
    create, version, lease = _HEADER_REST.unpack_from(raw, 16)
    return KeyValue(key, raw[_HEADER_SIZE:], create, int.from_bytes(raw[:8]), version, lease)


def _encoded(raw: bytes) -> bytes:
    """The encoded record in a ``history`` value (after its prefix and key)."""
    return raw[_PREFIX.size + int.from_bytes(raw[17:19], "little") :]


def _decode_header(key: bytes, raw: bytes) -> KeyValue:
    create, version, lease = _HEADER_REST.unpack_from(raw, 16)
    return KeyValue(key, b"", create, int.from_bytes(raw[:8]), version, lease)


def _doomed(
    txn: lmdb.Transaction[bytes], history: lmdb._Database, position: tuple[int, int], revision: int, budget: int
) -> tuple[list[tuple[bytes, bytes, bool]], bool, bytes]:
    """What physical compaction to ``revision`` removes, walking ``history`` from ``position`` and examining at
    most ``budget`` records (-1: no bound): (key, revision, is a tombstone that may head its key's chain) of each
    record to remove; whether the walk reached ``revision``; where the next walk starts.

    For each record ``r`` at or below ``revision``: the record before it (its prefix names it) is garbage once
    :func:`~raftkv.kv.backend.garbage_from` says so, and ``r`` itself if it is a tombstone older than
    ``revision``. A walk that reaches ``revision`` leaves its position at ``(revision, 0)``: the records at
    ``revision`` itself are examined again by the next compaction."""
    doomed: list[tuple[bytes, bytes, bool]] = []
    following = _REV.pack(revision, 0)
    cursor = txn.cursor(db=history)
    if not cursor.set_range(_REV.pack(*position)):
        return doomed, True, following
    for examined, (rev, raw) in enumerate(cursor.iternext(keys=True, values=True)):
        main = int.from_bytes(rev[:8])
        if main > revision:
            break
        if examined == budget:
            return doomed, False, rev
        dead, previous, key_len = _PREFIX.unpack_from(raw)
        key = raw[_PREFIX.size : _PREFIX.size + key_len]
        if previous != _NO_REV:
            previous_main = int.from_bytes(previous[:8])
            due = main if main > previous_main else previous_main + 1  # garbage_from(previous, r)
            if due <= revision:
                doomed.append((key, previous, False))
        if dead and main < revision:
            doomed.append((key, rev, True))
    return doomed, True, following


def _upgrade_from_3(
    env: lmdb.Environment, txn: lmdb.Transaction[bytes], history: lmdb._Database, graves: lmdb._Database
) -> None:
    """Convert layout 3 in place, in the opening transaction (all or nothing): link each put that re-created a
    deleted key to that key's tombstone, head each deleted key's chain in ``graves``, and drop ``key_revs``."""
    key_revs = env.open_db(b"key_revs", txn=txn, dupsort=True, dupfixed=True)
    cursor = txn.cursor(db=key_revs)
    if cursor.first():
        while True:
            key = cursor.key()
            revs: list[bytes] = list(cursor.iternext_dup(keys=False, values=True))
            for before, after in itertools.pairwise(revs):
                raw = txn.get(after[:16], db=history)
                invariant(raw is not None, f"layout 3: key_revs names {_REV.unpack(after[:16])}, history lacks it")
                assert raw is not None
                if raw[1:17] == _NO_REV:  # a put after a delete: layout 3 left it unlinked
                    txn.put(after[:16], raw[:1] + before[:16] + raw[17:], db=history)
            if revs and revs[-1][16]:
                txn.put(key, revs[-1][:16], db=graves)
            if not cursor.next_nodup():
                break
    txn.drop(key_revs, delete=True)


class LMDBBackend:
    """A :class:`~raftkv.kv.backend.Backend` on an LMDB environment at ``path`` (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = DEFAULT_MAP_SIZE, sync: bool = False) -> None:
        self.path = Path(path)
        self.map_size = map_size
        self.path.mkdir(parents=True, exist_ok=True)
        real = os.path.realpath(self.path)
        if real in _open_paths:
            raise StorageInUseError(f"the key-value store at {self.path} is already open in this process")
        try:
            # metasync=False only matters with sync=True: data pages are fsynced at each commit, the meta page at
            # the next one (MDB_NOMETASYNC), which keeps the file consistent and may lose the last transaction.
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=8,
                subdir=True,
                sync=sync,
                metasync=False,
                readahead=False,  # random access to a store that may outgrow RAM (LMDB's advice)
                lock=True,
            )
        except lmdb.Error as exc:
            raise KVBackendError(f"cannot open the key-value store at {self.path}: {exc}") from exc
        _open_paths.add(real)
        self._real = real
        self._closed = False
        self._write: _LMDBTxn | None = None
        try:
            invariant(
                self._env.max_key_size() >= MAX_KEY_BYTES,
                f"this LMDB build accepts keys of at most {self._env.max_key_size()} bytes; raftkv needs "
                f"{MAX_KEY_BYTES}",
            )
            with self._env.begin(write=True) as txn:
                self._meta = self._env.open_db(b"meta", txn=txn)
                found = txn.get(_FORMAT_KEY, db=self._meta)
                if found is not None and found not in (_FORMAT, _LAYOUT_3):
                    older = found.startswith(b"raftkv-kv-lmdb/") and found < _FORMAT
                    raise KVBackendError(
                        f"the key-value store at {self.path} has layout {found.decode(errors='replace')}, this "
                        f"raftkv reads {_FORMAT.decode()}"
                        + (
                            ": move that directory aside and start the node again; it rebuilds the store from its "
                            "snapshot and log"
                            if older
                            else ""
                        )
                    )
                self._data = self._env.open_db(b"data", txn=txn)
                self._history = self._env.open_db(b"history", txn=txn)
                self._graves = self._env.open_db(b"graves", txn=txn)
                self._sessions = self._env.open_db(b"sessions", txn=txn)
                self._leases = self._env.open_db(b"leases", txn=txn)
                self._lease_keys = self._env.open_db(b"lease_keys", txn=txn)
                if found == _LAYOUT_3:
                    _upgrade_from_3(self._env, txn, self._history, self._graves)
                if found != _FORMAT:
                    txn.put(_FORMAT_KEY, _FORMAT, db=self._meta)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open_in(
        cls, data_dir: str | os.PathLike[str], *, map_size: int = DEFAULT_MAP_SIZE, sync: bool = False
    ) -> LMDBBackend:
        """The node's store: ``data_dir/kv.lmdb``."""
        return cls(Path(data_dir) / FILE_NAME, map_size=map_size, sync=sync)

    def _env_open(self) -> lmdb.Environment:
        if self._closed:
            raise StorageClosedError(f"the key-value store at {self.path} is closed")
        return self._env

    @contextmanager
    def _view(self) -> Iterator[ReadView]:
        txn = self._env_open().begin(write=False)
        try:
            yield _LMDBView(self, txn)
        finally:
            txn.abort()

    def read(self) -> AbstractContextManager[ReadView]:
        return self._view()

    def begin(self) -> WriteTxn:
        invariant(self._write is None, "LMDBBackend.begin() while a write transaction is open")
        try:
            txn = self._env_open().begin(write=True)
        except lmdb.Error as exc:
            raise self._error("begin a write transaction", exc) from exc
        self._write = _LMDBTxn(self, txn)
        return self._write

    def sync(self) -> Meta:
        """Force every committed transaction to disk (fsync); returns the meta that is now durable.

        The runtime compacts the Raft log only up to the returned ``applied_index``.
        """
        env = self._env_open()
        with self.read() as view:
            meta = view.meta()
        try:
            env.sync(True)
        except lmdb.Error as exc:
            raise self._error("sync", exc) from exc
        return meta

    def size_bytes(self) -> int:
        """Bytes of the map in use (last page number x page size): what counts against ``map_size``."""
        env = self._env_open()
        return (env.info()["last_pgno"] + 1) * env.stat()["psize"]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._write is not None:
            self._write.abort()
        self._env.close()
        _open_paths.discard(self._real)

    def _error(self, operation: str, exc: lmdb.Error) -> KVBackendError:
        if isinstance(exc, lmdb.MapFullError):
            return KVStoreFullError(
                f"the key-value store at {self.path} is full: it reached its map_size of {self.map_size} bytes "
                f"during {operation}; the batch was rolled back and no data was lost; restart the node with a "
                f"larger map_size (and check the disk has room for it)"
            )
        return KVBackendError(f"{operation} failed on the key-value store at {self.path}: {exc}")


class _LMDBView:
    __slots__ = ("_b", "_garbage_cache", "_last_get", "_txn")

    def __init__(self, backend: LMDBBackend, txn: lmdb.Transaction[bytes]) -> None:
        self._b = backend
        self._txn = txn
        self._last_get: tuple[bytes, bytes | None] | None = None
        """The last row :meth:`get` read: the state machine reads a key just before it writes it, and the write
        needs the row it replaces (the record it supersedes)."""
        self._garbage_cache: tuple[int, set[bytes]] | None = None

    def meta(self) -> Meta:
        raw = self._txn.get(_META_KEY, db=self._b._meta)
        return Meta() if raw is None else _META_DECODER.decode(raw)

    def auth(self) -> bytes:
        raw = self._txn.get(_AUTH_KEY, db=self._b._meta)
        return b"" if raw is None else bytes(raw)

    def get(self, key: bytes) -> KeyValue | None:
        if not key or len(key) > MAX_KEY_BYTES:
            return None  # LMDB refuses such keys outright; none can be stored
        raw = self._txn.get(key, db=self._b._data)
        self._last_get = (key, raw)
        return None if raw is None else _decode_kv(key, raw)

    def scan(self, start: bytes, end: bytes | None, limit: int = 0, keys_only: bool = False) -> list[KeyValue]:
        out: list[KeyValue] = []
        cursor = self._txn.cursor(db=self._b._data)
        if not cursor.set_range(start):
            return out
        for key, raw in cursor.iternext(keys=True, values=True):
            if end is not None and key >= end:
                break
            out.append(_decode_header(key, raw) if keys_only else _decode_kv(key, raw))
            if len(out) == limit:
                break
        return out

    def count(self, start: bytes, end: bytes | None) -> int:
        if not start and end is None:
            return self._txn.stat(self._b._data)["entries"]
        cursor = self._txn.cursor(db=self._b._data)
        if not cursor.set_range(start):
            return 0
        if end is None:
            return sum(1 for _ in cursor.iternext(keys=True, values=False))
        n = 0
        for key in cursor.iternext(keys=True, values=False):
            if key >= end:
                break
            n += 1
        return n

    def sessions(self) -> list[SessionRecord]:
        cursor = self._txn.cursor(db=self._b._sessions)
        return [_SESSION_DECODER.decode(raw) for raw in cursor.iternext(keys=False, values=True)]

    def leases(self) -> list[LeaseRecord]:
        cursor = self._txn.cursor(db=self._b._leases)
        return [_LEASE_DECODER.decode(raw) for raw in cursor.iternext(keys=False, values=True)]

    def get_lease(self, lease_id: int) -> LeaseRecord | None:
        raw = self._txn.get(_session_key(lease_id), db=self._b._leases)
        return None if raw is None else _LEASE_DECODER.decode(raw)

    def lease_keys(self, lease_id: int) -> list[bytes]:
        prefix = _session_key(lease_id)
        cursor = self._txn.cursor(db=self._b._lease_keys)
        out: list[bytes] = []
        if not cursor.set_range(prefix):
            return out
        for key in cursor.iternext(keys=True, values=False):
            if not key.startswith(prefix):
                break
            out.append(key[8:])
        return out

    # --- the history ---

    def _head(self, key: bytes) -> tuple[bytes, bytes | None]:
        """The revision of ``key``'s newest record (zeros: none) and, for a live key, its ``data`` row."""
        row = self._txn.get(key, db=self._b._data)
        if row is not None:
            return row[:16], row
        grave = self._txn.get(key, db=self._b._graves)
        return (_NO_REV if grave is None else grave), None

    def _resolve(self, key: bytes, head: bytes, row: bytes | None, revision: int) -> KeyValue | None:
        """``key`` at ``revision``: walk its chain from ``head`` back to the first record at or below it."""
        if row is not None and int.from_bytes(head[:8]) <= revision:
            return _decode_kv(key, row)  # the key did not change after ``revision``: the common case
        rev = head
        while rev != _NO_REV:
            raw = self._txn.get(rev, db=self._b._history)
            if raw is None:
                return None  # compacted: only records no retained revision can see are ever removed
            if int.from_bytes(rev[:8]) <= revision:
                return None if raw[0] else _RECORD_DECODER.decode(_encoded(raw)).kv
            rev = raw[1:17]
        return None

    def get_at(self, key: bytes, revision: int) -> KeyValue | None:
        if not key or len(key) > MAX_KEY_BYTES:
            return None
        head, row = self._head(key)
        return self._resolve(key, head, row, revision)

    def _heads(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes, bytes | None]]:
        """(key, head revision, data row or None) of every key in the range with a chain, in key order: the
        ``data`` and ``graves`` tables merged (a key is in one of them at most)."""
        live = self._txn.cursor(db=self._b._data)
        dead = self._txn.cursor(db=self._b._graves)
        a = live.set_range(start)
        d = dead.set_range(start)
        while a or d:
            if a and (not d or live.key() < dead.key()):
                key, row = live.key(), live.value()
                if end is not None and key >= end:
                    a = False
                    continue
                yield key, row[:16], row
                a = live.next()
            else:
                key = dead.key()
                if end is not None and key >= end:
                    d = False
                    continue
                yield key, dead.value(), None
                d = dead.next()

    def _walk_at(self, start: bytes, end: bytes | None, revision: int) -> Iterator[KeyValue]:
        for key, head, row in self._heads(start, end):
            kv = self._resolve(key, head, row, revision)
            if kv is not None:
                yield kv

    def scan_at(
        self, start: bytes, end: bytes | None, revision: int, limit: int = 0, keys_only: bool = False
    ) -> list[KeyValue]:
        out: list[KeyValue] = []
        for found in self._walk_at(start, end, revision):
            kv = found
            if keys_only:
                kv = KeyValue(kv.key, b"", kv.create_revision, kv.mod_revision, kv.version, kv.lease)
            out.append(kv)
            if len(out) == limit:
                break
        return out

    def count_at(self, start: bytes, end: bytes | None, revision: int) -> int:
        return sum(1 for _ in self._walk_at(start, end, revision))

    def history(self, main: int, sub: int = 0, limit: int = 0) -> list[HistoryRecord]:
        out: list[HistoryRecord] = []
        cursor = self._txn.cursor(db=self._b._history)
        if not cursor.set_range(_REV.pack(main, sub)):
            return out
        for raw in cursor.iternext(keys=False, values=True):
            out.append(_RECORD_DECODER.decode(_encoded(raw)))
            if len(out) == limit:
                break
        return out

    def previous(self, record: HistoryRecord) -> HistoryRecord | None:
        raw = self._txn.get(_REV.pack(record.main, record.sub), db=self._b._history)
        if raw is None or raw[1:17] == _NO_REV:
            return None
        before = self._txn.get(raw[1:17], db=self._b._history)
        return None if before is None else _RECORD_DECODER.decode(_encoded(before))

    def _chain(self, head: bytes) -> list[HistoryRecord]:
        """The retained records of one key, oldest first, from the head of its chain."""
        records: list[HistoryRecord] = []
        rev = head
        while rev != _NO_REV:
            raw = self._txn.get(rev, db=self._b._history)
            if raw is None:
                break  # compacted below here
            records.append(_RECORD_DECODER.decode(_encoded(raw)))
            rev = raw[1:17]
        records.reverse()
        return records

    def key_histories(self, start: bytes, limit: int) -> list[list[HistoryRecord]]:
        out: list[list[HistoryRecord]] = []
        if limit <= 0:
            return out
        for _key, head, _row in self._heads(start, None):
            records = self._chain(head)
            if records:
                out.append(records)
                if len(out) == limit:
                    break
        return out

    def history_size(self) -> int:
        return int(self._txn.stat(self._b._history)["entries"])

    def _scan_position(self) -> tuple[int, int]:
        raw = self._txn.get(_SCAN_KEY, db=self._b._meta)
        return (0, 0) if raw is None else _REV.unpack(raw)

    def _garbage(self, compact: int) -> set[bytes]:
        """The records physical compaction to ``compact`` has yet to remove (what :meth:`_LMDBTxn.compact` would
        remove with an unbounded budget), computed once per view: a snapshot image taken while compaction lags
        skips them, so that it is the same on every node. Memory: 16 bytes a record of the backlog."""
        cached = self._garbage_cache
        if cached is not None and cached[0] == compact:
            return cached[1]
        found = _doomed(self._txn, self._b._history, self._scan_position(), compact, -1)[0]
        doomed = {rev for _key, rev, _grave in found}
        self._garbage_cache = (compact, doomed)
        return doomed

    def history_image(self, start: tuple[int, int], limit: int) -> tuple[list[bytes], tuple[int, int] | None]:
        compact = self.meta().compact_revision
        garbage = self._garbage(compact) if self._scan_position() < (compact, 0) else set()
        out: list[bytes] = []
        cursor = self._txn.cursor(db=self._b._history)
        if not cursor.set_range(_REV.pack(*start)):
            return out, None
        n = 0
        for rev, raw in cursor.iternext(keys=True, values=True):
            if n == limit:
                return out, _REV.unpack(rev)
            n += 1
            if rev in garbage:
                continue  # garbage physical compaction has not removed yet
            out.append(_encoded(raw))  # as encode_record wrote it: the same bytes on every node
        return out, None


class _LMDBTxn(_LMDBView):
    """One LMDB write transaction; LMDB errors become :class:`KVBackendError` (the caller aborts).

    History and index puts wait in two buffers until the commit, or until the transaction reads the history
    (each history read flushes first, so the transaction still reads its own writes)."""

    __slots__ = ("_history_puts",)

    def __init__(self, backend: LMDBBackend, txn: lmdb.Transaction[bytes]) -> None:
        super().__init__(backend, txn)
        self._history_puts: list[tuple[bytes, bytes]] = []

    def get_at(self, key: bytes, revision: int) -> KeyValue | None:
        self._flush()
        return super().get_at(key, revision)

    def scan_at(
        self, start: bytes, end: bytes | None, revision: int, limit: int = 0, keys_only: bool = False
    ) -> list[KeyValue]:
        self._flush()
        return super().scan_at(start, end, revision, limit, keys_only)

    def count_at(self, start: bytes, end: bytes | None, revision: int) -> int:
        self._flush()
        return super().count_at(start, end, revision)

    def history(self, main: int, sub: int = 0, limit: int = 0) -> list[HistoryRecord]:
        self._flush()
        return super().history(main, sub, limit)

    def previous(self, record: HistoryRecord) -> HistoryRecord | None:
        self._flush()
        return super().previous(record)

    def key_histories(self, start: bytes, limit: int) -> list[list[HistoryRecord]]:
        self._flush()
        return super().key_histories(start, limit)

    def history_size(self) -> int:
        self._flush()
        return super().history_size()

    def history_image(self, start: tuple[int, int], limit: int) -> tuple[list[bytes], tuple[int, int] | None]:
        self._flush()
        return super().history_image(start, limit)

    def _check(self) -> None:
        invariant(self._b._write is self, "use of a finished LMDB write transaction")

    def _write(self, record: HistoryRecord, operation: str) -> None:
        """Record ``record`` in the history and make the head of its key's chain follow it. The current row,
        whose first 16 bytes are the key's newest record, was usually just read by the state machine; the
        history puts are buffered and appended in bulk (:meth:`_flush`)."""
        b, txn = self._b, self._txn
        kv = record.kv
        key = kv.key
        rev = _REV.pack(record.main, record.sub)
        dead = record.tombstone
        lease = kv.lease
        try:
            cached = self._last_get
            old = cached[1] if cached is not None and cached[0] == key else txn.get(key, db=b._data)
            self._last_get = None
            if old is not None:
                before = old[:16]
            else:
                grave = txn.get(key, db=b._graves)
                before = _NO_REV if grave is None else grave
                if grave is not None and not dead:
                    txn.delete(key, db=b._graves)  # re-created: its chain's head is the data row again
            if dead:
                if old is not None:
                    txn.delete(key, db=b._data)
                txn.put(key, rev, db=b._graves)
            else:
                txn.put(key, rev + _HEADER_REST.pack(kv.create_revision, kv.version, lease) + kv.value, db=b._data)
            old_lease = 0 if old is None else int.from_bytes(old[32:40], "little")
            if old_lease != lease:  # a tombstone's kv has lease 0: the delete detaches
                if old_lease:
                    txn.delete(_session_key(old_lease) + key, db=b._lease_keys)
                if lease:
                    txn.put(_session_key(lease) + key, b"", db=b._lease_keys)
        except lmdb.Error as exc:
            raise b._error(operation, exc) from exc
        self._history_puts.append((rev, _PREFIX.pack(dead, before, len(key)) + key + encode_record(record)))

    def _flush(self) -> None:
        """Write the buffered history puts: history keys only grow, so they are appended."""
        history = self._history_puts
        if not history:
            return
        b, txn = self._b, self._txn
        self._history_puts = []
        try:
            _consumed, added = txn.cursor(db=b._history).putmulti(history, overwrite=False, append=True)
            invariant(added == len(history), f"history revisions not increasing near {_REV.unpack(history[0][0])}")
        except lmdb.Error as exc:
            raise b._error("write the history", exc) from exc

    def put(self, kv: KeyValue, sub: int = 0) -> None:
        self._write(HistoryRecord(kv.mod_revision, sub, kv), "put")

    def delete(self, key: bytes, revision: int, sub: int = 0) -> None:
        try:
            raw = self._txn.get(key, db=self._b._data)
        except lmdb.Error as exc:
            raise self._b._error("delete", exc) from exc
        invariant(raw is not None, f"delete of a missing key {key!r}")
        self._last_get = (key, raw)
        self._write(tombstone(key, revision, sub), "delete")

    def restore(self, record: HistoryRecord) -> None:
        self._write(record, "restore")

    def compact(self, revision: int, budget: int) -> bool:
        self._flush()
        b, txn = self._b, self._txn
        try:
            doomed, done, following = _doomed(txn, b._history, self._scan_position(), revision, budget)
            txn.put(_SCAN_KEY, following, db=b._meta)
            for key, rev, grave in doomed:
                # A predecessor may be gone already (removed by an earlier pass): deleting it again is a no-op.
                txn.delete(rev, db=b._history)
                if grave and txn.get(key, db=b._graves) == rev:
                    txn.delete(key, db=b._graves)  # the deleted key's whole chain is gone
        except lmdb.Error as exc:
            raise b._error("compact", exc) from exc
        return done

    def put_lease(self, record: LeaseRecord) -> None:
        try:
            self._txn.put(_session_key(record.id), _ENCODER.encode(record), db=self._b._leases)
        except lmdb.Error as exc:
            raise self._b._error("put_lease", exc) from exc

    def delete_lease(self, lease_id: int) -> None:
        try:
            found = self._txn.delete(_session_key(lease_id), db=self._b._leases)
        except lmdb.Error as exc:
            raise self._b._error("delete_lease", exc) from exc
        invariant(found, f"delete of a missing lease {lease_id}")

    def put_session(self, record: SessionRecord) -> None:
        try:
            self._txn.put(_session_key(record.session_id), _ENCODER.encode(record), db=self._b._sessions)
        except lmdb.Error as exc:
            raise self._b._error("put_session", exc) from exc

    def delete_session(self, session_id: int) -> None:
        try:
            found = self._txn.delete(_session_key(session_id), db=self._b._sessions)
        except lmdb.Error as exc:
            raise self._b._error("delete_session", exc) from exc
        invariant(found, f"delete of a missing session {session_id}")

    def set_meta(self, meta: Meta) -> None:
        try:
            self._txn.put(_META_KEY, _ENCODER.encode(meta), db=self._b._meta)
        except lmdb.Error as exc:
            raise self._b._error("set_meta", exc) from exc

    def set_auth(self, data: bytes) -> None:
        try:
            self._txn.put(_AUTH_KEY, data, db=self._b._meta)
        except lmdb.Error as exc:
            raise self._b._error("set_auth", exc) from exc

    def clear(self) -> None:
        self._check()
        self._last_get = None
        self._history_puts = []
        try:
            b = self._b
            for db in (b._data, b._history, b._graves, b._sessions, b._leases, b._lease_keys):
                self._txn.drop(db, delete=False)
            self._txn.delete(_SCAN_KEY, db=self._b._meta)
            self._txn.delete(_AUTH_KEY, db=self._b._meta)
            self._txn.put(_META_KEY, _ENCODER.encode(Meta()), db=self._b._meta)
        except lmdb.Error as exc:
            raise self._b._error("clear", exc) from exc

    def commit(self) -> None:
        self._check()
        try:
            self._flush()
            self._txn.commit()
        except BaseException as exc:
            self._txn.abort()
            self._b._write = None
            if isinstance(exc, lmdb.Error):
                raise self._b._error("commit", exc) from exc
            raise
        self._b._write = None

    def abort(self) -> None:
        if self._b._write is self:
            self._b._write = None
            self._txn.abort()
