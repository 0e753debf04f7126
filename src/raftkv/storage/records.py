"""Write-ahead log record framing: layout, encoding, verification and resynchronisation.

Theory of operation
-------------------
A segment file is a sequence of records. Every record has the same 12-byte header, little-endian::

    offset  size  field
         0     4  crc      CRC32C (Castagnoli) of bytes [4, 12 + length): the rest of the header and the payload
         4     2  magic    0x9AC7; lets a scan find candidate record starts quickly (see find_valid_record)
         6     1  kind     SEGMENT, ENTRY, HARD_STATE or BOUNDARY (0 is never valid, so zero-fill never parses)
         7     1  flags    ENTRY: the EntryType; BOUNDARY: RESET; otherwise 0
         8     4  length   payload length in bytes

Payloads::

    SEGMENT     version u32, reserved u32, seq u64       first record of every segment; seq matches the file name
    ENTRY       term u64, index u64, data                 one log entry; length == Entry.size_bytes()
    HARD_STATE  term u64, vote u64, commit u64
    BOUNDARY    index u64, term u64, conf_len u32, reserved u32, conf (conf_len bytes)
                the log now starts after (index, term); conf is the configuration as of index, encoded like a
                CONF_CHANGE entry (``raftkv.raft.membership.encode_conf``, JSON); RESET: every entry was
                discarded (snapshot install)

An ENTRY record for index ``i`` also means "discard every entry ``>= i`` first" (the append rule of
``LogStorage``), so overwriting a conflicting suffix needs no separate truncation record and no rewrite.

The segment header's version is :data:`FORMAT_VERSION`; a reader refuses a segment of any other version
(:class:`~raftkv.storage.errors.UnsupportedFormatError`) instead of guessing. Version 1 stored only the voter
ids in a BOUNDARY; version 2 stores the whole configuration (learners and addresses too).

A record is *valid* when its magic, kind and length are sane, it lies wholly inside the file, and its CRC
matches. Because the CRC covers the length, a corrupted length is caught like any other flipped bit.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence

from crc32c import crc32c

from raftkv.raft.errors import invariant
from raftkv.raft.membership import decode_conf, encode_conf
from raftkv.raft.types import ConfState, Entry, EntryType, HardState, Index, Term

MAGIC = 0x9AC7
MAGIC_BYTES = struct.pack("<H", MAGIC)
FORMAT_VERSION = 2
"""2: BOUNDARY records carry the whole configuration (1: voter ids only)."""

KIND_SEGMENT = 1
KIND_ENTRY = 2
KIND_HARD_STATE = 3
KIND_BOUNDARY = 4
VALID_KINDS = frozenset({KIND_SEGMENT, KIND_ENTRY, KIND_HARD_STATE, KIND_BOUNDARY})

FLAG_RESET = 1

HEADER = struct.Struct("<IHBBI")
HEADER_SIZE = HEADER.size  # 12
CRC = struct.Struct("<I")
ENTRY_HEADER = struct.Struct("<IHBBIQQ")  # the record header followed by term and index
ENTRY_HEADER_SIZE = ENTRY_HEADER.size  # 28
ENTRY_FIXED_PAYLOAD = ENTRY_HEADER_SIZE - HEADER_SIZE  # 16 == Entry.size_bytes() - len(data)
ENTRY_TERM_INDEX = struct.Struct("<QQ")
HARD_STATE_RECORD = struct.Struct("<IHBBIQQQ")
HARD_STATE_PAYLOAD = struct.Struct("<QQQ")
SEGMENT_RECORD = struct.Struct("<IHBBIIIQ")
SEGMENT_PAYLOAD = struct.Struct("<IIQ")
SEGMENT_RECORD_SIZE = SEGMENT_RECORD.size  # 28
BOUNDARY_FIXED = struct.Struct("<QQII")  # index, term, conf_len, reserved

MAX_PAYLOAD = 1 << 31
"""Payload lengths at or above this are treated as garbage by a scan (no entry is anywhere near it)."""

ENTRY_TYPES: tuple[EntryType, ...] = tuple(EntryType)
"""EntryType by value; indexing a tuple is much cheaper than calling the enum on a hot path."""
CONF_CHANGE_FLAGS = int(EntryType.CONF_CHANGE)
"""An ENTRY record's flags byte for a configuration entry: the log tracks these indexes without reading them."""
_CONF_CHANGE = EntryType.CONF_CHANGE  # a module global: looking a member up on the enum class costs more


