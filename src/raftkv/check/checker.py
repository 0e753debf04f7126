"""``check(history)``: partition, search each part under one time budget, explain the verdict.

Theory of operation
-------------------
1. The model splits the history into independent partitions (the KV model: one per key, in order of first
   appearance). Linearizability is local (Herlihy & Wing 1990), so the history is linearizable iff every
   partition is, and a 10,000-operation history over 16 keys becomes 16 searches of ~600 operations.
2. Each partition is compiled (``models.py``) and searched (``search.py``). One deadline covers the whole
   check; a partition that runs out of time is UNKNOWN and the partitions after it are not started.
3. The verdict is ILLEGAL if any partition is (the first one in partition order is reported), else UNKNOWN
   if any ran out of time, else OK. For an illegal partition the search runs a second time with
   ``track_partials`` (if time remains) so that the HTML view can show, for every operation, the longest
   partial linearization containing it.
4. Results name operations by their index in the history (``#17``) and by their line, when loaded from a
   file; the prefix is replayed on the concrete (unabstracted) model to report real values, which also
   re-checks the search's answer.

This is the only module of the checker that reads a clock (``time.monotonic``, for the budget).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from raftkv.check.history import Operation, describe_ref
from raftkv.check.models import KV, REJECT, Model, State, Step
from raftkv.check.search import Kind, SearchResult, search

DEFAULT_TIMEOUT_S = 60.0


class CheckerBug(AssertionError):
    """The search's answer failed its own re-check (a bug in the checker, never in the history)."""


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """One partition's verdict. Every operation reference is an index into the checked history.

    ``order``: OK — a linearization of the partition (pending operations absent from it never took effect);
    ILLEGAL/UNKNOWN — the longest linearizable prefix found. ``states[i]`` describes the model state after
    ``order[i]``. ``skipped``: pending operations that can neither constrain nor change the state (a get whose
    answer never came), left out of the search. ``partials`` (ILLEGAL, when tracked): for each operation, the
    longest partial linearization containing it.
    """

    key: str
    kind: Kind
    ops: tuple[int, ...]
    order: tuple[int, ...]
    states: tuple[str, ...]
    unplaceable: tuple[int, ...] = ()
    skipped: tuple[int, ...] = ()
    partials: dict[int, tuple[int, ...]] = field(default_factory=dict)
    steps: int = 0
    elapsed_s: float = 0.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict on a whole history.

    ``kind``: OK, ILLEGAL or UNKNOWN. ``reason``: one line naming the key and the operations. ``key``: the
    illegal partition (ILLEGAL) or the one that ran out of time (UNKNOWN), else ``None``. ``prefix``: the longest
    linearizable prefix of that partition (ILLEGAL/UNKNOWN). ``unplaceable``: the operations none of which can
    extend it, the blocking one first (ILLEGAL). ``partitions``: every partition's result, by key.
    """

    kind: Kind
    reason: str
    key: str | None
    prefix: tuple[Operation, ...]
    unplaceable: tuple[Operation, ...]
    partitions: dict[str, PartitionResult]
    model: str
    per_key: bool
    op_count: int
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.kind is Kind.OK

    @property
    def illegal_keys(self) -> list[str]:
        return [k for k, p in self.partitions.items() if p.kind is Kind.ILLEGAL]


def _where(per_key: bool, key: str) -> str:
    return f"key {key!r}" if per_key else "the register"


def _replay(model: Model, history: Sequence[Operation], order: Sequence[int], where: str) -> tuple[str, ...]:
    """Describe the concrete state after each operation of ``order``; raise :class:`CheckerBug` if one is illegal."""
    if not order:
        return ()
    compiled = model.compile([history[i] for i in order], abstract=False)
    state: State = compiled.init
    states: list[str] = []
    for i, step in zip(order, compiled.steps, strict=True):
        if step is None:
            raise CheckerBug(f"{where}: #{i} was placed in a linearization but has no step")
        state = step(state)
        if state is REJECT:
            raise CheckerBug(f"{where}: the search placed #{i} where the concrete model rejects it")
        states.append(model.describe_state(state))
    return tuple(states)


def _check_linearization(
    history: Sequence[Operation], order: Sequence[int], completed: Sequence[int], where: str
) -> None:
    """``order`` must hold every completed operation and respect real time (the model is checked by replay)."""
    missing = set(completed) - set(order)
    if missing:
        raise CheckerBug(f"{where}: the linearization leaves out completed operation #{min(missing)}")
    latest_call = -math.inf
    for i in order:
        op = history[i]
        if op.effective_return_s < latest_call:
            raise CheckerBug(f"{where}: #{i} is placed after an operation called after it returned")
        latest_call = max(latest_call, op.call_s)


def _refs(history: Sequence[Operation], ids: Sequence[int], limit: int) -> str:
    shown = [describe_ref(history[i], i) for i in ids[:limit]]
    more = len(ids) - limit
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def check(
    history: Sequence[Operation],
    model: Model = KV,
    *,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    partials: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Is ``history`` linearizable with respect to ``model``?

    ``timeout_s`` bounds the whole check (``None``: no bound); past it the answer is UNKNOWN. ``partials``:
    for an illegal partition, also compute the longest partial linearization of every operation (the HTML
    view uses them; it costs a second search of that partition).
    """
    # The check allocates millions of small tracked objects (memo keys, closures) and frees almost none until
    # the end: generational GC passes would re-traverse them (and the history) again and again, for nothing.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _check(history, model, timeout_s, partials, clock)
    finally:
        if gc_was_enabled:
            gc.enable()


