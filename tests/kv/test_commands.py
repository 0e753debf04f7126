"""Commands and results survive encoding; garbage and invalid commands raise CommandError."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.kv import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    CloseSession,
    Command,
    CommandError,
    Compare,
    DeleteRange,
    DeleteResult,
    ErrorCode,
    ErrorResult,
    KeepAlive,
    KeyValue,
    OpenSession,
    Put,
    PutResult,
    Range,
    RangeResult,
    Request,
    Result,
    SessionResult,
    Txn,
    TxnResult,
    decode_command,
    decode_result,
    encode_command,
    encode_result,
    stamp,
)
from raftkv.kv.commands import MAX_LEASE_TTL_S, LeaseGrant, LeaseRevoke

KV = KeyValue(b"k", b"v", 3, 5, 2)

COMMANDS: list[Command] = [
    Put(b"k", b"v"),
    Put(b"k", b"", prev_kv=True),
    DeleteRange(b"k"),
    DeleteRange(b"a", b"b", prev_kv=True),
    DeleteRange(b"", b"\0"),
    Range(b"k"),
    Range(b"a", b"\0", limit=10, keys_only=True, count_only=False),
    Txn(),
    Txn(
        [Compare(b"k", "value", "=", b"v"), Compare(b"k", "version", ">", 0), Compare(b"k", "mod", "!=", 7)],
        [Put(b"k", b"w"), DeleteRange(b"x"), Range(b"k")],
        [Range(b"a", b"b")],
    ),
    OpenSession(ttl_ms=5000, time_ms=1),
    KeepAlive(7, time_ms=2),
    CloseSession(7, time_ms=3),
    Request(7, 1, 4, Put(b"k", b"v")),
    Request(7, 2, 4, Txn([Compare(b"k", "create", "<", 9)], [DeleteRange(b"k")], [])),
]

RESULTS: list[Result | None] = [
    None,
    PutResult(4),
    PutResult(4, KV),
    DeleteResult(4, 0),
    DeleteResult(4, 1, (KV,)),
    RangeResult((), 0, False, 4),
    RangeResult((KV, KV), 9, True, 4),
    TxnResult(True, (PutResult(5, KV), DeleteResult(5, 1), RangeResult((KV,), 1, False, 5)), 5),
    SessionResult(7),
    ErrorResult(ErrorCode.STALE_REQUEST, "too old"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_command_round_trips(command: Command) -> None:
    assert decode_command(encode_command(command)) == command


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_every_result_round_trips(result: Result | None) -> None:
    assert decode_result(encode_result(result)) == result


def test_a_request_with_a_100_byte_value_encodes_small() -> None:
    data = encode_command(Request(123456, 789, 1_700_000_000_000, Put(b"user/42", b"x" * 100)))
    assert len(data) <= 141  # 100 bytes of value, at most 41 of framing (first_incomplete and lease added 1 each)


def _raw(*fields: Any) -> bytes:
    """msgpack of an array, bypassing the structs' validation: what a buggy or hostile client could send."""
    return msgspec.msgpack.encode(list(fields))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never-used msgpack opcode
        b"\x93\xa3put",  # truncated
        encode_command(Put(b"k", b"v")) + b"\x00",  # trailing bytes
        msgspec.msgpack.encode({"key": b"k"}),  # a map, not an array
        _raw("nope", b"k", b"v", False),  # unknown tag
        _raw("put", "k", b"v", False),  # str where bytes belong
        _raw("put", b"k"),  # missing field
        _raw("put", b"", b"v", False),  # empty key
        _raw("put", b"k" * (MAX_KEY_BYTES + 1), b"v", False),
        _raw("range", b"k", None, -1, False, False),  # negative limit
        _raw("txn", [[b"k", "value", "=", 5]], [], []),  # int compared with a value
        _raw("txn", [[b"k", "version", "=", b"5"]], [], []),  # bytes compared with a version
        _raw("txn", [[b"k", "size", "=", 5]], [], []),  # unknown target
        _raw("txn", [[b"k", "version", ">=", 5]], [], []),  # unknown operator
        _raw("txn", [], [["open", 10, 0]], []),  # not an op allowed in a branch
        _raw("req", 1, 0, 0, ["put", b"k", b"v", False]),  # seq 0
        _raw("req", 1, 1, 0, ["range", b"k", None, 0, False, False]),  # reads are not session writes
        _raw("open", 0, 0),  # ttl 0
        _raw("keepalive", -1, 0),
    ],
)
def test_garbage_raises_command_error(data: bytes) -> None:
    with pytest.raises(CommandError, match="not a valid command"):
        decode_command(data)


def test_garbage_results_raise_command_error() -> None:
    with pytest.raises(CommandError, match="not a valid result"):
        decode_result(b"\xc1")


@pytest.mark.parametrize(
    "build",
    [
        lambda: Put(b"", b"v"),
        lambda: Put(b"k" * (MAX_KEY_BYTES + 1), b"v"),
        lambda: Put(b"k", b"v" * (MAX_VALUE_BYTES + 1)),
        lambda: DeleteRange(b""),
        lambda: DeleteRange(b"a", b"b" * (MAX_KEY_BYTES + 1)),
        lambda: Range(b""),
        lambda: Range(b"a", b"b", limit=-1),
        lambda: Compare(b"", "version", "=", 1),
        lambda: Compare(b"k", "value", "=", 1),
        lambda: Compare(b"k", "mod", "=", b"1"),
        lambda: Compare(b"k", "version", "=", True),
        lambda: Compare(b"k", "size", "=", 1),  # type: ignore[arg-type]
        lambda: Compare(b"k", "lease", "=", b"1"),
        lambda: LeaseGrant(0),
        lambda: LeaseGrant(MAX_LEASE_TTL_S + 1),
        lambda: LeaseRevoke(0),
        lambda: Put(b"k", b"v", lease=-1),
        lambda: Compare(b"k", "version", "<=", 1),  # type: ignore[arg-type]
        lambda: OpenSession(ttl_ms=0),
        lambda: OpenSession(ttl_ms=10, time_ms=-1),
        lambda: Request(1, 0, 0, Put(b"k", b"v")),
        lambda: KeepAlive(-1),
    ],
)
def test_invalid_commands_are_refused_when_built(build: Any) -> None:
    with pytest.raises(CommandError):
        build()


def test_limits_are_inclusive() -> None:
    Put(b"k" * MAX_KEY_BYTES, b"v" * MAX_VALUE_BYTES)
    Range(b"", b"\0")  # an empty key is a fine lower bound


def test_stamp_sets_the_time_of_session_commands_only() -> None:
    assert stamp(OpenSession(10), 5) == OpenSession(10, 5)
    assert stamp(KeepAlive(3), 5) == KeepAlive(3, 5)
    assert stamp(CloseSession(3), 5) == CloseSession(3, 5)
    assert stamp(Request(3, 1, 0, Put(b"k", b"v")), 5) == Request(3, 1, 5, Put(b"k", b"v"))
    assert stamp(Put(b"k", b"v"), 5) == Put(b"k", b"v")


keys = st.binary(min_size=1, max_size=16)


@given(
    st.one_of(
        st.builds(Put, keys, st.binary(max_size=64), st.booleans()),
        st.builds(DeleteRange, keys, st.one_of(st.none(), keys), st.booleans()),
        st.builds(
            Request, st.integers(0, 2**63), st.integers(1, 2**63), st.integers(0, 2**63), st.builds(Put, keys, keys)
        ),
    )
)
def test_random_commands_round_trip(command: Command) -> None:
    assert decode_command(encode_command(command)) == command
