"""One conformance suite for every key-value backend (memory and LMDB), through the Backend protocol only."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.kv import Backend, ErrorCode, ErrorResult, KeyValue, Meta, PutResult, SessionRecord
from raftkv.raft.errors import InvariantViolation
from tests.kv.kvtestlib import BACKEND_FACTORIES


def kv(key: bytes, value: bytes = b"v", rev: int = 1) -> KeyValue:
    return KeyValue(key, value, rev, rev, 1)


def fill(backend: Backend, *keys: bytes) -> None:
    txn = backend.begin()
    for k in keys:
        txn.put(kv(k, b"value-of-" + k))
    txn.commit()


def keys_of(kvs: list[KeyValue]) -> list[bytes]:
    return [x.key for x in kvs]


def test_a_fresh_backend_is_empty(backend: Backend) -> None:
    with backend.read() as view:
        assert view.meta() == Meta()
        assert view.sessions() == []
        assert view.count(b"", None) == 0
        assert view.scan(b"", None) == []
        assert view.get(b"k") is None


def test_put_get_overwrite_delete(backend: Backend) -> None:
    txn = backend.begin()
    txn.put(KeyValue(b"k", b"one", 1, 1, 1))
    assert txn.get(b"k") == KeyValue(b"k", b"one", 1, 1, 1)  # reads its own writes
    txn.put(KeyValue(b"k", b"two", 1, 2, 2))
    txn.commit()
    with backend.read() as view:
        assert view.get(b"k") == KeyValue(b"k", b"two", 1, 2, 2)
    txn = backend.begin()
    txn.delete(b"k")
    assert txn.get(b"k") is None
    txn.commit()
    with backend.read() as view:
        assert view.get(b"k") is None
        assert view.count(b"", None) == 0


def test_values_and_keys_are_arbitrary_bytes(backend: Backend) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    txn = backend.begin()
    txn.put(KeyValue(b"\x00", big, 1, 1, 1))
    txn.put(KeyValue(b"\xff" * 511, b"", 2**63, 2**64 - 1, 2**40))
    txn.commit()
    with backend.read() as view:
        assert view.get(b"\x00") == KeyValue(b"\x00", big, 1, 1, 1)
        assert view.get(b"\xff" * 511) == KeyValue(b"\xff" * 511, b"", 2**63, 2**64 - 1, 2**40)
        assert keys_of(view.scan(b"", None)) == [b"\x00", b"\xff" * 511]
        assert view.get(b"") is None  # no key can be empty


@pytest.mark.parametrize(
    ("start", "end", "limit", "expected"),
    [
        (b"", None, 0, [b"a", b"a\x00", b"ab", b"b", b"b\xff", b"c"]),
        (b"a", b"b", 0, [b"a", b"a\x00", b"ab"]),
        (b"a\x00", b"b\xff", 0, [b"a\x00", b"ab", b"b"]),  # half-open: the end is excluded
        (b"aa", b"b", 0, [b"ab"]),
        (b"b", None, 0, [b"b", b"b\xff", b"c"]),
        (b"", None, 2, [b"a", b"a\x00"]),
        (b"b", None, 5, [b"b", b"b\xff", b"c"]),
        (b"c\x00", None, 0, []),  # past the last key
        (b"b", b"a", 0, []),  # end below start
        (b"b", b"b", 0, []),
    ],
)
def test_scan_and_count_follow_key_order_and_bounds(
    backend: Backend, start: bytes, end: bytes | None, limit: int, expected: list[bytes]
) -> None:
    fill(backend, b"c", b"a", b"b\xff", b"ab", b"b", b"a\x00")
    with backend.read() as view:
        assert keys_of(view.scan(start, end, limit)) == expected
        if limit == 0:
            assert view.count(start, end) == len(expected)


def test_keys_only_scans_keep_the_bookkeeping(backend: Backend) -> None:
    txn = backend.begin()
    txn.put(KeyValue(b"a", b"value", 3, 7, 4))
    txn.commit()
    with backend.read() as view:
        assert view.scan(b"a", None, keys_only=True) == [KeyValue(b"a", b"", 3, 7, 4)]


def test_abort_undoes_every_kind_of_change(backend: Backend) -> None:
    fill(backend, b"a", b"b", b"c")
    txn = backend.begin()
    txn.put_session(SessionRecord(1, 100, 0, 0))
    txn.set_meta(Meta(5, 3, 100))
    txn.commit()
    with backend.read() as view:
        before = (view.scan(b"", None), view.sessions(), view.meta())

    txn = backend.begin()
    txn.put(kv(b"new"))
    txn.put(kv(b"a", b"changed", 9))
    txn.delete(b"b")
    txn.put(kv(b"b", b"recreated", 9))
    txn.delete(b"c")
    txn.put_session(SessionRecord(2, 100, 0, 0))
    txn.put_session(SessionRecord(1, 100, 4, 50, ((4, PutResult(3)),)))
    txn.set_meta(Meta(6, 4, 200))
    txn.clear()
    txn.put(kv(b"after-clear"))
    txn.put_session(SessionRecord(9, 1, 0, 0))
    txn.abort()

    with backend.read() as view:
        assert (view.scan(b"", None), view.sessions(), view.meta()) == before
        assert view.count(b"", None) == 3


def test_commit_makes_everything_visible_and_clear_empties_the_store(backend: Backend) -> None:
    fill(backend, b"a", b"b")
    txn = backend.begin()
    txn.put_session(SessionRecord(1, 100, 0, 0))
    txn.set_meta(Meta(5, 3, 100))
    txn.commit()
    txn = backend.begin()
    txn.clear()
    assert txn.scan(b"", None) == [] and txn.sessions() == [] and txn.meta() == Meta()
    txn.put(kv(b"z"))
    txn.commit()
    with backend.read() as view:
        assert keys_of(view.scan(b"", None)) == [b"z"]
        assert view.sessions() == []
        assert view.meta() == Meta()


def test_sessions_round_trip_in_id_order(backend: Backend) -> None:
    result = ErrorResult(ErrorCode.STALE_REQUEST, "x")
    records = [SessionRecord(256, 10, 2, 5, ((2, result),)), SessionRecord(1, 10, 0, 0), SessionRecord(2**40, 1, 1, 1)]
    txn = backend.begin()
    for r in records:
        txn.put_session(r)
    txn.put_session(SessionRecord(1, 10, 1, 3, ((1, PutResult(4)),)))  # overwrite
    txn.commit()
    with backend.read() as view:
        assert view.sessions() == [SessionRecord(1, 10, 1, 3, ((1, PutResult(4)),)), records[0], records[2]]
    txn = backend.begin()
    txn.delete_session(256)
    txn.commit()
    with backend.read() as view:
        assert [r.session_id for r in view.sessions()] == [1, 2**40]


def test_one_write_transaction_at_a_time(backend: Backend) -> None:
    txn = backend.begin()
    with pytest.raises(InvariantViolation):
        backend.begin()
    txn.abort()
    backend.begin().commit()


def test_deleting_what_is_not_there_is_a_bug(backend: Backend) -> None:
    txn = backend.begin()
    with pytest.raises(InvariantViolation):
        txn.delete(b"missing")
    txn.abort()
    txn = backend.begin()
    with pytest.raises(InvariantViolation):
        txn.delete_session(42)
    txn.abort()


# --- a model test: random transactions, committed or aborted, against a dict -----------------------------

small_keys = st.binary(min_size=1, max_size=3).map(lambda b: bytes(x % 4 + 0x61 for x in b))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), small_keys, st.integers(1, 99)),
        st.tuples(st.just("del"), small_keys, st.just(0)),
        st.tuples(st.just("session"), st.integers(1, 5), st.integers(0, 9)),
        st.tuples(st.just("endsession"), st.integers(1, 5), st.just(0)),
        st.tuples(st.just("meta"), st.integers(0, 9), st.just(0)),
        st.tuples(st.just("clear"), st.just(b""), st.just(0)),
    ),
    max_size=12,
)


@pytest.mark.parametrize("kind", sorted(BACKEND_FACTORIES))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(ops, st.booleans()), max_size=6), st.binary(max_size=2), st.binary(max_size=2))
def test_backend_matches_a_dict_model(
    kind: str, txns: list[tuple[list[tuple[str, object, int]], bool]], lo: bytes, hi: bytes
) -> None:
    factory: Callable[[Path], Backend] = BACKEND_FACTORIES[kind]
    with tempfile.TemporaryDirectory() as tmp:
        backend = factory(Path(tmp))
        try:
            data: dict[bytes, KeyValue] = {}
            sessions: dict[int, SessionRecord] = {}
            meta = Meta()
            for txn_ops, commit in txns:
                d, s, m = dict(data), dict(sessions), meta
                txn = backend.begin()
                for op, a, b in txn_ops:
                    if op == "put":
                        assert isinstance(a, bytes)
                        d[a] = KeyValue(a, bytes([b]), b, b, b)
                        txn.put(d[a])
                    elif op == "del" and a in d:
                        assert isinstance(a, bytes)
                        del d[a]
                        txn.delete(a)
                    elif op == "session":
                        assert isinstance(a, int)
                        s[a] = SessionRecord(a, 10, b, b)
                        txn.put_session(s[a])
                    elif op == "endsession" and a in s:
                        assert isinstance(a, int)
                        del s[a]
                        txn.delete_session(a)
                    elif op == "meta":
                        m = Meta(b, b, b)
                        txn.set_meta(m)
                    elif op == "clear":
                        d, s, m = {}, {}, Meta()
                        txn.clear()
                    assert txn.scan(b"", None) == [d[k] for k in sorted(d)]
                if commit:
                    txn.commit()
                    data, sessions, meta = d, s, m
                else:
                    txn.abort()
                with backend.read() as view:
                    assert view.scan(b"", None) == [data[k] for k in sorted(data)]
                    assert view.sessions() == [sessions[k] for k in sorted(sessions)]
                    assert view.meta() == meta
                    in_range = [data[k] for k in sorted(data) if lo <= k < hi]
                    assert view.scan(lo, hi) == in_range
                    assert view.count(lo, hi) == len(in_range)
                    assert view.count(lo, None) == sum(1 for k in data if k >= lo)
        finally:
            backend.close()