def _check(
    history: Sequence[Operation],
    model: Model,
    timeout_s: float | None,
    partials: bool,
    clock: Callable[[], float],
) -> CheckResult:
    start = clock()
    deadline = math.inf if timeout_s is None else start + timeout_s

    def should_stop() -> bool:
        return clock() > deadline

    results: dict[str, PartitionResult] = {}
    out_of_time: str | None = None
    for key, ids in model.partition(history):
        where = _where(model.per_key, key)
        if out_of_time is not None:
            results[key] = PartitionResult(key, Kind.UNKNOWN, tuple(ids), (), ())
            continue
        t0 = clock()
        ops = [history[i] for i in ids]
        compiled = model.compile(ops)
        kept: list[tuple[int, Step]] = [(j, s) for j, s in enumerate(compiled.steps) if s is not None]
        keep = [j for j, _ in kept]
        kept_steps = [s for _, s in kept]
        skipped = tuple(ids[j] for j, s in enumerate(compiled.steps) if s is None)
        args = (
            compiled.init,
            kept_steps,
            [ops[j].call_s for j in keep],
            [ops[j].effective_return_s for j in keep],
            [compiled.classes[j] for j in keep],
            [compiled.blind[j] for j in keep],
            [compiled.dead_classes[j] for j in keep],
            [compiled.dead_after[j] for j in keep],
            [compiled.guards[j] for j in keep],
            [compiled.readers[j] for j in keep],
        )
        r: SearchResult = search(*args, should_stop=should_stop)
        if r.kind is Kind.ILLEGAL and partials and not should_stop():
            again = search(*args, should_stop=should_stop, track_partials=True)
            if again.kind is Kind.ILLEGAL:
                r = again
        glob = [ids[j] for j in keep]  # search index -> history index
        order = tuple(glob[j] for j in r.order)
        if r.kind is Kind.OK:
            _check_linearization(history, order, [i for i in glob if not history[i].pending], where)
        states = _replay(model, history, order, where)
        part = PartitionResult(
            key=key,
            kind=r.kind,
            ops=tuple(ids),
            order=order,
            states=states,
            unplaceable=tuple(glob[j] for j in r.unplaceable),
            skipped=skipped,
            partials={glob[j]: tuple(glob[x] for x in seq) for j, seq in r.partials.items()},
            steps=r.steps,
            elapsed_s=clock() - t0,
        )
        results[key] = part
        if r.kind is Kind.UNKNOWN:
            out_of_time = key
    elapsed = clock() - start
    return _verdict(history, model, results, out_of_time, timeout_s, elapsed)


def _verdict(
    history: Sequence[Operation],
    model: Model,
    results: dict[str, PartitionResult],
    out_of_time: str | None,
    timeout_s: float | None,
    elapsed_s: float,
) -> CheckResult:
    def make(kind: Kind, reason: str, key: str | None, part: PartitionResult | None) -> CheckResult:
        return CheckResult(
            kind=kind,
            reason=reason,
            key=key,
            prefix=tuple(history[i] for i in part.order) if part and kind is not Kind.OK else (),
            unplaceable=tuple(history[i] for i in part.unplaceable) if part else (),
            partitions=results,
            model=model.name,
            per_key=model.per_key,
            op_count=len(history),
            elapsed_s=elapsed_s,
        )

    for key, part in results.items():
        if part.kind is not Kind.ILLEGAL:
            continue
        where = _where(model.per_key, key)
        value = part.states[-1] if part.states else model.describe_state(None)
        blocking, *others = part.unplaceable
        reason = (
            f"{where} is not linearizable: after {len(part.order)} of its {len(part.ops) - len(part.skipped)} "
            f"operations (value {value}), {describe_ref(history[blocking], blocking)} cannot be placed"
        )
        if others:
            reason += f"; nor can {_refs(history, others, 3)}"
        more = [k for k in results if k != key and results[k].kind is Kind.ILLEGAL]
        if more:
            reason += f" (also not linearizable: {len(more)} other key{'s' if len(more) > 1 else ''})"
        return make(Kind.ILLEGAL, reason, key, part)
    if out_of_time is not None:
        part = results[out_of_time]
        done = sum(1 for p in results.values() if p.kind is Kind.OK)
        budget = "" if timeout_s is None else f" ({timeout_s:g} s)"
        reason = (
            f"unknown: the time budget{budget} ran out while checking {_where(model.per_key, out_of_time)} "
            f"({len(part.ops)} operations, longest linearizable prefix so far {len(part.order)}); "
            f"{done} of {len(results)} partitions checked linearizable"
        )
        return make(Kind.UNKNOWN, reason, out_of_time, part)
    n_keys = len(results)
    scope = f" on {n_keys} key{'s' if n_keys != 1 else ''}" if model.per_key else ""
    return make(Kind.OK, f"linearizable: {len(history)} operations{scope}", None, None)
