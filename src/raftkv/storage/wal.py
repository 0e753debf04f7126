"""The write-ahead log: a durable ``LogStorage`` made of segment files of CRC-framed records.

Theory of operation
-------------------
**Files.** A WAL directory holds ``segment-NNNNNNNNNN.wal`` files numbered consecutively from 1 and a ``LOCK``
file (``flock``-ed while open, so two processes never write one log). Records are framed as described in
:mod:`raftkv.storage.records`. Only the newest segment (the *active* one) is ever written; when a write would
push it past ``segment_bytes`` the log *rotates*: it fdatasyncs the active segment, creates the next one
(header record first) and fsyncs the directory. Hence every segment but the last is complete and durable.

**Writes** follow the ``LogStorage`` order: ``append`` → ``set_hard_state`` → ``sync``. ``append`` frames a
whole batch into one buffer and issues one ``pwrite``; an entry record for index ``i`` implies "discard every
entry ``>= i``", so overwriting a conflicting suffix rewrites nothing. ``set_hard_state`` writes a small record
after the batch's entries, so a crash can never leave a durable commit index pointing past the durable log.
``compact``/``apply_snapshot`` write a BOUNDARY record plus the current hard state, sync, and only then delete
the segments wholly below the boundary (oldest first, then fsync the directory).

**Group commit.** ``sync`` records how far the active segment has been written, fdatasyncs it *without*
holding the state lock, then marks that much as synced. Appends made meanwhile (from another thread) land after
the mark and are covered by the next ``sync``. Concurrent ``sync`` calls queue on ``_sync_lock``; one that finds
everything already synced returns without an fsync. fdatasync suffices: the files only grow (no
preallocation), and fdatasync persists the size change with the data.

**Recovery** (:func:`scan`) reads every segment in order, verifies every CRC and rebuilds the in-memory index:
per entry its term, its file offset and its size (three flat arrays, ~20 bytes per entry; no payloads). A
segment of another format version is refused (:class:`~raftkv.storage.errors.UnsupportedFormatError`) before
anything is changed. A bad record is classified:

* in the last segment with no valid record after it: a *torn tail* from a crash mid-write. It is cut off (one
  warning) and the file is fdatasynced before anything new is written after it.
* anywhere else (a later segment exists, or a valid record follows it): *corruption*. Opening fails with
  :class:`~raftkv.storage.errors.CorruptLogError` naming the file and offset. Nothing is dropped silently.

Since every record after a torn one was written after it, and a sync covers everything before it, nothing
after a torn record was ever reported synced: the recovered log is exactly a prefix of the written records,
containing at least every synced one. The hard state is the last HARD_STATE record in that prefix.

**Failures.** Bytes written since the last successful sync are also kept in ``_pending``. If a write fails
(``ENOSPC``), the partial write is truncated away and the call raises a typed error with the in-memory view
unchanged. If an fdatasync fails, the kernel may have dropped those dirty pages (a later fsync would falsely
succeed), so the log marks itself ``_needs_repair``: before the next write or sync it truncates the active
segment to the synced size and rewrites ``_pending``. Readers are unaffected throughout.

**Threads.** One writer thread calls append/set_hard_state/compact; any thread may call sync; other threads
read. Locks, always taken in this order: ``_sync_lock`` (fsync of the active segment, rotation, repair,
compaction) → ``_write_lock`` (writes to the active segment) → ``_lock`` (the in-memory index, the cache, the
file-descriptor table; held only for short updates and reads, never across an fsync).

**Configuration.** The BOUNDARY record carries the configuration as of the boundary. Above it, the log keeps
the indexes of its CONF_CHANGE entries (the entry type is in each record's header, so replay and append note
them without decoding anything; they are as rare as membership changes) and keeps that list in step with every
overwrite, compaction and snapshot install. So :meth:`WAL.conf_indexes` costs one list copy, and
:meth:`WAL.compact` finds the configuration at its new boundary by reading at most one entry: the latest
configuration entry at or below it.

**Reads** come from a bounded cache of the most recent ``Entry`` objects when possible, else from the segment
files with ``pread`` (one read per run of entries in a segment), re-verifying each record's CRC.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import re
import threading
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

from crc32c import crc32c

from raftkv.raft.errors import EntryUnavailable, LogCompacted, invariant
from raftkv.raft.membership import decode_conf
from raftkv.raft.types import EMPTY_CONF, ConfState, Entry, HardState, Index, NodeId, SnapshotMeta, Term
from raftkv.storage import records as rec
from raftkv.storage.errors import (
    CorruptLogError,
    StorageClosedError,
    StorageInUseError,
    UnsupportedFormatError,
    io_error,
)
from raftkv.storage.fileio import OS_IO, FileIO

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_CACHE_ENTRIES = 16384
DEFAULT_CACHE_BYTES = 32 << 20
MAX_PENDING_BYTES = 64 << 20
"""Writes beyond this much unsynced data first sync, bounding the memory ``_pending`` holds."""
READ_WINDOW_BYTES = 4 << 20
"""Recovery reads a segment in windows of this size, so its memory does not grow with the segment size."""
MAX_READ_FDS = 32
"""Read-only descriptors kept open for older segments (least recently used are closed)."""

SEGMENT_RE = re.compile(r"^segment-(\d{10})\.wal$")
LOCK_NAME = "LOCK"


def segment_name(seq: int) -> str:
    return f"segment-{seq:010d}.wal"


def list_segments(path: str) -> list[tuple[int, str]]:
    """``(seq, file path)`` of every segment file in ``path``, in order."""
    found = []
    for name in os.listdir(path):
        m = SEGMENT_RE.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(path, name)))
    found.sort()
    return found


# --- recovery --------------------------------------------------------------------------------------------


@dataclass
class SegmentInfo:
    """What a scan found in one segment file (used by ``inspect`` and by open)."""

    seq: int
    path: str
    size: int
    valid_bytes: int
    """Offset just past the last valid record (== size unless the file has a torn tail)."""
    records: int = 0
    entries: int = 0
    first_entry: int | None = None
    """Index of the first ENTRY record in file order (None when there is none)."""
    last_entry: int | None = None
    """Index of the last ENTRY record in file order."""


@dataclass
class TornTail:
    """An incomplete last record (a crash mid-write): everything from ``offset`` on is dropped on open."""

    path: str
    offset: int
    dropped_bytes: int
    reason: str
    headerless: bool
    """The segment has no valid header at all: open deletes the file instead of truncating it."""


@dataclass
class Recovered:
    """The state a scan rebuilt. Arrays cover indexes ``boundary_index + 1 .. last`` (``k = i - b - 1``)."""

    path: str
    segments: list[SegmentInfo] = field(default_factory=list)
    torn: TornTail | None = None
    hard_state: HardState = field(default_factory=HardState)
    boundary_index: int = 0
    boundary_term: int = 0
    conf: ConfState = EMPTY_CONF
    """The configuration as of the boundary (from the last BOUNDARY record)."""
    last: int = 0
    terms: array[int] = field(default_factory=lambda: array("Q"))
    offsets: array[int] = field(default_factory=lambda: array("Q"))
    sizes: array[int] = field(default_factory=lambda: array("I"))
    run_starts: list[int] = field(default_factory=list)
    """Runs of consecutive indexes stored in one segment: index ``run_starts[r]`` onwards is in ``run_seqs[r]``."""
    run_seqs: list[int] = field(default_factory=list)
    conf_indexes: list[Index] = field(default_factory=list)
    """Indexes of the CONF_CHANGE entries held (above the boundary), ascending."""


class _Replay:
    """Applies records to a :class:`Recovered` in log order. ``base``: the arrays cover ``(base, last]``.

    ``phantom_ok``: the oldest segments were deleted by compaction, so the first entries seen may follow
    entries that are no longer on disk; those must end up at or below the boundary, which :meth:`finish`
    checks. Without it, an entry that does not follow the last one is corruption.
    """

    def __init__(self, out: Recovered, phantom_ok: bool) -> None:
        self.out = out
        self.base = 0
        self.phantom_ok = phantom_ok

    def _clear(self, new_last: int) -> None:
        out = self.out
        del out.terms[:], out.offsets[:], out.sizes[:]
        out.run_starts.clear()
        out.run_seqs.clear()
        out.conf_indexes.clear()
        self.base = out.last = new_last

    def _truncate(self, index: int) -> None:
        """Discard held entries ``>= index`` (``base < index <= last``)."""
        out = self.out
        cut = index - self.base - 1
        del out.terms[cut:], out.offsets[cut:], out.sizes[cut:]
        while out.run_starts and out.run_starts[-1] >= index:
            out.run_starts.pop()
            out.run_seqs.pop()
        confs = out.conf_indexes
        while confs and confs[-1] >= index:
            confs.pop()
        out.last = index - 1

    def entry_slow(self, index: int, term: int, offset: int, size: int, seq: int, path: str) -> None:
        """An entry that does not simply extend the log in the current run: check and apply the append rule."""
        out = self.out
        if index <= out.boundary_index:
            raise CorruptLogError(
                path, offset, f"entry {index} lies at or below the compaction boundary {out.boundary_index}"
            )
        if index > out.last + 1:
            if not (self.phantom_ok and out.last == self.base):
                raise CorruptLogError(path, offset, f"entry {index} does not follow the last entry {out.last}")
            self._clear(index - 1)
        elif index <= self.base:
            # Only reachable with phantom entries: the append discards everything we know and more.
            self._clear(index - 1)
        elif index <= out.last:
            self._truncate(index)
        if not out.run_seqs or out.run_seqs[-1] != seq:
            out.run_starts.append(index)
            out.run_seqs.append(seq)
        out.terms.append(term)
        out.offsets.append(offset)
        out.sizes.append(size)
        out.last = index

    def boundary(self, index: int, term: int, conf: ConfState, reset: bool) -> None:
        out = self.out
        out.boundary_index, out.boundary_term, out.conf = index, term, conf
        # Configuration entries at or below the boundary are now part of its configuration.
        del out.conf_indexes[: bisect_right(out.conf_indexes, index)]
        if reset or index >= out.last:
            self._clear(index)
        elif index >= self.base:
            drop = index - self.base
            del out.terms[:drop], out.offsets[:drop], out.sizes[:drop]
            self.base = index
        # else: the boundary lies inside the phantom region; finish() checks a later one covers it.

    def finish(self, first_path: str) -> None:
        out = self.out
        if self.base > out.boundary_index:
            raise CorruptLogError(
                first_path,
                0,
                f"entries {out.boundary_index + 1}..{self.base} are missing "
                f"(a segment file before this one was deleted or lost)",
            )
        # Drop runs that end at or below the boundary; lookups only ever ask for indexes above it.
        while len(out.run_starts) > 1 and out.run_starts[1] <= out.boundary_index + 1:
            del out.run_starts[0], out.run_seqs[0]


def scan(path: str, io: FileIO = OS_IO) -> Recovered:
    """Read and verify every segment in ``path`` and rebuild the log's state. Modifies nothing.

    Raises :class:`CorruptLogError` for corruption; a torn tail is reported in ``Recovered.torn``.
    """
    out = Recovered(path=path)
    segments = list_segments(path)
    if not segments:
        return out
    for (prev, _), (seq, seg_path) in itertools.pairwise(segments):
        if seq != prev + 1:
            raise CorruptLogError(seg_path, 0, f"segment {prev + 1} is missing before this one")
    replay = _Replay(out, phantom_ok=segments[0][0] > 1)
    for n, (seq, seg_path) in enumerate(segments):
        info = _scan_segment(replay, seq, seg_path, is_last=n == len(segments) - 1, io=io)
        out.segments.append(info)
    if out.torn is not None and out.torn.headerless and len(segments) == 1 and segments[0][0] > 1:
        raise CorruptLogError(
            segments[0][1], 0, "the only segment file has no valid header, and older ones were deleted"
        )
    replay.finish(segments[0][1])
    return out


def _scan_segment(replay: _Replay, seq: int, path: str, *, is_last: bool, io: FileIO) -> SegmentInfo:
    out = replay.out
    fd = io.open(path, os.O_RDONLY)
    try:
        size = io.fstat_size(fd)
        info = SegmentInfo(seq=seq, path=path, size=size, valid_bytes=0)
        # Hot loop: locals only. ``win`` is the file offset of ``buf[0]``.
        terms_append = out.terms.append
        offsets_append = out.offsets.append
        sizes_append = out.sizes.append
        unpack_header = rec.HEADER.unpack_from
        unpack_ti = rec.ENTRY_TERM_INDEX.unpack_from
        header_size = rec.HEADER_SIZE
        magic_ok = rec.MAGIC
        kinds = rec.VALID_KINDS
        max_payload = rec.MAX_PAYLOAD
        n_types = len(rec.ENTRY_TYPES)
        kind_entry = rec.KIND_ENTRY
        conf_flags = rec.CONF_CHANGE_FLAGS
        conf_indexes = out.conf_indexes  # the list object stays the same: _Replay only edits it in place
        win = 0
        buf = io.pread(fd, min(READ_WINDOW_BYTES, size), 0)
        blen = len(buf)
        view = memoryview(buf)
        off = 0
        records = 0
        entries = 0
        first_entry: int | None = None
        index = 0
        last = out.last
        run_ok = False  # the current run is this segment's, so an entry extending the log needs no checks
        expect_header = True
        bad: tuple[int, str] | None = None
        while True:
            if off + header_size > blen:
                at = win + off
                if at >= size:
                    break
                if win + blen < size:
                    win, buf = at, io.pread(fd, READ_WINDOW_BYTES, at)
                    blen, view, off = len(buf), memoryview(buf), 0
                    continue
                bad = (at, "incomplete record header at the end of the file")
                break
            crc, magic, kind, flags, length = unpack_header(buf, off)
            if magic != magic_ok or kind not in kinds or length >= max_payload:
                bad = (win + off, "not a record header")
                break
            end = off + header_size + length
            if end > blen:
                at = win + off
                if win + end <= size:
                    win, buf = at, io.pread(fd, max(READ_WINDOW_BYTES, header_size + length), at)
                    blen, view, off = len(buf), memoryview(buf), 0
                    continue
                bad = (at, f"record of {length} bytes runs past the end of the file")
                break
            if crc32c(view[off + 4 : end]) != crc:
                bad = (win + off, "CRC mismatch")
                break
            records += 1
            if kind == kind_entry and not expect_header:
                if length < rec.ENTRY_FIXED_PAYLOAD or flags >= n_types:
                    raise CorruptLogError(path, win + off, "malformed entry record (its CRC verifies)")
                term, index = unpack_ti(buf, off + header_size)
                if index == last + 1 and run_ok:
                    terms_append(term)
                    offsets_append(win + off)
                    sizes_append(length)
                    last = index
                else:
                    out.last = last
                    replay.entry_slow(index, term, win + off, length, seq, path)
                    last = out.last
                    run_ok = True
                if flags == conf_flags:  # after entry_slow: an overwrite has dropped later conf indexes
                    conf_indexes.append(Index(index))
                entries += 1
                if first_entry is None:
                    first_entry = index
            elif expect_header:
                if kind != rec.KIND_SEGMENT:
                    raise CorruptLogError(path, win + off, "the first record is not a segment header")
                version, _, header_seq = rec.SEGMENT_PAYLOAD.unpack_from(buf, off + header_size)
                if version != rec.FORMAT_VERSION:
                    raise UnsupportedFormatError(path, "write-ahead log", version, rec.FORMAT_VERSION)
                if header_seq != seq:
                    raise CorruptLogError(
                        path, win + off, f"the header says this is segment {header_seq} (misplaced file?)"
                    )
                expect_header = False
            elif kind == rec.KIND_HARD_STATE:
                t, v, c = rec.HARD_STATE_PAYLOAD.unpack_from(buf, off + header_size)
                out.hard_state = HardState(Term(t), NodeId(v), Index(c))
            elif kind == rec.KIND_BOUNDARY:
                try:
                    b_index, b_term, conf = rec.decode_boundary(view[off + header_size : end])
                except ValueError as exc:
                    raise CorruptLogError(
                        path, win + off, f"malformed boundary record (its CRC verifies): {exc}"
                    ) from exc
                out.last = last
                replay.boundary(b_index, b_term, conf, reset=bool(flags & rec.FLAG_RESET))
                last = out.last
                run_ok = bool(out.run_seqs) and out.run_seqs[-1] == seq
            else:
                raise CorruptLogError(path, win + off, "a segment header in the middle of a segment")
            off = end
        out.last = last
        info.records, info.entries = records, entries
        info.first_entry, info.last_entry = first_entry, (index if entries else None)
        if bad is None:
            info.valid_bytes = size
            if expect_header:  # an empty file: a crash right after creating it
                if not is_last:
                    raise CorruptLogError(path, 0, "empty segment file followed by later segments")
                out.torn = TornTail(path, 0, 0, "empty segment file", headerless=True)
            return info
        at, reason = bad
        info.valid_bytes = at
        if not is_last:
            raise CorruptLogError(path, at, f"{reason}, and later segment files exist")
        rest = io.pread(fd, size - at, at)
        later = rec.find_valid_record(rest, 1, len(rest))
        if later is not None:
            raise CorruptLogError(path, at, f"{reason}, followed by a valid record at offset {at + later}")
        out.torn = TornTail(path, at, size - at, reason, headerless=expect_header)
        return info
    finally:
        io.close(fd)


# --- the log ---------------------------------------------------------------------------------------------


class WAL:
    """A durable, crash-safe ``LogStorage``. Create with :meth:`open`; see the module docstring.

    Beyond the protocol: :meth:`close`, :meth:`entry_bytes` and :meth:`path`. The configuration as of the
    boundary is reported by :meth:`initial_state`, the configuration entries above it by :meth:`conf_indexes`.
    """

    def __init__(
        self, path: str, io: FileIO, lock_fd: int, *, segment_bytes: int, cache_entries: int, cache_bytes: int
    ) -> None:
        """Use :meth:`open`."""
        self._path = path
        self._io = io
        self._lock_fd = lock_fd
        self._segment_bytes = segment_bytes
        self._cache_max_entries = cache_entries
        self._cache_max_bytes = cache_bytes
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._closed = False
        # Segments: consecutive seqs first_seq..active_seq exist on disk.
        self._first_seq = 1
        self._active_seq = 1
        self._active_fd = -1
        self._active_size = 0
        """Bytes written to the active segment. Invariant (unless _needs_repair): == file size."""
        self._synced_size = 0
        """Prefix of the active segment known durable. Invariant: _synced_size + sum(_pending) == _active_size."""
        self._pending: list[bytes | bytearray | memoryview] = []
        self._pending_bytes = 0
        self._needs_repair = False
        """An fdatasync or an undo failed: the active segment past _synced_size must be rewritten from _pending."""
        self._read_fds: OrderedDict[int, int] = OrderedDict()
        # The log. Entry i (bi < i <= last) is at k = i - bi - 1 in the arrays.
        self._hs = HardState()
        self._hs_written = HardState()
        self._bi = 0
        self._bt = 0
        self._conf = EMPTY_CONF
        self._last = 0
        self._terms: array[int] = array("Q")
        self._offsets: array[int] = array("Q")
        self._sizes: array[int] = array("I")
        self._run_starts: list[int] = []
        self._run_seqs: list[int] = []
        self._conf_idx: list[Index] = []
        """Indexes of the CONF_CHANGE entries held (bi < i <= last), ascending; kept in step with the arrays."""
        # Cache of the newest entries. Invariant: _cache_lo + len(_cache) == _last + 1.
        self._cache: list[Entry] = []
        self._cache_lo = 1
        self._cache_data_bytes = 0

    # --- opening and closing ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        io: FileIO | None = None,
    ) -> WAL:
        """Open (creating if needed) the log in directory ``path``: recover, repair a torn tail, lock it.

        Raises :class:`CorruptLogError` if the log is corrupt, :class:`StorageInUseError` if it is open
        elsewhere, :class:`StorageIOError` on an I/O error.
        """
        fio = io if io is not None else OS_IO
        spath = os.path.abspath(os.fspath(path))
        if segment_bytes < 4096:
            raise ValueError(f"segment_bytes must be at least 4096, not {segment_bytes}")
        try:
            fio.makedirs(spath)
        except OSError as exc:
            raise io_error("create directory", spath, exc) from exc
        lock_fd = _lock_directory(spath)
        try:
            recovered = scan(spath, fio)
            wal = cls(
                spath, fio, lock_fd, segment_bytes=segment_bytes, cache_entries=cache_entries, cache_bytes=cache_bytes
            )
            wal._start(recovered)
        except BaseException:
            os.close(lock_fd)
            raise
        return wal

    def _start(self, r: Recovered) -> None:
        io = self._io
        segments = list(r.segments)
        if r.torn is not None:
            t = r.torn
            log.warning(
                "write-ahead log %s: dropped a torn tail of %d bytes at offset %d of %s (%s); "
                "this is the expected result of a crash during a write",
                self._path,
                t.dropped_bytes,
                t.offset,
                os.path.basename(t.path),
                t.reason,
            )
            if t.headerless:
                try:
                    io.unlink(t.path)
                    io.fsync_dir(self._path)
                except OSError as exc:
                    raise io_error("remove torn segment", t.path, exc) from exc
                segments.pop()
        self._hs = self._hs_written = r.hard_state
        self._bi, self._bt, self._conf = r.boundary_index, r.boundary_term, r.conf
        self._conf_idx = r.conf_indexes
        self._last = r.last
        self._terms, self._offsets, self._sizes = r.terms, r.offsets, r.sizes
        self._run_starts, self._run_seqs = r.run_starts, r.run_seqs
        self._cache_lo = self._last + 1
        if not segments:
            # A fresh directory, or segment 1 was an empty/header-less file deleted above (scan refuses the
            # case where it is the only segment but not segment 1): start segment 1.
            self._first_seq = 1
            self._create_first_segment(1)
            return
        last = segments[-1]
        self._first_seq = segments[0].seq
        self._active_seq = last.seq
        path = last.path
        try:
            fd = io.open(path, os.O_RDWR)
        except OSError as exc:
            raise io_error("open segment", path, exc) from exc
        self._active_fd = fd
        try:
            if r.torn is not None and not r.torn.headerless:
                io.ftruncate(fd, r.torn.offset)
            # Whatever we recovered may be in the page cache only (the previous process was killed before
            # syncing): make it durable before acting on it or writing after it.
            io.fdatasync(fd)
        except OSError as exc:
            io.close(fd)
            raise io_error("repair torn tail", path, exc) from exc
        self._active_size = self._synced_size = last.valid_bytes

    def _create_first_segment(self, seq: int) -> None:
        path = os.path.join(self._path, segment_name(seq))
        header = rec.encode_segment_header(seq)
        try:
            fd = self._io.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        except OSError as exc:
            raise io_error("create segment", path, exc) from exc
        try:
            self._io.pwrite_all(fd, header, 0)
            self._io.fdatasync(fd)
            self._io.fsync_dir(self._path)
        except OSError as exc:
            self._io.close(fd)
            raise io_error("create segment", path, exc) from exc
        self._active_seq = seq
        self._active_fd = fd
        self._active_size = self._synced_size = len(header)

    def close(self) -> None:
        """Close the files and release the directory. Idempotent. Does not sync: call :meth:`sync` first."""
        with self._sync_lock, self._write_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in self._read_fds.values():
                self._io.close(fd)
            self._read_fds.clear()
            if self._active_fd >= 0:
                self._io.close(self._active_fd)
                self._active_fd = -1
            os.close(self._lock_fd)

    def __enter__(self) -> WAL:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def path(self) -> str:
        return self._path

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosedError(f"write-ahead log {self._path} is closed")

    def _seg_path(self, seq: int) -> str:
        return os.path.join(self._path, segment_name(seq))

    # --- reads ------------------------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, SnapshotMeta]:
        with self._lock:
            return self._hs, SnapshotMeta(Index(self._bi), Term(self._bt), self._conf)

    def first_index(self) -> Index:
        with self._lock:
            return Index(self._bi + 1)

    def last_index(self) -> Index:
        with self._lock:
            return Index(self._last)

    def term(self, index: Index) -> Term:
        with self._lock:
            bi = self._bi
            if index < bi:
                raise LogCompacted(f"index {index} is compacted (first held index is {bi + 1})")
            if index > self._last:
                raise EntryUnavailable(f"index {index} is beyond the last index {self._last}")
            if index == bi:
                return Term(self._bt)
            return Term(self._terms[index - bi - 1])

    def entries(self, lo: Index, hi: Index, max_bytes: int | None = None) -> list[Entry]:
        with self._lock:
            self._check_open()
            bi = self._bi
            if lo <= bi:
                raise LogCompacted(f"index {lo} is compacted (first held index is {bi + 1})")
            if hi > self._last + 1:
                raise EntryUnavailable(f"index {hi - 1} is beyond the last index {self._last}")
            if hi <= lo:
                return []
            if max_bytes is not None:
                hi = self._limit_size(lo, hi, max_bytes)
            cache_lo = self._cache_lo
            if lo >= cache_lo:
                return self._cache[lo - cache_lo : hi - cache_lo]
            stop = min(hi, cache_lo)
            out = self._read_disk(lo, stop)
            if stop < hi:
                out.extend(self._cache[: hi - cache_lo])
            return out

    def conf_indexes(self) -> list[Index]:
        """The indexes of the CONF_CHANGE entries held (above the boundary), ascending. No log read."""
        with self._lock:
            return list(self._conf_idx)

    def _conf_at(self, index: int) -> ConfState:
        """The configuration as of ``index`` (``bi <= index <= last``): the latest configuration entry at or below
        it, read from the log (one entry), else the boundary's. Caller holds ``_write_lock``, so the log cannot
        change underneath."""
        with self._lock:
            confs = self._conf_idx
            k = bisect_right(confs, index)
            if k == 0:
                return self._conf
            at = confs[k - 1]
            entry = self._cache[at - self._cache_lo] if at >= self._cache_lo else self._read_disk(at, at + 1)[0]
        return decode_conf(entry.data)

    def entry_bytes(self, lo: Index, hi: Index) -> int:
        """Total size (``Entry.size_bytes()``) of the held entries ``lo <= i < hi``; indexes outside the log
        count nothing. Cheap: it reads the in-memory index, not the segments."""
        with self._lock:
            k0 = max(int(lo), self._bi + 1) - self._bi - 1
            k1 = min(int(hi), self._last + 1) - self._bi - 1
            return sum(self._sizes[k0:k1]) if k1 > k0 else 0

    def _limit_size(self, lo: int, hi: int, max_bytes: int) -> Index:
        """``hi`` cut so that entries ``lo..`` fit in ``max_bytes`` (at least one); sizes == Entry.size_bytes()."""
        sizes = self._sizes
        k0 = lo - self._bi - 1
        total = 0
        for k in range(k0, hi - self._bi - 1):
            total += sizes[k]
            if total > max_bytes and k > k0:
                return Index(k + self._bi + 1)
        return Index(hi)

    def _read_disk(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``lo <= i < hi`` from the segment files (caller holds ``_lock``)."""
        out: list[Entry] = []
        bi = self._bi
        offsets, sizes, terms = self._offsets, self._sizes, self._terms
        i = lo
        while i < hi:
            r = bisect_right(self._run_starts, i)
            seq = self._run_seqs[r - 1]
            j = min(hi, self._run_starts[r]) if r < len(self._run_starts) else hi
            k_first, k_last = i - bi - 1, j - bi - 2
            start = offsets[k_first]
            span = offsets[k_last] + rec.HEADER_SIZE + sizes[k_last] - start
            fd = self._fd_for(seq)
            path = self._seg_path(seq)
            try:
                data = self._io.pread(fd, span, start)
            except OSError as exc:
                raise io_error("read", path, exc) from exc
            if len(data) < span:
                raise CorruptLogError(path, start + len(data), "the file is shorter than when the log was opened")
            for k in range(k_first, k_last + 1):
                rel = offsets[k] - start
                e = rec.decode_entry(data, rel, rel + rec.HEADER_SIZE + sizes[k])
                if e is None or e.index != bi + 1 + k or e.term != terms[k]:
                    raise CorruptLogError(
                        path, offsets[k], f"entry {bi + 1 + k} no longer verifies (it did when the log was opened)"
                    )
                out.append(e)
            i = j
        return out

    def _fd_for(self, seq: int) -> int:
        """A descriptor to read segment ``seq`` (caller holds ``_lock``)."""
        if seq == self._active_seq:
            return self._active_fd
        fd = self._read_fds.get(seq)
        if fd is not None:
            self._read_fds.move_to_end(seq)
            return fd
        path = self._seg_path(seq)
        try:
            fd = self._io.open(path, os.O_RDONLY)
        except OSError as exc:
            raise io_error("open segment", path, exc) from exc
        self._read_fds[seq] = fd
        if len(self._read_fds) > MAX_READ_FDS:
            _, old = self._read_fds.popitem(last=False)
            self._io.close(old)
        return fd

    # --- writes -----------------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Store ``entries`` (contiguous), first discarding held entries at or after ``entries[0].index``.

        Requires ``first_index <= entries[0].index <= last_index + 1``. Not durable until :meth:`sync`.
        Raises :class:`DiskFullError`/:class:`StorageIOError` if a write fails; the entries written before the
        failure stay (only possible when the batch spans a segment rotation; ``last_index`` says how far), and
        retrying the same ``append`` is safe since it overwrites from ``entries[0].index``.
        """
        if not entries:
            return
        self._check_open()
        if self._pending_bytes > MAX_PENDING_BYTES:
            self.sync()
        batch = rec.encode_entries(entries)
        first = batch.first
        if not self._bi < first <= self._last + 1:  # (the message is built only on failure: hot path)
            invariant(False, f"append at index {first} outside [{self._bi + 1}, {self._last + 1}]")
        exclusive = self._needs_repair or self._active_size + len(batch.buf) > self._segment_bytes
        if exclusive:
            self._sync_lock.acquire()
        try:
            with self._write_lock:
                self._check_open()
                if exclusive and self._needs_repair:
                    self._repair()
                self._write_batch(batch, entries, may_rotate=exclusive)
        finally:
            if exclusive:
                self._sync_lock.release()

    def _write_batch(self, batch: rec.EncodedBatch, entries: Sequence[Entry], *, may_rotate: bool) -> None:
        """Write the batch, splitting it over segments at record boundaries (caller holds ``_write_lock``)."""
        buf = batch.buf
        starts = batch.starts
        n = len(starts)
        k = 0
        while k < n:
            space = self._segment_bytes - self._active_size
            base = starts[k]
            if len(buf) - base <= space:
                j = n
            else:
                # Largest j with records k..j-1 ending within space: record j-1 ends where record j starts.
                j = bisect_right(starts, base + space, k + 1, n) - 1
                if j <= k:
                    if may_rotate and self._active_size > rec.SEGMENT_RECORD_SIZE:
                        self._rotate()
                        continue
                    j = k + 1  # a record larger than a whole segment goes alone into the active one
            end = len(buf) if j == n else starts[j]
            self._write_entries(batch, entries, k, j, memoryview(buf)[base:end] if (k, j) != (0, n) else buf)
            k = j

    def _write_entries(
        self, batch: rec.EncodedBatch, entries: Sequence[Entry], k: int, j: int, chunk: bytearray | memoryview
    ) -> None:
        """Write records ``k..j-1`` of ``batch`` at the end of the active segment, then publish them."""
        at = self._active_size
        self._pwrite(chunk, at, "append")
        delta = at - batch.starts[k]
        first = batch.first + k
        whole = k == 0 and j == len(batch.starts)
        with self._lock:
            if first <= self._last:
                self._truncate_locked(first)
            if batch.confs:
                if whole:
                    self._conf_idx.extend(batch.confs)
                else:
                    stop = first + (j - k)
                    self._conf_idx.extend(c for c in batch.confs if first <= c < stop)
            if not self._run_seqs or self._run_seqs[-1] != self._active_seq:
                self._run_starts.append(first)
                self._run_seqs.append(self._active_seq)
            if whole:
                self._terms.extend(batch.terms)
                self._sizes.extend(batch.sizes)
                self._offsets.extend(map(delta.__add__, batch.starts))
                self._cache.extend(entries)
                self._cache_data_bytes += batch.data_bytes
            else:
                self._terms.extend(batch.terms[k:j])
                self._sizes.extend(batch.sizes[k:j])
                self._offsets.extend(map(delta.__add__, batch.starts[k:j]))
                part = entries[k:j]
                self._cache.extend(part)
                self._cache_data_bytes += sum(len(e.data) for e in part)
            self._last = first + (j - k) - 1
            self._active_size = at + len(chunk)
            self._pending.append(chunk)
            self._pending_bytes += len(chunk)
            if len(self._cache) > self._cache_max_entries or self._cache_data_bytes > self._cache_max_bytes:
                self._trim_cache()

    def _truncate_locked(self, index: int) -> None:
        """Forget held entries ``>= index`` (``bi < index <= last``): the overwrite half of the append rule."""
        cut = index - self._bi - 1
        del self._terms[cut:], self._offsets[cut:], self._sizes[cut:]
        while self._run_starts and self._run_starts[-1] >= index:
            self._run_starts.pop()
            self._run_seqs.pop()
        confs = self._conf_idx
        while confs and confs[-1] >= index:
            confs.pop()
        if index <= self._cache_lo:
            self._cache.clear()
            self._cache_data_bytes = 0
            self._cache_lo = index
        else:
            dropped = self._cache[index - self._cache_lo :]
            del self._cache[index - self._cache_lo :]
            self._cache_data_bytes -= sum(len(e.data) for e in dropped)
        self._last = index - 1

    def _trim_cache(self) -> None:
        """Drop the oldest cached entries down to half the limits (amortises the cost of trimming)."""
        cache = self._cache
        keep_entries = self._cache_max_entries // 2
        keep_bytes = self._cache_max_bytes // 2
        drop = max(0, len(cache) - keep_entries)
        dropped_bytes = sum(len(e.data) for e in cache[:drop])
        remaining = self._cache_data_bytes - dropped_bytes
        while drop < len(cache) and remaining > keep_bytes:
            remaining -= len(cache[drop].data)
            drop += 1
        del cache[:drop]
        self._cache_lo += drop
        self._cache_data_bytes = remaining

    def set_hard_state(self, hard_state: HardState) -> None:
        """Record the hard state (after this batch's entries). Not durable until :meth:`sync`."""
        self._check_open()
        if hard_state == self._hs_written:
            with self._lock:
                self._hs = hard_state
            return
        self._write_record(rec.encode_hard_state(hard_state), "set_hard_state")
        with self._lock:
            self._hs = self._hs_written = hard_state

    def _write_record(self, record: bytes, operation: str) -> None:
        """Append one non-entry record to the active segment (rotating first if it is full)."""
        if self._pending_bytes > MAX_PENDING_BYTES:
            self.sync()
        exclusive = self._needs_repair or self._active_size + len(record) > self._segment_bytes
        if exclusive:
            self._sync_lock.acquire()
        try:
            with self._write_lock:
                self._check_open()
                if exclusive:
                    if self._needs_repair:
                        self._repair()
                    if self._active_size + len(record) > self._segment_bytes:
                        self._rotate()
                self._write_record_locked(record, operation)
        finally:
            if exclusive:
                self._sync_lock.release()

    def _write_record_locked(self, record: bytes, operation: str) -> None:
        at = self._active_size
        self._pwrite(record, at, operation)
        with self._lock:
            self._active_size = at + len(record)
            self._pending.append(record)
            self._pending_bytes += len(record)

    def _pwrite(self, data: bytes | bytearray | memoryview, at: int, operation: str) -> None:
        """Write at the end of the active segment; on failure undo any partial write and raise a typed error."""
        try:
            self._io.pwrite_all(self._active_fd, data, at)
        except OSError as exc:
            try:
                self._io.ftruncate(self._active_fd, at)
            except OSError:
                # The partial record stays on disk for now; the next sync or write rewrites the tail first.
                with self._lock:
                    self._needs_repair = True
            raise io_error(operation, self._seg_path(self._active_seq), exc) from exc

    def sync(self) -> None:
        """Make every preceding append/set_hard_state durable (group commit: one fdatasync covers them all)."""
        self._check_open()
        with self._sync_lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        """fdatasync the active segment (caller holds ``_sync_lock``, so it cannot rotate or be repaired)."""
        if self._needs_repair:
            with self._write_lock:
                self._repair()
        with self._lock:
            self._check_open()
            if self._synced_size == self._active_size:
                return
            fd = self._active_fd
            target = self._active_size
            n_pending = len(self._pending)
        try:
            self._io.fdatasync(fd)
        except OSError as exc:
            # The kernel may have dropped the dirty pages; a retried fsync could falsely succeed. Rewrite first.
            with self._lock:
                self._needs_repair = True
            raise io_error("fdatasync", self._seg_path(self._active_seq), exc) from exc
        with self._lock:
            # The chunks covered are exactly the bytes between the old and the new synced size.
            self._pending_bytes -= target - self._synced_size
            self._synced_size = target
            del self._pending[:n_pending]

    def _repair(self) -> None:
        """Rewrite the unsynced tail of the active segment from ``_pending`` (holding sync and write locks)."""
        fd = self._active_fd
        at = self._synced_size
        try:
            self._io.ftruncate(fd, at)
            for chunk in self._pending:
                self._io.pwrite_all(fd, chunk, at)
                at += len(chunk)
        except OSError as exc:
            raise io_error("rewrite unsynced records", self._seg_path(self._active_seq), exc) from exc
        invariant(at == self._active_size, f"repair rewrote up to {at}, expected {self._active_size}")
        with self._lock:
            self._needs_repair = False

    def _rotate(self) -> None:
        """Seal the active segment (fdatasync) and start the next one (holding sync and write locks)."""
        io = self._io
        self._sync_locked()
        seq = self._active_seq + 1
        path = self._seg_path(seq)
        header = rec.encode_segment_header(seq)
        try:
            fd = io.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        except OSError as exc:
            raise io_error("create segment", path, exc) from exc
        try:
            io.pwrite_all(fd, header, 0)
            io.fsync_dir(self._path)
        except OSError as exc:
            io.close(fd)
            with contextlib.suppress(OSError):  # a leftover empty/header-only last segment is fine on open
                io.unlink(path)
            raise io_error("create segment", path, exc) from exc
        with self._lock:
            self._read_fds[self._active_seq] = self._active_fd
            if len(self._read_fds) > MAX_READ_FDS:
                _, old = self._read_fds.popitem(last=False)
                io.close(old)
            self._active_seq = seq
            self._active_fd = fd
            self._active_size = len(header)
            self._synced_size = 0
            self._pending = [header]
            self._pending_bytes = len(header)

    # --- compaction and snapshots -----------------------------------------------------------------------

    def compact(self, index: Index) -> None:
        """Discard entries up to and including ``index``; ``term(index)`` stays answerable, also after reopen.

        Call only once a snapshot covering ``index`` is durable. Syncs, then deletes whole segments that hold
        no entry above ``index``. The configuration as of ``index`` (found by reading at most one entry, the
        latest configuration entry at or below it) goes into the BOUNDARY record and is reported by
        :meth:`initial_state`. If the sync fails, the compaction stands (as an append whose sync failed does) and
        the error is raised.
        """
        self._check_open()
        with self._sync_lock, self._write_lock:
            invariant(self._bi <= index <= self._last, f"compact({index}) outside [{self._bi}, {self._last}]")
            if index == self._bi:
                return
            term = self._bt if index == self._bi else self._terms[index - self._bi - 1]
            self._set_boundary(index, term, self._conf_at(index), reset=False)

    def apply_snapshot(self, meta: SnapshotMeta) -> None:
        """Install a snapshot: the log now starts after ``meta.index`` (Raft §7).

        If the log holds an entry at ``meta.index`` with ``meta.term``, the entries after it are kept (as in
        :meth:`compact`); otherwise every entry is discarded. Syncs before returning.
        """
        self._check_open()
        with self._sync_lock, self._write_lock:
            invariant(meta.index >= self._bi, f"apply_snapshot({meta.index}) is older than the boundary {self._bi}")
            keep = meta.index <= self._last and (
                (self._bt if meta.index == self._bi else self._terms[meta.index - self._bi - 1]) == meta.term
            )
            self._set_boundary(meta.index, meta.term, meta.conf, reset=not keep)

    def _set_boundary(self, index: int, term: int, conf: ConfState, *, reset: bool) -> None:
        """Write a BOUNDARY record (plus the hard state), apply it, sync, then delete obsolete segments.

        Like an append, the record takes effect in memory once written: the in-memory log must always equal
        the replay of the records in the file, which a repair after a failed sync rewrites. Segments are
        deleted only once the boundary is durable; if the sync fails, a later compaction deletes them.
        """
        record = rec.encode_boundary(index, term, conf, reset) + rec.encode_hard_state(self._hs)
        if self._needs_repair:
            self._repair()
        if self._active_size + len(record) > self._segment_bytes and self._active_size > rec.SEGMENT_RECORD_SIZE:
            self._rotate()
        self._write_record_locked(record, "compact")
        with self._lock:
            self._hs_written = self._hs
            if reset or index >= self._last:
                self._terms, self._offsets, self._sizes = array("Q"), array("Q"), array("I")
                self._run_starts.clear()
                self._run_seqs.clear()
                self._conf_idx.clear()
                self._cache.clear()
                self._cache_data_bytes = 0
                self._last = index
                self._cache_lo = index + 1
            else:
                drop = index - self._bi
                del self._terms[:drop], self._offsets[:drop], self._sizes[:drop]
                while len(self._run_starts) > 1 and self._run_starts[1] <= index + 1:
                    del self._run_starts[0], self._run_seqs[0]
                del self._conf_idx[: bisect_right(self._conf_idx, index)]
                if self._cache_lo <= index:
                    gone = index + 1 - self._cache_lo
                    self._cache_data_bytes -= sum(len(e.data) for e in self._cache[:gone])
                    del self._cache[:gone]
                    self._cache_lo = index + 1
            self._bi, self._bt, self._conf = index, term, conf
            # Every segment before the one holding the first remaining entry is obsolete.
            keep_from = self._run_seqs[0] if self._run_seqs else self._active_seq
        # The boundary must be durable before any segment holding entries it replaces is deleted.
        self._sync_locked()
        self._delete_segments_before(keep_from)

    def _delete_segments_before(self, seq: int) -> None:
        """Delete segments ``first_seq .. seq-1``, oldest first, each unlink made durable before the next.

        Invariant kept on disk at every instant: the remaining segments are consecutive (recovery treats a gap
        as corruption), so a crash part-way leaves a suffix, which replay handles (the boundary drops them).
        """
        while self._first_seq < seq:
            victim = self._first_seq
            with self._lock:
                fd = self._read_fds.pop(victim, None)
            if fd is not None:
                self._io.close(fd)
            path = self._seg_path(victim)
            try:
                with contextlib.suppress(FileNotFoundError):  # a retry after a failed directory fsync
                    self._io.unlink(path)
                self._io.fsync_dir(self._path)
            except OSError as exc:
                # Harmless: the segment is replayed on open and the boundary record drops its entries; the
                # next compaction retries.
                log.warning("write-ahead log %s: could not delete obsolete segment %s: %s", self._path, path, exc)
                return
            self._first_seq = victim + 1


def _lock_directory(path: str) -> int:
    fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StorageInUseError(
            f"write-ahead log {path} is in use by another process (or is already open in this one); "
            "stop it or close the other WAL first"
        ) from None
    return fd
