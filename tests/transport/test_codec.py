"""Every core message survives the wire unchanged, and malformed input is refused at the edge."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from raftkv.transport.codec import DecodeError, decode, encode_into, pack_entries, unpack_entries
from raftkv.transport.wire import schema

u63 = st.integers(0, (1 << 63) - 1)
ids = st.integers(1, 1000).map(NodeId)


@st.composite
def append_entries(draw: st.DrawFn) -> AppendEntries:
    prev = draw(st.integers(0, 1 << 40))
    terms = sorted(draw(st.lists(st.integers(1, 1 << 40), max_size=20)))
    entries = tuple(
        Entry(Term(t), Index(prev + 1 + k), draw(st.binary(max_size=64)), draw(st.sampled_from(EntryType)))
        for k, t in enumerate(terms)
    )
    return AppendEntries(Term(draw(u63)), NodeId(1), NodeId(2), Index(prev), Term(draw(u63)), entries, Index(draw(u63)))


def _msg(cls: Any, *fields: Any) -> Any:
    return st.builds(cls, u63.map(Term), st.just(NodeId(1)), st.just(NodeId(2)), *fields)


messages = st.one_of(
    append_entries(),
    _msg(AppendEntriesResponse, u63.map(Index), st.booleans(), u63.map(Index), u63.map(Term)),
    _msg(Heartbeat, u63.map(Index), st.binary(max_size=16)),
    _msg(HeartbeatResponse, st.binary(max_size=16), st.booleans(), u63.map(Index)).filter(
        lambda m: m.reject or m.last_index == 0  # last_index travels only with reject
    ),
    _msg(RequestVote, u63.map(Index), u63.map(Term), st.booleans(), st.booleans()),
    _msg(RequestVoteResponse, st.booleans(), st.booleans()),
    _msg(TimeoutNow),
)


def roundtrip(msgs: list[Message]) -> list[Message]:
    holder = schema.MessageBatch.new_message()
    lst = holder.init("messages", len(msgs))
    for k, m in enumerate(msgs):
        encode_into(lst[k], m)
    data = holder.to_bytes()
    with schema.MessageBatch.from_bytes(data) as r:
        return [decode(x, NodeId(1), NodeId(2)) for x in r.messages]


@given(st.lists(messages, max_size=8))
def test_every_message_survives_the_wire(msgs: list[Message]) -> None:
    assert roundtrip(msgs) == msgs


def test_packed_entries_are_validated() -> None:
    good = pack_entries([Entry(Term(2), Index(6), b"abc"), Entry(Term(2), Index(7), b"")])
    assert unpack_entries(good, 5) == (Entry(Term(2), Index(6), b"abc"), Entry(Term(2), Index(7), b""))
    with pytest.raises(DecodeError, match="not contiguous"):
        unpack_entries(good, 4)
    with pytest.raises(DecodeError, match="truncated header"):
        unpack_entries(good[:10], 5)
    with pytest.raises(DecodeError, match="runs past the end"):
        unpack_entries(good[:23], 5)  # the first entry's 3-byte payload cut to 2
    backwards = pack_entries([Entry(Term(3), Index(1)), Entry(Term(2), Index(2))])
    with pytest.raises(DecodeError, match="bad term"):
        unpack_entries(backwards, 0)
    bad_type = bytearray(pack_entries([Entry(Term(1), Index(1))]))
    bad_type[16] = 9
    with pytest.raises(DecodeError, match="unknown entry type"):
        unpack_entries(bytes(bad_type), 0)


def test_out_of_range_integers_are_refused() -> None:
    holder = schema.MessageBatch.new_message()
    m = holder.init("messages", 1)[0].init("timeoutNow")
    m.term = (1 << 64) - 1
    with schema.MessageBatch.from_bytes(holder.to_bytes()) as r, pytest.raises(DecodeError, match="out of range"):
        decode(r.messages[0], NodeId(1), NodeId(2))
