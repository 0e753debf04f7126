"""One conformance suite for every key-value backend (memory and LMDB), through the Backend protocol only."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.kv import Backend, ErrorCode, ErrorResult, KeyValue, Meta, PutResult, SessionRecord
from raftkv.kv.backend import HistoryRecord, retained, tombstone
from raftkv.raft.errors import InvariantViolation
from tests.kv.kvtestlib import BACKEND_FACTORIES


def kv(key: bytes, value: bytes = b"v", rev: int = 1) -> KeyValue:
    return KeyValue(key, value, rev, rev, 1)


def fill(backend: Backend, *keys: bytes) -> None:
    txn = backend.begin()
    for sub, k in enumerate(keys):
        txn.put(kv(k, b"value-of-" + k), sub)
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
    txn.delete(b"k", 3)
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
    txn.put(kv(b"new", rev=9))
    txn.put(kv(b"a", b"changed", 9), 1)
    txn.delete(b"b", 9, 2)
    txn.put(kv(b"b", b"recreated", 9), 3)
    txn.delete(b"c", 9, 4)
    txn.compact(10, 100)
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
        assert [r.kv for r in view.history(0)] == before[0]
        assert view.history_size() == 3


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
        txn.delete(b"missing", 5)
    txn.abort()
    txn = backend.begin()
    with pytest.raises(InvariantViolation):
        txn.delete_session(42)
    txn.abort()


def test_reads_at_past_revisions_see_each_version(backend: Backend) -> None:
    txn = backend.begin()
    txn.put(KeyValue(b"a", b"a1", 1, 1, 1))
    txn.put(KeyValue(b"b", b"b2", 2, 2, 1))
    txn.put(KeyValue(b"a", b"a3", 1, 3, 2))
    txn.delete(b"b", 4)
    txn.put(KeyValue(b"b", b"b5", 5, 5, 1), 0)
    txn.put(KeyValue(b"c", b"c5", 5, 5, 1), 1)
    txn.commit()
    with backend.read() as view:
        assert view.get_at(b"a", 0) is None
        assert [view.get_at(b"a", r).value for r in (1, 2)] == [b"a1", b"a1"]  # type: ignore[union-attr]
        assert view.get_at(b"a", 9) == view.get(b"a") == KeyValue(b"a", b"a3", 1, 3, 2)
        assert view.get_at(b"b", 4) is None and view.get_at(b"b", 3) == KeyValue(b"b", b"b2", 2, 2, 1)
        assert [kv.value for kv in view.scan_at(b"", None, 2)] == [b"a1", b"b2"]
        assert [kv.value for kv in view.scan_at(b"", None, 4)] == [b"a3"]
        assert [kv.value for kv in view.scan_at(b"", None, 5)] == [b"a3", b"b5", b"c5"]
        assert view.scan_at(b"b", None, 5, limit=1, keys_only=True) == [KeyValue(b"b", b"", 5, 5, 1)]
        assert [view.count_at(b"", None, r) for r in range(6)] == [0, 1, 2, 2, 1, 3]
        assert [(r.main, r.sub, r.tombstone) for r in view.history(4)] == [(4, 0, True), (5, 0, False), (5, 1, False)]
        assert [r.main for r in view.history(2, 0, limit=2)] == [2, 3]
        (b5,) = [r for r in view.history(5) if r.kv.key == b"b"]
        before = view.previous(b5)
        assert before is not None and before.tombstone and view.previous(before).kv.value == b"b2"  # type: ignore[union-attr]
        groups = view.key_histories(b"b", 10)
        assert [[r.main for r in g] for g in groups] == [[2, 4, 5], [5]]


def test_compaction_removes_only_what_no_read_at_or_after_it_can_see(backend: Backend) -> None:
    txn = backend.begin()
    for rev in range(1, 11):  # a written at 1..10; b created at 2, deleted at 6 (revisions only grow)
        txn.put(KeyValue(b"a", b"a%d" % rev, 1, rev, rev))
        if rev == 2:
            txn.put(KeyValue(b"b", b"b", 2, 2, 1), 1)
        if rev == 6:
            txn.delete(b"b", 6, 1)
    txn.commit()
    with backend.read() as view:
        answers = {r: (view.scan_at(b"", None, r), view.history(r)) for r in range(5, 11)}
    txn = backend.begin()
    assert txn.compact(5, 2) is False  # a bounded step: two records examined, in revision order
    assert txn.history_size() == 11  # a2 revealed a1 as garbage
    assert txn.compact(5, 100) is True  # a1..a4 gone; b's put (superseded at 6 > 5) stays
    assert txn.compact(5, 100) is True
    txn.commit()
    with backend.read() as view:
        for r, answer in answers.items():
            assert (view.scan_at(b"", None, r), view.history(r)) == answer
        assert view.history_size() == 8  # a5..a10, b's put and its tombstone
    txn = backend.begin()
    assert txn.compact(7, 100) is True  # a5, a6, b's put and b's tombstone (older than 7)
    txn.commit()
    with backend.read() as view:
        assert view.get_at(b"b", 7) is None and view.get_at(b"a", 7) == KeyValue(b"a", b"a7", 1, 7, 7)
        assert [r.main for r in view.history(0)] == [7, 8, 9, 10]


# --- a model test: random transactions, committed or aborted, against a dict -----------------------------

small_keys = st.binary(min_size=1, max_size=3).map(lambda b: bytes(x % 4 + 0x61 for x in b))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), small_keys, st.integers(1, 99)),
        st.tuples(st.just("put-same-revision"), small_keys, st.integers(1, 99)),
        st.tuples(st.just("del"), small_keys, st.just(0)),
        st.tuples(st.just("compact"), st.just(b""), st.integers(0, 3)),
        st.tuples(st.just("session"), st.integers(1, 5), st.integers(0, 9)),
        st.tuples(st.just("endsession"), st.integers(1, 5), st.just(0)),
        st.tuples(st.just("meta"), st.integers(0, 9), st.just(0)),
        st.tuples(st.just("clear"), st.just(b""), st.just(0)),
    ),
    max_size=12,
)


class _Model:
    """Every record ever written (the history compaction may thin out), and where compaction got to."""

    def __init__(self) -> None:
        self.records: list[HistoryRecord] = []
        self.compacted = 0
        self.revision = 0
        self.sub = 0

    def next_rev(self, same: bool) -> tuple[int, int]:
        if same and self.revision:
            self.sub += 1
        else:
            self.revision, self.sub = self.revision + 1, 0
        return self.revision, self.sub

    def at(self, key: bytes, revision: int) -> KeyValue | None:
        found = [r for r in self.records if r.kv.key == key and r.main <= revision]
        return None if not found or found[-1].tombstone else found[-1].kv

    def all_keys(self) -> list[bytes]:
        return sorted({r.kv.key for r in self.records})


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
            model = _Model()
            for txn_ops, commit in txns:
                d, s, m = dict(data), dict(sessions), meta
                saved = (list(model.records), model.compacted, model.revision, model.sub)
                txn = backend.begin()
                for op, a, b in txn_ops:
                    if op in ("put", "put-same-revision"):
                        assert isinstance(a, bytes)
                        main, sub = model.next_rev(op == "put-same-revision")
                        prev = d.get(a)
                        d[a] = KeyValue(a, bytes([b]), prev.create_revision if prev else main, main, b)
                        txn.put(d[a], sub)
                        model.records.append(HistoryRecord(main, sub, d[a]))
                    elif op == "del" and a in d:
                        assert isinstance(a, bytes)
                        main, sub = model.next_rev(False)
                        del d[a]
                        txn.delete(a, main, sub)
                        model.records.append(tombstone(a, main, sub))
                    elif op == "compact":
                        assert isinstance(b, int)
                        model.compacted = max(model.compacted, model.revision - b)
                        txn.compact(model.compacted, 1 + b)  # a step; the rest may stay behind
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
                        model.records, model.compacted = [], 0
                    assert txn.scan(b"", None) == [d[k] for k in sorted(d)]
                if commit:
                    txn.commit()
                    data, sessions, meta = d, s, m
                else:
                    txn.abort()
                    model.records, model.compacted, model.revision, model.sub = saved
                with backend.read() as view:
                    assert view.scan(b"", None) == [data[k] for k in sorted(data)]
                    assert view.sessions() == [sessions[k] for k in sorted(sessions)]
                    assert view.meta() == meta
                    in_range = [data[k] for k in sorted(data) if lo <= k < hi]
                    assert view.scan(lo, hi) == in_range
                    assert view.count(lo, hi) == len(in_range)
                    assert view.count(lo, None) == sum(1 for k in data if k >= lo)
                    # The history: every read at or after the compaction revision as if nothing was removed.
                    keys = model.all_keys()
                    for r in range(model.compacted, model.revision + 1):
                        expected = [kv for k in keys if lo <= k < hi and (kv := model.at(k, r)) is not None]
                        assert view.scan_at(lo, hi, r) == expected
                        assert view.count_at(lo, hi, r) == len(expected)
                        assert [view.get_at(k, r) for k in keys] == [model.at(k, r) for k in keys]
                    held = view.history(model.compacted)
                    assert held == [rec for rec in model.records if rec.main >= model.compacted]
                    recent = [[rec for rec in g if rec.main >= model.compacted] for g in view.key_histories(b"", 100)]
                    by_key = [
                        [rec for rec in model.records if rec.kv.key == k and rec.main >= model.compacted] for k in keys
                    ]
                    assert [g for g in recent if g] == [g for g in by_key if g]
            txn = backend.begin()
            txn.compact(model.compacted, 10_000)  # finish: what is held is exactly what compaction keeps
            txn.commit()
            with backend.read() as view:
                kept = [
                    rec
                    for k in model.all_keys()
                    for rec in retained([x for x in model.records if x.kv.key == k], model.compacted)
                ]
                assert [rec for g in view.key_histories(b"", 100) for rec in g] == kept
                assert view.history_size() == len(kept)
        finally:
            backend.close()
