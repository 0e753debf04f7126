"""The linearizability search for one partition: Wing & Gong's algorithm with Lowe's memoization.

Theory of operation
-------------------
A history is linearizable iff its operations can be put in one sequence that (a) respects real time — if A
returned before B was called, A comes first — and (b) is legal for the sequential model. Wing & Gong (1993)
search for that sequence depth first; Lowe (2017) made it practical by remembering every configuration
already explored; porcupine (Athalye) is the well-known implementation, and this one follows it.

*Entries.* Each completed operation contributes a call entry and a return entry; all entries are sorted by
time (at equal times calls come first, so touching intervals count as concurrent) and threaded on a doubly
linked list. An operation may be linearized next iff its call entry precedes the first return entry in the
list: every operation before that return has been called, and the returning one cannot be postponed.
Linearizing an operation *lifts* its two entries out of the list (O(1), dancing-links style); backtracking
*unlifts* them in reverse order, which restores the list exactly.

*The loop.* Scan the list from the head. At a call entry, ask the model: if the step is accepted and the
configuration ``(set of linearized operations, state)`` was never seen, push ``(operation, previous state)``,
lift it and rescan from the head. Otherwise move on. Reaching a return entry means no candidate worked: pop
the last choice, unlift it, restore the state and continue after it. An empty stack there means no
linearization exists. An empty list means every operation is placed. The linearized set is a bitset in a
Python int; the memo is a set of ``(bitset, state)`` — Lowe's cache, which makes the search a walk over
distinct configurations rather than over orders.

*Pending operations* (unknown outcome) never return, so they have no return entry and no deadline. They are
kept off the list and tried only when the scan is stuck at a return entry ``R``: then each pending operation
called no later than ``R`` is a candidate. Trying them last is a search order, not a change of semantics —
the candidate set of every configuration is unchanged — and it means that a timed-out write is only
considered when some operation needs it. A pending operation never linearized is one that never took effect;
once the list is empty the remaining ones are simply left out. Pending operations with identical effects
(``classes``) are interchangeable, so within a class only the earliest-called one not yet linearized is a
candidate (see ``models.py``).

*Canonical linearizations.* Pending writes are what make linearizability checking expensive: one that is
never read can be placed almost anywhere, and a memo keyed on the linearized set tells every placement apart.
The search therefore only builds linearizations of a canonical form, which exists whenever any linearization
does. Let pending ``P`` take the state from ``u`` to ``v``, and ``X`` be the operation right after it:

1. if ``v == u``, drop ``P`` (it changed nothing and nobody saw its output);
2. if ``X`` is *blind* (accepts every state, and its next state ignores the current one: put, delete), drop
   ``P`` (``X`` overwrites it unseen);
3. if ``X`` accepts both ``u`` and ``v`` and changes neither, swap them (``P`` has no deadline, so moving it
   later never breaks real time);
4. if nothing follows ``P``, drop it.

Each rewrite keeps the sequence legal and respects real time, and removes a pending operation or moves one
later, so rewriting terminates in a sequence where none applies. The search builds only those: a pending
operation is linearized only if it changes the state, and the configuration it leads to remembers ``u``
(``restr``) so that its next operation must be neither blind nor transparent to the change. In practice a
timed-out write is now linearized only right before an operation that observes it.

*Dominance memo.* A configuration is (completed operations placed, pending operations placed, state,
restriction). Two that differ only in their pending sets ``A ⊆ B`` are ordered: everything ``B`` can still do,
``A`` can do too (a pending operation may stay unplaced forever; within a class, ``A``'s remaining members were
called no later than ``B``'s). So the memo maps (completed set, state[, restriction]) to the pending sets
explored, and a configuration is skipped when one with a subset of its pending operations was explored; a
restricted configuration is also covered by an unrestricted one. Without pending operations this is exactly
Lowe's memo.

*Dead values.* A value is dead once every operation that compares the state with it has been placed — for
a completed operation, once the first return time left on the list is past its return (``dead_after``). A
dead value is indistinguishable from any other value nobody observes, so pending operations whose classes
coincide once their written values are dead (``dead_classes``) are interchangeable too: in each
configuration only the first of them is tried. Timed-out writes whose values were read long ago thus stop
multiplying the search.

*Twins.* Completed operations with identical steps (two reads that returned the same value, two puts of
unobserved values, two deletes) are interchangeable but for their deadlines. When several may go next, the one
that returns first may as well go first (swapping it with a later-returning twin keeps every real-time
constraint), so only it is tried. Without this, k concurrent blind writes of unobserved values would be placed
in every one of 2^k subsets.

*Readers.* A completed operation that never changes the state (a get, a failed cas, a txn whose branch
that ran only reads) and that may go next and accepts the current state may as well go next: moving it
earlier changes no other state and breaks no real-time constraint (it was callable, and everything still
to place returns no earlier than the first return left on the list). So in a configuration not reached by a
pending operation, if such a reader exists, it is the only candidate (the one returning first, if several):
no branching at all. Otherwise readers are skipped there: none accepts the state.

*Why pruning is safe.* Every rule above (canonical placement, classes, twins, readers, dead values) allows
the first step of some shortest successful continuation of any configuration from which success is
reachable; the memo only skips configurations dominated by one already explored, from which success is then
reachable at least as quickly. By induction on that distance, the search finds a linearization whenever one
exists. ``tests/check`` compares every verdict with a brute-force oracle and an independent memoized search.

*Finding pending candidates* without visiting every pending operation at every stuck configuration (which
made long histories quadratic): a pending operation that changes nothing outside one state (a cas outside its
``expected``: its ``guard``) is looked up by the current state; the others are listed, per possible ``t_r``, while
their values are live (a sweep precomputes the lists), and once dead, by dead class, where a pointer skips the
classes already exhausted.

*Diagnostics.* When the search backtracks out of a plain configuration deeper than any before, it records
it: its sequence is the longest linearizable prefix, and its completed candidates — the operation whose return
blocks the way first, then every other one that could have gone next — are the operations that cannot be
placed. (At the deepest plain configuration the model rejects every completed candidate: an accepted one
would have led to a deeper plain configuration, or to one already explored, which is just as deep.) With
``track_partials``, each operation also gets the longest partial linearization containing it, as in
porcupine's visualization.

The module is pure: the caller passes the time budget as ``should_stop``, polled every ``poll_every`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from raftkv.check.models import ANY_STATE, REJECT, State, Step


class Kind(Enum):
    """The three outcomes of a check: a linearization exists, none exists, or the time budget ran out first."""

    OK = "ok"
    ILLEGAL = "illegal"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Outcome of one partition's search; operation numbers index the sequences passed to :func:`search`.

    ``order``: OK — a full linearization (pending operations left out never took effect); ILLEGAL — the longest
    linearizable prefix; UNKNOWN — the longest prefix found before the budget ran out. ``state`` is the model
    state after ``order``. ``unplaceable`` (ILLEGAL only): the operation that blocks first, then the other
    candidates, none of which the model accepts after ``order``.
    """

    kind: Kind
    order: tuple[int, ...]
    state: State
    unplaceable: tuple[int, ...] = ()
    partials: dict[int, tuple[int, ...]] = field(default_factory=dict)
    steps: int = 0
    """Model steps attempted (a measure of the work done)."""


