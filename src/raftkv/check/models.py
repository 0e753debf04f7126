"""Sequential specifications the checker holds a history to: a single register, and the KV store per key.

Theory of operation
-------------------
A model says what one operation does to a state when applied alone: accept it (and give the next state) or
reject it (its output is impossible in that state). The search (``search.py``) only ever calls *compiled*
steps: :meth:`KVModel.compile` turns each operation of one partition into a closure ``state -> next state``
that returns :data:`REJECT` when the recorded output cannot come from that state. Compiling once, with every
input and output bound, keeps the inner loop of the search to one call per attempt.

The KV model is a map from keys to values, and every operation touches one key, so the history splits into
one sub-history per key and the whole is linearizable iff every part is (Herlihy & Wing's *locality*, which
porcupine calls P-compositionality). A per-key state is the key's value (``None``: absent). The register
model is the same sequential specification over a single cell: it ignores keys and does not partition.

Unknown outcomes. A pending operation's step accepts every state — the output could have been anything — and
applies the operation's effect; "it never happened" is the search's business (it may leave a pending operation
out). A pending operation that cannot change the state (a get, a read-only txn) constrains nothing and changes
nothing, so it compiles to ``None`` and is left out of the search altogether.

Two reductions keep pending writes from blowing up the search, both exact:

* **Unobserved values.** Steps only compare the state for equality with constants that occur in the
  partition's operations as observations: get results, cas ``expected``, txn compare values and txn get
  results. A written value that is never observed is therefore indistinguishable from any other such value,
  and compiles to the single token :data:`UNOBSERVED`. (States thus merge in the search's memo.)
* **Interchangeable pending operations.** Two pending operations with the same compiled effect (say two
  timed-out puts of unobserved values, or two timed-out deletes) are interchangeable once both have been
  called, because neither has a deadline. :attr:`Compiled.classes` names each pending operation's effect;
  the search then only linearizes the members of a class in call order, which turns 2^k subsets into k + 1.
* **Dead values** (dynamic). Once every operation that observes a value has been placed, that value too is
  as good as unobserved. :attr:`Compiled.dead_after` says from when on each pending operation's written values
  are dead, and :attr:`Compiled.dead_classes` its class from then on (written values replaced by
  :data:`UNOBSERVED`); the search merges classes accordingly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, TypeAlias

from raftkv.check.history import (
    CasResult,
    Compare,
    Operation,
    Read,
    TxnOp,
    TxnResult,
    Value,
    fmt_value,
)


class _Reject(Enum):
    REJECT = "reject"


REJECT = _Reject.REJECT
"""What a step returns when the recorded output is impossible from the given state."""


class _Token(Enum):
    UNOBSERVED = "unobserved"

    def __repr__(self) -> str:
        return "<a value never read>"


UNOBSERVED = _Token.UNOBSERVED
"""The abstract value standing for every written value that no operation of the partition observes."""


class _Any(Enum):
    ANY_STATE = "any state"


ANY_STATE = _Any.ANY_STATE
"""The guard of an operation that may change any state (see :attr:`Compiled.guards`)."""

State: TypeAlias = Hashable
Step: TypeAlias = Callable[[State], State]
"""A compiled operation: the next state, or :data:`REJECT`."""


@dataclass(frozen=True, slots=True)
class Compiled:
    """One partition's operations ready for the search; lists are indexed like the operations passed in.

    ``steps[i] is None``: operation ``i`` is pending and can neither constrain nor change the state; it is left
    out. ``classes[i]``: a key equal for pending operations with identical steps, and (in a separate space) for
    completed operations with identical steps.
    ``blind[i]``: see below; the search uses it to skip useless placements of pending writes.
    """

    init: State
    steps: tuple[Step | None, ...]
    classes: tuple[Hashable, ...]
    blind: tuple[bool, ...]
    """``blind[i]``: operation ``i`` accepts every state and its next state does not depend on it (put, delete)."""
    dead_classes: tuple[Hashable, ...]
    """For a pending operation: its class once every value it writes is dead (see "Dead values")."""
    dead_after: tuple[float, ...]
    """For a pending operation: the time after which every value it writes is dead (-inf: already; inf: never)."""
    guards: tuple[object, ...]
    """For a pending operation: a state outside which it changes nothing (a cas: its ``expected``), or
    :data:`ANY_STATE`. The search then looks up the pending operations worth trying by the current state."""
    readers: tuple[bool, ...]
    """For a completed operation: its step never changes the state (a get, a failed cas, a txn whose branch that
    ran only reads)."""


class Model(Protocol):
    """A sequential specification the checker understands."""

    @property
    def name(self) -> str: ...

    @property
    def per_key(self) -> bool:
        """True when partitions are keys (reasons then say "key 'x'")."""
        ...

    def partition(self, history: Sequence[Operation]) -> list[tuple[str, list[int]]]:
        """Independent sub-histories as (name, indexes into ``history``), in order of first appearance."""
        ...

    def compile(self, ops: Sequence[Operation], *, abstract: bool = True) -> Compiled:
        """Compile one partition's operations. ``abstract=False`` keeps concrete values (for replays)."""
        ...

    def describe_state(self, state: State) -> str: ...


