"""Snapshot files: durable, checksummed, streamed state-machine images with their Raft metadata.

Theory of operation
-------------------
One file per snapshot, ``snapshot-<index:020d>-<term:020d>.snap``, in the store's directory::

    offset  size  field
         0     8  magic      b"RKSNAP\\x00\\x02": b"RKSNAP\\x00" then the format version (2)
         8     4  meta_len   length of the metadata block
        12     4  meta_crc   CRC32C of the metadata block
        16     …  metadata   index u64, term u64, data_len u64, data_crc u32, conf_len u32, conf (conf_len bytes)
         …     …  data       the state machine's opaque bytes (data_len of them, CRC32C data_crc)

``conf`` is the cluster configuration as of ``index`` (voters, learners and their addresses), encoded like a
configuration entry (``raftkv.raft.membership.encode_conf``, JSON). Version 1 stored only the voter ids; a
file of any other version is refused with :class:`~raftkv.storage.errors.UnsupportedFormatError` (not treated
as damage, which would let an older snapshot or the log stand in for it).

**Saving** streams the data (bytes, an iterable of chunks, or a binary file object; never required to fit in
memory) into ``<name>.tmp`` after a zeroed header, computing length and CRC as it goes; then writes the real
header at offset 0, fdatasyncs, renames to the final name and fsyncs the directory. A crash at any point leaves
either no new snapshot (a ``.tmp`` file, removed on the next open) or a complete, durable one. Afterwards only
the newest ``retain`` snapshots are kept.

**Loading** (:meth:`SnapshotStore.load`) tries snapshots newest first, verifying both checksums (the data is
streamed, not held in memory). If the newest is damaged, an older one may stand in for it only if the log
still holds every entry after it, i.e. ``log_first_index <= older.index + 1``; otherwise there is no safe
state to start from and :class:`~raftkv.storage.errors.CorruptSnapshotError` says what to do. The same check
applies when a snapshot is simply missing: a log compacted past every available snapshot cannot be replayed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Protocol

from crc32c import crc32c

from raftkv.raft.membership import decode_conf, encode_conf
from raftkv.raft.types import Index, SnapshotMeta, Term
from raftkv.storage.errors import CorruptSnapshotError, UnsupportedFormatError, io_error
from raftkv.storage.fileio import OS_IO, FileIO

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""2: the metadata carries the whole configuration (1: voter ids only)."""
MAGIC_STEM = b"RKSNAP\x00"
MAGIC = MAGIC_STEM + bytes([FORMAT_VERSION])
PREFIX = struct.Struct("<8sII")
META_FIXED = struct.Struct("<QQQII")  # index, term, data_len, data_crc, conf_len
CHUNK_BYTES = 1 << 20
DEFAULT_RETAIN = 3
SNAPSHOT_RE = re.compile(r"^snapshot-(\d{20})-(\d{20})\.snap$")
TMP_SUFFIX = ".tmp"


def snapshot_name(index: int, term: int) -> str:
    return f"snapshot-{index:020d}-{term:020d}.snap"


class Readable(Protocol):
    """A binary file object (anything with ``read(n) -> bytes``)."""

    def read(self, n: int = -1, /) -> bytes: ...


SnapshotData = bytes | bytearray | memoryview | Readable | Iterable[bytes]
"""What :meth:`SnapshotStore.save` accepts: the whole image, a binary file object, or an iterable of chunks."""


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot file whose header verified. ``data_offset``: where the data starts in the file."""

    meta: SnapshotMeta
    path: str
    data_offset: int
    data_len: int
    data_crc: int


class DamagedSnapshot(Exception):
    """Internal: a snapshot file failed verification (the message says how)."""


class Snapshot:
    """A verified snapshot. Stream its data with :meth:`chunks`, or :meth:`open` it as a file."""

    __slots__ = ("info",)

    def __init__(self, info: SnapshotInfo) -> None:
        self.info = info

    @property
    def meta(self) -> SnapshotMeta:
        return self.info.meta

    def open(self) -> IO[bytes]:
        """The file, positioned at the start of the data (which runs to the end of the file)."""
        f = open(self.info.path, "rb")  # noqa: SIM115 - handed to the caller, who closes it
        f.seek(self.info.data_offset)
        return f

    def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The data in chunks; raises :class:`CorruptSnapshotError` at the end if it no longer verifies."""
        with self.open() as f:
            crc = 0
            total = 0
            while True:
                chunk = f.read(chunk_bytes)
                if not chunk:
                    break
                crc = crc32c(chunk, crc)
                total += len(chunk)
                yield chunk
        if total != self.info.data_len or crc != self.info.data_crc:
            raise CorruptSnapshotError(self.info.path, "the data changed since it was verified")

    def read(self) -> bytes:
        """All of the data in memory (convenient for small state machines and tests)."""
        return b"".join(self.chunks())


