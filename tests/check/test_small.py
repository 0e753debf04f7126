"""Hand-written histories, each a short transcript with its verdict: legal, illegal, and with pending operations.

Times are integers for readability: ``put(1, "x", "a", 0, 2)`` is client 1 putting ``'a'`` at key ``x``, called at 0,
returned at 2. ``return_s=None`` means the client never heard back (the outcome is unknown).
"""

from __future__ import annotations

import itertools

import pytest

from raftkv.check import (
    KV,
    REGISTER,
    CheckResult,
    Compare,
    Kind,
    Operation,
    Read,
    TxnOp,
    TxnResult,
    Written,
    cas,
    check,
    delete,
    get,
    put,
    txn,
)


def ok(history: list[Operation], **kw: object) -> CheckResult:
    r = check(history, **kw)  # type: ignore[arg-type]
    assert r.kind is Kind.OK, r.reason
    return r


def illegal(history: list[Operation], **kw: object) -> CheckResult:
    r = check(history, **kw)  # type: ignore[arg-type]
    assert r.kind is Kind.ILLEGAL, r.reason
    assert "\n" not in r.reason
    return r


# --- Legal ---------------------------------------------------------------------------------------------------


def test_the_empty_history_is_linearizable() -> None:
    r = ok([])
    assert r.partitions == {}


def test_sequential_writes_and_reads() -> None:
    ok([get(1, "x", None, 0, 1), put(1, "x", "a", 2, 3), get(2, "x", "a", 4, 5), put(2, "x", "b", 6, 7)])


def test_a_read_concurrent_with_a_write_may_see_either_value() -> None:
    w = put(1, "x", "b", 2, 6)
    for seen in ("a", "b"):
        ok([put(1, "x", "a", 0, 1), w, get(2, "x", seen, 3, 4)])


def test_two_reads_during_one_write_may_not_go_back_in_time() -> None:
    base = [put(1, "x", "a", 0, 1), put(1, "x", "b", 2, 10)]
    ok([*base, get(2, "x", "a", 3, 4), get(2, "x", "b", 5, 6)])
    r = illegal([*base, get(2, "x", "b", 3, 4), get(2, "x", "a", 5, 6)])
    assert r.key == "x"


def test_touching_intervals_count_as_concurrent() -> None:
    """A read called at the instant a write returned may still precede it."""
    ok([put(1, "x", "a", 0, 1), get(2, "x", None, 1, 2)])


def test_linearization_points_follow_real_time_not_call_order() -> None:
    """Called first, linearized last: the long put takes effect after the short one."""
    r = ok([put(1, "x", "a", 0, 10), put(2, "x", "b", 1, 2), get(3, "x", "a", 11, 12)])
    assert r.partitions["x"].order == (1, 0, 2)


def test_delete_makes_the_key_absent() -> None:
    ok([put(1, "x", "a", 0, 1), delete(1, "x", 2, 3), get(2, "x", None, 4, 5)])
    illegal([put(1, "x", "a", 0, 1), delete(1, "x", 2, 3), get(2, "x", "a", 4, 5)])


# --- Illegal, with the explanation -----------------------------------------------------------------------------


def test_a_stale_read_is_flagged_with_the_key_and_operation() -> None:
    history = [put(1, "x", "a", 0, 1), put(1, "x", "b", 2, 3), get(2, "x", "a", 4, 5)]
    r = illegal(history)
    assert r.key == "x"
    assert [history.index(op) for op in r.prefix] == [0, 1]
    assert r.unplaceable == (history[2],)
    assert "key 'x'" in r.reason and "#2" in r.reason and "get 'x' -> 'a'" in r.reason and "'b'" in r.reason


def test_reading_a_value_never_written() -> None:
    r = illegal([put(1, "x", "a", 0, 1), get(2, "x", "z", 2, 3)])
    assert r.prefix and r.prefix[0].value == "a"


def test_a_read_from_the_future() -> None:
    illegal([get(2, "x", "a", 0, 1), put(1, "x", "a", 2, 3)])


def test_the_blocking_operation_comes_first_then_the_other_candidates() -> None:
    history = [
        put(1, "x", "a", 0, 1),
        put(1, "x", "b", 2, 3),
        get(2, "x", "a", 4, 6),  # stale: the blocking one (returns first)
        get(3, "x", "c", 5, 8),  # impossible as well, and concurrent with it
    ]
    r = illegal(history)
    assert r.unplaceable == (history[2], history[3])
    assert "nor can #3" in r.reason


