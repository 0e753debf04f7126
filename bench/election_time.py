"""Time to elect a new leader after the leader crashes: the Raft paper's Figure 16 experiment, on the simulator.

Ongaro & Ousterhout (USENIX ATC 2014, §9.3; Ongaro's dissertation §9.4) crashed the leader of a five-server
cluster (broadcast time about 15 ms) at a uniformly random point of its heartbeat interval, which was half the
minimum election timeout, and measured the time until a new leader was elected (the dissertation: until the
other servers received the new leader's first heartbeat), over 1000 trials per election-timeout range. To make
it a worst case, the leader's heartbeats were synchronized, so the followers' timers started together, and
"the servers in each trial had different log lengths, so two of the four servers were not eligible to become
leader". They report a median of 287 ms at 150–155 ms and a worst case of 513 ms at 150–200 ms.

Every trial here builds a fresh 5-node simulated cluster whose seed is derived from ``--seed`` and the trial
number (the same for every range and mode, so rows share their random draws), with

* a 1 ms tick (``--tick-ms``; the runtime's is 10 ms), simulated time in whole ms (``--units-per-ms`` refines it);
* election timeouts drawn uniformly from ``[lo, hi)`` ms (``election_ticks=lo``, ``election_jitter_ticks=hi-lo``);
* heartbeats every ``lo/2`` ms (75 ms for all the paper's ranges), as in the paper (``--heartbeat-ms``); the
  core sends each heartbeat to all followers in the same instant, so heartbeats are always synchronized;
* one-way message delay uniform in ``--delay`` (default 5–9 ms, mean 7 ms), FIFO per link as over TCP, no loss;
* disk latency (the write + fsync of a new term, a vote or entries) uniform in ``--disk`` (default 0–1 ms).

A trial waits until all five nodes follow one leader and lets the cluster settle for ``lo`` ms. Then, by
default (the paper's setup), at one of the leader's check-quorum rounds it staggers the followers' logs: the
leader proposes three entries, sent to three, two and one followers (a random order of the four), so the
followers hold 3, 2, 1 and 0 entries more than the shortest and two of them cannot win an election. (The
lagging followers' replies to the leader are blocked until the crash, so the leader does not repair their logs;
its heartbeats still reach them.) The leader's next heartbeat broadcast is the last; the leader is crashed a
uniformly random 0 to heartbeat-1 ms after it. With ``--equal-logs`` (the earlier setup) all logs are equal
and the crash comes ``lo`` ms plus a uniformly random 0 to heartbeat-1 ms after settling (a uniform offset
over one whole period puts the crash at a uniformly random phase of the heartbeat interval). After the crash
the trial runs until another node is leader ("elected"), then until every survivor follows it ("all heard",
the dissertation's end point), checking every time unit, or until 10 s pass (reported as a timeout).

Modes: ``default`` is raftkv's configuration (pre-vote and check-quorum on); ``plain`` is the paper's Raft (both
off); ``prevote`` and ``checkquorum`` turn on one of the two, to tell their effects apart (with pre-vote on,
the core applies the leader lease to pre-votes even without check-quorum, so ``prevote`` keeps that part).

    python bench/election_time.py [--trials 1000] [--seed 1] [--ranges 150-155,150-175,150-200,150-300]
        [--modes default,plain] [--equal-logs] [--delay 5-9] [--disk 0-1] [--tick-ms 1] [--heartbeat-ms N]
        [--units-per-ms 1] [--workers 2] [--quick] [--explain N]

``--explain N`` replays the N slowest trials of each row with a trace and prints how their elections went.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raftkv.raft.ready import Role
from raftkv.raft.types import NodeId
from raftkv.sim.cluster import Cluster, NodeSettings, Proposal
from raftkv.sim.network import LinkFaults

NODES = 5
WAIT_LIMIT_MS = 10_000

PAPER: dict[tuple[int, int], tuple[str, int]] = {
    (150, 155): ("median", 287),
    (150, 200): ("max", 513),
}
"""The figures the paper states in its text (§9.3); the rest of its Figure 16 is only a plot."""


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    pre_vote: bool
    check_quorum: bool


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("default", pre_vote=True, check_quorum=True),
        Mode("plain", pre_vote=False, check_quorum=False),
        Mode("prevote", pre_vote=True, check_quorum=False),
        Mode("checkquorum", pre_vote=False, check_quorum=True),
    )
}


@dataclass(frozen=True, slots=True)
class Setup:
    """What every trial of a run shares. Times in milliseconds; ``scale`` simulated units per millisecond."""

    delay: tuple[int, int]
    disk: tuple[int, int]
    scale: int
    seed: int
    tick: int = 1
    """Tick length in ms; election timeouts and heartbeats are whole ticks."""
    heartbeat: int | None = None
    """Heartbeat interval in ms; ``None``: half the minimum election timeout, as in the paper."""
    equal_logs: bool = False
    """All logs equal at the crash (the earlier setup); ``False``: four different lengths, as in the paper."""

    def heartbeat_ms(self, lo: int) -> int:
        return self.heartbeat if self.heartbeat is not None else lo // 2


@dataclass(frozen=True, slots=True)
class Job:
    lo: int
    hi: int
    mode: Mode
    trial: int
    setup: Setup
    trace: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    lo: int
    hi: int
    mode: str
    trial: int
    elapsed: int | None
    """Crash to new leader, in simulated units; ``None`` if no leader within the wait limit."""
    heard: int | None
    """Crash until every survivor follows one new leader (the dissertation's end point: the others received the
    new leader's first heartbeat), in simulated units; ``None`` if not within the wait limit."""
    detect: int
    """Crash to the first node's election timeout (it becomes pre-candidate or candidate), in simulated units."""
    phase: int
    """Where in its heartbeat interval the leader crashed: units since it last sent heartbeats."""
    terms: int
    """How many terms the election used (1: the first real candidate won; more: split or lost votes)."""
    trace: tuple[str, ...] = ()


def trial_seed(base: int, trial: int) -> int:
    return base * 1_000_003 + trial


def settings_for(job: Job) -> NodeSettings:
    setup = job.setup
    s = setup.scale
    tick = setup.tick
    return NodeSettings(
        tick_ms=tick * s,
        election_ticks=job.lo // tick,
        election_jitter_ticks=(job.hi - job.lo) // tick,
        heartbeat_ticks=setup.heartbeat_ms(job.lo) // tick,
        pre_vote=job.mode.pre_vote,
        check_quorum=job.mode.check_quorum,
        disk_latency_ms=(job.setup.disk[0] * s, job.setup.disk[1] * s),
    )


def agreed_leader(c: Cluster) -> NodeId | None:
    """The leader, if every live node is at its term and follows it (and, before the crash, all are live)."""
    lead = c.leader()
    if lead is None:
        return None
    term = c.core(lead).term
    for i in c.ids:
        core = c.nodes[i].core
        if core is not None and (core.term != term or core.leader != lead):
            return None
    return lead


def step_until(c: Cluster, cond: Callable[[], bool], limit: int) -> None:
    """Run one simulated unit at a time until ``cond()`` holds, looking only after all of a unit's events."""
    deadline = c.now + limit
    while not cond():
        if c.now >= deadline:
            raise RuntimeError(f"step_until: condition not met within {limit} units (seed {c.seed})")
        c.run_for(1)


def stagger_logs(c: Cluster, lead: NodeId, order: Sequence[NodeId], scale: int) -> None:
    """Leave the followers in ``order`` with 3, 2, 1 and 0 entries more than the last one's log (§9.3's setup).

    The leader proposes three entries in quick succession; each is sent to one follower fewer (the link from the
    leader to the followers left out is blocked while the entry is sent, and opened again at once). From the
    first entry on, the three lagging followers' replies to the leader are blocked until the crash, so the
    leader never learns that they lag and never repairs their logs: it still sends them its heartbeats. Nothing
    commits meanwhile (only the leader and ``order[0]`` acknowledge). The caller crashes the leader before its
    next check-quorum round, which would otherwise see only one follower and step down.
    """
    node = c.nodes[lead]
    leader_core = c.core(lead)

    def idle() -> bool:
        return node.writing is None

    lagging = list(order[1:])
    c.net.cut(lagging, [lead], both_ways=False)
    for k in range(1, len(order)):
        # Each proposal's AppendEntries leave synchronously, before the leader writes the entry, provided that
        # no earlier write of the leader is still in flight.
        if not c.run_until(idle, 100 * scale, check_every_ms=1):
            raise RuntimeError("the leader's disk write did not complete")
        left_out = order[len(order) - k :]
        c.net.cut([lead], left_out, both_ways=False)
        before = c.net.dropped
        if not isinstance(c.propose(f"stagger-{k}".encode(), via=lead), Proposal):
            raise RuntimeError("the leader refused a proposal while staggering the logs")
        for f in left_out:
            c.net.blocked.discard((lead, f))
        if c.net.dropped - before != len(left_out) or leader_core.role is not Role.LEADER:
            raise RuntimeError("staggering the logs: an AppendEntries did not leave at once")


def run_trial(job: Job) -> Outcome:
    setup = job.setup
    s = setup.scale
    seed = trial_seed(setup.seed, job.trial)
    faults = LinkFaults(0.0, 0.0, setup.delay[0] * s, setup.delay[1] * s, fifo=True)
    c = Cluster(NODES, seed, settings=settings_for(job), faults=faults, trace=job.trace)
    rng = random.Random(f"election-time-{seed}")
    limit = WAIT_LIMIT_MS * s
    hb = setup.heartbeat_ms(job.lo) * s
    if not c.run_until(lambda: agreed_leader(c) is not None and len(c.up_ids()) == NODES, limit, check_every_ms=1):
        raise RuntimeError(f"no initial leader within {WAIT_LIMIT_MS} ms (seed {seed})")
    if setup.equal_logs:
        # A uniform offset over one whole heartbeat period makes the crash's phase uniform, whatever it started at.
        c.run_for(job.lo * s + rng.randrange(hb))
        old = agreed_leader(c)
        if old is None:
            raise RuntimeError(f"leadership changed while settling (seed {seed})")
    else:
        c.run_for(job.lo * s)
        old = agreed_leader(c)
        if old is None:
            raise RuntimeError(f"leadership changed while settling (seed {seed})")
        leader_core = c.core(old)
        # Start at a check-quorum round of the leader (it counts its election timer then), so that the crash,
        # within the heartbeat interval after the next heartbeat, comes before the following round.
        step_until(c, lambda: leader_core.election_elapsed == 0, limit)
        order = [i for i in c.ids if i != old]
        rng.shuffle(order)
        stagger_logs(c, old, order, s)
        # The first heartbeat broadcast after that is the last before the crash: it reaches every follower. (With
        # ticks longer than a unit, the counter may still read 0 from a broadcast before the staggering.)
        step_until(c, lambda: leader_core.heartbeat_elapsed != 0, limit)
        step_until(c, lambda: leader_core.heartbeat_elapsed == 0, limit)
        c.run_for(rng.randrange(hb))
        if leader_core.role is not Role.LEADER:
            raise RuntimeError(
                f"the leader stepped down before the crash (seed {seed}): with --heartbeat-ms, pick an interval "
                "that divides the minimum election timeout, or use --equal-logs"
            )
        lengths = [c.core(i).log.last_index() for i in order]
        if lengths != sorted(set(lengths), reverse=True):
            raise RuntimeError(f"the followers' logs are not staggered: {lengths} (seed {seed})")
    old_core = c.core(old)
    phase = old_core.heartbeat_elapsed * setup.tick * s
    old_term = old_core.term
    survivors = [i for i in c.ids if i != old]
    c.crash(old)
    c.connect_all()
    crashed_at = c.now
    detected_at: list[int] = []

    def elected() -> bool:
        if not detected_at and any(c.core(i).role is not Role.FOLLOWER for i in survivors):
            detected_at.append(c.now)
        return c.leader() is not None

    ok = c.run_until(elected, limit, check_every_ms=1)
    elected_at = c.now
    lead = c.leader()
    terms = c.core(lead).term - old_term if lead is not None else max(c.terms().values()) - old_term
    heard = ok and c.run_until(lambda: agreed_leader(c) is not None, crashed_at + limit - c.now, check_every_ms=1)
    trace: tuple[str, ...] = ()
    if c.trace is not None:
        trace = tuple(line for line in c.trace if int(line.split(" ", 1)[0]) >= crashed_at)
    return Outcome(
        job.lo,
        job.hi,
        job.mode.name,
        job.trial,
        elapsed=elected_at - crashed_at if ok else None,
        heard=c.now - crashed_at if heard else None,
        detect=(detected_at[0] if detected_at else c.now) - crashed_at,
        phase=phase,
        terms=terms,
        trace=trace,
    )


# ==========================================================================================================
# Statistics and reporting
# ==========================================================================================================


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class Row:
    lo: int
    hi: int
    mode: str
    n: int
    timeouts: int
    median: float
    p90: float
    p99: float
    max: float
    mean: float
    heard_median: float
    """Median time until every survivor follows the new leader (the dissertation's end point)."""
    heard_max: float
    detect_median: float
    first_term: float
    """Fraction of trials in which the first real candidate won."""
    max_terms: int

    def paper_verdict(self) -> str:
        """Against the paper's figure: first on the time to elect, then on the time until all survivors heard."""
        ref = PAPER.get((self.lo, self.hi))
        if ref is None:
            return ""
        stat, limit = ref
        elected, heard = (self.median, self.heard_median) if stat == "median" else (self.max, self.heard_max)

        def verdict(value: float) -> str:
            return "ok" if value <= limit and self.timeouts == 0 else "WORSE"

        return f"{stat} {limit}: {verdict(elected)} / {verdict(heard)}"


def summarize(outs: Sequence[Outcome], scale: int) -> Row:
    times = sorted(o.elapsed / scale for o in outs if o.elapsed is not None)
    heard = sorted(o.heard / scale for o in outs if o.heard is not None)
    first = outs[0]
    return Row(
        lo=first.lo,
        hi=first.hi,
        mode=first.mode,
        n=len(outs),
        timeouts=len(outs) - len(heard),
        median=statistics.median(times) if times else math.nan,
        p90=percentile(times, 90),
        p99=percentile(times, 99),
        max=times[-1] if times else math.nan,
        mean=statistics.fmean(times) if times else math.nan,
        heard_median=statistics.median(heard) if heard else math.nan,
        heard_max=heard[-1] if heard else math.nan,
        detect_median=statistics.median(o.detect / scale for o in outs),
        first_term=sum(1 for o in outs if o.terms == 1) / len(outs),
        max_terms=max(o.terms for o in outs),
    )


def format_table(rows: Sequence[Row]) -> str:
    def ms(x: float) -> str:
        if math.isnan(x):
            return "–"
        return f"{x:g}" if x == int(x) else f"{x:.1f}"

    lines = [
        "| timeout (ms) | mode | trials | median | p90 | p99 | max | mean | all heard: median · max "
        "| first timeout (median) | 1st candidate won | most terms | timeouts | paper (elected / heard) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.lo}–{r.hi} | {r.mode} | {r.n} | {ms(r.median)} | {ms(r.p90)} | {ms(r.p99)} | {ms(r.max)} "
            f"| {r.mean:.1f} | {ms(r.heard_median)} · {ms(r.heard_max)} | {ms(r.detect_median)} "
            f"| {r.first_term:.0%} | {r.max_terms} | {r.timeouts} | {r.paper_verdict()} |"
        )
    return "\n".join(lines)


def explain(out: Outcome, scale: int) -> str:
    """Condense a trial's trace to what the election did: timeouts, rounds won and lost, votes, the winner."""
    head = (
        f"  trial {out.trial}: "
        f"{'no leader within the wait limit' if out.elapsed is None else f'{out.elapsed / scale:g} ms'}, "
        f"crash at heartbeat phase {out.phase / scale:g} ms, {out.terms} term(s)"
    )
    lines = [head]
    if not out.trace:
        return head
    crashed_at = int(out.trace[0].split(" ", 1)[0])
    for line in out.trace:
        at, rest = line.split(" ", 1)
        t = (int(at) - crashed_at) / scale
        if rest.startswith("crash"):
            lines.append(f"    +{t:6g} {rest}")
        elif rest.startswith("ready "):
            ev = rest.split(" ev=", 1)[1]
            if ev != "[]":
                lines.append(f"    +{t:6g} node {rest.split(' ', 2)[1]}: {ev}")
    return "\n".join(lines)


# ==========================================================================================================
# Main
# ==========================================================================================================


def parse_pair(text: str) -> tuple[int, int]:
    try:
        lo_s, hi_s = text.strip().split("-")
        lo, hi = int(lo_s), int(hi_s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO-HI, got {text!r}") from None
    if not 0 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"need 0 <= LO <= HI, got {text!r}")
    return lo, hi


def parse_ranges(text: str) -> list[tuple[int, int]]:
    ranges = []
    for part in text.split(","):
        lo, hi = parse_pair(part)
        if lo >= hi or lo < 2:
            raise argparse.ArgumentTypeError(f"timeout range {part!r}: need 2 <= LO < HI")
        ranges.append((lo, hi))
    return ranges


def parse_modes(text: str) -> list[Mode]:
    try:
        return [MODES[m.strip()] for m in text.split(",")]
    except KeyError as e:
        raise argparse.ArgumentTypeError(f"unknown mode {e}; choose from {', '.join(MODES)}") from None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Leader crash-to-new-leader time on the simulator (Raft paper §9.3).")
    ap.add_argument("--trials", type=int, default=1000, help="trials per range and mode (default 1000)")
    ap.add_argument("--seed", type=int, default=1, help="base seed; trial k uses seed*1000003+k (default 1)")
    ap.add_argument("--ranges", type=parse_ranges, default=parse_ranges("150-155,150-175,150-200,150-300"))
    ap.add_argument("--modes", type=parse_modes, default=parse_modes("default,plain"), help=", ".join(MODES))
    ap.add_argument("--delay", type=parse_pair, default=(5, 9), help="one-way delay range, ms (default 5-9)")
    ap.add_argument("--disk", type=parse_pair, default=(0, 1), help="disk write+fsync latency range, ms (default 0-1)")
    ap.add_argument("--tick-ms", type=int, default=1, help="tick length in ms (default 1; raftkv's runtime uses 10)")
    ap.add_argument("--heartbeat-ms", type=int, default=None, help="heartbeat interval (default: min timeout / 2)")
    ap.add_argument("--units-per-ms", type=int, default=1, help="simulated time units per ms (default 1)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument(
        "--equal-logs",
        action="store_true",
        help="all logs equal at the crash (the earlier setup); default: four different lengths, as in the paper",
    )
    ap.add_argument("--quick", action="store_true", help="100 trials per row, a smoke run")
    ap.add_argument("--explain", type=int, default=0, metavar="N", help="replay and narrate the N slowest per row")
    args = ap.parse_args(argv)
    trials = 100 if args.quick else args.trials
    scale = args.units_per_ms
    setup = Setup(
        args.delay,
        args.disk,
        scale,
        args.seed,
        tick=args.tick_ms,
        heartbeat=args.heartbeat_ms,
        equal_logs=args.equal_logs,
    )
    for lo, hi in args.ranges:
        hb = setup.heartbeat_ms(lo)
        if lo % setup.tick or hi % setup.tick or hb % setup.tick or not 0 < hb < lo:
            ap.error(f"range {lo}-{hi} with heartbeat {hb} ms: need whole ticks of {setup.tick} ms, 0 < heartbeat < LO")

    shown = sys.argv[1:] if argv is None else list(argv)
    print("command: " + " ".join(["python", "bench/election_time.py", *shown]))
    print(
        f"seed {args.seed}; {trials} trials per row; {NODES} nodes; "
        f"one-way delay U[{args.delay[0]},{args.delay[1]}] ms (FIFO links, no loss); "
        f"disk U[{args.disk[0]},{args.disk[1]}] ms; tick {setup.tick} ms; "
        f"heartbeat {'min timeout / 2' if setup.heartbeat is None else f'{setup.heartbeat} ms'}; "
        f"time resolution {1 / scale:g} ms; "
        f"crash at a uniform phase of the heartbeat interval; "
        f"{'equal logs' if setup.equal_logs else 'the followers’ logs staggered +3/+2/+1/+0 (two cannot win)'}; "
        f"wait limit {WAIT_LIMIT_MS} ms"
    )
    jobs = [Job(lo, hi, m, k, setup) for lo, hi in args.ranges for m in args.modes for k in range(1, trials + 1)]
    started = time.perf_counter()
    if args.workers > 1:
        with multiprocessing.Pool(args.workers) as pool:
            outcomes = pool.map(run_trial, jobs, chunksize=20)
    else:
        outcomes = [run_trial(j) for j in jobs]
    wall = time.perf_counter() - started

    by_row: dict[tuple[int, int, str], list[Outcome]] = {}
    for o in outcomes:
        by_row.setdefault((o.lo, o.hi, o.mode), []).append(o)
    print()
    print(format_table([summarize(outs, scale) for outs in by_row.values()]))
    print()
    mean_phase = statistics.fmean(o.phase / (setup.heartbeat_ms(o.lo) * scale) for o in outcomes)
    quantized = " (counted in whole ticks, so it reads low)" if setup.tick > 1 else ""
    print(f"mean crash phase {mean_phase:.3f} of the heartbeat interval (uniform: about 0.5){quantized}")
    print(f"wall time {wall:.1f} s with {args.workers} worker(s)")

    for (lo, hi, mode), outs in by_row.items() if args.explain else ():
        slow = sorted(outs, key=lambda o: (o.elapsed is None, o.elapsed or 0), reverse=True)[: args.explain]
        print(f"\n{lo}–{hi} ms, {mode}: the {len(slow)} slowest trial(s)")
        for o in slow:
            print(explain(run_trial(Job(lo, hi, MODES[mode], o.trial, setup, trace=True)), scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