# --- Step factories (one closure per operation; every constant bound at compile time) -------------------------


def _get(v: object) -> Step:
    def step(s: State) -> State:
        return s if s == v else REJECT

    return step


def _set(v: object) -> Step:
    def step(s: State) -> State:
        return v

    return step


def _cas_ok(expected: object, new: object) -> Step:
    def step(s: State) -> State:
        return new if s == expected else REJECT

    return step


def _cas_failed(expected: object) -> Step:
    def step(s: State) -> State:
        return s if s != expected else REJECT

    return step


def _cas_unknown(expected: object, new: object) -> Step:
    def step(s: State) -> State:
        return new if s == expected else s

    return step


_AbsTxnOp: TypeAlias = tuple[str, object]


def _txn(
    compare: tuple[tuple[str, object], ...],
    then: tuple[_AbsTxnOp, ...],
    else_: tuple[_AbsTxnOp, ...],
    succeeded: bool | None,
    reads: tuple[object, ...] | None,
) -> Step:
    """``succeeded``/``reads`` are ``None`` when the outcome is unknown; ``reads`` are the branch's get results."""

    def step(s: State) -> State:
        holds = all((s == v) == (op == "==") for op, v in compare)
        if succeeded is not None and holds != succeeded:
            return REJECT
        i = 0
        for f, v in then if holds else else_:
            if f == "get":
                if reads is not None:
                    if s != reads[i]:
                        return REJECT
                    i += 1
            else:
                s = v  # put v, or delete (v is None)
        return s

    return step


def _mentions(op: Operation) -> list[Value | None]:
    """The values ``op`` compares the state with (get results, cas ``expected``, txn compares and reads)."""
    out = op.output
    if op.f == "get":
        return [out.value] if isinstance(out, Read) else []
    if op.f == "cas":
        return [op.expected]
    if op.f == "txn":
        ms = [c.value for c in op.compare]
        if isinstance(out, TxnResult):
            ms += [r.value for r in out.results if isinstance(r, Read)]
        return ms
    return []


def _written(op: Operation) -> list[Value | None]:
    """The values ``op`` may write (``None``: it may delete)."""
    if op.f in ("put", "delete", "cas"):
        return [op.value]
    if op.f == "txn":
        return [t.value for t in op.then + op.else_ if t.f != "get"]
    return []


def _completed_key(op: Operation, a: Callable[[Value | None], object]) -> Hashable:
    """Equal for completed operations whose steps are identical (same effect, same recorded output)."""
    out = op.output
    if isinstance(out, Read):
        return ("get", out.value)
    if isinstance(out, CasResult):
        return ("cas", op.expected, a(op.value), out.ok)
    if isinstance(out, TxnResult):
        reads = tuple(r.value for r in out.results if isinstance(r, Read))
        return ("txn-done", _class_key(op, a), out.succeeded, reads)
    return _class_key(op, a)  # put, delete


def _reader(op: Operation) -> bool:
    """A completed operation whose step never changes the state."""
    out = op.output
    if isinstance(out, Read):
        return op.f == "get"
    if isinstance(out, CasResult):
        return not out.ok
    if isinstance(out, TxnResult):
        return all(t.f == "get" for t in (op.then if out.succeeded else op.else_))
    return False


def _guard(op: Operation) -> object:
    """The state outside which ``op`` changes nothing, if there is one: a cas's ``expected``; a txn's ``==``
    value when its else branch does not write."""
    if op.f == "cas":
        return op.expected
    if op.f == "txn" and not any(t.f != "get" for t in op.else_):
        for c in op.compare:
            if c.op == "==":
                return c.value
    return ANY_STATE