def test_only_the_broken_key_is_reported_and_the_others_are_checked() -> None:
    history = [
        put(1, "x", "a", 0, 1),
        put(1, "y", "a", 0, 1),
        get(2, "x", "a", 2, 3),
        put(1, "y", "b", 2, 3),
        get(2, "y", "a", 4, 5),
    ]
    r = illegal(history)
    assert r.key == "y" and r.illegal_keys == ["y"]
    assert r.partitions["x"].kind is Kind.OK
    assert r.partitions["x"].ops == (0, 2)


def test_every_illegal_key_is_found_and_the_first_is_reported() -> None:
    stale = [put(1, "?", "a", 0, 1), put(1, "?", "b", 2, 3), get(2, "?", "a", 4, 5)]
    history = [Operation(o.client, o.f, k, o.call_s, o.return_s, o.value, output=o.output) for k in "pq" for o in stale]
    r = illegal(history)
    assert r.key == "p" and r.illegal_keys == ["p", "q"]
    assert "1 other key" in r.reason


# --- Pending operations (unknown outcome) ------------------------------------------------------------------------


def test_a_timed_out_write_may_have_happened() -> None:
    ok([put(1, "x", "a", 0, 1), put(2, "x", "b", 2, None), get(3, "x", "b", 3, 4)])


def test_a_timed_out_write_may_not_have_happened() -> None:
    r = ok([put(1, "x", "a", 0, 1), put(2, "x", "b", 2, None), get(3, "x", "a", 3, 4), get(3, "x", "a", 50, 51)])
    assert 1 not in r.partitions["x"].order  # left out: it never took effect


def test_a_timed_out_write_may_take_effect_long_after_the_client_gave_up() -> None:
    """The client stopped waiting at 3; the request was still in flight and landed between the two reads."""
    gave_up = Operation(2, "put", "x", 2, 3, value="b", output=None)
    ok([put(1, "x", "a", 0, 1), gave_up, get(3, "x", "a", 10, 11), get(3, "x", "b", 20, 21)])


def test_a_timed_out_write_happens_at_most_once() -> None:
    history = [put(1, "x", "a", 0, 1), put(2, "x", "b", 2, None), get(3, "x", "b", 3, 4), put(1, "x", "c", 5, 6)]
    illegal([*history, get(3, "x", "c", 7, 8), get(3, "x", "b", 9, 10)])


def test_a_timed_out_write_cannot_take_effect_before_its_call() -> None:
    illegal([put(1, "x", "a", 0, 1), get(3, "x", "b", 2, 3), put(2, "x", "b", 4, None)])


def test_a_read_that_never_returned_is_not_checked() -> None:
    r = ok([put(1, "x", "a", 0, 1), get(2, "x", "zzz", 2, None)])
    assert r.partitions["x"].skipped == (1,)


def test_a_pending_cas_may_have_swapped_or_not() -> None:
    base = [put(1, "x", "a", 0, 1), cas(2, "x", "a", "b", None, 2, None)]
    ok([*base, get(3, "x", "b", 3, 4)])
    ok([*base, get(3, "x", "a", 3, 4)])
    illegal([*base, get(3, "x", "c", 3, 4)])


def test_many_timed_out_writes_stay_fast() -> None:
    """40 timed-out puts, concurrent with everything after them; a read far later sees one of the first."""
    history = [put(1, "x", "a", 0, 1)]
    history += [put(2 + i, "x", f"p{i}", 2 + i, None) for i in range(40)]
    history += [get(99, "x", "p3", 100, 101), get(99, "x", "p3", 102, 103), put(98, "x", "z", 104, 105)]
    history += [get(99, "x", "z", 106, 107)]
    ok(history, timeout_s=5)
    illegal([*history, get(99, "x", "p7", 108, 109), get(99, "x", "p3", 110, 111)], timeout_s=5)


# --- cas and txn ------------------------------------------------------------------------------------------------


def test_cas_swaps_only_when_the_value_matches() -> None:
    ok([put(1, "x", "a", 0, 1), cas(1, "x", "a", "b", True, 2, 3), get(1, "x", "b", 4, 5)])
    ok([put(1, "x", "a", 0, 1), cas(1, "x", "z", "b", False, 2, 3), get(1, "x", "a", 4, 5)])
    ok([cas(1, "x", None, "b", True, 0, 1), get(1, "x", "b", 2, 3)])  # expected null: create if absent
    illegal([put(1, "x", "a", 0, 1), cas(1, "x", "z", "b", True, 2, 3)])  # swapped though it did not match
    illegal([put(1, "x", "a", 0, 1), cas(1, "x", "a", "b", False, 2, 3)])  # failed though it matched
    illegal([put(1, "x", "a", 0, 1), cas(1, "x", "z", "b", False, 2, 3), get(1, "x", "b", 4, 5)])


