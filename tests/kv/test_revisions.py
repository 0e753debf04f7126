"""Revision and version bookkeeping (etcd v3), and Range semantics, over both backends."""

from __future__ import annotations

from raftkv.kv import (
    FROM_KEY,
    DeleteRange,
    DeleteResult,
    KeyValue,
    KVStateMachine,
    Put,
    PutResult,
    Range,
    RangeResult,
    prefix_end,
)
from tests.kv.kvtestlib import Feeder


def test_create_modify_delete_recreate(sm: KVStateMachine, feed: Feeder) -> None:
    assert sm.revision == 0
    assert feed.one(Put(b"k", b"1")) == PutResult(1)
    assert sm.get(b"k") == KeyValue(b"k", b"1", create_revision=1, mod_revision=1, version=1)

    assert feed.one(Put(b"other", b"x")) == PutResult(2)
    assert feed.one(Put(b"k", b"2", prev_kv=True)) == PutResult(3, KeyValue(b"k", b"1", 1, 1, 1))
    assert sm.get(b"k") == KeyValue(b"k", b"2", create_revision=1, mod_revision=3, version=2)

    assert feed.one(Put(b"k", b"2")) == PutResult(4)  # the same value is still a write
    assert sm.get(b"k") == KeyValue(b"k", b"2", 1, 4, 3)

    assert feed.one(DeleteRange(b"k", prev_kv=True)) == DeleteResult(5, 1, (KeyValue(b"k", b"2", 1, 4, 3),))
    assert sm.get(b"k") is None and sm.revision == 5

    assert feed.one(Put(b"k", b"3")) == PutResult(6)
    assert sm.get(b"k") == KeyValue(b"k", b"3", create_revision=6, mod_revision=6, version=1)  # a new life


def test_deleting_nothing_does_not_bump_the_revision(sm: KVStateMachine, feed: Feeder) -> None:
    feed(Put(b"a", b"1"))
    assert feed.one(DeleteRange(b"missing")) == DeleteResult(1, 0)
    assert feed.one(DeleteRange(b"x", b"z", prev_kv=True)) == DeleteResult(1, 0)
    assert sm.revision == 1
    assert feed.one(Put(b"b", b"1")) == PutResult(2)


def test_delete_range_takes_one_revision_for_all_its_keys(sm: KVStateMachine, feed: Feeder) -> None:
    feed(Put(b"a", b"1"), Put(b"b", b"2"), Put(b"c", b"3"), Put(b"d", b"4"))
    assert feed.one(DeleteRange(b"b", b"d")) == DeleteResult(5, 2)
    assert [kv.key for kv in sm.read(Range(b"a", FROM_KEY)).kvs] == [b"a", b"d"]
    assert feed.one(DeleteRange(b"a", FROM_KEY)) == DeleteResult(6, 2)
    assert sm.read(Range(b"\0", FROM_KEY)).count == 0


def test_reads_through_the_log_do_not_bump_the_revision(sm: KVStateMachine, feed: Feeder) -> None:
    feed(Put(b"a", b"1"))
    assert feed.one(Range(b"a")) == RangeResult((KeyValue(b"a", b"1", 1, 1, 1),), 1, False, 1)
    assert sm.revision == 1


def test_several_writes_in_one_batch_each_get_their_revision(sm: KVStateMachine, feed: Feeder) -> None:
    results = feed(Put(b"a", b"1"), Put(b"a", b"2"), DeleteRange(b"a"), Put(b"a", b"3"))
    assert results == [PutResult(1), PutResult(2), DeleteResult(3, 1), PutResult(4)]
    assert sm.get(b"a") == KeyValue(b"a", b"3", 4, 4, 1)
    assert sm.applied_index == 4


def _setup(feed: Feeder) -> None:
    for k in [b"a", b"ab", b"abc", b"b", b"c", b"c\xff", b"d"]:
        feed(Put(k, b"v-" + k))


def _keys(result: RangeResult) -> list[bytes]:
    return [kv.key for kv in result.kvs]


def test_range_forms(sm: KVStateMachine, feed: Feeder) -> None:
    _setup(feed)
    assert _keys(sm.read(Range(b"ab"))) == [b"ab"]
    assert _keys(sm.read(Range(b"ab", b""))) == [b"ab"]  # empty range_end: single key, as in etcd
    assert _keys(sm.read(Range(b"a", prefix_end(b"a")))) == [b"a", b"ab", b"abc"]
    assert _keys(sm.read(Range(b"c", prefix_end(b"c")))) == [b"c", b"c\xff"]
    assert _keys(sm.read(Range(b"b", b"d"))) == [b"b", b"c", b"c\xff"]
    assert _keys(sm.read(Range(b"c", FROM_KEY))) == [b"c", b"c\xff", b"d"]
    assert _keys(sm.read(Range(b"\0", FROM_KEY))) == [b"a", b"ab", b"abc", b"b", b"c", b"c\xff", b"d"]
    assert _keys(sm.read(Range(b"", FROM_KEY))) == _keys(sm.read(Range(b"\0", FROM_KEY)))
    assert _keys(sm.read(Range(b"zz"))) == []
    assert sm.read(Range(b"zz")) == RangeResult((), 0, False, 7)


def test_range_limit_count_and_more(sm: KVStateMachine, feed: Feeder) -> None:
    _setup(feed)
    page = sm.read(Range(b"a", FROM_KEY, limit=3))
    assert (_keys(page), page.count, page.more) == ([b"a", b"ab", b"abc"], 7, True)
    page = sm.read(Range(b"c", FROM_KEY, limit=3))
    assert (_keys(page), page.count, page.more) == ([b"c", b"c\xff", b"d"], 3, False)  # exactly full: no more
    page = sm.read(Range(b"c", FROM_KEY, limit=10))
    assert (_keys(page), page.count, page.more) == ([b"c", b"c\xff", b"d"], 3, False)
    assert sm.read(Range(b"a", b"c", count_only=True)) == RangeResult((), 4, False, 7)
    assert sm.read(Range(b"a", count_only=True)) == RangeResult((), 1, False, 7)
    assert sm.read(Range(b"a", b"b", keys_only=True)).kvs == (
        KeyValue(b"a", b"", 1, 1, 1),
        KeyValue(b"ab", b"", 2, 2, 1),
        KeyValue(b"abc", b"", 3, 3, 1),
    )
    assert sm.read(Range(b"b", keys_only=True)).kvs == (KeyValue(b"b", b"", 4, 4, 1),)


def test_read_and_a_range_through_the_log_agree(sm: KVStateMachine, feed: Feeder) -> None:
    _setup(feed)
    for request in [Range(b"a", FROM_KEY, limit=2), Range(b"b", b"d", keys_only=True), Range(b"abc")]:
        assert feed.one(request) == sm.read(request)
