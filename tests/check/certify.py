"""A sufficient condition for non-linearizability, simple enough to trust: the judge of the anomaly tests.

A generated history gives every write a unique value, so a read names the write it saw. A completed get ``G``
on key ``k`` that returned ``x`` is *certainly* impossible when:

* no operation could have written ``x`` (put of ``x``, cas to ``x`` that succeeded or whose outcome is
  unknown, txn putting ``x`` in a branch that ran or might have) — an aborted or invented write; or
* ``x``'s only writer ``W`` was called after ``G`` returned — a read from the future; or
* ``W`` completed, and some other completed operation ``W'`` that certainly wrote a different value (a put, a
  delete, a cas that succeeded, a txn whose branch that ran writes) was called after ``W`` returned and returned
  before ``G`` was called — every linearization orders ``W < W' < G``, and nothing writes ``x`` after ``W'``;
* ``x`` is absent, no operation on ``k`` can delete, and a completed write of a value returned before ``G``
  was called.

Checking none of the search's machinery, it can only under-approximate: the tests require the checker to
flag every history it certifies, and that it never certifies a legal history.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from raftkv.check.history import CasResult, Operation, Read, TxnOp, TxnResult, Value


@dataclass(frozen=True)
class Witness:
    key: str
    read: int
    why: str


def _branches(op: Operation) -> list[tuple[TxnOp, ...]]:
    """The txn branches that ran or might have."""
    out = op.output
    if isinstance(out, TxnResult):
        return [op.then if out.succeeded else op.else_]
    return [op.then, op.else_]


def _may_write(op: Operation) -> list[Value | None]:
    """Values ``op`` may have written (``None``: a delete)."""
    out = op.output
    if op.f == "put":
        return [op.value]
    if op.f == "delete":
        return [None]
    if op.f == "cas":
        return [] if isinstance(out, CasResult) and not out.ok else [op.value]
    if op.f == "txn":
        return [t.value for b in _branches(op) for t in b if t.f != "get"]
    return []


def _surely_writes(op: Operation) -> bool:
    """A completed operation that certainly replaced the value."""
    out = op.output
    if out is None:
        return False
    if op.f in ("put", "delete"):
        return True
    if op.f == "cas":
        return isinstance(out, CasResult) and out.ok
    if op.f == "txn":
        return any(t.f != "get" for t in _branches(op)[0])
    return False


def certify_illegal(history: Sequence[Operation]) -> Witness | None:
    """A reason the history cannot be linearizable, or ``None`` if this simple test finds none."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, op in enumerate(history):
        by_key[op.key].append(i)
    for key, ids in by_key.items():
        writers: dict[Value | None, list[int]] = defaultdict(list)
        for i in ids:
            for v in _may_write(history[i]):
                writers[v].append(i)
        sure = [i for i in ids if _surely_writes(history[i])]
        for g in ids:
            op = history[g]
            if op.f != "get" or not isinstance(op.output, Read) or op.return_s is None:
                continue
            x = op.output.value
            if x is None:
                if writers[None]:
                    continue
                for w in sure:
                    if history[w].effective_return_s < op.call_s:
                        return Witness(key, g, f"read absent after #{w} wrote and nothing deletes")
                continue
            ws = writers.get(x, [])
            if not ws:
                return Witness(key, g, f"read {x!r}, which nothing wrote")
            if len(ws) > 1:
                continue
            w = ws[0]
            if history[w].call_s > op.return_s:
                return Witness(key, g, f"read {x!r} before #{w} wrote it")
            w_ret = history[w].effective_return_s
            for w2 in sure:
                if w2 != w and w_ret < history[w2].call_s and history[w2].effective_return_s < op.call_s:
                    return Witness(key, g, f"read {x!r} written by #{w}, overwritten by #{w2} before the read")
    return None