def _txn(succeeded: bool | None, read: str | None, t0: float, t1: float | None) -> Operation:
    """if value == 'a' then put 'b', get else get."""
    out = None if succeeded is None else TxnResult(succeeded, (Written(), Read(read)) if succeeded else (Read(read),))
    then = (TxnOp("put", "b"), TxnOp("get"))
    return txn(1, "x", [Compare("==", "a")], then, [TxnOp("get")], out, t0, t1)


def test_txn_branches_and_results() -> None:
    ok([put(1, "x", "a", 0, 1), _txn(True, "b", 2, 3), get(1, "x", "b", 4, 5)])
    ok([put(1, "x", "z", 0, 1), _txn(False, "z", 2, 3), get(1, "x", "z", 4, 5)])
    illegal([put(1, "x", "z", 0, 1), _txn(True, "b", 2, 3)])  # took then, though the compare fails
    illegal([put(1, "x", "a", 0, 1), _txn(True, "a", 2, 3)])  # read inside the txn misses its own put
    illegal([put(1, "x", "z", 0, 1), _txn(False, "q", 2, 3)])  # else branch read a value never there
    ok([put(1, "x", "a", 0, 1), _txn(None, None, 2, None), get(1, "x", "b", 4, 5)])  # pending txn happened


def test_txn_compare_not_equal_and_delete() -> None:
    t = txn(
        1, "x", [Compare("!=", None)], [TxnOp("delete")], [TxnOp("put", "new")], TxnResult(True, (Written(),)), 2, 3
    )
    ok([put(1, "x", "a", 0, 1), t, get(1, "x", None, 4, 5)])
    illegal([t, get(1, "x", None, 4, 5)])  # absent at first, so != absent cannot hold


# --- The register model -----------------------------------------------------------------------------------------


def test_the_register_model_ignores_keys() -> None:
    history = [put(1, "x", "a", 0, 1), get(2, "y", "a", 2, 3)]
    illegal(history, model=KV)
    r = ok(history, model=REGISTER)
    assert list(r.partitions) == [""]
    assert "the register" in illegal([put(1, "x", "a", 0, 1), get(2, "y", "b", 2, 3)], model=REGISTER).reason


# --- Anomalies as transcripts ------------------------------------------------------------------------------------


def test_anomaly_stale_read() -> None:
    """A lagging replica answers a read after a newer write was acknowledged."""
    illegal([put(1, "x", "v1", 0, 1), put(2, "x", "v2", 2, 3), get(3, "x", "v1", 4, 5)])


def test_anomaly_lost_write() -> None:
    """An acknowledged put vanishes: the reads after it see the value before it."""
    illegal([put(1, "x", "v1", 0, 1), put(2, "x", "v2", 2, 3), get(3, "x", "v1", 4, 5), get(3, "x", "v1", 6, 7)])


def test_anomaly_double_apply() -> None:
    """A retried put is applied twice: its value comes back after a later write had replaced it."""
    history = [put(1, "x", "v1", 0, 1), get(3, "x", "v1", 2, 3), put(2, "x", "v2", 4, 5), get(3, "x", "v2", 6, 7)]
    illegal([*history, get(3, "x", "v1", 8, 9)])


def test_anomaly_read_of_an_aborted_write() -> None:
    """A cas that reported failure was applied anyway."""
    illegal([put(1, "x", "v1", 0, 1), cas(2, "x", "v0", "v2", False, 2, 3), get(3, "x", "v2", 4, 5)])


# --- Budget ------------------------------------------------------------------------------------------------------


def test_running_out_of_time_is_unknown_and_names_the_key() -> None:
    from raftkv.check.gen import generate

    history = generate(5, ops=20_000, clients=8, keys=2).history
    ticks = itertools.count()
    r = check(history, timeout_s=3, clock=lambda: float(next(ticks)))  # every clock read is a second later
    first, second = r.partitions.values()
    assert r.kind is Kind.UNKNOWN and first.kind is Kind.UNKNOWN
    assert r.key == first.key and f"key {first.key!r}" in r.reason and "time budget (3 s)" in r.reason
    assert second.kind is Kind.UNKNOWN and second.steps == 0  # not started after the budget ran out
    assert check(history, timeout_s=None).kind is Kind.OK


@pytest.mark.parametrize("n_clients", [2, 6])
def test_every_interleaving_of_sequential_clients_is_linearizable(n_clients: int) -> None:
    """Each client puts then reads back its own value, all at once: legal whatever the outcome order."""
    history: list[Operation] = []
    for c in range(n_clients):
        history.append(put(c, "x", f"c{c}", 0, 10))
    history.append(get(99, "x", f"c{n_clients - 1}", 11, 12))
    ok(history)
