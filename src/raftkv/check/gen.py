"""Histories generated from a reference store, optionally with one injected anomaly (tests, benchmarks, demos).

Theory of operation
-------------------
Clients are closed loops: each waits a think time, calls an operation on a random key, and is busy until it
returns. Every operation gets a *linearization point* drawn inside its interval ``[call, return]``; applying
the operations to a plain dict in the order of those points gives every output. The history is therefore
linearizable by construction — the points are a witness.

A pending operation (probability ``pending_rate``) is one whose client gave up after ``timeout_s``: its output
is unknown, its return is ``None`` or the time the client stopped waiting, and it took effect with probability
1/2 — at a point anywhere after its call, possibly long after the client moved on — or never.

Every put and cas writes a unique value, so a read names the write it saw. ``anomaly`` makes the store buggy
for exactly one operation (the *site*):

* ``stale_read`` — a get is served from an older state: it returns the value from one to three writes ago;
* ``lost_write`` — a put is acknowledged but never applied;
* ``double_apply`` — a put is applied at its point and applied again later (a retry executed twice);
* ``aborted_read`` — a cas that fails (its ``expected`` was never written) reports ``ok: false`` but its new
  value is applied anyway, so later reads see a write that was aborted.

An injected bug need not be *visible*: a lost write that is overwritten before anyone reads, for instance,
leaves a linearizable history. Tests pair the generator with a sufficient condition for illegality.
Deterministic: the same arguments give the same history (``random.Random`` seeded from a string).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Literal, TypeAlias

from raftkv.check.history import (
    CasResult,
    Compare,
    Fn,
    Operation,
    Read,
    TxnOp,
    TxnResult,
    Value,
    Written,
)

Anomaly: TypeAlias = Literal["stale_read", "lost_write", "double_apply", "aborted_read"]
ANOMALIES: tuple[Anomaly, ...] = ("stale_read", "lost_write", "double_apply", "aborted_read")
DEFAULT_MIX: dict[Fn, float] = {"get": 0.45, "put": 0.3, "cas": 0.12, "delete": 0.05, "txn": 0.08}


@dataclass(frozen=True, slots=True)
class Generated:
    """A generated history; ``site`` is the index of the operation the anomaly was injected at (``None``: none)."""

    history: list[Operation]
    anomaly: Anomaly | None
    site: int | None


@dataclass(slots=True)
class _Plan:
    client: int
    f: Fn
    key: str
    call_s: float
    return_s: float | None
    pending: bool
    value: Value | None = None
    expected: Value | None = None
    compare: tuple[Compare, ...] = ()
    then: tuple[TxnOp, ...] = ()
    else_: tuple[TxnOp, ...] = ()


def generate(
    seed: int,
    *,
    ops: int = 1000,
    clients: int = 10,
    keys: int = 16,
    pending_rate: float = 0.0,
    anomaly: Anomaly | None = None,
    mix: dict[Fn, float] | None = None,
    latency_s: float = 0.010,
    think_s: float = 0.005,
    timeout_s: float = 0.050,
) -> Generated:
    """A history of ``ops`` operations by ``clients`` clients over ``keys`` keys; see the module docstring."""
    if anomaly is not None and anomaly not in ANOMALIES:
        raise ValueError(f"unknown anomaly {anomaly!r} (expected one of {', '.join(ANOMALIES)})")
    rng = random.Random(f"raftkv-check-gen-{seed}")
    weights = mix or DEFAULT_MIX
    fns = list(weights)
    cum = list(weights.values())
    key_names = [f"k{j}" for j in range(keys)]
    recent: dict[str, list[Value]] = {k: [] for k in key_names}  # values planned for each key, newest last

    plans: list[_Plan] = []
    effects: list[tuple[float, int, int]] = []  # (linearization point, tie-break, plan index)
    free: list[tuple[float, int]] = [(rng.random() * think_s, c) for c in range(clients)]
    heapq.heapify(free)
    for i in range(ops):
        t, c = heapq.heappop(free)
        call = t + rng.random() * think_s
        f = rng.choices(fns, cum)[0]
        key = rng.choice(key_names)
        pend = rng.random() < pending_rate
        if pend:
            ret: float | None = None if rng.random() < 0.5 else call + timeout_s
            point: float | None = call + rng.random() * 3 * timeout_s if rng.random() < 0.5 else None
            heapq.heappush(free, (call + timeout_s, c))
        else:
            d = latency_s * rng.uniform(0.2, 1.8)
            ret = call + d
            point = call + rng.random() * d
            heapq.heappush(free, (ret, c))
        p = _Plan(c, f, key, call, ret, pend)
        old = recent[key][-3:]
        if f == "put":
            p.value = f"v{i}"
        elif f == "cas":
            p.expected = rng.choice([*old, None]) if old else None
            p.value = f"v{i}"
        elif f == "txn":
            guard = rng.choice([*old, None]) if old else None
            p.compare = (Compare("==", guard),)
            p.then = (TxnOp("put", f"v{i}"), TxnOp("get"))
            p.else_ = (TxnOp("get"),)
        if p.value is not None:
            recent[key].append(p.value)
        plans.append(p)
        if point is not None:
            effects.append((point, i, i))

    site = _choose_site(rng, plans, anomaly)
    if anomaly == "aborted_read" and site is not None:
        plans[site].expected = f"never-{site}"  # the cas must fail
    if anomaly == "double_apply" and site is not None:
        again = plans[site].call_s + rng.uniform(2.0, 6.0) * latency_s
        effects.append((again, -1, site))
    effects.sort()

    outputs: list[Read | Written | CasResult | TxnResult | None] = [None] * ops
    store: dict[str, Value] = {}
    versions: dict[str, list[Value | None]] = {k: [None] for k in key_names}  # values each key took, in order
    injected: int | None = None
    for _, tie, i in effects:
        p = plans[i]
        k = p.key
        cur = store.get(k)
        out: Read | Written | CasResult | TxnResult
        if tie == -1:  # the second application of a double-applied put
            _set(store, versions, k, p.value)
            continue
        if p.f == "get":
            out = Read(cur)
            if anomaly == "stale_read" and injected is None and i >= (site or 0):
                older = [v for v in versions[k][-4:-1] if v != cur]
                if older:
                    out = Read(rng.choice(older))
                    injected = i
        elif p.f == "put":
            if not (anomaly == "lost_write" and i == site):
                _set(store, versions, k, p.value)
            out = Written()
        elif p.f == "delete":
            _set(store, versions, k, None)
            out = Written()
        elif p.f == "cas":
            ok = cur == p.expected
            if ok or (anomaly == "aborted_read" and i == site):
                _set(store, versions, k, p.value)
            out = CasResult(ok)
        else:
            holds = all((cur == cmp.value) == (cmp.op == "==") for cmp in p.compare)
            results: list[Read | Written] = []
            for step in p.then if holds else p.else_:
                if step.f == "get":
                    results.append(Read(store.get(k)))
                else:
                    _set(store, versions, k, step.value)
                    results.append(Written())
            out = TxnResult(holds, tuple(results))
        if not p.pending:
            outputs[i] = out
    if anomaly is not None and anomaly != "stale_read":
        injected = site

    history = [
        Operation(
            client=p.client,
            f=p.f,
            key=p.key,
            call_s=p.call_s,
            return_s=p.return_s,
            value=p.value,
            expected=p.expected,
            output=outputs[i],
            compare=p.compare,
            then=p.then,
            else_=p.else_,
        )
        for i, p in enumerate(plans)
    ]
    return Generated(history, anomaly, injected)


def _set(store: dict[str, Value], versions: dict[str, list[Value | None]], key: str, value: Value | None) -> None:
    if value is None:
        store.pop(key, None)
    else:
        store[key] = value
    versions[key].append(value)


def _choose_site(rng: random.Random, plans: list[_Plan], anomaly: Anomaly | None) -> int | None:
    """The operation the bug strikes: a completed one of the right kind (for a stale read, the first eligible get)."""
    if anomaly is None:
        return None
    want: Fn = {"stale_read": "get", "lost_write": "put", "double_apply": "put", "aborted_read": "cas"}[anomaly]  # type: ignore[assignment]
    eligible = [i for i, p in enumerate(plans) if p.f == want and not p.pending]
    if not eligible:
        return None
    # Not too close to the end, so that there is time for the anomaly to be observed.
    return eligible[rng.randrange(max(1, (len(eligible) * 3) // 4))]
