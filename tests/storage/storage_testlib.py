"""Helpers shared by the storage tests: entry builders, a fault-injecting file layer, file surgery, old formats."""

from __future__ import annotations

import errno
import os
import struct
import threading
from pathlib import Path

from crc32c import crc32c

from raftkv.raft.types import Entry, Index, Term
from raftkv.storage import records as rec
from raftkv.storage.fileio import FileIO
from raftkv.storage.wal import list_segments, segment_name


def ents(first: int, terms: list[int], payload: str = "") -> list[Entry]:
    """Entries ``first, first+1, ...`` with the given terms; data names the index (and a payload tag)."""
    return [Entry(Term(t), Index(first + k), f"{payload}{first + k}".encode()) for k, t in enumerate(terms)]


def run(first: int, count: int, term: int = 1, size: int = 100) -> list[Entry]:
    """``count`` entries of ``size`` data bytes each, data derived from (index, term)."""
    out = []
    for i in range(first, first + count):
        tag = f"{i}:{term}:".encode()
        out.append(Entry(Term(term), Index(i), (tag * (size // len(tag) + 1))[:size]))
    return out


def segment_files(wal_dir: Path) -> list[Path]:
    return [Path(p) for _, p in list_segments(str(wal_dir))]


class FaultyIO(FileIO):
    """A file layer that can run out of space, fail fsyncs and fail truncates, like a sick disk would.

    ``space``: bytes that may still be written (None: unlimited). A write that does not fit writes what fits
    and returns short; the next one raises ENOSPC, which is what a real full file system does.
    """

    def __init__(self) -> None:
        self.space: int | None = None
        self.fsync_failures = 0
        self.fsync_errno = errno.EIO
        self.truncate_failures = 0
        self.open_failures = 0
        self.calls: list[str] = []
        self.fsync_gate: threading.Event | None = None
        self.fsync_entered = threading.Event()
        self.fsync_count = 0

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        self.calls.append("pwrite")
        if self.space is None:
            return os.pwrite(fd, data, offset)
        if self.space <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.pwrite(fd, bytes(memoryview(data)[: self.space]), offset)
        self.space -= n
        return n

    def fdatasync(self, fd: int) -> None:
        self.calls.append("fdatasync")
        self.fsync_count += 1
        if self.fsync_gate is not None:
            self.fsync_entered.set()
            assert self.fsync_gate.wait(timeout=10), "test did not release the fsync gate"
        if self.fsync_failures > 0:
            self.fsync_failures -= 1
            raise OSError(self.fsync_errno, os.strerror(self.fsync_errno))
        os.fdatasync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        self.calls.append("ftruncate")
        if self.truncate_failures > 0:
            self.truncate_failures -= 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.ftruncate(fd, size)

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        if self.open_failures > 0 and flags & os.O_CREAT:
            self.open_failures -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().open(path, flags, mode)


class NoSyncIO(FileIO):
    """fsync as a no-op: for tests that simulate lost writes themselves (fsync is unobservable without power loss)."""

    def fdatasync(self, fd: int) -> None:
        pass

    def fsync(self, fd: int) -> None:
        pass

    def fsync_dir(self, path: str) -> None:
        pass


def _v1_record(kind: int, flags: int, payload: bytes) -> bytes:
    body = struct.pack("<HBBI", rec.MAGIC, kind, flags, len(payload)) + payload
    return struct.pack("<I", crc32c(body)) + body


def write_v1_log(wal_dir: Path) -> Path:
    """A log as format 1 wrote it: entries 1..20, a hard state, then a BOUNDARY at 10 with voter ids only."""
    wal_dir.mkdir(parents=True)
    out = _v1_record(rec.KIND_SEGMENT, 0, struct.pack("<IIQ", 1, 0, 1))
    for e in run(1, 20):
        out += _v1_record(rec.KIND_ENTRY, int(e.type), struct.pack("<QQ", e.term, e.index) + e.data)
    out += _v1_record(rec.KIND_HARD_STATE, 0, struct.pack("<QQQ", 1, 1, 20))
    voters = (1, 2, 3)
    out += _v1_record(rec.KIND_BOUNDARY, 0, struct.pack(f"<QQII{len(voters)}Q", 10, 1, len(voters), 0, *voters))
    seg = wal_dir / segment_name(1)
    seg.write_bytes(out)
    return seg


def write_v1_snapshot(snap_dir: Path, index: int, term: int, voters: tuple[int, ...], data: bytes) -> Path:
    """A snapshot file as format 1 wrote it: magic RKSNAP\\0\\1, metadata with voter ids only, then the data."""
    snap_dir.mkdir(parents=True, exist_ok=True)
    meta = struct.pack(f"<QQQII{len(voters)}Q", index, term, len(data), crc32c(data), len(voters), *voters)
    path = snap_dir / f"snapshot-{index:020d}-{term:020d}.snap"
    path.write_bytes(struct.pack("<8sII", b"RKSNAP\x00\x01", len(meta), crc32c(meta)) + meta + data)
    return path
