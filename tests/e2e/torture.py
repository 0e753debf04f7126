"""The Jepsen-style torture harness: real processes, a nemesis, a recorded history, the linearizability checker.

Theory of operation
-------------------
1. **Cluster.** :class:`~tests.e2e.harness.ProcCluster` starts 3 or 5 ``raftkv serve`` processes on 127.0.0.1
   (LMDB store, fsync on) with every peer link through a :class:`~tests.e2e.harness.FaultProxy`.
2. **Clients.** Several workers run concurrently until the deadline, each doing random get/put/cas/delete on a
   few keys, one operation at a time, and recording every operation with its call and return times (one
   monotonic clock, this process's). Each worker has two clients: one that knows every endpoint (and follows the
   leader) and one *pinned* to a single node, used for some of the reads, so that reads reach followers (a
   correct follower redirects them to the leader; the test-only switch ``RAFTKV_TEST_UNSAFE_STALE_READS=1``
   makes it answer from its own, possibly stale, state). Written values are unique, so a read names the write it
   saw. A call that raises (``Unavailable``, ``Timeout``, anything) has an unknown outcome: it is recorded as
   pending (``output`` null), which the checker lets take effect at any time after its call, or never. Keys are
   renewed every ``key_epoch_s`` seconds (``t/e<epoch>k<j>``), so no key's history grows without bound (the
   checker's cost grows fast with pending operations on one key).
3. **Nemesis.** One fault at a time (sometimes a process fault and a network fault overlap), each applied and
   healed on a timer: kill -9 (the leader, a random node, a minority, a majority, all) and restart on the same
   data dir after a while; SIGSTOP/SIGCONT; partitions (isolate the leader, isolate followers, a random
   majority/minority split, a bridge, one-way cuts into or out of the leader, random directed links); message
   delay with jitter; loss (a lost chunk resets its connection); a restart (graceful SIGTERM, or kill -9) with
   the same data dir. The schedule (kinds, variants, timings, target orders) is drawn from the seed alone; which
   node *is* the leader is resolved when a fault is applied. Nodes that exit without being told to are
   reported.
4. **The end.** Heal everything, wait until one leader leads every node and all have applied the same index,
   read every key linearizably (those reads join the history), read every node's own applied copy
   (serializable reads), and check: the history is linearizable (:func:`raftkv.check.check`); every node holds
   the same state, equal to the final linearizable reads; nothing acknowledged is lost (the final value of
   each key comes from a write that no acknowledged write followed in real time; an absent key from a delete
   likewise). Write ``history.jsonl``, ``faults.jsonl``, ``summary.json``, ``history.html`` (the checker's
   picture of the history and its verdict, passing or not) and, on failure, the node logs into the output folder.

Everything is bounded: workers and nemesis stop at the deadline, every operation and wait has a deadline, the
whole run has a hard limit, and the processes are stopped by PID in ``finally``.

``python -m tests.e2e.torture --seed 1 --duration 60 --nodes 3`` (see ``docs/torture.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import capnp  # type: ignore[import-untyped]

from raftkv.check import CasResult, CheckResult, Kind, Operation, Read, Written, check, dump_jsonl, write_html
from raftkv.client import Client, connect
from raftkv.errors import InvalidConfChange, RaftError
from raftkv.transport.kjloop import kj_loop
from tests.e2e.harness import ProcCluster, wait_for
from tests.e2e.locks import LockWorkload, check_locks, gather_fenced

FAULT_KINDS: tuple[str, ...] = ("kill", "pause", "partition", "delay", "loss", "restart", "member")
PROCESS_FAULTS = frozenset({"kill", "pause", "restart"})
NETWORK_FAULTS = frozenset({"partition", "delay", "loss"})

VARIANTS: dict[str, tuple[tuple[str, float], ...]] = {
    "kill": (("leader", 0.35), ("random", 0.3), ("minority", 0.15), ("majority", 0.1), ("all", 0.1)),
    "pause": (("leader", 0.45), ("random", 0.35), ("minority", 0.2)),
    "partition": (
        ("isolate-leader", 0.2),
        ("isolate-followers", 0.2),
        ("split", 0.15),
        ("bridge", 0.15),
        ("one-way-out-of-leader", 0.1),
        ("one-way-into-leader", 0.1),
        ("random-links", 0.1),
    ),
    "delay": (("all", 0.35), ("leader", 0.25), ("slow-node", 0.2), ("random-links", 0.2)),
    "loss": (("all", 0.35), ("leader", 0.35), ("random-links", 0.3)),
    "restart": (("graceful-leader", 0.3), ("graceful-random", 0.2), ("crash-leader", 0.3), ("crash-random", 0.2)),
    # A membership change held for the fault's duration: the node is removed (the leader: it hands over), keeps
    # running, then is added back as a learner, caught up and promoted (docs/membership.md).
    "member": (("remove-leader", 0.4), ("remove-follower", 0.6)),
}
MEMBER_CALL_S = 10.0
"""Deadline of one membership call of the nemesis (retried while the cluster is busy or leaderless)."""

KEY_PREFIX = "t/"
TABLE_HEADER = (
    "| seed | nodes | s | fault kinds | ops | unknown | final term | faults injected | result |\n"
    "|---|---|---|---|---|---|---|---|---|"
)
MAX_OPS_PER_WORKER = 1_000_000
MAX_NEMESIS_STEPS = 100_000


# --- the schedule ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One drawn fault: what, how, on whom (``order``: a permutation of node ids targets are taken from), how long.

    Drawn from the seed alone (``draw_step``); ``targets`` are resolved against the live cluster when applied.
    """

    kind: str
    variant: str
    order: tuple[int, ...]
    hold_s: float
    quiet_s: float
    delay_s: float
    jitter_s: float
    loss: float
    link_mask: tuple[bool, ...]
    extra: FaultSpec | None = None
    """A fault of the other category (process vs network) applied halfway through the hold, healed before."""

    def describe(self, hold: bool = True) -> str:
        text = f"{self.kind}/{self.variant}"
        if self.kind == "delay":
            text += f" {self.delay_s * 1000:.0f}+{self.jitter_s * 1000:.0f}ms"
        if self.kind == "loss":
            text += f" p={self.loss:.2f}"
        if hold and self.kind != "restart":
            text += f" for {self.hold_s:.1f}s"
        return text + (f", with {self.extra.describe(hold=False)} from halfway" if self.extra else "")