def read_info(path: str) -> SnapshotInfo:
    """Parse and verify a snapshot file's header (not its data).

    Raises :class:`DamagedSnapshot`, or :class:`UnsupportedFormatError` for a raftkv snapshot of another format
    version (an operator's problem, not damage: it must stop the node rather than be passed over).
    """
    try:
        with open(path, "rb") as f:
            prefix = f.read(PREFIX.size)
            if len(prefix) < PREFIX.size:
                raise DamagedSnapshot("the file is shorter than a header")
            magic, meta_len, meta_crc = PREFIX.unpack(prefix)
            if magic != MAGIC:
                if magic[: len(MAGIC_STEM)] == MAGIC_STEM:
                    raise UnsupportedFormatError(path, "snapshot", magic[-1], FORMAT_VERSION)
                raise DamagedSnapshot("bad magic (not a raftkv snapshot)")
            meta = f.read(meta_len)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise DamagedSnapshot(f"cannot read it: {exc.strerror}") from exc
    if len(meta) != meta_len or meta_len < META_FIXED.size or crc32c(meta) != meta_crc:
        raise DamagedSnapshot("the metadata checksum does not match")
    index, term, data_len, data_crc, conf_len = META_FIXED.unpack_from(meta, 0)
    if meta_len != META_FIXED.size + conf_len:
        raise DamagedSnapshot("malformed metadata")
    try:
        conf = decode_conf(meta[META_FIXED.size :])
    except ValueError as exc:  # the checksum matched: written by a bug, not by a flipped bit
        raise DamagedSnapshot(f"malformed configuration in the metadata: {exc}") from exc
    data_offset = PREFIX.size + meta_len
    if size != data_offset + data_len:
        raise DamagedSnapshot(f"the file holds {size - data_offset} data bytes, the header says {data_len}")
    m = SNAPSHOT_RE.match(os.path.basename(path))
    if m is None or (int(m.group(1)), int(m.group(2))) != (index, term):
        raise DamagedSnapshot(f"the header says index {index} term {term}, which does not match the file name")
    return SnapshotInfo(SnapshotMeta(Index(index), Term(term), conf), path, data_offset, data_len, data_crc)


def verify(info: SnapshotInfo) -> None:
    """Stream the data and check its length and CRC. Raises :class:`DamagedSnapshot`."""
    crc = 0
    total = 0
    try:
        with open(info.path, "rb") as f:
            f.seek(info.data_offset)
            while chunk := f.read(CHUNK_BYTES):
                crc = crc32c(chunk, crc)
                total += len(chunk)
    except OSError as exc:
        raise DamagedSnapshot(f"cannot read it: {exc.strerror}") from exc
    if total != info.data_len or crc != info.data_crc:
        raise DamagedSnapshot("the data checksum does not match")


def check(path: str) -> SnapshotInfo:
    """Header and data verified; raises :class:`DamagedSnapshot`."""
    info = read_info(path)
    verify(info)
    return info


def _chunks(data: SnapshotData) -> Iterator[bytes | bytearray | memoryview]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield data
    elif hasattr(data, "read"):
        reader: Readable = data  # type: ignore[assignment]
        while chunk := reader.read(CHUNK_BYTES):
            yield chunk
    else:
        yield from data


