"""The write-ahead log beyond the shared conformance suite: segments, cache, compaction, locking, threads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from storage_testlib import FaultyIO, ents, run, segment_files

from raftkv.raft.errors import EntryUnavailable, InvariantViolation, LogCompacted
from raftkv.raft.membership import encode_conf
from raftkv.raft.types import ConfState, Entry, EntryType, HardState, Index, NodeId, SnapshotMeta, Term
from raftkv.storage.errors import CorruptLogError, StorageClosedError, StorageInUseError
from raftkv.storage.records import ENTRY_HEADER_SIZE
from raftkv.storage.wal import WAL

SEG = 4096


def reopen(w: WAL, **kw: int) -> WAL:
    w.close()
    return WAL.open(w.path, **kw)


def all_entries(w: WAL) -> list[Entry]:
    return w.entries(w.first_index(), Index(w.last_index() + 1))


def test_segments_rotate_and_stay_bounded(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    expected: list[Entry] = []
    i = 1
    for batch in [1, 3, 40, 7, 100, 1, 64]:
        es = run(i, batch)
        w.append(es)
        w.set_hard_state(HardState(Term(1), NodeId(1), Index(i)))
        expected += es
        i += batch
    w.sync()
    files = segment_files(tmp_path / "wal")
    assert len(files) >= 5
    record = ENTRY_HEADER_SIZE + 100
    # Bounded: hard-state records rotate too; only a single entry larger than a segment may exceed it.
    assert all(f.stat().st_size <= SEG for f in files), [f.stat().st_size for f in files]
    assert all(f.stat().st_size > SEG - 2 * record for f in files[:-1])
    assert all_entries(w) == expected
    w = reopen(w, segment_bytes=SEG)
    assert all_entries(w) == expected
    assert w.initial_state()[0] == HardState(Term(1), NodeId(1), Index(i - 64))
    w.close()


def test_an_entry_larger_than_a_segment_gets_one_to_itself(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    big = [Entry(Term(1), Index(2), b"B" * (3 * SEG))]
    w.append(run(1, 1))
    w.append(big)
    w.append(run(3, 2))
    w.sync()
    assert len(segment_files(tmp_path / "wal")) == 3
    w = reopen(w, segment_bytes=SEG, cache_entries=0)
    assert all_entries(w) == run(1, 1) + big + run(3, 2)
    w.close()


def test_reads_beyond_the_cache_come_from_disk_and_respect_max_bytes(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG, cache_entries=8)
    w.append(run(1, 200))
    assert len(w._cache) <= 8  # white-box: the cache is bounded ...
    assert w.entries(Index(1), Index(201)) == run(1, 200)  # ... and the rest is read back from the segments
    assert w.entries(Index(50), Index(120), max_bytes=10 * 116) == run(50, 10)
    assert w.entries(Index(50), Index(120), max_bytes=1) == run(50, 1)
    assert w.entries(Index(7), Index(7)) == []
    w.close()


def test_overwrite_across_segments_survives_reopen(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG, cache_entries=4)
    w.append(run(1, 100, term=1))
    w.append(run(30, 5, term=2))  # discards 30..100, which span several older segments
    assert w.last_index() == 34
    w.append(run(35, 50, term=2))
    w.sync()
    expected = run(1, 29, term=1) + run(30, 55, term=2)
    assert all_entries(w) == expected
    w = reopen(w, segment_bytes=SEG, cache_entries=4)
    assert all_entries(w) == expected
    assert [w.term(Index(i)) for i in (29, 30, 84)] == [1, 2, 2]
    with pytest.raises(EntryUnavailable):
        w.term(Index(85))
    w.close()


def test_compaction_deletes_only_whole_segments_below_the_boundary(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    w.append(run(1, 9))
    # A configuration entry below the boundary: the boundary then carries its configuration.
    w.append(
        [
            Entry(
                Term(1),
                Index(10),
                encode_conf(ConfState.of_voters((NodeId(1), NodeId(2), NodeId(3)))),
                EntryType.CONF_CHANGE,
            )
        ]
    )
    w.append(run(11, 290))
    w.set_hard_state(HardState(Term(1), NodeId(2), Index(5)))  # lives in an early segment...
    w.append(run(301, 1))
    w.sync()
    before = segment_files(tmp_path / "wal")
    w.compact(Index(250))
    after = segment_files(tmp_path / "wal")
    assert 1 < len(after) < len(before)
    assert after == before[len(before) - len(after) :]  # a suffix: the oldest went
    assert (w.first_index(), w.last_index(), w.term(Index(250))) == (251, 301, 1)
    with pytest.raises(LogCompacted):
        w.entries(Index(250), Index(252))
    w = reopen(w, segment_bytes=SEG, cache_entries=0)
    hs, snap = w.initial_state()
    assert hs == HardState(Term(1), NodeId(2), Index(5))  # ... but survives its segment's deletion
    assert snap == SnapshotMeta(Index(250), Term(1), ConfState.of_voters((NodeId(1), NodeId(2), NodeId(3))))
    assert (w.first_index(), w.last_index(), w.term(Index(250))) == (251, 301, 1)
    assert all_entries(w) == run(251, 51)
    # Compacting everything keeps only the active segment; the log continues after it.
    w.compact(Index(301))
    assert len(segment_files(tmp_path / "wal")) == 1
    w.append(run(302, 3, term=2))
    w.sync()
    w = reopen(w, segment_bytes=SEG)
    assert (w.first_index(), w.last_index(), w.term(Index(301))) == (302, 304, 1)
    assert w.initial_state()[1].voters == (1, 2, 3)
    w.close()


def test_compaction_preconditions(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal")
    w.append(run(1, 5))
    w.compact(Index(3))
    with pytest.raises(InvariantViolation):
        w.compact(Index(6))
    with pytest.raises(InvariantViolation):
        w.compact(Index(2))
    w.compact(Index(3))  # idempotent
    assert w.first_index() == 4
    w.close()


def test_apply_snapshot_keeps_a_matching_suffix_or_discards_the_log(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    w.append(run(1, 100, term=2))
    w.apply_snapshot(
        SnapshotMeta(Index(60), Term(2), ConfState.of_voters((NodeId(1),)))
    )  # matches entry 60: keep 61..100
    assert (w.first_index(), w.last_index()) == (61, 100)
    w.apply_snapshot(
        SnapshotMeta(Index(80), Term(3), ConfState.of_voters((NodeId(1),)))
    )  # conflicts: the whole log goes
    assert (w.first_index(), w.last_index(), w.term(Index(80))) == (81, 80, 3)
    w.apply_snapshot(SnapshotMeta(Index(500), Term(4), ConfState.of_voters((NodeId(1), NodeId(2)))))  # beyond the log
    w.append(run(501, 2, term=4))
    w.sync()
    w = reopen(w, segment_bytes=SEG)
    assert (w.first_index(), w.last_index(), w.term(Index(500))) == (501, 502, 4)
    assert w.initial_state()[1] == SnapshotMeta(Index(500), Term(4), ConfState.of_voters((NodeId(1), NodeId(2))))
    assert all_entries(w) == run(501, 2, term=4)
    assert len(segment_files(tmp_path / "wal")) == 1
    with pytest.raises(InvariantViolation):
        w.apply_snapshot(SnapshotMeta(Index(10), Term(1)))
    w.close()


def test_one_open_wal_per_directory(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal")
    with pytest.raises(StorageInUseError, match="in use"):
        WAL.open(tmp_path / "wal")
    w.close()
    w.close()  # idempotent
    with pytest.raises(StorageClosedError):
        w.append(ents(1, [1]))
    with WAL.open(tmp_path / "wal") as again:
        assert again.last_index() == 0


def test_unchanged_hard_state_is_not_rewritten(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal")
    hs = HardState(Term(3), NodeId(2), Index(0))
    w.set_hard_state(hs)
    size = segment_files(tmp_path / "wal")[0].stat().st_size
    w.set_hard_state(HardState(Term(3), NodeId(2), Index(0)))
    assert segment_files(tmp_path / "wal")[0].stat().st_size == size
    assert w.initial_state()[0] == hs
    w.close()


def test_corruption_after_open_is_caught_on_read(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", cache_entries=0)
    w.append(run(1, 10))
    w.sync()
    seg = segment_files(tmp_path / "wal")[0]
    with seg.open("r+b") as f:  # flip a data byte of entry 5 behind the WAL's back
        f.seek(28 + 4 * 128 + ENTRY_HEADER_SIZE + 3)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x40]))
    assert w.entries(Index(1), Index(5)) == run(1, 4)
    with pytest.raises(CorruptLogError, match=r"offset 540.*entry 5 no longer verifies"):
        w.entries(Index(1), Index(11))
    w.close()


def test_a_missing_segment_is_corruption(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    w.append(run(1, 150))
    w.sync()
    w.close()
    files = segment_files(tmp_path / "wal")
    files[1].unlink()
    with pytest.raises(CorruptLogError, match="segment 2 is missing"):
        WAL.open(tmp_path / "wal", segment_bytes=SEG)


def test_a_deleted_first_segment_without_compaction_is_corruption(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    w.append(run(1, 150))
    w.sync()
    w.close()
    segment_files(tmp_path / "wal")[0].unlink()
    with pytest.raises(CorruptLogError, match=r"entries 1\.\.\d+ are missing"):
        WAL.open(tmp_path / "wal", segment_bytes=SEG)


def test_append_does_not_wait_for_an_fsync_in_flight_and_the_next_sync_covers_it(tmp_path: Path) -> None:
    """Group commit: sync() fsyncs without blocking appends; a sync that finds nothing new does not fsync."""
    io = FaultyIO()
    w = WAL.open(tmp_path / "wal", io=io)
    w.append(run(1, 1))
    gate = threading.Event()
    io.fsync_gate = gate
    io.fsync_entered.clear()
    syncer = threading.Thread(target=w.sync)
    syncer.start()
    assert io.fsync_entered.wait(timeout=10)
    count_in_flight = io.fsync_count
    appended = threading.Event()

    def append_two() -> None:
        w.append(run(2, 2))
        w.set_hard_state(HardState(Term(1), NodeId(1), Index(3)))
        appended.set()

    appender = threading.Thread(target=append_two)
    appender.start()
    assert appended.wait(timeout=10), "append blocked behind an fsync in flight"
    second = threading.Thread(target=w.sync)  # queues behind the first sync
    second.start()
    gate.set()
    syncer.join(timeout=10)
    second.join(timeout=10)
    appender.join(timeout=10)
    assert not (syncer.is_alive() or second.is_alive() or appender.is_alive())
    assert io.fsync_count == count_in_flight + 1  # the queued sync covered the appends made meanwhile
    io.fsync_gate = None
    w.sync()  # nothing new: no fsync
    assert io.fsync_count == count_in_flight + 1
    w = reopen(w)
    assert all_entries(w) == run(1, 3)
    w.close()


def test_many_threads_syncing_share_fsyncs(tmp_path: Path) -> None:
    io = FaultyIO()
    w = WAL.open(tmp_path / "wal", io=io)
    start = io.fsync_count
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for i in range(1, 401):
                w.append(run(i, 1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def syncer() -> None:
        try:
            for _ in range(50):
                w.sync()
                if done.is_set():
                    break
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=syncer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    w.sync()
    assert io.fsync_count - start <= 201  # at most one fsync per sync call, and the calls overlap
    assert w._synced_size == w._active_size  # white-box: everything is durable after the last sync
    assert all_entries(w) == run(1, 400)
    w.close()


def test_reads_are_safe_during_appends_rotations_and_compactions(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG, cache_entries=16)
    w.append(run(1, 50))
    w.sync()
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set() and reads[0] < 20_000:
            first = w.first_index()
            try:
                got = w.entries(first, Index(first + 20))
                if got != run(first, 20):
                    problems.append(f"entries({first}) returned {[e.index for e in got]}")
                if w.term(Index(first + 5)) != 1:
                    problems.append("bad term")
            except LogCompacted:
                pass  # compaction overtook us between first_index() and the read; fine
            reads[0] += 1

    t = threading.Thread(target=reader)
    t.start()
    for i in range(51, 1051, 25):
        w.append(run(i, 25))
        w.sync()
        if i > 200 and i % 200 == 51:
            w.compact(Index(i - 100))
    stop.set()
    t.join(timeout=30)
    assert not problems, problems[:5]
    assert reads[0] > 0
    w.close()


def test_entry_bytes_sums_the_held_entries_in_a_range(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    entries = run(1, 40, size=100)
    w.append(entries)
    w.sync()
    one = entries[0].size_bytes()
    assert w.entry_bytes(Index(1), Index(41)) == 40 * one
    assert w.entry_bytes(Index(11), Index(21)) == 10 * one
    assert w.entry_bytes(Index(35), Index(1000)) == 6 * one, "clamped to the last index"
    w.compact(Index(20))
    assert w.entry_bytes(Index(1), Index(25)) == (25 - w.first_index()) * one, "compacted entries count nothing"
    w = reopen(w)
    assert w.entry_bytes(Index(30), Index(41)) == 11 * one, "the same after a reopen (rebuilt index)"
    w.close()
