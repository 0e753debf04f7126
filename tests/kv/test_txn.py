"""Transactions: every compare target x operator on present and missing keys, branches, effects, revisions."""

from __future__ import annotations

import pytest

from raftkv.kv import (
    Compare,
    DeleteRange,
    DeleteResult,
    KeyValue,
    KVStateMachine,
    Put,
    PutResult,
    Range,
    RangeResult,
    Txn,
    TxnResult,
)
from raftkv.kv.commands import CompareOp, CompareTarget
from tests.kv.kvtestlib import Feeder

# The key b"k" is set up with value b"m", create_revision 1, mod_revision 3, version 2; b"gone" never existed.
# Expected outcomes are written out by hand (etcd's rules), not computed.
TABLE: list[tuple[CompareTarget, CompareOp, bytes | int, bool, bool]] = [
    # target, op, operand, outcome on b"k", outcome on the missing key
    ("value", "=", b"m", True, False),
    ("value", "=", b"n", False, False),
    ("value", "!=", b"m", False, False),
    ("value", "!=", b"n", True, False),  # a value compare on a missing key is false even for "!="
    ("value", "<", b"n", True, False),
    ("value", "<", b"m", False, False),
    ("value", "<", b"ma", True, False),  # lexicographic: a prefix sorts first
    ("value", ">", b"l", True, False),
    ("value", ">", b"m", False, False),
    ("value", ">", b"", True, False),
    ("value", "=", b"", False, False),  # b"" is not "missing"
    ("version", "=", 2, True, False),
    ("version", "=", 0, False, True),  # a missing key has version 0
    ("version", "!=", 0, True, False),
    ("version", "!=", 2, False, True),
    ("version", "<", 3, True, True),
    ("version", "<", 2, False, True),
    ("version", ">", 1, True, False),
    ("version", ">", 2, False, False),
    ("version", ">", -1, True, True),
    ("create", "=", 1, True, False),
    ("create", "=", 0, False, True),
    ("create", "!=", 1, False, True),
    ("create", "<", 2, True, True),
    ("create", "<", 1, False, True),
    ("create", ">", 0, True, False),
    ("create", ">", 1, False, False),
    ("mod", "=", 3, True, False),
    ("mod", "=", 0, False, True),
    ("mod", "!=", 3, False, True),
    ("mod", "<", 4, True, True),
    ("mod", "<", 3, False, True),
    ("mod", ">", 2, True, False),
    ("mod", ">", 3, False, False),
]


def _setup(feed: Feeder) -> None:
    feed(Put(b"k", b"a"), Put(b"other", b"x"), Put(b"k", b"m"))


@pytest.mark.parametrize(("target", "op", "operand", "on_present", "on_missing"), TABLE)
def test_compare_table(
    sm: KVStateMachine,
    feed: Feeder,
    target: CompareTarget,
    op: CompareOp,
    operand: bytes | int,
    on_present: bool,
    on_missing: bool,
) -> None:
    _setup(feed)
    assert sm.get(b"k") == KeyValue(b"k", b"m", 1, 3, 2)
    for key, expected in [(b"k", on_present), (b"gone", on_missing)]:
        result = feed.one(Txn([Compare(key, target, op, operand)], [Range(b"k")], []))
        assert isinstance(result, TxnResult)
        assert result.succeeded is expected, (key, target, op, operand)
        assert len(result.responses) == (1 if expected else 0)


def test_all_compares_must_hold(sm: KVStateMachine, feed: Feeder) -> None:
    _setup(feed)
    yes, no = Compare(b"k", "version", "=", 2), Compare(b"k", "version", "=", 9)
    assert feed.one(Txn([yes, yes], [], [])) == TxnResult(True, (), 3)
    assert feed.one(Txn([yes, no], [], [])) == TxnResult(False, (), 3)
    assert feed.one(Txn([no, yes], [], [])) == TxnResult(False, (), 3)
    assert feed.one(Txn([], [], [])) == TxnResult(True, (), 3)  # no guard: success


def test_the_branch_that_runs_is_the_only_one_applied(sm: KVStateMachine, feed: Feeder) -> None:
    _setup(feed)
    txn = Txn([Compare(b"k", "value", "=", b"m")], [Put(b"s", b"1")], [Put(b"f", b"1")])
    assert feed.one(txn) == TxnResult(True, (PutResult(4),), 4)
    assert sm.get(b"s") is not None and sm.get(b"f") is None
    feed(Put(b"k", b"changed"))
    assert feed.one(txn) == TxnResult(False, (PutResult(6),), 6)
    assert sm.get(b"f") == KeyValue(b"f", b"1", 6, 6, 1)


