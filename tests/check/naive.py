"""A naive linearizability checker: every order, no memo, no partitioning, no pruning — the oracle for Hypothesis.

It shares nothing with the real checker but the ``Operation`` type: its own sequential semantics of the KV
store (a dict), its own treatment of unknown outcomes (a pending operation either happens, at a point after
its call, or is dropped — both are tried explicitly), and plain recursion over which operation goes next.
Exponential; meant for histories of up to about eight operations.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from raftkv.check.history import CasResult, Operation, Read, TxnResult, Value

Store = tuple[tuple[str, Value], ...]


def _apply(store: dict[str, Value], op: Operation) -> bool:
    """Apply ``op`` to ``store`` in place; False if its recorded output is impossible (unknown: always True)."""
    k = op.key
    cur = store.get(k)
    out = op.output
    if op.f == "get":
        return out is None or (isinstance(out, Read) and out.value == cur)
    if op.f == "put":
        assert op.value is not None
        store[k] = op.value
        return True
    if op.f == "delete":
        store.pop(k, None)
        return True
    if op.f == "cas":
        swapped = cur == op.expected
        if isinstance(out, CasResult) and out.ok != swapped:
            return False
        if swapped:
            assert op.value is not None
            store[k] = op.value
        return True
    holds = all((cur == c.value) == (c.op == "==") for c in op.compare)
    if isinstance(out, TxnResult) and out.succeeded != holds:
        return False
    reads = [r.value for r in out.results if isinstance(r, Read)] if isinstance(out, TxnResult) else None
    j = 0
    for t in op.then if holds else op.else_:
        if t.f == "get":
            if reads is not None:
                if store.get(k) != reads[j]:
                    return False
                j += 1
        elif t.f == "put":
            assert t.value is not None
            store[k] = t.value
        else:
            store.pop(k, None)
    return True


def naive_linearizable(history: Sequence[Operation]) -> bool:
    """True iff some order of the operations (pending ones optional) respects real time and the KV semantics."""
    ret = [op.effective_return_s for op in history]

    def rec(remaining: frozenset[int], store: dict[str, Value]) -> bool:
        if all(history[i].pending for i in remaining):
            return True
        deadline = min(ret[i] for i in remaining)
        for i in sorted(remaining):
            if history[i].call_s > deadline:
                continue  # some remaining operation returned before this one was called
            rest = remaining - {i}
            if history[i].pending and rec(rest, dict(store)):  # it never happened
                return True
            s = dict(store)
            if _apply(s, history[i]) and rec(rest, s):
                return True
        return False

    return rec(frozenset(range(len(history))), {})


def reference_linearizable(history: Sequence[Operation]) -> bool:
    """The same question with a memo of failed configurations (set of placed operations, value) and one search per
    key: exact, and fast enough for a few hundred operations per key when few are pending (each pending one may
    double the configurations)."""
    by_key: dict[str, list[Operation]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    return all(_reference_key(ops) for ops in by_key.values())


def _reference_key(ops: list[Operation]) -> bool:
    ret = [op.effective_return_s for op in ops]
    failed: set[tuple[frozenset[int], Value | None]] = set()

    def rec(remaining: frozenset[int], value: Value | None) -> bool:
        if all(ops[i].pending for i in remaining):
            return True
        if (remaining, value) in failed:
            return False
        deadline = min(ret[i] for i in remaining)
        for i in sorted(remaining):
            if ops[i].call_s > deadline:
                continue
            rest = remaining - {i}
            if ops[i].pending and rec(rest, value):
                return True
            store: dict[str, Value] = {} if value is None else {ops[i].key: value}
            if _apply(store, ops[i]) and rec(rest, store.get(ops[i].key)):
                return True
        failed.add((remaining, value))
        return False

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(ops) + 1000))
    try:
        return rec(frozenset(range(len(ops))), None)
    finally:
        sys.setrecursionlimit(limit)
