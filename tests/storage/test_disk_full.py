"""Disk full and I/O errors: a typed error, nothing earlier lost, the log consistent, writes resume later."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_testlib import FaultyIO, run, segment_files

from raftkv.raft.types import ConfState, Entry, HardState, Index, NodeId, SnapshotMeta, Term
from raftkv.storage.errors import DiskFullError, StorageIOError
from raftkv.storage.snapshots import SnapshotStore
from raftkv.storage.wal import WAL

SEG = 4096


def all_entries(w: WAL) -> list[Entry]:
    return w.entries(w.first_index(), Index(w.last_index() + 1))


def test_disk_full_mid_batch_changes_nothing_and_writes_resume(tmp_path: Path) -> None:
    io = FaultyIO()
    w = WAL.open(tmp_path / "wal", io=io)
    w.append(run(1, 10))
    w.set_hard_state(HardState(Term(1), NodeId(1), Index(10)))
    w.sync()
    (seg,) = segment_files(tmp_path / "wal")
    size = seg.stat().st_size
    io.space = 500  # the next batch (~1.3 KB) only partly fits
    with pytest.raises(DiskFullError, match=r"No space left on device.*free disk space and retry") as info:
        w.append(run(11, 10))
    assert info.value.errno == errno.ENOSPC
    assert seg.name in str(info.value)
    # Nothing changed: the view, the file (the partial write was cut off), the earlier data.
    assert (w.first_index(), w.last_index()) == (1, 10)
    assert seg.stat().st_size == size
    assert all_entries(w) == run(1, 10)
    with pytest.raises(DiskFullError):
        w.set_hard_state(HardState(Term(1), NodeId(1), Index(11)))
    assert w.initial_state()[0] == HardState(Term(1), NodeId(1), Index(10))
    io.space = None  # space returns: the very same calls now succeed
    w.append(run(11, 10))
    w.set_hard_state(HardState(Term(1), NodeId(1), Index(20)))
    w.sync()
    w.close()
    w = WAL.open(tmp_path / "wal")
    assert all_entries(w) == run(1, 20)
    assert w.initial_state()[0] == HardState(Term(1), NodeId(1), Index(20))
    w.close()


def test_a_failed_fsync_rewrites_the_unsynced_tail_before_trusting_the_disk_again(tmp_path: Path) -> None:
    io = FaultyIO()
    w = WAL.open(tmp_path / "wal", io=io)
    w.append(run(1, 5))
    w.sync()
    w.append(run(6, 5))
    w.set_hard_state(HardState(Term(1), NodeId(1), Index(8)))
    io.fsync_failures = 1
    with pytest.raises(StorageIOError, match=r"fdatasync failed.*Input/output error") as info:
        w.sync()
    assert not isinstance(info.value, DiskFullError)
    assert all_entries(w) == run(1, 10)  # reads are unaffected
    io.calls.clear()
    w.sync()
    # Linux may have dropped the dirty pages after the failed fsync; a plain retry could falsely succeed.
    assert io.calls[:2] == ["ftruncate", "pwrite"] and io.calls[-1] == "fdatasync"
    w.close()
    w = WAL.open(tmp_path / "wal")
    assert all_entries(w) == run(1, 10)
    assert w.initial_state()[0].commit == 8
    w.close()


def test_an_fsync_failing_with_enospc_is_a_disk_full_error(tmp_path: Path) -> None:
    io = FaultyIO()
    w = WAL.open(tmp_path / "wal", io=io)
    w.append(run(1, 3))
    io.fsync_failures, io.fsync_errno = 2, errno.ENOSPC
    for _ in range(2):
        with pytest.raises(DiskFullError):
            w.sync()
    w.append(run(4, 3))  # appends while broken: kept in order with the rest of the unsynced tail
    w.sync()
    w.close()
    w = WAL.open(tmp_path / "wal")
    assert all_entries(w) == run(1, 6)
    w.close()


def test_a_partial_write_that_cannot_be_truncated_is_repaired_before_the_next_write(tmp_path: Path) -> None:
    io = FaultyIO()
    w = WAL.open(tmp_path / "wal", io=io)
    w.append(run(1, 5))
    w.sync()
    io.space, io.truncate_failures = 300, 1
    with pytest.raises(DiskFullError):
        w.append(run(6, 5))
    assert w.last_index() == 5
    io.space = None
    w.append(run(6, 2))  # the garbage from the failed write must not precede these on disk
    w.sync()
    w.close()
    w = WAL.open(tmp_path / "wal")
    assert all_entries(w) == run(1, 7)
    w.close()


def test_disk_full_while_starting_a_new_segment(tmp_path: Path) -> None:
    io = FaultyIO()
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG, io=io)
    w.append(run(1, 25))
    io.open_failures = 1
    with pytest.raises(DiskFullError, match="create segment"):
        w.append(run(26, 20))  # needs a new segment: its first part lands, the rest is refused
    kept = w.last_index()
    assert 25 <= kept < 45
    assert all_entries(w) == run(1, kept)
    w.append(run(kept + 1, 45 - kept))  # retrying from where it stopped rotates this time
    w.sync()
    w.close()
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    assert all_entries(w) == run(1, 45)
    w.close()


def test_disk_full_while_saving_a_snapshot_keeps_the_older_ones(tmp_path: Path) -> None:
    io = FaultyIO()
    store = SnapshotStore.open(tmp_path / "snap", io=io)
    store.save(SnapshotMeta(Index(10), Term(1), ConfState.of_voters((NodeId(1),))), b"old state" * 100)
    io.space = 4000
    with pytest.raises(DiskFullError):
        store.save(
            SnapshotMeta(Index(20), Term(1), ConfState.of_voters((NodeId(1),))), (b"x" * 1000 for _ in range(100))
        )
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == [
        "snapshot-00000000000000000010-00000000000000000001.snap"
    ]
    io.space = None
    snap = store.load(Index(11))
    assert snap is not None and snap.meta.index == 10 and snap.read() == b"old state" * 100


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size_kib: int) -> Iterator[Path]:
    """A real, tiny file system (needs root and permission to mount; the test is skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    opts = f"size={size_kib}k,mode=0755"
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, f"raftkv-test-{uuid.uuid4().hex[:8]}", str(where)],
                         capture_output=True, timeout=30, check=False)  # fmt: skip
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True, timeout=30, check=True)