def _weighted(rng: random.Random, choices: Sequence[tuple[str, float]]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def _draw_one(rng: random.Random, kinds: Sequence[str], n: int) -> FaultSpec:
    kind = rng.choice(list(kinds))
    variant = _weighted(rng, VARIANTS[kind])
    order = tuple(rng.sample(range(1, n + 1), n))
    hold_s = rng.uniform(0.8, 3.0)
    quiet_s = rng.uniform(0.2, 1.0)
    delay_s = rng.uniform(0.02, 0.15)
    jitter_s = rng.uniform(0.0, 0.08)
    loss = rng.uniform(0.02, 0.2)
    mask = [rng.random() < 0.35 for _ in range(n * (n - 1))]
    mask[rng.randrange(len(mask))] = True  # at least one link
    return FaultSpec(kind, variant, order, hold_s, quiet_s, delay_s, jitter_s, loss, tuple(mask))


def draw_step(rng: random.Random, kinds: Sequence[str], n: int) -> FaultSpec:
    """The next step of the schedule: a fault, and sometimes (30%) an overlapping one of the other category."""
    spec = _draw_one(rng, kinds, n)
    other = [k for k in kinds if (k in PROCESS_FAULTS) != (spec.kind in PROCESS_FAULTS)]
    if other and rng.random() < 0.3:
        extra = _draw_one(rng, other, n)
        spec = FaultSpec(
            spec.kind,
            spec.variant,
            spec.order,
            spec.hold_s,
            spec.quiet_s,
            spec.delay_s,
            spec.jitter_s,
            spec.loss,
            spec.link_mask,
            extra,
        )
    return spec


def schedule(seed: int, kinds: Sequence[str], n: int, steps: int) -> list[FaultSpec]:
    """The first ``steps`` steps the nemesis of ``seed`` will take (the same whatever the cluster does)."""
    rng = random.Random(seed)
    return [draw_step(rng, kinds, n) for _ in range(steps)]


# --- records --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class FaultRecord:
    """One fault as applied: its kind and variant, the nodes or links it hit, and when (history time)."""

    kind: str
    variant: str
    targets: str
    start_s: float
    end_s: float | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "variant": self.variant,
            "targets": self.targets,
            "start": round(self.start_s, 6),
            "end": None if self.end_s is None else round(self.end_s, 6),
            "note": self.note,
        }


@dataclass
class TortureResult:
    """What a run did and found. ``ok`` is true only if every check passed; ``problems`` says what failed."""

    seed: int
    nodes: int
    duration_s: float
    faults: tuple[str, ...]
    unsafe_stale_reads: bool
    out_dir: Path
    ops: int = 0
    ops_by_outcome: dict[str, int] = field(default_factory=dict)
    client_errors: dict[str, int] = field(default_factory=dict)
    faults_injected: dict[str, int] = field(default_factory=dict)
    fault_log: list[FaultRecord] = field(default_factory=list)
    check: CheckResult | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    keys: int = 0
    elapsed_s: float = 0.0
    check_s: float = 0.0
    converge_s: float = 0.0
    final_term: int = 0
    final_index: int = 0
    """Where the cluster ended: its term (how many elections it went through, at most) and applied index."""
    snapshots: dict[str, int] = field(default_factory=dict)
    """Snapshot log lines counted over every node: taken, installed from the leader, restored at start."""
    network: dict[str, int] = field(default_factory=dict)
    """The fault proxies' counters: chunks relayed and swallowed, connections reset."""
    locks: dict[str, int] = field(default_factory=dict)
    """The lock workload's figures (tests/e2e/locks.py), empty when it did not run."""
    history_path: Path | None = None
    html_path: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.check is not None and self.check.kind is Kind.OK

    @property
    def verdict(self) -> str:
        """``ok``, or the first problem's kind: ``illegal``, ``unknown``, ``lost``, ``diverged``, ``crashed``, ..."""
        if self.ok:
            return "ok"
        return self.problems[0].split(":", 1)[0] if self.problems else "unchecked"

    @property
    def unknown_ops(self) -> int:
        """Operations whose outcome the client never learned (recorded as pending)."""
        return sum(count for name, count in self.ops_by_outcome.items() if name.endswith(" unknown"))

    @property
    def faults_by_kind(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for name, count in self.faults_injected.items():
            out[name.split("/", 1)[0]] += count
        return dict(sorted(out.items()))

    def replay_command(self) -> str:
        cmd = (
            f".venv/bin/python -m tests.e2e.torture --seed {self.seed} --duration {self.duration_s:g} "
            f"--nodes {self.nodes} --faults {','.join(self.faults)}"
        )
        cmd += f" --locks {self.locks.get('holders', 0)}" + (" --unsafe-lock" if self.locks.get("unsafe") else "")
        return cmd + (" --unsafe-stale-reads" if self.unsafe_stale_reads else "")

    def summary(self) -> str:
        lines = [
            f"torture seed {self.seed}: {self.nodes} nodes, {self.duration_s:g} s of faults "
            f"({', '.join(self.faults)}){', UNSAFE STALE READS ON' if self.unsafe_stale_reads else ''}",
            f"  operations: {self.ops} on {self.keys} keys; "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.ops_by_outcome.items())),
        ]
        if self.client_errors:
            lines.append("  client errors: " + ", ".join(f"{k} {v}" for k, v in sorted(self.client_errors.items())))
        total = sum(self.faults_injected.values())
        lines.append(
            f"  faults injected: {total} ("
            + ", ".join(f"{k} {v}" for k, v in self.faults_by_kind.items())
            + ")"
            + ("; " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults_injected.items())) if total else "")
        )
        if self.network:
            lines.append("  network: " + ", ".join(f"{k} {v}" for k, v in self.network.items()))
        if self.snapshots:
            lines.append("  snapshots: " + ", ".join(f"{k} {v}" for k, v in self.snapshots.items()))
        if self.locks:
            lines.append("  locks: " + ", ".join(f"{k} {v}" for k, v in self.locks.items()))
        lines.append(
            f"  converged in {self.converge_s:.1f} s at term {self.final_term}, index {self.final_index}; "
            f"checked in {self.check_s:.2f} s; run {self.elapsed_s:.1f} s"
        )
        if self.check is not None:
            lines.append(f"  checker: {self.check.kind.value.upper()}: {self.check.reason}")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        for p in self.problems:
            lines.append(f"  PROBLEM: {p}")
        lines.append(f"  result: {self.verdict.upper()}")
        lines.append(f"  artifacts: {self.out_dir}")
        if not self.ok:
            lines.append(f"  replay: {self.replay_command()}")
        return "\n".join(lines)

    def table_row(self) -> str:
        """One Markdown table row (see ``TABLE_HEADER``)."""
        faults = ", ".join(f"{k} {v}" for k, v in self.faults_by_kind.items())
        return (
            f"| {self.seed} | {self.nodes} | {self.duration_s:g} | {','.join(self.faults)} | {self.ops} "
            f"| {self.unknown_ops} | {self.final_term} "
            f"| {sum(self.faults_injected.values())} ({faults}) | {self.verdict} |"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "nodes": self.nodes,
            "duration_s": self.duration_s,
            "faults": list(self.faults),
            "unsafe_stale_reads": self.unsafe_stale_reads,
            "ops": self.ops,
            "keys": self.keys,
            "ops_by_outcome": self.ops_by_outcome,
            "client_errors": self.client_errors,
            "faults_injected": self.faults_injected,
            "faults_by_kind": self.faults_by_kind,
            "network": self.network,
            "snapshots": self.snapshots,
            "locks": self.locks,
            "check": None if self.check is None else {"kind": self.check.kind.value, "reason": self.check.reason},
            "problems": self.problems,
            "warnings": self.warnings,
            "verdict": self.verdict,
            "elapsed_s": round(self.elapsed_s, 3),
            "check_s": round(self.check_s, 3),
            "converge_s": round(self.converge_s, 3),
            "final_term": self.final_term,
            "final_index": self.final_index,
        }