def _class_key(op: Operation, a: Callable[[Value | None], object]) -> Hashable:
    """Equal for pending operations whose steps are identical once written values pass through ``a``."""
    if op.f in ("put", "delete"):
        return ("put", a(op.value) if op.f == "put" else None)
    if op.f == "cas":
        return ("cas", op.expected, a(op.value))
    return ("txn", _abs_compares(op.compare), _abs_txn_ops(op.then, a), _abs_txn_ops(op.else_, a))


def _txn_reads(op: Operation) -> tuple[bool | None, tuple[object, ...] | None]:
    out = op.output
    if not isinstance(out, TxnResult):
        return None, None
    return out.succeeded, tuple(r.value for r in out.results if isinstance(r, Read))


def _abs_txn_ops(ops: tuple[TxnOp, ...], a: Callable[[Value | None], object]) -> tuple[_AbsTxnOp, ...]:
    return tuple((t.f, a(t.value) if t.f == "put" else None) for t in ops)


def _abs_compares(cmps: tuple[Compare, ...]) -> tuple[tuple[str, object], ...]:
    return tuple((c.op, c.value) for c in cmps)


@dataclass(frozen=True, slots=True)
class KVModel:
    """The KV store's sequential specification on one key (get/put/delete/cas/txn); see the module docstring."""

    name: str = "kv"
    per_key: bool = True

    def partition(self, history: Sequence[Operation]) -> list[tuple[str, list[int]]]:
        if not self.per_key:
            return [("", list(range(len(history))))] if history else []
        parts: dict[str, list[int]] = {}
        for i, op in enumerate(history):
            parts.setdefault(op.key, []).append(i)
        return list(parts.items())

    def compile(self, ops: Sequence[Operation], *, abstract: bool = True) -> Compiled:
        mentions = [_mentions(op) for op in ops]
        last_mention: dict[Value | None, float] = {None: math.inf}  # absent is never dead
        for op, ms in zip(ops, mentions, strict=True):
            for v in ms:
                last_mention[v] = max(last_mention.get(v, -math.inf), op.effective_return_s)

        def a(v: Value | None) -> object:
            return v if not abstract or v in last_mention else UNOBSERVED

        def dead(v: Value | None) -> object:
            return UNOBSERVED

        steps: list[Step | None] = []
        classes: list[Hashable] = []
        dead_classes: list[Hashable] = []
        dead_after: list[float] = []
        guards: list[object] = []
        for op in ops:
            out = op.output
            step: Step | None
            if op.f == "get":
                step = _get(out.value) if isinstance(out, Read) else None
            elif op.f in ("put", "delete"):
                step = _set(a(op.value))
            elif op.f == "cas":
                new = a(op.value)
                if isinstance(out, CasResult):
                    step = _cas_ok(op.expected, new) if out.ok else _cas_failed(op.expected)
                else:
                    step = _cas_unknown(op.expected, new)
            else:
                then = _abs_txn_ops(op.then, a)
                els = _abs_txn_ops(op.else_, a)
                succeeded, reads = _txn_reads(op)
                writes = any(f != "get" for f, _ in then + els)
                step = (
                    None if out is None and not writes else _txn(_abs_compares(op.compare), then, els, succeeded, reads)
                )
            steps.append(step)
            pending = out is None and step is not None
            classes.append(_class_key(op, a) if pending else _completed_key(op, a) if step is not None else None)
            dead_classes.append(_class_key(op, dead) if pending else None)
            written = [last_mention.get(v, -math.inf) if abstract else math.inf for v in _written(op)]
            dead_after.append(max(written, default=-math.inf) if pending else math.inf)
            guards.append(_guard(op) if pending else ANY_STATE)
        return Compiled(
            init=None,
            steps=tuple(steps),
            classes=tuple(classes),
            blind=tuple(op.f in ("put", "delete") for op in ops),
            dead_classes=tuple(dead_classes),
            dead_after=tuple(dead_after),
            guards=tuple(guards),
            readers=tuple(_reader(op) for op in ops),
        )

    def describe_state(self, state: State) -> str:
        if state is UNOBSERVED:
            return "a value never read"
        if state is None or isinstance(state, (str, int)):
            return fmt_value(state)
        return repr(state)


KV = KVModel("kv", per_key=True)
"""The KV store: one independent register per key."""

REGISTER = KVModel("register", per_key=False)
"""A single register: the same operations, keys ignored, no partitioning."""

MODELS: dict[str, KVModel] = {"kv": KV, "register": REGISTER}
