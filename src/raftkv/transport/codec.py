"""Conversion between the core's messages and the Cap'n Proto wire schema (``raftkv.capnp``).

Theory of operation
-------------------
Encoding fills capnp builders from the core's frozen dataclasses; decoding reads capnp readers back into them
and is the *edge* where untrusted bytes become trusted values: every field is range-checked and the packed
entry blob is parsed strictly, so that anything malformed raises :class:`DecodeError` here and never reaches
the consensus core. The caller (the transport) then closes that one connection and counts it.

Entries are packed into one ``Data`` field (see the schema for the layout and why): a 21-byte header per
entry, then its payload.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import capnp  # type: ignore[import-untyped]

from raftkv.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftkv.raft.types import Entry, EntryType, Index, NodeId, Term

_ENTRY_HEADER = struct.Struct("<QQBI")
_MAX_U63 = (1 << 63) - 1
_ENTRY_TYPES = {t.value: t for t in EntryType}


class DecodeError(ValueError):
    """Input from the network that is not a valid raftkv message; the message says what was wrong."""


def pack_entries(entries: Sequence[Entry]) -> bytes:
    pack = _ENTRY_HEADER.pack
    parts: list[bytes] = []
    for e in entries:
        parts.append(pack(e.term, e.index, e.type, len(e.data)))
        parts.append(e.data)
    return b"".join(parts)


def unpack_entries(blob: bytes, prev_index: int) -> tuple[Entry, ...]:
    """Parse a packed entry blob; entries must be contiguous after ``prev_index`` with non-decreasing terms."""
    out: list[Entry] = []
    unpack_from = _ENTRY_HEADER.unpack_from
    size = _ENTRY_HEADER.size
    end = len(blob)
    off = 0
    expected = prev_index + 1
    last_term = 0
    while off < end:
        if end - off < size:
            raise DecodeError(f"entry {expected}: truncated header ({end - off} bytes left)")
        term, index, kind, length = unpack_from(blob, off)
        off += size
        if index != expected:
            raise DecodeError(f"entries not contiguous: expected index {expected}, got {index}")
        if term < last_term or term == 0 or term > _MAX_U63:
            raise DecodeError(f"entry {index}: bad term {term}")
        if kind not in _ENTRY_TYPES:
            raise DecodeError(f"entry {index}: unknown entry type {kind}")
        if length > end - off:
            raise DecodeError(f"entry {index}: length {length} runs past the end of the message")
        out.append(Entry(Term(term), Index(index), blob[off : off + length], _ENTRY_TYPES[kind]))
        off += length
        expected += 1
        last_term = term
    return tuple(out)


def encode_into(builder: Any, msg: Message) -> None:
    """Fill a ``Message`` list element with ``msg``."""
    if type(msg) is AppendEntries:
        b = builder.init("appendEntries")
        b.term = msg.term
        b.prevIndex = msg.prev_index
        b.prevTerm = msg.prev_term
        b.commit = msg.commit
        if msg.entries:
            b.entries = pack_entries(msg.entries)
    elif type(msg) is AppendEntriesResponse:
        b = builder.init("appendEntriesResponse")
        b.term = msg.term
        b.index = msg.index
        b.reject = msg.reject
        b.hintIndex = msg.hint_index
        b.hintTerm = msg.hint_term
    elif type(msg) is Heartbeat:
        b = builder.init("heartbeat")
        b.term = msg.term
        b.commit = msg.commit
        if msg.context:
            b.context = msg.context
    elif type(msg) is HeartbeatResponse:
        b = builder.init("heartbeatResponse")
        b.term = msg.term
        if msg.context:
            b.context = msg.context
        if msg.reject:
            b.reject = True
            b.lastIndex = msg.last_index
    elif type(msg) is RequestVote:
        b = builder.init("requestVote")
        b.term = msg.term
        b.lastIndex = msg.last_index
        b.lastTerm = msg.last_term
        b.preVote = msg.pre_vote
        b.transfer = msg.transfer
    elif type(msg) is RequestVoteResponse:
        b = builder.init("requestVoteResponse")
        b.term = msg.term
        b.granted = msg.granted
        b.preVote = msg.pre_vote
    elif type(msg) is TimeoutNow:
        builder.init("timeoutNow").term = msg.term
    else:  # pragma: no cover - the Message union is closed
        raise TypeError(f"cannot encode {type(msg).__name__}")


def _u(value: int, what: str) -> int:
    if value > _MAX_U63:
        raise DecodeError(f"{what} {value} is out of range")
    return value


def decode(reader: Any, src: NodeId, dst: NodeId) -> Message:
    """Turn one wire ``Message`` from ``src`` to ``dst`` into a core message, validating every field."""
    try:
        which = reader.which()
    except capnp.KjException as e:
        raise DecodeError(f"unknown message kind: {e}") from None
    if which == "appendEntries":
        r = reader.appendEntries
        prev = _u(r.prevIndex, "prevIndex")
        return AppendEntries(
            Term(_u(r.term, "term")),
            src,
            dst,
            Index(prev),
            Term(_u(r.prevTerm, "prevTerm")),
            unpack_entries(r.entries, prev) if r.entries else (),
            Index(_u(r.commit, "commit")),
        )
    if which == "appendEntriesResponse":
        r = reader.appendEntriesResponse
        return AppendEntriesResponse(
            Term(_u(r.term, "term")),
            src,
            dst,
            Index(_u(r.index, "index")),
            bool(r.reject),
            Index(_u(r.hintIndex, "hintIndex")),
            Term(_u(r.hintTerm, "hintTerm")),
        )
    if which == "heartbeat":
        r = reader.heartbeat
        return Heartbeat(Term(_u(r.term, "term")), src, dst, Index(_u(r.commit, "commit")), bytes(r.context))
    if which == "heartbeatResponse":
        r = reader.heartbeatResponse
        return HeartbeatResponse(
            Term(_u(r.term, "term")), src, dst, bytes(r.context), bool(r.reject), Index(_u(r.lastIndex, "lastIndex"))
        )
    if which == "requestVote":
        r = reader.requestVote
        return RequestVote(
            Term(_u(r.term, "term")),
            src,
            dst,
            Index(_u(r.lastIndex, "lastIndex")),
            Term(_u(r.lastTerm, "lastTerm")),
            bool(r.preVote),
            bool(r.transfer),
        )
    if which == "requestVoteResponse":
        r = reader.requestVoteResponse
        return RequestVoteResponse(Term(_u(r.term, "term")), src, dst, bool(r.granted), bool(r.preVote))
    if which == "timeoutNow":
        return TimeoutNow(Term(_u(reader.timeoutNow.term, "term")), src, dst)
    raise DecodeError(f"unknown message kind {which!r}")