def test_a_real_full_file_system(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "mnt", 512) as mnt:
        filler = mnt / "filler"
        w = WAL.open(mnt / "wal", segment_bytes=64 << 10)
        i = 1
        with pytest.raises(DiskFullError) as info:
            with filler.open("wb") as f:  # take most of the space first, then fill the rest with the log
                f.write(b"\0" * (300 << 10))
            for _ in range(10_000):
                w.append(run(i, 16))
                w.sync()
                i += 16
        assert info.value.errno == errno.ENOSPC
        assert i > 1
        durable = i - 1
        assert w.last_index() == durable
        assert all_entries(w) == run(1, durable)
        filler.unlink()  # space returns
        w.append(run(i, 16))
        w.sync()
        w.close()
        w = WAL.open(mnt / "wal", segment_bytes=64 << 10)
        assert all_entries(w) == run(1, durable + 16)
        w.close()


def test_a_failed_sync_inside_compact_or_snapshot_install_leaves_a_consistent_log(tmp_path: Path) -> None:
    io = FaultyIO()
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG, io=io)
    w.append(run(1, 100))
    w.sync()
    segments = len(segment_files(tmp_path / "wal"))
    io.fsync_failures = 1
    with pytest.raises(StorageIOError):
        w.apply_snapshot(SnapshotMeta(Index(500), Term(3), ConfState.of_voters((NodeId(1),))))
    # The boundary record was written, so the log shows it (like an append whose sync failed) ...
    assert (w.first_index(), w.last_index(), w.term(Index(500))) == (501, 500, 3)
    # ... but nothing was deleted before it was durable.
    assert len(segment_files(tmp_path / "wal")) == segments
    w.append(run(501, 5, term=3))  # the log goes on from the snapshot, and the on-disk records agree
    w.sync()
    w.compact(Index(503))  # a later compaction deletes what the failed one left behind
    assert len(segment_files(tmp_path / "wal")) == 1
    w.close()
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    assert (w.first_index(), w.last_index(), w.term(Index(503))) == (504, 505, 3)
    assert all_entries(w) == run(504, 2, term=3)
    w.close()


def test_segment_deletion_interrupted_part_way_leaves_an_openable_log(tmp_path: Path) -> None:
    class FailSecondUnlink(FaultyIO):
        unlinks = 0

        def unlink(self, path: str) -> None:
            self.unlinks += 1
            if self.unlinks == 2:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            super().unlink(path)

    io = FailSecondUnlink()
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG, io=io)
    w.append(run(1, 200))
    w.sync()
    before = segment_files(tmp_path / "wal")
    w.compact(Index(190))  # wants to delete several segments; the second unlink fails
    after = segment_files(tmp_path / "wal")
    assert after == before[1:]  # exactly the oldest went; the rest are still consecutive
    w.close()
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    assert (w.first_index(), w.last_index()) == (191, 200)
    w.compact(Index(195))  # a later compaction finishes the job
    assert len(segment_files(tmp_path / "wal")) == 1
    w.close()