def _seal(buf: bytearray, start: int, end: int) -> None:
    """Fill in the CRC of the record occupying ``buf[start:end]``."""
    CRC.pack_into(buf, start, crc32c(memoryview(buf)[start + 4 : end]))


def encode_segment_header(seq: int) -> bytes:
    buf = bytearray(SEGMENT_RECORD_SIZE)
    SEGMENT_RECORD.pack_into(buf, 0, 0, MAGIC, KIND_SEGMENT, 0, SEGMENT_PAYLOAD.size, FORMAT_VERSION, 0, seq)
    _seal(buf, 0, len(buf))
    return bytes(buf)


def encode_hard_state(hs: HardState) -> bytes:
    buf = bytearray(HARD_STATE_RECORD.size)
    HARD_STATE_RECORD.pack_into(
        buf, 0, 0, MAGIC, KIND_HARD_STATE, 0, HARD_STATE_PAYLOAD.size, hs.term, hs.vote, hs.commit
    )
    _seal(buf, 0, len(buf))
    return bytes(buf)


def encode_boundary(index: int, term: int, conf: ConfState, reset: bool) -> bytes:
    conf_bytes = encode_conf(conf)
    payload_len = BOUNDARY_FIXED.size + len(conf_bytes)
    buf = bytearray(HEADER_SIZE + payload_len)
    HEADER.pack_into(buf, 0, 0, MAGIC, KIND_BOUNDARY, FLAG_RESET if reset else 0, payload_len)
    BOUNDARY_FIXED.pack_into(buf, HEADER_SIZE, index, term, len(conf_bytes), 0)
    buf[HEADER_SIZE + BOUNDARY_FIXED.size :] = conf_bytes
    _seal(buf, 0, len(buf))
    return bytes(buf)


def decode_boundary(payload: bytes | memoryview) -> tuple[int, int, ConfState]:
    """(index, term, configuration) of a BOUNDARY payload whose CRC already verified.

    Raises ``ValueError`` (one line) if the payload is malformed: a record that verifies but does not parse was
    written by a bug or another format, which the caller reports as corruption.
    """
    if len(payload) < BOUNDARY_FIXED.size:
        raise ValueError(f"a boundary record of {len(payload)} bytes is shorter than its fixed part")
    index, term, conf_len, _ = BOUNDARY_FIXED.unpack_from(payload, 0)
    if BOUNDARY_FIXED.size + conf_len != len(payload):
        have = len(payload) - BOUNDARY_FIXED.size
        raise ValueError(f"a boundary record says its configuration has {conf_len} bytes, it holds {have}")
    return index, term, decode_conf(payload[BOUNDARY_FIXED.size :])


class EncodedBatch:
    """A batch of ENTRY records in one buffer, plus what the in-memory index needs about each record.

    Invariant: record ``k`` occupies ``buf[starts[k] : starts[k] + HEADER_SIZE + sizes[k]]`` and holds the
    entry at index ``first + k`` with term ``terms[k]``; ``sizes[k]`` is its payload length, which equals
    ``Entry.size_bytes()``. ``confs``: the indexes of the batch's CONF_CHANGE entries, ascending (usually none).
    """

    __slots__ = ("buf", "confs", "data_bytes", "first", "sizes", "starts", "terms")

    def __init__(
        self,
        buf: bytearray,
        first: int,
        starts: array[int],
        terms: array[int],
        sizes: array[int],
        data_bytes: int,
        confs: Sequence[Index],
    ) -> None:
        self.buf = buf
        self.first = first
        self.starts = starts
        self.terms = terms
        self.sizes = sizes
        self.data_bytes = data_bytes
        self.confs = confs

    def record_end(self, k: int) -> int:
        return self.starts[k] + HEADER_SIZE + self.sizes[k]


