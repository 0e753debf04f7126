"""The LMDB backend on its own: restart resumes at applied_index, a full map, misuse, the layout check."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from raftkv.kv import KeyValue, KVStateMachine, Meta, OpenSession, Put, PutResult, Range, Request
from raftkv.storage.errors import StorageClosedError, StorageInUseError
from raftkv.storage.kv_lmdb import FILE_NAME, KVBackendError, KVStoreFullError, LMDBBackend
from tests.kv.kvtestlib import entries


def test_a_restart_resumes_from_applied_index_without_reapplying(tmp_path: Path) -> None:
    backend = LMDBBackend.open_in(tmp_path)
    assert backend.path == tmp_path / FILE_NAME
    sm = KVStateMachine(backend)
    log = entries(1, [OpenSession(1000, 5), Request(1, 1, 6, Put(b"k", b"v1")), Put(b"k", b"v2"), Put(b"j", b"x")])
    sm.apply(log[:2])
    sm.apply(log[2:])
    before = (sm.snapshot(), sm.sessions(), sm.read(Range(b"\0", b"\0")))
    backend.close()

    backend = LMDBBackend.open_in(tmp_path)
    again = KVStateMachine(backend)
    assert (again.applied_index, again.revision, again.clock_ms) == (4, 3, 6)
    assert (again.snapshot(), again.sessions(), again.read(Range(b"\0", b"\0"))) == before
    # The runtime starts the core with applied=4; were an old entry delivered again, it would not apply twice.
    assert again.apply(log) == [None, None, None, None]
    assert again.get(b"k") == KeyValue(b"k", b"v2", 1, 2, 2)
    assert again.apply(entries(5, [Put(b"k", b"v3")])) == [PutResult(4)]
    backend.close()


def test_an_uncommitted_batch_is_not_there_after_a_restart(tmp_path: Path) -> None:
    backend = LMDBBackend.open_in(tmp_path)
    sm = KVStateMachine(backend)
    sm.apply(entries(1, [Put(b"a", b"1")]))
    txn = backend.begin()  # a batch in flight when the process dies
    txn.put(KeyValue(b"b", b"1", 2, 2, 1))
    txn.set_meta(Meta(2, 2, 0))
    backend.close()  # closing aborts it, as a crash would
    backend = LMDBBackend.open_in(tmp_path)
    with backend.read() as view:
        assert view.meta() == Meta(1, 1, 0)
        assert view.get(b"b") is None
    backend.close()


def test_sync_reports_what_is_durable(tmp_path: Path) -> None:
    for sync in (False, True):
        backend = LMDBBackend(tmp_path / f"s{sync}", sync=sync)
        sm = KVStateMachine(backend)
        sm.apply(entries(1, [Put(b"a", b"1"), Put(b"b", b"1")]))
        assert backend.sync() == Meta(applied_index=2, revision=2, clock_ms=0)
        backend.close()


def test_a_full_map_rolls_back_the_batch_with_a_clear_error(tmp_path: Path) -> None:
    backend = LMDBBackend(tmp_path / "kv", map_size=1 << 20)  # 1 MiB
    sm = KVStateMachine(backend)
    index = 1
    with pytest.raises(KVStoreFullError, match=r"is full: it reached its map_size of 1048576 bytes.*larger map_size"):
        for _ in range(100):
            sm.apply(entries(index, [Put(b"k%d" % index, b"x" * 50_000)]))
            index += 1
    assert sm.applied_index == index - 1  # the failed batch left nothing behind
    assert sm.read(Range(b"\0", b"\0", count_only=True)).count == index - 1
    assert backend.size_bytes() <= 1 << 20
    backend.close()
    # Reopened with room to spare, the same entry applies and the node carries on.
    backend = LMDBBackend(tmp_path / "kv", map_size=64 << 20)
    sm = KVStateMachine(backend)
    assert sm.apply(entries(index, [Put(b"k%d" % index, b"x" * 50_000)])) == [PutResult(index)]
    backend.close()


def test_one_environment_is_opened_once_per_process(tmp_path: Path) -> None:
    backend = LMDBBackend.open_in(tmp_path)
    with pytest.raises(StorageInUseError, match="already open"):
        LMDBBackend.open_in(tmp_path)
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(StorageClosedError):
        backend.begin()
    LMDBBackend.open_in(tmp_path).close()  # free again


def test_a_foreign_layout_is_refused(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "kv"), max_dbs=3)
    with env.begin(write=True) as txn:
        txn.put(b"format", b"something-else/9", db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(KVBackendError, match=r"has layout something-else/9, this raftkv reads raftkv-kv-lmdb/4$"):
        LMDBBackend(tmp_path / "kv")
    LMDBBackend(tmp_path / "other").close()  # the failed open released its path registration
    with pytest.raises(KVBackendError):
        LMDBBackend(tmp_path / "kv")


def test_a_store_from_before_the_history_is_refused_with_what_to_do(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "kv"), max_dbs=3)
    with env.begin(write=True) as txn:
        txn.put(b"format", b"raftkv-kv-lmdb/2", db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(KVBackendError, match=r"layout raftkv-kv-lmdb/2.*move that directory aside.*snapshot and log"):
        LMDBBackend(tmp_path / "kv")