class History:
    """The operations recorded so far, with times in seconds since ``t0`` (one monotonic clock)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.ops: list[Operation] = []
        self.client_errors: Counter[str] = Counter()
        self.untyped: list[str] = []
        """The first error of each type that is not a ``RaftError`` (the client should type its errors)."""

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def record(
        self,
        client: int | str,
        f: str,
        key: str,
        run: Any,
        *,
        value: str | None = None,
        expected: str | None = None,
    ) -> Any:
        """Await ``run`` (a coroutine) and record it; returns its result, or None if it raised (outcome unknown)."""
        call = self.now()
        result: Any = None
        output: Read | Written | CasResult | None = None
        try:
            result = await run
        except RaftError as e:
            self.client_errors[type(e).__name__] += 1
        except Exception as e:
            # Not a typed error (a transport error let through, a failed assertion in the client): the outcome
            # is unknown all the same. Counted apart, and the first of each kind is kept for the summary.
            name = f"untyped {type(e).__name__}"
            if not self.client_errors[name]:
                self.untyped.append(f"{f} {key!r} raised {type(e).__name__}: {e}")
            self.client_errors[name] += 1
        else:
            if f == "get":
                output = Read(None if result is None else bytes(result.value).decode())
            elif f == "cas":
                output = CasResult(bool(result))
            else:
                output = Written()
        ret = max(self.now(), call)
        self.ops.append(
            Operation(client, f, key, call, ret, value=value, expected=expected, output=output)  # type: ignore[arg-type]
        )
        return output


# --- the nemesis ----------------------------------------------------------------------------------------------


class Nemesis:
    """Applies the seed's schedule to a cluster, one step at a time, until the deadline; then heals everything."""

    def __init__(self, cluster: ProcCluster, seed: int, kinds: Sequence[str], history: History) -> None:
        self.c = cluster
        self.n = cluster.n
        self.rng = random.Random(seed)
        self.kinds = list(kinds)
        self.history = history
        self.down: set[int] = set()
        """Nodes the nemesis killed and has not restarted yet."""
        self.paused: set[int] = set()
        self.crashed: dict[int, str] = {}
        """Nodes that exited without being told to: node -> what was seen (exit code, log tail)."""
        self.log: list[FaultRecord] = []
        self.warnings: list[str] = []
        self.spawns: Counter[int] = Counter(range(1, self.n + 1))
        """Processes started per node (the cluster started one each)."""
        self.removed: set[int] = set()
        """Nodes the nemesis removed from the configuration and has not made voters again."""

    # --- observation ---------------------------------------------------------------------------------------

    def up(self) -> list[int]:
        return [i for i in range(1, self.n + 1) if i not in self.down and i not in self.crashed]

    async def leader(self) -> int | None:
        """The node that says it leads at the highest term, asking only nodes that can answer."""
        ids = [i for i in self.up() if i not in self.paused]
        if not ids:
            return None
        with contextlib.suppress(RaftError, OSError, TimeoutError, capnp.KjException):
            st = await self.c.statuses(ids)
            leaders = [s for s in st.values() if s.role == "leader"]
            if leaders:
                return max(leaders, key=lambda s: s.term).id
        return None

    def check_processes(self) -> None:
        """Record nodes that exited although the nemesis did not stop them (a crash: always a finding)."""
        for i in range(1, self.n + 1):
            if i in self.down or i in self.crashed or self.c.running(i):
                continue
            code = self.c.procs[i].returncode
            tail = "\n".join(self.c.logs(i).splitlines()[-20:])
            self.crashed[i] = f"node {i} exited by itself with code {code} at t={self.history.now():.2f} s"
            self.warnings.append(f"node {i} exited by itself (code {code}); log tail:\n{tail}")

    # --- the loop ------------------------------------------------------------------------------------------

    async def run(self, deadline: float) -> None:
        await self._sleep_until(min(deadline, time.monotonic() + 1.0))  # let the clients get going first
        for _ in range(MAX_NEMESIS_STEPS):
            self.check_processes()
            if time.monotonic() + 1.0 >= deadline:
                break
            spec = draw_step(self.rng, self.kinds, self.n)
            end = min(deadline, time.monotonic() + spec.hold_s)
            undo = await self.apply(spec)
            undo_extra = None
            if spec.extra is not None:
                await self._sleep_until(min(end, time.monotonic() + spec.hold_s / 2))
                undo_extra = await self.apply(spec.extra)
            await self._sleep_until(end)
            if undo_extra is not None:
                await undo_extra()
            await undo()
            self.check_processes()
            await self._sleep_until(min(deadline, time.monotonic() + spec.quiet_s))
        await self.heal_all()

    @staticmethod
    async def _sleep_until(t: float) -> None:
        delay = t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def heal_all(self) -> None:
        """Network healed, paused nodes continued, killed nodes restarted (crashed ones too, once), and every
        node a voter again."""
        self.c.heal()
        for i in sorted(self.paused):
            self._signal_resume(i)
        self.paused.clear()
        for i in sorted(self.down | set(self.crashed)):
            if not self.c.running(i):
                self._spawn(i)
        self.down.clear()

        # Every node a voter again. Ask the cluster rather than trust our bookkeeping: a removal whose answer
        # was lost (a kill overlapping it) may have been made (torture seed 312 left node 5 out that way).
        async def voters(client: Client) -> Any:
            return {m.id: m for m in await client.members(timeout=3.0)}

        members = await self._member_call("members", voters)
        if members is not None:
            for i in range(1, self.n + 1):
                if i not in members or members[i].learner:
                    self.removed.add(i)
        for i in sorted(self.removed):
            await self._add_back(i, None)

    # --- membership --------------------------------------------------------------------------------------

    async def _member_call(self, what: str, call: Any) -> Any:
        """One membership call through any node, retried (busy, no leader) until ``MEMBER_CALL_S`` passes."""
        deadline = time.monotonic() + MEMBER_CALL_S
        last = ""
        while time.monotonic() < deadline:
            try:
                async with connect(self.c.endpoints(), cluster_id=self.c.cluster_id, timeout=3.0) as client:
                    return await call(client)
            except (RaftError, OSError, TimeoutError, capnp.KjException) as e:
                last = f"{type(e).__name__}: {e}"
                await asyncio.sleep(0.2)
        self.warnings.append(f"membership call {what!r} did not succeed within {MEMBER_CALL_S} s ({last})")
        return None

    async def _member(self, spec: FaultSpec) -> Any:
        if spec.variant == "remove-leader":
            lead = await self.leader()
            target, note = (lead, "") if lead is not None else (spec.order[0], "no leader found: took a random node")
        else:
            lead = await self.leader()
            target, note = next((i for i in spec.order if i != lead), spec.order[0]), ""
        rec = self._record("member", spec.variant, str(target), note)
        if target in self.removed:
            rec.note = "already removed"
        else:

            async def remove(client: Client) -> Any:
                try:
                    return await client.remove_member(target, timeout=5.0)
                except InvalidConfChange as e:
                    if "is not a member" in str(e):
                        return True  # an earlier attempt committed it (its answer was lost)
                    raise

            # Counted as removed whatever the answer: a call that did not answer may still have been made, and
            # adding back a node that is still a voter is a no-op ("already a member", then "already a voter").
            await self._member_call(f"remove {target}", remove)
            self.removed.add(target)

        async def undo() -> None:
            await self._add_back(target, rec)

        return undo

    async def _add_back(self, i: int, rec: FaultRecord | None) -> None:
        """Add node ``i`` back as a learner, wait until it has caught up, promote it."""
        if i not in self.removed:
            return

        async def add(client: Client) -> Any:
            try:
                return await client.add_member(
                    i, f"127.0.0.1:{self.c.peer_port[i]}", str(self.c.endpoint(i)), learner=True, timeout=5.0
                )
            except InvalidConfChange as e:
                if "already a member" in str(e):
                    return True
                raise

        async def caught_up(client: Client) -> Any:
            deadline = time.monotonic() + MEMBER_CALL_S
            while time.monotonic() < deadline:
                m = {r.id: r for r in await client.members(timeout=2.0)}
                if i in m and m[i].lag is not None and m[i].lag < 500:
                    return True
                await asyncio.sleep(0.2)
            raise RaftError(f"node {i} did not catch up")

        async def promote(client: Client) -> Any:
            try:
                return await client.promote_member(i, timeout=5.0)
            except InvalidConfChange as e:
                if "already a voter" in str(e):
                    return True
                raise

        ok = await self._member_call(f"add {i}", add) is not None
        ok = ok and await self._member_call(f"catch up {i}", caught_up) is not None
        ok = ok and await self._member_call(f"promote {i}", promote) is not None
        if ok:
            self.removed.discard(i)
        if rec is not None:
            rec.end_s = self.history.now()

    def _record(self, kind: str, variant: str, targets: str, note: str = "") -> FaultRecord:
        rec = FaultRecord(kind, variant, targets, self.history.now(), note=note)
        self.log.append(rec)
        return rec

    def _spawn(self, i: int) -> None:
        """Start node ``i`` again, on the same data dir."""
        self.spawns[i] += 1
        self.c.spawn(i)

    def _serving(self, i: int) -> bool:
        """Node ``i``'s latest process has said it serves (before that, SIGTERM kills it as it would any process)."""
        return self.c.logs(i).count(" serving cluster ") >= self.spawns[i]

    def _signal_resume(self, i: int) -> None:
        if self.c.running(i):
            self.c.resume(i)

    # --- applying faults -----------------------------------------------------------------------------------

    async def _targets(self, spec: FaultSpec, variant: str, count: int | None = None) -> tuple[list[int], str]:
        """Nodes for a process fault: the leader, or the first ``count`` live nodes of the drawn order."""
        live = [i for i in spec.order if i in self.up()]
        if variant.endswith("leader"):
            lead = await self.leader()
            if lead is not None and lead in live:
                return [lead], ""
            return live[:1], "no leader found: took a random node"
        k = 1 if count is None else count
        return live[:k], ""

    async def apply(self, spec: FaultSpec) -> Any:
        """Apply one fault; returns the coroutine function that heals it."""
        kind = spec.kind
        if kind == "kill":
            return await self._kill(spec)
        if kind == "pause":
            return await self._pause(spec)
        if kind == "restart":
            return await self._restart(spec)
        if kind == "member":
            return await self._member(spec)
        return await self._network(spec)

    def _count(self, variant: str) -> int | None:
        return {"minority": (self.n - 1) // 2, "majority": self.n // 2 + 1, "all": self.n}.get(variant)

    async def _kill(self, spec: FaultSpec) -> Any:
        targets, note = await self._targets(spec, spec.variant, self._count(spec.variant))
        rec = self._record("kill", spec.variant, ",".join(map(str, targets)), note)
        for i in targets:
            self.paused.discard(i)
            self.down.add(i)
            await asyncio.to_thread(self.c.kill, i)

        async def undo() -> None:
            for i in targets:
                if i in self.down:
                    self.down.discard(i)
                    self._spawn(i)
            rec.end_s = self.history.now()

        return undo

    async def _pause(self, spec: FaultSpec) -> Any:
        targets, note = await self._targets(spec, spec.variant, self._count(spec.variant))
        targets = [i for i in targets if i not in self.paused]
        rec = self._record("pause", spec.variant, ",".join(map(str, targets)), note)
        for i in targets:
            self.c.pause(i)
            self.paused.add(i)

        async def undo() -> None:
            for i in targets:
                if i in self.paused:
                    self.paused.discard(i)
                    self._signal_resume(i)
            rec.end_s = self.history.now()

        return undo

    async def _restart(self, spec: FaultSpec) -> Any:
        graceful = spec.variant.startswith("graceful")
        targets, note = await self._targets(spec, spec.variant)
        rec = self._record("restart", spec.variant, ",".join(map(str, targets)), note)
        for i in targets:
            if i in self.paused:
                self.paused.discard(i)
                self._signal_resume(i)
            if graceful:
                serving = self._serving(i)
                try:
                    code = await asyncio.to_thread(self.c.terminate, i, 5.0)
                    if code != 0 and serving:
                        self.warnings.append(f"node {i} exited with code {code} on SIGTERM")
                except subprocess.TimeoutExpired:
                    self.warnings.append(f"node {i} did not stop within 5 s of SIGTERM: killed")
                    await asyncio.to_thread(self.c.kill, i)
            else:
                await asyncio.to_thread(self.c.kill, i)
            self._spawn(i)
        rec.end_s = self.history.now()

        async def undo() -> None:
            return None

        return undo

    async def _network(self, spec: FaultSpec) -> Any:
        c, n, variant = self.c, self.n, spec.variant
        everyone = list(range(1, n + 1))
        needs_leader = variant in ("isolate-leader", "isolate-followers", "one-way-out-of-leader")
        needs_leader = needs_leader or variant in ("one-way-into-leader", "leader")
        lead = await self.leader() if needs_leader else None
        note = "no leader found: took a random node" if needs_leader and lead is None else ""
        if lead is None:
            lead = spec.order[0]
        others = [i for i in everyone if i != lead]
        links: list[tuple[int, int]] = []
        if spec.kind == "partition":
            if variant == "isolate-leader":
                c.cut([lead], others)
                desc = f"{lead} | {others}"
            elif variant == "isolate-followers":
                followers = [i for i in spec.order if i != lead][: (n - 1) // 2]
                rest = [i for i in everyone if i not in followers]
                c.cut(followers, rest)
                desc = f"{followers} | {rest} (leader {lead})"
            elif variant == "split":
                a = list(spec.order[: n // 2])
                b = list(spec.order[n // 2 :])
                c.cut(a, b)
                desc = f"{sorted(a)} | {sorted(b)}"
            elif variant == "bridge":
                a = list(spec.order[: (n - 1) // 2])
                bridge = spec.order[(n - 1) // 2]
                b = list(spec.order[(n - 1) // 2 + 1 :])
                c.cut(a, b)
                desc = f"{sorted(a)} - {bridge} - {sorted(b)}"
            elif variant == "one-way-out-of-leader":
                c.cut([lead], others, both_ways=False)
                desc = f"{lead} -/-> {others}"
            elif variant == "one-way-into-leader":
                c.cut(others, [lead], both_ways=False)
                desc = f"{others} -/-> {lead}"
            else:
                links = [link for link, cut in zip(c.links(), spec.link_mask, strict=True) if cut]
                for a_, b_ in links:
                    c.cut([a_], [b_], both_ways=False)
                desc = " ".join(f"{a_}-/->{b_}" for a_, b_ in links) or "(none)"
        else:
            if variant == "all":
                links = c.links()
            elif variant in ("leader", "slow-node"):
                node = lead if variant == "leader" else spec.order[0]
                links = [link for link in c.links() if node in link]
            else:
                links = [link for link, hit in zip(c.links(), spec.link_mask, strict=True) if hit]
            if spec.kind == "delay":
                factor = 3.0 if variant == "slow-node" else 1.0
                c.set_delay(links, spec.delay_s * factor, spec.jitter_s * factor)
            else:
                c.set_loss(links, spec.loss)
            desc = "all links" if variant == "all" else " ".join(f"{a_}->{b_}" for a_, b_ in links) or "(none)"
        rec = self._record(spec.kind, variant, desc, note)

        async def undo() -> None:
            c.heal()
            rec.end_s = self.history.now()

        return undo


# --- the clients ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    clients: int
    keys_per_epoch: int
    key_epoch_s: float
    op_timeout_s: float

    def key(self, t_s: float, j: int) -> str:
        return f"{KEY_PREFIX}e{int(t_s // self.key_epoch_s)}k{j}"


def _pin(client: Client) -> None:
    """Forget where the pinned client was redirected, so that its next read asks its own node first.

    (A correct follower answers a linearizable read with ``notLeader`` and the client follows the hint; without
    this the pinned client would stay on the leader and followers would never be asked again.)
    """
    client.forget_leader()


async def worker(w: int, cluster: ProcCluster, history: History, load: Workload, seed: int, deadline: float) -> None:
    rng = random.Random(seed * 7919 + w)
    node = w % cluster.n + 1
    seen: dict[str, str | None] = {}
    timeout = load.op_timeout_s
    async with (
        connect(cluster.endpoints(), cluster_id=cluster.cluster_id, timeout=timeout) as c,
        connect([cluster.endpoint(node)], cluster_id=cluster.cluster_id, timeout=timeout) as pinned,
    ):
        for n in range(MAX_OPS_PER_WORKER):
            if time.monotonic() >= deadline:
                break
            key = load.key(history.now(), rng.randrange(load.keys_per_epoch))
            roll = rng.random()
            value = f"{w}.{n}"
            if roll < 0.2:
                out = await history.record(w, "get", key, c.get(key))
            elif roll < 0.4:
                _pin(pinned)
                out = await history.record(f"{w}@n{node}", "get", key, pinned.get(key))
            elif roll < 0.65:
                out = await history.record(w, "put", key, c.put(key, value), value=value)
                if out is not None:
                    seen[key] = value
                continue
            elif roll < 0.9:
                expected = seen.get(key) if rng.random() < 0.8 else None
                out = await history.record(w, "cas", key, c.cas(key, expected, value), value=value, expected=expected)
                if isinstance(out, CasResult) and out.ok:
                    seen[key] = value
                continue
            else:
                out = await history.record(w, "delete", key, c.delete(key))
                if out is not None:
                    seen[key] = None
                continue
            if isinstance(out, Read):
                seen[key] = None if out.value is None else str(out.value)


# --- the end: convergence and final checks --------------------------------------------------------------------


async def converge(cluster: ProcCluster, timeout: float) -> tuple[int, int]:
    """Wait until every node answers, one leader leads them all at one term, and all applied its commit index.

    Returns that (term, index).
    """
    found: list[tuple[int, int]] = []

    async def settled() -> bool:
        try:
            st = await cluster.statuses()
        except (RaftError, OSError, TimeoutError, capnp.KjException):
            return False
        if len(st) != cluster.n:
            return False
        leaders = {s.leader for s in st.values()}
        terms = {s.term for s in st.values()}
        if len(leaders) != 1 or len(terms) != 1 or None in leaders:
            return False
        lead = st[next(iter(leaders))]  # type: ignore[index]
        if lead.role != "leader" or lead.commit != lead.last_index:
            return False
        if {s.applied for s in st.values()} != {lead.commit}:
            return False
        found.append((lead.term, lead.commit))
        return True

    await wait_for(settled, timeout, "one leader, every node applied its commit index", every=0.2)
    return found[-1]


NodeState = dict[str, tuple[str, int, int, int]]


async def node_state(cluster: ProcCluster, i: int) -> NodeState:
    """Node ``i``'s own applied copy of every torture key: key -> (value, create, mod revision, version)."""
    async with connect([cluster.endpoint(i)], cluster_id=cluster.cluster_id, timeout=5.0) as c:
        r = await c.range(KEY_PREFIX, prefix=True, serializable=True)
    return {
        bytes(kv.key).decode(): (bytes(kv.value).decode(), kv.create_revision, kv.mod_revision, kv.version)
        for kv in r.kvs
    }


def lost_writes(history: Sequence[Operation], final: dict[str, str]) -> list[str]:
    """Acknowledged writes that the final state contradicts (values are unique, so a value names its write).

    A key's final value must come from a write X (acked or pending) that no acknowledged, effective write called
    after X returned could have followed; a key absent at the end needs such a delete (or no acknowledged
    effective write at all). An unknown value names no write at all.
    """
    by_key: dict[str, list[Operation]] = {}
    for op in history:
        if op.f in ("put", "delete", "cas"):
            by_key.setdefault(op.key, []).append(op)
    problems: list[str] = []
    for key in sorted(set(by_key) | set(final)):
        writes = by_key.get(key, [])
        acked = [
            op for op in writes if isinstance(op.output, Written) or (isinstance(op.output, CasResult) and op.output.ok)
        ]
        value = final.get(key)
        if value is None:
            candidates = [op for op in writes if op.f == "delete"]
            if not acked:
                continue
        else:
            candidates = [op for op in writes if op.f in ("put", "cas") and op.value == value]
            candidates = [op for op in candidates if not (isinstance(op.output, CasResult) and not op.output.ok)]
            if not candidates:
                problems.append(f"lost: key {key!r} ends with {value!r}, which no operation wrote")
                continue

        blockers = [_overtaken(x, acked) for x in candidates]
        if not candidates or all(b is not None for b in blockers):
            first = min((b for b in blockers if b is not None), key=lambda y: y.call_s, default=acked[-1])
            what = "absent" if value is None else repr(value)
            problems.append(
                f"lost: key {key!r} ends {what}, but the acknowledged {first.describe()} "
                f"[{first.call_s:.3f}, {first.return_s:.3f}] came after every write that could explain it"
            )
    return problems


def _overtaken(x: Operation, acked: Sequence[Operation]) -> Operation | None:
    """The first acknowledged write called after ``x`` returned (so it took effect after ``x``), if any."""
    later = [y for y in acked if y.call_s > x.effective_return_s]
    return min(later, key=lambda y: y.call_s) if later else None


# --- the run --------------------------------------------------------------------------------------------------


def _parse_faults(faults: str | Sequence[str]) -> tuple[str, ...]:
    names = faults.split(",") if isinstance(faults, str) else list(faults)
    out: list[str] = []
    for name in (x.strip() for x in names):
        if name == "all":
            out.extend(FAULT_KINDS)
        elif name in FAULT_KINDS:
            out.append(name)
        elif name:
            raise ValueError(f"unknown fault kind {name!r} (expected all or some of {', '.join(FAULT_KINDS)})")
    return tuple(dict.fromkeys(out))


async def run_torture(
    seed: int,
    duration_s: float,
    nodes: int,
    faults: str | Sequence[str] = FAULT_KINDS,
    unsafe_stale_reads: bool = False,
    out_dir: str | Path | None = None,
    *,
    clients: int = 5,
    keys_per_epoch: int = 3,
    key_epoch_s: float = 10.0,
    op_timeout_s: float = 2.0,
    converge_timeout_s: float = 60.0,
    check_timeout_s: float | None = None,
    snapshot_entries: int | None = 200,
    snapshot_trailing: int | None = 50,
    keep_data: bool = False,
    locks: int = 0,
    lock_ttl: int = 2,
    unsafe_lock: bool = False,
    peer_tls: bool = False,
) -> TortureResult:
    """Run one torture test (see the module docstring) and return what it found; never raises on a finding.
    ``peer_tls``: the members talk mutual TLS, each with its own certificate of a CA made for the run."""
    if nodes not in (3, 5):
        raise ValueError("nodes must be 3 or 5")
    kinds = _parse_faults(faults)
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix=f"torture-{seed}-"))
    out.mkdir(parents=True, exist_ok=True)
    data = out / "cluster"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    res = TortureResult(seed, nodes, duration_s, kinds, unsafe_stale_reads, out)
    env = {"RAFTKV_TEST_UNSAFE_STALE_READS": "1"} if unsafe_stale_reads else None
    args: list[str] = []
    if snapshot_entries is not None:
        # Growth 0: every snapshot_entries entries, however large the state (the point is to exercise them).
        args += ["--snapshot-entries", str(snapshot_entries), "--snapshot-growth", "0"]
    if snapshot_trailing is not None:
        args += ["--snapshot-trailing", str(snapshot_trailing)]
    cluster = ProcCluster(data, nodes, cluster_id=f"torture-{seed}", env=env, extra_args=args, seed=seed)
    if peer_tls:
        from tests.tlscerts import CA

        ca = CA.make(out / "pki")
        for i in range(1, nodes + 1):
            pair = ca.issue(out / "pki", f"node-{i}", dns=(f"node-{i}",))
            cluster.node_args[i] = ["--peer-cert-file", str(pair.cert), "--peer-key-file", str(pair.key)]
            cluster.node_args[i] += ["--peer-trusted-ca-file", str(ca.path)]
    load = Workload(clients, keys_per_epoch, key_epoch_s, op_timeout_s)
    started = time.monotonic()
    history = History(started)
    nemesis = Nemesis(cluster, seed, kinds, history)
    lockload = LockWorkload(cluster, out, seed, locks, ttl=lock_ttl, unsafe_skip_wait=unsafe_lock) if locks else None
    res.locks = {"holders": locks, "unsafe": int(unsafe_lock)} if locks else {}
    final_state: dict[str, str] | None = None
    try:
        async with asyncio.timeout(duration_s + converge_timeout_s + 120.0), kj_loop():
            await cluster.start()
            await cluster.wait_leader(timeout=30.0)
            deadline = time.monotonic() + duration_s
            if lockload is not None:
                await lockload.start(deadline)
            async with asyncio.TaskGroup() as tg:
                for w in range(clients):
                    tg.create_task(worker(w, cluster, history, load, seed, deadline))
                tg.create_task(nemesis.run(deadline))
                if lockload is not None:
                    tg.create_task(lockload.run_faults())
            nemesis.check_processes()
            await nemesis.heal_all()
            if lockload is not None:
                res.problems.extend(await lockload.finish())
            t = time.monotonic()
            try:
                res.final_term, res.final_index = await converge(cluster, converge_timeout_s)
            except AssertionError as e:
                res.problems.append(f"no-convergence: {e}")
            res.converge_s = time.monotonic() - t
            if not res.problems:
                keys = {op.key for op in history.ops}
                final_reads = await _final_reads(cluster, history, sorted(keys))
                final_state = await _compare_nodes(cluster, res, final_reads, keys, converge_timeout_s)
            if lockload is not None and not any(p.startswith("no-convergence") for p in res.problems):
                await converge(cluster, converge_timeout_s)  # the holders' last releases and revocations applied
                fenced, disagreements = await gather_fenced(cluster)
                report = check_locks(lockload.records(), fenced)
                res.problems.extend(disagreements + report.problems)
                res.locks.update(report.stats)
                res.locks.update({f"holder {k}": v for k, v in lockload.faults.items()})
            nemesis.check_processes()
    except TimeoutError:
        res.problems.append("stuck: the run overran its hard time limit")
    finally:
        if lockload is not None:
            await lockload.close()
        await cluster.close()
    res.elapsed_s = time.monotonic() - started
    for _node, what in sorted(nemesis.crashed.items()):
        res.problems.insert(0, f"crashed: {what}")
    res.warnings.extend(nemesis.warnings)
    _tally(res, history, nemesis)
    t = time.monotonic()
    res.check = check(history.ops, timeout_s=check_timeout_s or max(60.0, duration_s))
    res.check_s = time.monotonic() - t
    if res.check.kind is Kind.ILLEGAL:
        res.problems.insert(0, f"illegal: {res.check.reason}")
    elif res.check.kind is Kind.UNKNOWN:
        res.problems.append(f"unknown: the checker ran out of time: {res.check.reason}")
    if final_state is not None:
        res.problems.extend(lost_writes(history.ops, final_state))
    _scan_logs(res, cluster)
    _write_artifacts(res, history, nemesis)
    if res.ok and not keep_data:
        shutil.rmtree(data, ignore_errors=True)
    return res


async def _final_reads(cluster: ProcCluster, history: History, keys: list[str]) -> dict[str, str | None]:
    """Read every key ever used, linearizably; the reads join the history (client ``final``)."""
    out: dict[str, str | None] = {}
    async with connect(cluster.endpoints(), cluster_id=cluster.cluster_id, timeout=5.0) as c:
        for key in keys:
            for _ in range(5):
                got = await history.record("final", "get", key, c.get(key))
                if isinstance(got, Read):
                    out[key] = None if got.value is None else str(got.value)
                    break
    return out


async def _compare_nodes(
    cluster: ProcCluster, res: TortureResult, final: dict[str, str | None], history_keys: set[str], timeout: float
) -> dict[str, str]:
    """Every node's own applied state is the same, taken at one applied index, and matches the final reads.

    Returns node 1's state (key -> value); the caller checks it against the acknowledged writes.
    """
    states: dict[int, NodeState] = {}
    for _ in range(5):
        index = await converge(cluster, timeout)
        states = {i: await node_state(cluster, i) for i in range(1, cluster.n + 1)}
        if await converge(cluster, timeout) == index:
            break
    else:
        res.warnings.append("the applied index kept moving while the nodes' states were read")
    reference = states[1]
    for i, st in sorted(states.items()):
        if st != reference:
            diff = sorted(k for k in set(st) | set(reference) if st.get(k) != reference.get(k))
            shown = ", ".join(f"{k}: n1={reference.get(k)} n{i}={st.get(k)}" for k in diff[:5])
            res.problems.append(f"diverged: node {i} differs from node 1 on {len(diff)} keys ({shown})")
    for key in sorted(set(final) | set(history_keys)):
        if key not in final:
            res.problems.append(f"unverified: no final linearizable read of {key!r} succeeded")
            continue
        value, held = final[key], reference.get(key)
        if (held[0] if held else None) != value:
            res.problems.append(f"diverged: the final linearizable read of {key!r} gave {value!r}, node 1 holds {held}")
    return {k: v[0] for k, v in reference.items()}


def _tally(res: TortureResult, history: History, nemesis: Nemesis) -> None:
    res.ops = len(history.ops)
    res.keys = len({op.key for op in history.ops})
    outcomes: Counter[str] = Counter()
    for op in history.ops:
        if op.output is None:
            outcome = "unknown"
        elif isinstance(op.output, CasResult):
            outcome = "ok" if op.output.ok else "failed"
        else:
            outcome = "ok"
        outcomes[f"{op.f} {outcome}"] += 1
    res.ops_by_outcome = dict(outcomes)
    res.client_errors = dict(history.client_errors)
    res.warnings.extend(f"the client raised an untyped error: {u}" for u in history.untyped)
    res.fault_log = nemesis.log
    res.faults_injected = dict(Counter(f"{r.kind}/{r.variant}" for r in nemesis.log))


_SNAPSHOT_LINES = {
    "taken": ": snapshot at index ",
    "installed from the leader": "installed the leader's snapshot",
    "restored at start": "restoring the state machine from the snapshot",
}


def _scan_logs(res: TortureResult, cluster: ProcCluster) -> None:
    """Errors in the node logs are not verdicts by themselves, but they are worth a look: list them. Count the
    snapshots taken, installed from the leader and restored at start (the log compaction paths were exercised)."""
    snapshots: Counter[str] = Counter()
    for i in range(1, cluster.n + 1):
        with contextlib.suppress(OSError):
            lines = cluster.logs(i).splitlines()
            bad = [line for line in lines if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")]
            if bad:
                res.warnings.append(f"node {i} logged {len(bad)} errors, the first: {bad[0][:300]}")
            for line in lines:
                for name, phrase in _SNAPSHOT_LINES.items():
                    if phrase in line:
                        snapshots[name] += 1
    res.snapshots = {name: snapshots[name] for name in _SNAPSHOT_LINES}
    stats = Counter[str]()
    for proxy in cluster.proxies.values():
        stats["chunks relayed"] += proxy.chunks_relayed
        stats["chunks swallowed"] += proxy.chunks_swallowed
        stats["connections reset"] += proxy.resets
    res.network = dict(stats)


def _write_artifacts(res: TortureResult, history: History, nemesis: Nemesis) -> None:
    out = res.out_dir
    res.history_path = out / "history.jsonl"
    with res.history_path.open("w") as f:
        dump_jsonl(history.ops, f)
    with (out / "faults.jsonl").open("w") as f:
        for rec in nemesis.log:
            f.write(json.dumps(rec.to_json()) + "\n")
    if res.check is not None:  # the checker's picture of every run, passing or not (issue 21)
        res.html_path = out / "history.html"
        write_html(res.check, history.ops, res.html_path)
    (out / "summary.json").write_text(json.dumps(res.to_json(), indent=2) + "\n")
    (out / "summary.txt").write_text(res.summary() + "\n")


# --- the command ----------------------------------------------------------------------------------------------


def _parse_ints(text: str, what: str) -> list[int]:
    """``7``, ``1,5,9`` or ``101..106``."""
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition("..")
        try:
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            raise ValueError(f"bad {what} {text!r}: expected N, N,M,... or A..B") from None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM as Ctrl-C: asyncio then cancels the run, whose ``finally`` stops the nodes and holders by PID
    # (the default action would leave them running).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    p = argparse.ArgumentParser(prog="python -m tests.e2e.torture", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", "--seeds", dest="seeds", default="1", help="a seed, a list 1,5,9 or a range 101..106")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of faults and client load (default 60)")
    p.add_argument("--nodes", default="3", help="3 or 5; 3,5 alternates over the seeds")
    p.add_argument("--faults", default="all", help=f"all, or a comma-separated subset of {','.join(FAULT_KINDS)}")
    p.add_argument("--unsafe-stale-reads", action="store_true", help="turn on the test-only stale-read bug")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: $TMPDIR/raftkv-torture)")
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--keys", type=int, default=3, help="keys in use at a time (renewed every --key-epoch s)")
    p.add_argument("--key-epoch", type=float, default=10.0)
    p.add_argument("--check-timeout", type=float, default=None)
    p.add_argument("--snapshot-entries", type=int, default=200, help="nodes snapshot every N entries (200; 0: never)")
    p.add_argument("--snapshot-trailing", type=int, default=50, help="entries kept below a snapshot (50)")
    p.add_argument("--keep-data", action="store_true", help="keep the nodes' data dirs and logs after a pass too")
    p.add_argument("--locks", type=int, default=3, help="lock contender processes (tests/e2e/locks.py; 0: none)")
    p.add_argument("--lock-ttl", type=int, default=2, help="the contenders' lease TTL in seconds (2)")
    p.add_argument("--unsafe-lock", action="store_true", help="plant the test-only lock bug (no waiting in line)")
    p.add_argument("--peer-tls", action="store_true", help="members talk mutual TLS (a CA made for the run)")
    p.add_argument("--schedule", type=int, metavar="STEPS", help="print the first STEPS faults and exit")
    a = p.parse_args(argv)
    try:
        kinds = _parse_faults(a.faults)
        seeds = _parse_ints(a.seeds, "seeds")
        sizes = _parse_ints(a.nodes, "nodes")
    except ValueError as e:
        p.error(str(e))
    if any(n not in (3, 5) for n in sizes):
        p.error("--nodes: 3 or 5")
    if a.schedule:
        for k, spec in enumerate(schedule(seeds[0], kinds, sizes[0], a.schedule)):
            print(f"{k:3d} {spec.describe()} (order {list(spec.order)}; then quiet {spec.quiet_s:.1f}s)")
        return 0
    base = a.out or Path(tempfile.gettempdir()) / "raftkv-torture"
    results: list[TortureResult] = []
    for k, seed in enumerate(seeds):
        out = base if a.out and len(seeds) == 1 else base / f"seed-{seed}"
        res = asyncio.run(
            run_torture(
                seed,
                a.duration,
                sizes[k % len(sizes)],
                kinds,
                a.unsafe_stale_reads,
                out,
                clients=a.clients,
                keys_per_epoch=a.keys,
                key_epoch_s=a.key_epoch,
                check_timeout_s=a.check_timeout,
                snapshot_entries=a.snapshot_entries,
                snapshot_trailing=a.snapshot_trailing,
                keep_data=a.keep_data,
                locks=a.locks,
                lock_ttl=a.lock_ttl,
                unsafe_lock=a.unsafe_lock,
                peer_tls=a.peer_tls,
            )
        )
        print(res.summary(), flush=True)
        results.append(res)
    if len(results) > 1:
        print("\n" + TABLE_HEADER)
        for res in results:
            print(res.table_row())
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
