"""Hypothesis: the checker against the naive oracle on small arbitrary histories, and the JSONL round trip.

Arbitrary histories (random outputs, overlapping intervals, one to three keys, a third of them pending) are
mostly illegal and sometimes legal; the optimized search — memo, pending operations tried last, canonical
placement of pending writes, interchangeable pending operations, unobserved values merged — must agree with the
plain enumeration of every order in ``naive.py`` on each one.
"""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.check import (
    KV,
    REGISTER,
    CasResult,
    Compare,
    Kind,
    Operation,
    Read,
    TxnOp,
    TxnResult,
    Written,
    check,
    dump_jsonl,
    parse_jsonl,
)
from tests.check.naive import naive_linearizable

VALUES = st.sampled_from(["a", "b", "c", 7])
MAYBE = st.one_of(st.none(), VALUES)


@st.composite
def operations(draw: st.DrawFn, keys: str = "xy") -> Operation:
    f = draw(st.sampled_from(["get", "get", "put", "put", "delete", "cas", "cas", "txn"]))
    key = draw(st.sampled_from(keys))
    call = draw(st.integers(0, 12))
    pending = draw(st.integers(0, 2)) == 0
    ret: float | None = call + draw(st.integers(0, 6))
    if pending and draw(st.booleans()):
        ret = None
    client = draw(st.integers(0, 3))
    if f == "get":
        return Operation(client, "get", key, call, ret, output=None if pending else Read(draw(MAYBE)))
    if f == "put":
        return Operation(client, "put", key, call, ret, value=draw(VALUES), output=None if pending else Written())
    if f == "delete":
        return Operation(client, "delete", key, call, ret, output=None if pending else Written())
    if f == "cas":
        out = None if pending else CasResult(draw(st.booleans()))
        return Operation(client, "cas", key, call, ret, value=draw(VALUES), expected=draw(MAYBE), output=out)
    compare = (Compare(draw(st.sampled_from(["==", "!="])), draw(MAYBE)),)
    then = (TxnOp("put", draw(VALUES)), TxnOp("get"))
    else_ = draw(st.sampled_from([(TxnOp("get"),), (TxnOp("delete"),), ()]))
    txn_out: TxnResult | None = None
    if not pending:
        succeeded = draw(st.booleans())
        branch = then if succeeded else else_
        txn_out = TxnResult(succeeded, tuple(Read(draw(MAYBE)) if t.f == "get" else Written() for t in branch))
    return Operation(client, "txn", key, call, ret, output=txn_out, compare=compare, then=then, else_=else_)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations(), max_size=7))
def test_the_checker_agrees_with_the_naive_oracle(history: list[Operation]) -> None:
    r = check(history, timeout_s=None)
    assert (r.kind is Kind.OK) == naive_linearizable(history), r.reason


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations(keys="x"), min_size=4, max_size=7))
def test_one_busy_key_agrees_with_the_naive_oracle(history: list[Operation]) -> None:
    r = check(history, timeout_s=None)
    assert (r.kind is Kind.OK) == naive_linearizable(history), r.reason


@settings(max_examples=150, deadline=None)
@given(st.lists(operations(), max_size=6))
def test_the_register_model_is_the_kv_model_on_one_key(history: list[Operation]) -> None:
    one_key = [
        Operation(o.client, o.f, "k", o.call_s, o.return_s, o.value, o.expected, o.output, o.compare, o.then, o.else_)
        for o in history
    ]
    assert check(history, REGISTER).kind is check(one_key, KV).kind


@settings(max_examples=200, deadline=None)
@given(st.lists(operations(), max_size=10))
def test_jsonl_round_trip(history: list[Operation]) -> None:
    buf = io.StringIO()
    dump_jsonl(history, buf)
    back = parse_jsonl(buf.getvalue().splitlines())
    assert back == history
    assert [op.line for op in back] == list(range(1, len(history) + 1))