def encode_entries(entries: Sequence[Entry]) -> EncodedBatch:
    """Frame ``entries`` (which must have consecutive indexes) into one buffer for a single write.

    This is the hot path of the write-ahead log: one bytearray sized up front, one ``pack_into`` and one CRC
    per entry, no per-entry bytes objects. Noting configuration entries costs one identity test per entry
    (``Entry.type`` is always an ``EntryType`` member, as ``MemoryStorage`` assumes too) and no allocation
    unless there is one.
    """
    data_bytes = 0
    for e in entries:
        data_bytes += len(e.data)
    n = len(entries)
    buf = bytearray(n * ENTRY_HEADER_SIZE + data_bytes)
    view = memoryview(buf)
    starts = array("Q", bytes(8 * n))
    terms = array("Q", bytes(8 * n))
    sizes = array("I", bytes(4 * n))
    pack = ENTRY_HEADER.pack_into
    seal = CRC.pack_into
    confs: list[Index] | None = None  # allocated on the first configuration entry: most batches have none
    conf_type = _CONF_CHANGE
    first: int = entries[0].index
    expected = first
    off = 0
    for k, e in enumerate(entries):
        if e.index != expected:
            invariant(False, f"append: entries are not contiguous (index {e.index} where {expected} was due)")
        data = e.data
        size = len(data) + ENTRY_FIXED_PAYLOAD
        typ = e.type
        pack(buf, off, 0, MAGIC, KIND_ENTRY, typ, size, e.term, expected)
        if typ is conf_type:
            if confs is None:
                confs = []
            confs.append(Index(expected))
        body = off + ENTRY_HEADER_SIZE
        end = body + size - ENTRY_FIXED_PAYLOAD
        buf[body:end] = data
        seal(buf, off, crc32c(view[off + 4 : end]))
        starts[k] = off
        terms[k] = e.term
        sizes[k] = size
        off = end
        expected += 1
    view.release()
    return EncodedBatch(buf, first, starts, terms, sizes, data_bytes, confs or ())


def parse_valid(buf: bytes | bytearray | memoryview, off: int, end: int) -> tuple[int, int, int] | None:
    """``(kind, flags, payload_length)`` if a valid record starts at ``buf[off]`` and ends at or before ``end``."""
    if off + HEADER_SIZE > end:
        return None
    crc, magic, kind, flags, length = HEADER.unpack_from(buf, off)
    if magic != MAGIC or kind not in VALID_KINDS or length >= MAX_PAYLOAD:
        return None
    rec_end = off + HEADER_SIZE + length
    if rec_end > end:
        return None
    if crc32c(memoryview(buf)[off + 4 : rec_end]) != crc:
        return None
    return kind, flags, length


def find_valid_record(buf: bytes | bytearray, start: int, end: int) -> int | None:
    """Offset of the first valid record starting in ``[start, end)`` and ending by ``end``, or None.

    Used only after a bad record, to tell a torn tail (nothing valid follows) from corruption (valid records
    follow). Candidates are found with ``bytes.find`` on the magic, so zero-filled and random tails are skipped
    at C speed; each candidate is confirmed by its CRC.
    """
    pos = start + 4
    while True:
        hit = buf.find(MAGIC_BYTES, pos, end)
        if hit < 0:
            return None
        if parse_valid(buf, hit - 4, end) is not None:
            return hit - 4
        pos = hit + 1


def decode_entry(buf: bytes | bytearray | memoryview, off: int, end: int) -> Entry | None:
    """The entry in the valid ENTRY record at ``buf[off]``, or None if the record there is not one."""
    parsed = parse_valid(buf, off, end)
    if parsed is None or parsed[0] != KIND_ENTRY:
        return None
    _, flags, length = parsed
    if length < ENTRY_FIXED_PAYLOAD or flags >= len(ENTRY_TYPES):
        return None
    term, index = ENTRY_TERM_INDEX.unpack_from(buf, off + HEADER_SIZE)
    body = off + ENTRY_HEADER_SIZE
    data = bytes(buf[body : off + HEADER_SIZE + length])
    return Entry(Term(term), Index(index), data, ENTRY_TYPES[flags])