def _dominated(known: list[int], pending: int) -> bool:
    """Was a configuration with a subset of these pending operations placed (and otherwise equal) explored?"""
    if len(known) == 1:  # the common case
        q = known[0]
        return q & pending == q
    return any(q & pending == q for q in known)


def _record(known: list[int], pending: int) -> None:
    """Add a pending set, dropping the supersets it now dominates."""
    known[:] = [q for q in known if q & pending != pending]
    known.append(pending)


_FREE = object()
"""The restriction of a configuration that was not reached by linearizing a pending operation."""


def search(
    init: State,
    steps: Sequence[Step],
    call_s: Sequence[float],
    return_s: Sequence[float],
    classes: Sequence[Hashable],
    blind: Sequence[bool],
    dead_classes: Sequence[Hashable] | None = None,
    dead_after: Sequence[float] | None = None,
    guards: Sequence[object] | None = None,
    readers: Sequence[bool] | None = None,
    *,
    should_stop: Callable[[], bool] | None = None,
    track_partials: bool = False,
    poll_every: int = 1024,
) -> SearchResult:
    """Search for a linearization of operations ``0..n-1``; ``return_s[i] == math.inf`` marks a pending one.

    ``classes[i]`` (pending operations only) is equal for pending operations with identical steps;
    ``blind[i]`` is true when operation ``i`` accepts every state and its next state does not depend on it.
    ``dead_classes[i]``/``dead_after[i]`` (pending operations): the class operation ``i`` joins once the first
    return time left on the list exceeds ``dead_after[i]`` (default: never). ``guards[i]`` (pending operations):
    a state value such that operation ``i`` changes nothing in any other state, or :data:`ANY_STATE`.
    ``readers[i]`` (completed operations): operation ``i`` never changes the state (default: none is known to).
    """
    n = len(steps)
    inf = math.inf
    dead_classes = classes if dead_classes is None else dead_classes
    dead_after = [inf] * n if dead_after is None else dead_after
    guards = [ANY_STATE] * n if guards is None else guards
    readers = [False] * n if readers is None else readers
    per_op = (call_s, return_s, classes, blind, dead_classes, dead_after, guards, readers)
    if any(len(x) != n for x in per_op):
        raise ValueError("every per-operation sequence must have one entry per operation")
    free = _FREE

    # Entries of completed operations: (time, 0 call / 1 return, op) sorted, calls first at equal times.
    events: list[tuple[float, int, int]] = []
    for i in range(n):
        if return_s[i] != inf:
            events.append((call_s[i], 0, i))
            events.append((return_s[i], 1, i))
    events.sort()
    m2 = len(events)
    head, tail = m2, m2 + 1
    ent_op: list[int] = [op for _, _, op in events] + [-1, -1]
    ent_time: list[float] = [t for t, _, _ in events] + [-inf, inf]
    ent_match: list[int] = [-1] * (m2 + 2)  # call entry -> its return entry; -1 for return entries and sentinels
    call_entry = [-1] * n
    for e, (_, kind, op) in enumerate(events):
        if kind == 0:
            call_entry[op] = e
        else:
            ent_match[call_entry[op]] = e
    nxt: list[int] = [*range(1, m2 + 1), tail, -1]
    prv: list[int] = [-1, *range(m2), -1, -1]
    nxt[head] = 0 if m2 else tail
    prv[tail] = m2 - 1 if m2 else head
    if m2:
        prv[0] = head
        nxt[m2 - 1] = tail

    # Pending operations grouped into classes of interchangeable ones, each class in call order.
    by_class: dict[Hashable, list[int]] = {}
    for i in sorted((i for i in range(n) if return_s[i] == inf), key=lambda i: (call_s[i], i)):
        by_class.setdefault(classes[i], []).append(i)
    members = list(by_class.values())  # insertion order: by first member's call time
    n_classes = len(members)
    class_of = [-1] * n
    for c, mem in enumerate(members):
        for i in mem:
            class_of[i] = c
    class_pos = [0] * n_classes  # members[c][:class_pos[c]] are linearized
    live_key = [classes[mem[0]] for mem in members]
    dead_key = [dead_classes[mem[0]] for mem in members]
    dead_from = [dead_after[mem[0]] for mem in members]
    first_call = [call_s[mem[0]] for mem in members]

    # Where to find the pending candidates of a configuration (t_r, state) without looking at every class:
    # guarded classes by guard value; unguarded ones while live (first call <= t_r <= dead_from) from a
    # precomputed sweep over the possible t_r, and once dead, the first available class of each dead group.
    by_guard: dict[object, list[int]] = {}
    unguarded: list[int] = []
    for c, mem in enumerate(members):
        g = guards[mem[0]]
        if g is ANY_STATE:
            unguarded.append(c)
        else:
            by_guard.setdefault(g, []).append(c)
    group_of: dict[Hashable, int] = {}
    groups: list[list[int]] = []  # unguarded classes by dead class, in class order
    group_pos = [-1] * n_classes  # class -> (its index in its group)
    class_group = [-1] * n_classes
    for c in unguarded:
        g = group_of.setdefault(dead_key[c], len(groups))
        if g == len(groups):
            groups.append([])
        class_group[c] = g
        group_pos[c] = len(groups[g])
        groups[g].append(c)
    group_first = [0] * len(groups)  # every class of group g before group_first[g] is exhausted
    live_at: dict[float, tuple[int, ...]] = {}
    returns = sorted({ent_time[e] for e in range(m2) if ent_match[e] < 0})
    starting = sorted((first_call[c], c) for c in unguarded if dead_from[c] >= first_call[c])
    active: dict[int, None] = {}
    snapshot: tuple[int, ...] = ()
    k = 0
    for t in returns:
        changed = False
        while k < len(starting) and starting[k][0] <= t:
            active[starting[k][1]] = None
            k += 1
            changed = True
        for c in [c for c in active if dead_from[c] < t]:
            del active[c]
            changed = True
        if changed:
            snapshot = tuple(active)
        live_at[t] = snapshot

    def pending_candidates(t: float, s: State) -> list[int]:
        """The classes whose next member may be placed in configuration (t, s), one per effective class."""
        out: list[int] = []
        keys: set[Hashable] = set()
        guarded = by_guard.get(s, ())
        for source in (guarded, live_at.get(t, ())):
            for c in source:
                mem = members[c]
                pos = class_pos[c]
                if pos < len(mem) and call_s[mem[pos]] <= t:
                    eff = dead_key[c] if t > dead_from[c] else live_key[c]
                    if eff not in keys:
                        keys.add(eff)
                        out.append(c)
        for g, group in enumerate(groups):
            i = group_first[g]
            while i < len(group):
                c = group[i]
                if first_call[c] > t:
                    break
                mem = members[c]
                pos = class_pos[c]
                if pos < len(mem) and dead_from[c] < t and call_s[mem[pos]] <= t:
                    if dead_key[c] not in keys:
                        keys.add(dead_key[c])
                        out.append(c)
                    break
                i += 1
        return out

    # Completed operations with identical steps ("twins"): among those that may go next, only the one that
    # returns first is tried (see "Twins").
    twin_of: dict[Hashable, int] = {}
    twin_count: dict[int, int] = {}
    cid = [-1] * n
    for i in range(n):
        if return_s[i] != inf:
            cid[i] = twin_of.setdefault(classes[i], len(twin_of))
            twin_count[cid[i]] = twin_count.get(cid[i], 0) + 1
    twin = [cid[i] >= 0 and twin_count[cid[i]] > 1 for i in range(n)]
    rank = [0] * n
    for r, i in enumerate(sorted(range(n), key=lambda i: (return_s[i], call_s[i], i))):
        rank[i] = r

    bits = [1 << i for i in range(n)]
    memo: dict[tuple[object, ...], list[int]] = {}  # (completed set, state[, restriction]) -> pending sets seen
    stack_op: list[int] = []
    stack_state: list[State] = []
    stack_restr: list[object] = []
    state = init
    restr: object = free  # after a pending operation: the state before it (see "Canonical linearizations")
    lin_c = 0  # completed operations linearized (bitset)
    lin_p = 0  # pending operations linearized (bitset)
    attempts = 0
    best_len = -1
    best_order: tuple[int, ...] = ()
    best_state: State = init
    best_unplaceable: tuple[int, ...] = ()
    longest: dict[int, tuple[int, ...]] = {}
    mask = (1 << max(0, poll_every - 1).bit_length()) - 1  # poll_every rounded up to a power of two

    def first_return_time() -> float:
        x = nxt[head]
        while ent_match[x] >= 0:
            x = nxt[x]
        return ent_time[x]

    def blocked() -> tuple[int, ...]:
        """The completed operations that may go next in the current configuration, the blocking one first."""
        x = nxt[head]
        rest: list[int] = []
        while ent_match[x] >= 0:
            rest.append(ent_op[x])
            x = nxt[x]
        blocking = ent_op[x]
        rest.sort(key=lambda i: (i != blocking, call_s[i], i))
        return tuple(rest)

    e = nxt[head]
    in_main = True
    fresh = True  # the scan is at the head of a configuration entered for the first time
    stuck = False  # the configuration has no (more) candidates: backtrack
    cands: list[int] = []
    ci = 0
    t_r = 0.0
    while True:
        if stuck:
            pass
        elif in_main:
            if e == tail:  # the list is empty: every completed operation is placed
                return SearchResult(Kind.OK, tuple(stack_op), state, steps=attempts)
            if fresh:
                fresh = False
                if restr is free:
                    # A reader that may go next and accepts the state goes next, alone (see "Readers").
                    x = nxt[head]
                    forced = -1
                    forced_rank = n
                    while ent_match[x] >= 0:
                        o = ent_op[x]
                        if readers[o] and rank[o] < forced_rank:
                            attempts += 1
                            if steps[o](state) is not REJECT:
                                forced = x
                                forced_rank = rank[o]
                        x = nxt[x]
                    if forced >= 0:
                        op = ent_op[forced]
                        lin2 = lin_c | bits[op]
                        cfg = (lin2, state)
                        known = memo.get(cfg)
                        if known is not None and _dominated(known, lin_p):
                            stuck = True
                            continue
                        if known is None:
                            memo[cfg] = [lin_p]
                        else:
                            _record(known, lin_p)
                        stack_op.append(op)
                        stack_state.append(state)
                        stack_restr.append(restr)
                        r = ent_match[forced]
                        p, q = prv[forced], nxt[forced]
                        nxt[p] = q
                        prv[q] = p
                        p, q = prv[r], nxt[r]
                        nxt[p] = q
                        prv[q] = p
                        lin_c = lin2
                        e = nxt[head]
                        fresh = True
                        continue
            if ent_match[e] >= 0:
                op = ent_op[e]
                if readers[op] and restr is free:  # none accepts the state (else it was forced)
                    e = nxt[e]
                    continue
                if twin[op]:
                    x = nxt[head]
                    k = cid[op]
                    rk = rank[op]
                    while ent_match[x] >= 0 and not (cid[ent_op[x]] == k and rank[ent_op[x]] < rk):
                        x = nxt[x]
                    if ent_match[x] >= 0:  # a twin that returns sooner may go next: it goes first
                        e = nxt[e]
                        continue
                attempts += 1
                if attempts & mask == 0 and should_stop is not None and should_stop():
                    return SearchResult(Kind.UNKNOWN, best_order, best_state, steps=attempts)
                ns = steps[op](state)
                if ns is not REJECT and (
                    restr is free or not (blind[op] or (ns == state and steps[op](restr) == restr))
                ):
                    lin2 = lin_c | bits[op]
                    cfg = (lin2, ns)
                    known = memo.get(cfg)
                    if known is None or not _dominated(known, lin_p):
                        if known is None:
                            memo[cfg] = [lin_p]
                        else:
                            _record(known, lin_p)
                        stack_op.append(op)
                        stack_state.append(state)
                        stack_restr.append(restr)
                        # lift: the call entry, then its return entry
                        r = ent_match[e]
                        p, q = prv[e], nxt[e]
                        nxt[p] = q
                        prv[q] = p
                        p, q = prv[r], nxt[r]
                        nxt[p] = q
                        prv[q] = p
                        state = ns
                        restr = free
                        lin_c = lin2
                        e = nxt[head]
                        fresh = True
                        continue
                e = nxt[e]
                continue
            # a return entry: the completed candidates are exhausted; try pending operations
            t_r = ent_time[e]
            in_main = False
            cands = pending_candidates(t_r, state)
            ci = 0
        # pending candidates of the current configuration, from class ci on
        placed = False
        while not stuck and ci < len(cands):
            c = cands[ci]
            mem = members[c]
            pos = class_pos[c]
            op = mem[pos]
            attempts += 1
            ns = steps[op](state)
            # A pending operation that changes nothing is left out; after another one, a blind one too.
            if ns is not REJECT and ns != state and (restr is free or not blind[op]):
                lin2 = lin_p | bits[op]
                rcfg = (lin_c, ns, state)
                plain = memo.get((lin_c, ns))
                known = memo.get(rcfg)
                if not (plain is not None and _dominated(plain, lin2)) and not (
                    known is not None and _dominated(known, lin2)
                ):
                    if known is None:
                        memo[rcfg] = [lin2]
                    else:
                        _record(known, lin2)
                    stack_op.append(op)
                    stack_state.append(state)
                    stack_restr.append(restr)
                    class_pos[c] = pos + 1
                    if pos + 1 == len(mem) and class_group[c] >= 0 and group_pos[c] == group_first[class_group[c]]:
                        g = class_group[c]
                        group = groups[g]
                        i = group_first[g]
                        while i < len(group) and class_pos[group[i]] == len(members[group[i]]):
                            i += 1
                        group_first[g] = i
                    restr = state
                    state = ns
                    lin_p = lin2
                    e = nxt[head]
                    in_main = True
                    fresh = True
                    placed = True
                    break
            ci += 1
        if placed:
            continue
        # every candidate failed: backtrack
        stuck = False
        depth = len(stack_op)
        if depth > best_len and restr is free:
            best_len = depth
            best_order = tuple(stack_op)
            best_state = state
            best_unplaceable = blocked()
        if track_partials and depth:
            seq: tuple[int, ...] | None = None
            for op in stack_op:
                if len(longest.get(op, ())) < depth:
                    if seq is None:
                        seq = tuple(stack_op)
                    longest[op] = seq
        if not stack_op:
            return SearchResult(
                Kind.ILLEGAL, best_order, best_state, best_unplaceable, partials=longest, steps=attempts
            )
        op = stack_op.pop()
        state = stack_state.pop()
        restr = stack_restr.pop()
        ce = call_entry[op]
        if ce >= 0:
            lin_c ^= bits[op]
            # unlift: the return entry, then the call entry (reverse order of the lift)
            r = ent_match[ce]
            nxt[prv[r]] = r
            prv[nxt[r]] = r
            nxt[prv[ce]] = ce
            prv[nxt[ce]] = ce
            e = nxt[ce]
            in_main = True
            stuck = readers[op] and restr is free  # it was forced: nothing else to try here
        else:
            lin_p ^= bits[op]
            c = class_of[op]
            class_pos[c] -= 1
            g = class_group[c]
            if g >= 0 and group_pos[c] < group_first[g]:
                group_first[g] = group_pos[c]
            in_main = False
            t_r = first_return_time()
            cands = pending_candidates(t_r, state)
            ci = cands.index(c) + 1