class SnapshotStore:
    """The snapshot files of one node, in one directory. Create with :meth:`open`."""

    def __init__(self, path: str, io: FileIO, retain: int) -> None:
        """Use :meth:`open`."""
        self._path = path
        self._io = io
        self._retain = retain

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, retain: int = DEFAULT_RETAIN, io: FileIO | None = None
    ) -> SnapshotStore:
        """Open (creating if needed) the store in ``path``; removes temp files left by a crash mid-save."""
        fio = io if io is not None else OS_IO
        spath = os.path.abspath(os.fspath(path))
        if retain < 1:
            raise ValueError("retain must be at least 1")
        try:
            fio.makedirs(spath)
            stale = [n for n in os.listdir(spath) if n.endswith(TMP_SUFFIX)]
            for name in stale:
                fio.unlink(os.path.join(spath, name))
            if stale:
                fio.fsync_dir(spath)
                log.info("snapshot store %s: removed %d incomplete snapshot(s) left by a crash", spath, len(stale))
        except OSError as exc:
            raise io_error("open snapshot store", spath, exc) from exc
        return cls(spath, fio, retain)

    @property
    def path(self) -> str:
        return self._path

    def paths(self) -> list[str]:
        """Snapshot files, newest (highest index) first. Their contents are not checked."""
        found = []
        for name in os.listdir(self._path):
            m = SNAPSHOT_RE.match(name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), os.path.join(self._path, name)))
        found.sort(reverse=True)
        return [p for _, _, p in found]

    def save(self, meta: SnapshotMeta, data: SnapshotData) -> SnapshotInfo:
        """Durably store a snapshot (streamed; see the module docstring), then prune old ones.

        Raises :class:`DiskFullError`/:class:`StorageIOError` on failure, leaving earlier snapshots intact.
        """
        io = self._io
        final = os.path.join(self._path, snapshot_name(meta.index, meta.term))
        tmp = final + TMP_SUFFIX
        conf = encode_conf(meta.conf)
        meta_len = META_FIXED.size + len(conf)
        data_offset = PREFIX.size + meta_len
        try:
            fd = io.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        except OSError as exc:
            raise io_error("create snapshot", tmp, exc) from exc
        try:
            try:
                io.pwrite_all(fd, bytes(data_offset), 0)
                pos = data_offset
                crc = 0
                for chunk in _chunks(data):
                    io.pwrite_all(fd, chunk, pos)
                    crc = crc32c(chunk, crc)
                    pos += len(chunk)
                meta_block = META_FIXED.pack(meta.index, meta.term, pos - data_offset, crc, len(conf)) + conf
                io.pwrite_all(fd, PREFIX.pack(MAGIC, meta_len, crc32c(meta_block)) + meta_block, 0)
                io.fdatasync(fd)
            finally:
                io.close(fd)
            io.rename(tmp, final)
            io.fsync_dir(self._path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                io.unlink(tmp)
            raise io_error("save snapshot", final, exc) from exc
        self._prune()
        return SnapshotInfo(meta, final, data_offset, pos - data_offset, crc)

    def _prune(self) -> None:
        old = self.paths()[self._retain :]
        try:
            for p in old:
                self._io.unlink(p)
            if old:
                self._io.fsync_dir(self._path)
        except OSError as exc:  # leftovers only cost disk space; the next save retries
            log.warning("snapshot store %s: could not delete an old snapshot: %s", self._path, exc)

    def check_all(self) -> list[tuple[str, SnapshotInfo | DamagedSnapshot]]:
        """Every snapshot file, newest first, with its verified info or what is wrong with it.

        Raises :class:`UnsupportedFormatError` at the first file of another format version.
        """
        out: list[tuple[str, SnapshotInfo | DamagedSnapshot]] = []
        for path in self.paths():
            try:
                out.append((path, check(path)))
            except DamagedSnapshot as exc:
                out.append((path, exc))
        return out

    def load(self, log_first_index: Index) -> Snapshot | None:
        """The newest usable snapshot for a log whose first held entry is ``log_first_index``.

        None when there is no snapshot and none is needed (the log starts at index 1). Raises
        :class:`CorruptSnapshotError` when no verified snapshot reaches ``log_first_index - 1``, and
        :class:`UnsupportedFormatError` when a snapshot file is of another format version.
        """
        checked = self.check_all()
        for path, result in checked:
            if isinstance(result, DamagedSnapshot):
                log.warning("snapshot %s is damaged: %s", path, result)
        info, note = select(checked, log_first_index, self._path)
        if note:
            log.warning("snapshot store %s: %s", self._path, note)
        return Snapshot(info) if info is not None else None


def select(
    checked: list[tuple[str, SnapshotInfo | DamagedSnapshot]], log_first_index: int, where: str
) -> tuple[SnapshotInfo | None, str | None]:
    """The snapshot to start from (newest verified first) and a note if a damaged one was passed over.

    A snapshot older than a damaged one is used only if the log holds every entry after it
    (``log_first_index <= index + 1``). Raises :class:`CorruptSnapshotError` when nothing usable exists.
    """
    damaged: tuple[str, str] | None = None
    for path, result in checked:
        if isinstance(result, DamagedSnapshot):
            if damaged is None:
                damaged = (path, str(result))
            continue
        index = result.meta.index
        if index + 1 < log_first_index:
            if damaged is not None:
                raise CorruptSnapshotError(
                    damaged[0],
                    f"{damaged[1]}, and the previous snapshot (index {index}) cannot replace it because the log "
                    f"was compacted up to index {log_first_index - 1}",
                )
            raise CorruptSnapshotError(
                path,
                f"the newest snapshot ends at index {index} but the log starts at index {log_first_index}: "
                "the entries in between are lost",
            )
        note = None
        if damaged is not None:
            note = (
                f"the newest snapshot {os.path.basename(damaged[0])} is damaged ({damaged[1]}); using the older "
                f"{os.path.basename(path)} (index {index}) instead, as the log holds every entry after it"
            )
        return result, note
    if log_first_index <= 1:
        if damaged is not None:
            return None, (
                f"the only snapshot {os.path.basename(damaged[0])} is damaged ({damaged[1]}); the log holds every "
                "entry from index 1, so the state machine is rebuilt from the log"
            )
        return None, None
    if damaged is not None:
        raise CorruptSnapshotError(
            damaged[0], f"{damaged[1]}, and no older snapshot exists; the log starts at index {log_first_index}"
        )
    raise CorruptSnapshotError(
        where, f"no snapshot, but the log starts at index {log_first_index}: the entries before it are lost"
    )
