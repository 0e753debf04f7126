"""The durable backend of the key-value state machine, on LMDB.

Theory of operation
-------------------
One LMDB environment per node, ``DATA_DIR/kv.lmdb`` (a directory holding ``data.mdb`` and ``lock.mdb``), with
three named sub-databases:

* ``data``: user key -> 24-byte header ``<create_revision, mod_revision, version>`` (three little-endian u64)
  followed by the value bytes. LMDB keeps keys sorted bytewise, which is exactly etcd's key order, so a range
  scan is a cursor walk;
* ``sessions``: session id (8 bytes, big-endian so that key order is id order) -> msgspec-encoded
  :class:`~raftkv.kv.sessions.SessionRecord`;
* ``meta``: ``b"meta"`` -> msgspec-encoded :class:`~raftkv.kv.backend.Meta` (applied index, revision, clock), and
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

import os
import struct
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Final

import lmdb
import msgspec

from raftkv.kv.backend import Meta, ReadView, WriteTxn
from raftkv.kv.commands import KeyValue
from raftkv.kv.keys import MAX_KEY_BYTES
from raftkv.kv.sessions import SessionRecord
from raftkv.raft.errors import invariant
from raftkv.storage.errors import StorageClosedError, StorageError, StorageInUseError

FILE_NAME: Final = "kv.lmdb"
"""The environment's directory inside a node's data dir."""

DEFAULT_MAP_SIZE: Final = 16 << 30
"""16 GiB of address space; the file only grows as data is written."""

_FORMAT: Final = b"raftkv-kv-lmdb/2"  # 2: sessions keep a window of results (first_incomplete)
_HEADER: Final = struct.Struct("<QQQ")
_HEADER_SIZE: Final = _HEADER.size
_META_KEY: Final = b"meta"
_FORMAT_KEY: Final = b"format"

_ENCODER: Final = msgspec.msgpack.Encoder()
_META_DECODER: Final = msgspec.msgpack.Decoder(Meta)
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
    create, mod, version = _HEADER.unpack_from(raw)
    return KeyValue(key, raw[_HEADER_SIZE:], create, mod, version)


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
                max_dbs=3,
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
                self._data = self._env.open_db(b"data", txn=txn)
                self._sessions = self._env.open_db(b"sessions", txn=txn)
                self._meta = self._env.open_db(b"meta", txn=txn)
                found = txn.get(_FORMAT_KEY, db=self._meta)
                if found is None:
                    txn.put(_FORMAT_KEY, _FORMAT, db=self._meta)
                elif found != _FORMAT:
                    raise KVBackendError(
                        f"the key-value store at {self.path} has layout {found!r}, this raftkv reads {_FORMAT!r}"
                    )
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
    __slots__ = ("_b", "_txn")

    def __init__(self, backend: LMDBBackend, txn: lmdb.Transaction[bytes]) -> None:
        self._b = backend
        self._txn = txn

    def meta(self) -> Meta:
        raw = self._txn.get(_META_KEY, db=self._b._meta)
        return Meta() if raw is None else _META_DECODER.decode(raw)

    def get(self, key: bytes) -> KeyValue | None:
        if not key or len(key) > MAX_KEY_BYTES:
            return None  # LMDB refuses such keys outright; none can be stored
        raw = self._txn.get(key, db=self._b._data)
        return None if raw is None else _decode_kv(key, raw)

    def scan(self, start: bytes, end: bytes | None, limit: int = 0, keys_only: bool = False) -> list[KeyValue]:
        out: list[KeyValue] = []
        cursor = self._txn.cursor(db=self._b._data)
        if not cursor.set_range(start):
            return out
        for key, raw in cursor.iternext(keys=True, values=True):
            if end is not None and key >= end:
                break
            if keys_only:
                create, mod, version = _HEADER.unpack_from(raw)
                out.append(KeyValue(key, b"", create, mod, version))
            else:
                out.append(_decode_kv(key, raw))
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


class _LMDBTxn(_LMDBView):
    """One LMDB write transaction; LMDB errors become :class:`KVBackendError` (the caller aborts)."""

    __slots__ = ()

    def _check(self) -> None:
        invariant(self._b._write is self, "use of a finished LMDB write transaction")

    def put(self, kv: KeyValue) -> None:
        try:
            self._txn.put(
                kv.key, _HEADER.pack(kv.create_revision, kv.mod_revision, kv.version) + kv.value, db=self._b._data
            )
        except lmdb.Error as exc:
            raise self._b._error("put", exc) from exc

    def delete(self, key: bytes) -> None:
        try:
            found = self._txn.delete(key, db=self._b._data)
        except lmdb.Error as exc:
            raise self._b._error("delete", exc) from exc
        invariant(found, f"delete of a missing key {key!r}")

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

    def clear(self) -> None:
        self._check()
        try:
            self._txn.drop(self._b._data, delete=False)
            self._txn.drop(self._b._sessions, delete=False)
            self._txn.put(_META_KEY, _ENCODER.encode(Meta()), db=self._b._meta)
        except lmdb.Error as exc:
            raise self._b._error("clear", exc) from exc

    def commit(self) -> None:
        self._check()
        try:
            self._txn.commit()
        except lmdb.Error as exc:
            self._txn.abort()
            raise self._b._error("commit", exc) from exc
        finally:
            self._b._write = None

    def abort(self) -> None:
        if self._b._write is self:
            self._b._write = None
            self._txn.abort()