def test_compare_and_swap_on_mod_revision(sm: KVStateMachine, feed: Feeder) -> None:
    feed(Put(b"lock", b"free"))
    seen = sm.get(b"lock")
    assert seen is not None

    def cas(new: bytes) -> TxnResult:
        result = feed.one(Txn([Compare(b"lock", "mod", "=", seen.mod_revision)], [Put(b"lock", new)], [Range(b"lock")]))
        assert isinstance(result, TxnResult)
        return result

    assert cas(b"alice").succeeded
    loser = cas(b"bob")  # same expected mod_revision: stale now
    assert not loser.succeeded
    assert loser.responses == (RangeResult((KeyValue(b"lock", b"alice", 1, 2, 2),), 1, False, 2),)
    assert sm.get(b"lock") == KeyValue(b"lock", b"alice", 1, 2, 2)


def test_create_if_absent(sm: KVStateMachine, feed: Feeder) -> None:
    create = Txn([Compare(b"k", "create", "=", 0)], [Put(b"k", b"first")], [])
    assert feed.one(create) == TxnResult(True, (PutResult(1),), 1)
    assert feed.one(create) == TxnResult(False, (), 1)
    assert sm.get(b"k") == KeyValue(b"k", b"first", 1, 1, 1)


def test_ops_see_the_effects_of_earlier_ops_and_share_one_revision(sm: KVStateMachine, feed: Feeder) -> None:
    _setup(feed)  # revision 3
    result = feed.one(
        Txn(
            [],
            [
                Range(b"k"),  # before any write: revision 3
                Put(b"k", b"n1"),
                Range(b"k"),  # sees n1
                Put(b"k", b"n2", prev_kv=True),  # sees n1 as previous; version bumps twice
                DeleteRange(b"other", prev_kv=True),
                Put(b"other", b"again"),  # recreated in the same txn: a new life at this revision
                DeleteRange(b"missing"),
                Range(b"a", b"\0"),
            ],
            [],
        )
    )
    assert result == TxnResult(
        True,
        (
            RangeResult((KeyValue(b"k", b"m", 1, 3, 2),), 1, False, 3),
            PutResult(4),
            RangeResult((KeyValue(b"k", b"n1", 1, 4, 3),), 1, False, 4),
            PutResult(4, KeyValue(b"k", b"n1", 1, 4, 3)),
            DeleteResult(4, 1, (KeyValue(b"other", b"x", 2, 2, 1),)),
            PutResult(4),
            DeleteResult(4, 0),
            RangeResult((KeyValue(b"k", b"n2", 1, 4, 4), KeyValue(b"other", b"again", 4, 4, 1)), 2, False, 4),
        ),
        4,
    )
    assert sm.revision == 4


def test_a_txn_that_changes_nothing_keeps_the_revision(sm: KVStateMachine, feed: Feeder) -> None:
    _setup(feed)
    result = feed.one(Txn([], [Range(b"k"), DeleteRange(b"missing"), DeleteRange(b"x", b"y")], []))
    assert result == TxnResult(
        True, (RangeResult((KeyValue(b"k", b"m", 1, 3, 2),), 1, False, 3), DeleteResult(3, 0), DeleteResult(3, 0)), 3
    )
    assert sm.revision == 3


def test_inner_revisions_move_once_something_changed(sm: KVStateMachine, feed: Feeder) -> None:
    _setup(feed)
    result = feed.one(Txn([], [DeleteRange(b"missing"), DeleteRange(b"k"), Range(b"k")], []))
    assert result == TxnResult(True, (DeleteResult(3, 0), DeleteResult(4, 1), RangeResult((), 0, False, 4)), 4)


def test_compares_see_the_state_before_the_transaction(sm: KVStateMachine, feed: Feeder) -> None:
    _setup(feed)
    # Both guards are judged before the put: the second would fail after it.
    txn = Txn([Compare(b"k", "version", "=", 2), Compare(b"k", "version", "=", 2)], [Put(b"k", b"z")], [])
    assert feed.one(txn) == TxnResult(True, (PutResult(4),), 4)
