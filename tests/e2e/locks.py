"""The torture harness's lock workload: contenders in their own processes, their own nemesis, and the lock checker.

Theory of operation
-------------------
* **Holders.** ``holders`` processes (:mod:`tests.e2e.lock_holder`) contend for one lock with the client recipe
  and write to a *fenced resource* while they hold it. Each reaches every node through a proxy of its own (a
  :class:`~tests.e2e.harness.FaultProxy` per holder and node), so that it can be cut off from the whole cluster.
* **Their nemesis** (beside the nodes' one, from the same seed): one holder at a time is killed with -9 (and a
  new process started for it a moment later), paused with SIGSTOP for longer than its lease's TTL, or cut off
  from every node for longer than the TTL.
* **The check** (:func:`check_locks`), on the holders' records and on the store's own copy of the resource (every
  fenced write is a key of its own, read back from every node at the end):
  1. *Fencing order*: the resource's writes, in revision order, carry non-decreasing tokens. Two holders whose
     critical sections overlapped in the store's order would show a lower token written after a higher one.
  2. *One holder per token*: no two holder processes were granted the same token.
  3. *Known tokens*: every write in the store names a token its writer was granted.
  4. *Nothing acknowledged lost, nothing refused applied*: a write the holder saw succeed is in the store; one it
     saw refused (its lock key gone) is not.
  5. *Every node agrees* on the resource.
  6. *Progress*: the lock changed hands (reported; the CI test asserts a minimum).

What the lease alone cannot stop, and the check allows: a holder paused past its TTL wakes up believing it holds
the lock while another does. Its next fenced write is refused (its key is gone), which is the point of fencing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftkv.client import connect
from raftkv.errors import RaftError
from tests.e2e.harness import FaultProxy, ProcCluster, free_ports
from tests.e2e.lock_holder import RESOURCE_PREFIX

HOLDER_FAULTS: tuple[tuple[str, float], ...] = (("kill", 0.35), ("pause", 0.35), ("partition", 0.3))


@dataclass(frozen=True, slots=True)
class FencedWrite:
    token: int
    holder: str
    seq: int
    revision: int


@dataclass
class LockReport:
    problems: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class _Holder:
    index: int
    runs: int = 0
    proc: subprocess.Popen[bytes] | None = None
    proxies: dict[int, FaultProxy] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.index}.{self.runs}"


class LockWorkload:
    """Starts the holders, runs their nemesis until the deadline, and gathers what the check needs."""

    def __init__(
        self,
        cluster: ProcCluster,
        out_dir: Path,
        seed: int,
        holders: int,
        *,
        ttl: int = 2,
        unsafe_skip_wait: bool = False,
    ) -> None:
        self.c = cluster
        self.out = out_dir
        self.rng = random.Random(seed * 31 + 7)
        self.seed = seed
        self.ttl = ttl
        self.unsafe_skip_wait = unsafe_skip_wait
        self.holders = [_Holder(h) for h in range(1, holders + 1)]
        self.deadline = 0.0
        self.faults: Counter[str] = Counter()
        self.log: list[tuple[str, str, float, float]] = []
        """(fault, holder, start, end) in monotonic time."""
        ports = iter(free_ports(holders * cluster.n))
        for h in self.holders:
            for j in range(1, cluster.n + 1):
                h.proxies[j] = FaultProxy(next(ports), cluster.client_port[j], rng=random.Random(seed + 97 * j))

    def _records_path(self, h: _Holder) -> Path:
        return self.out / f"holder-{h.index}.jsonl"

    async def start(self, deadline: float) -> None:
        self.deadline = deadline
        for h in self.holders:
            for proxy in h.proxies.values():
                await proxy.start()
            self._spawn(h)

    def _spawn(self, h: _Holder) -> None:
        h.runs += 1
        proxies = [f"127.0.0.1:{h.proxies[j].listen_port}" for j in sorted(h.proxies)]
        mapping = ",".join(
            f"127.0.0.1:{self.c.client_port[j]}=127.0.0.1:{h.proxies[j].listen_port}" for j in sorted(h.proxies)
        )
        cmd = [
            sys.executable,
            "-m",
            "tests.e2e.lock_holder",
            "--holder",
            h.name,
            "--endpoints",
            ",".join(proxies),
            "--address-map",
            mapping,
            "--cluster-id",
            self.c.cluster_id,
            "--deadline",
            f"{self.deadline:.6f}",
            "--out",
            str(self._records_path(h)),
            "--ttl",
            str(self.ttl),
            "--seed",
            str(self.seed * 1000 + h.index * 10 + h.runs),
        ]
        if self.unsafe_skip_wait:
            cmd.append("--unsafe-skip-wait")
        log = open(self.out / f"holder-{h.index}.log", "ab")  # noqa: SIM115 - owned by the process
        h.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
        log.close()

    async def run_faults(self) -> None:
        """One holder fault at a time until the deadline (each healed before the next)."""
        while time.monotonic() < self.deadline:
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))
            if time.monotonic() >= self.deadline:
                break
            holding = self._holding()
            # Most faults hit the holder mid-section (a holder paused or cut off past its TTL there is the case
            # fencing exists for); the others hit waiters, whose places in the queue must go with their leases.
            h = holding if holding is not None and self.rng.random() < 0.6 else self.rng.choice(self.holders)
            kind = self.rng.choices([k for k, _ in HOLDER_FAULTS], [w for _, w in HOLDER_FAULTS])[0]
            hold_s = self.rng.uniform(1.3, 2.5) * self.ttl
            start = time.monotonic()
            if h.proc is None or h.proc.poll() is not None:
                continue
            self.faults[kind] += 1
            if kind == "kill":
                h.proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(h.proc.wait, 5)
                h.proc = None  # killed on purpose: not a crash, even if no new process follows
                await asyncio.sleep(self.rng.uniform(0.2, 1.5))
                if time.monotonic() < self.deadline:
                    self._spawn(h)
            elif kind == "pause":
                h.proc.send_signal(signal.SIGSTOP)
                try:
                    await asyncio.sleep(min(hold_s, max(0.0, self.deadline - time.monotonic())))
                finally:
                    h.proc.send_signal(signal.SIGCONT)
            else:
                for proxy in h.proxies.values():
                    proxy.blocked = True
                try:
                    await asyncio.sleep(min(hold_s, max(0.0, self.deadline - time.monotonic())))
                finally:
                    for proxy in h.proxies.values():
                        proxy.clear()
            self.log.append((kind, h.name, start, time.monotonic()))

    def _holding(self) -> _Holder | None:
        """The holder whose last record says it holds the lock (acquired, or writing), if any."""
        for h in self.holders:
            path = self._records_path(h)
            with contextlib.suppress(OSError, ValueError, IndexError):
                with path.open("rb") as f:
                    f.seek(max(0, path.stat().st_size - 512))
                    last = json.loads(f.read().splitlines()[-1])
                if last["ev"] in ("acquired", "write"):
                    return h
        return None

    async def finish(self, timeout: float = 40.0) -> list[str]:
        """Heal, and wait (bounded) for every holder to stop by itself; kill the ones that do not. Returns what
        went wrong with the processes (an exit code other than 0 or a kill)."""
        problems: list[str] = []
        for h in self.holders:
            for proxy in h.proxies.values():
                proxy.clear()
            if h.proc is not None and h.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(h.proc.pid, signal.SIGCONT)
        end = time.monotonic() + timeout
        for h in self.holders:
            if h.proc is None:
                continue
            while h.proc.poll() is None and time.monotonic() < end:
                await asyncio.sleep(0.1)
            if h.proc.poll() is None:
                problems.append(f"lock-stuck: holder {h.name} had not stopped {timeout:g} s after the deadline")
                h.proc.kill()
                await asyncio.to_thread(h.proc.wait, 5)
            elif h.proc.returncode != 0:
                tail = (self.out / f"holder-{h.index}.log").read_text(errors="replace").strip().splitlines()[-3:]
                problems.append(f"lock-crashed: holder {h.name} exited with {h.proc.returncode}: {' | '.join(tail)}")
        return problems

    async def close(self) -> None:
        for h in self.holders:
            if h.proc is not None and h.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(h.proc.pid, signal.SIGCONT)
                    h.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    h.proc.wait(timeout=5)
            for proxy in h.proxies.values():
                await proxy.close()

    def records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for h in self.holders:
            path = self._records_path(h)
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):  # a line cut short by kill -9
                    out.append(json.loads(line))
        return out


async def fenced_writes(cluster: ProcCluster, node: int) -> list[FencedWrite]:
    """Node ``node``'s own copy of the fenced resource (a serializable read of every key under it)."""
    async with connect([cluster.endpoint(node)], cluster_id=cluster.cluster_id, timeout=10.0) as c:
        r = await c.range(RESOURCE_PREFIX, prefix=True, serializable=True)
    out = []
    for kv in r.kvs:
        _, token, holder, seq = bytes(kv.key).decode().split("/")
        out.append(FencedWrite(int(token), holder, int(seq), kv.mod_revision))
    return out


async def gather_fenced(cluster: ProcCluster) -> tuple[list[FencedWrite], list[str]]:
    """Every node's copy of the resource (the cluster has converged); node 1's, and any disagreement."""
    copies: dict[int, list[FencedWrite]] = {}
    problems: list[str] = []
    for i in range(1, cluster.n + 1):
        try:
            copies[i] = await fenced_writes(cluster, i)
        except RaftError as e:
            problems.append(f"lock-unverified: node {i}'s copy of the fenced resource could not be read ({e})")
    reference = copies.get(1, [])
    for i, copy in sorted(copies.items()):
        if copy != reference:
            problems.append(
                f"diverged: node {i} holds {len(copy)} fenced writes, node 1 {len(reference)} "
                f"(first difference: {sorted(set(copy) ^ set(reference), key=lambda w: w.revision)[:1]})"
            )
    return reference, problems


def check_locks(records: list[dict[str, Any]], fenced: list[FencedWrite]) -> LockReport:
    """The checks of the module docstring, 1-4 and 6 (5 is :func:`gather_fenced`'s)."""
    rep = LockReport()
    granted: dict[int, str] = {}
    for r in records:
        if r["ev"] == "acquired":
            other = granted.setdefault(r["token"], r["h"])
            if other != r["h"]:
                rep.problems.append(f"lock-shared-token: holders {other} and {r['h']} were both granted {r['token']}")
    by_revision = sorted(fenced, key=lambda w: w.revision)
    highest: FencedWrite | None = None
    for w in by_revision:
        if highest is not None and w.token < highest.token:
            rep.problems.append(
                f"lock-unsafe: holder {w.holder} wrote with token {w.token} at revision {w.revision}, after holder "
                f"{highest.holder} wrote with the later token {highest.token} at revision {highest.revision}: their "
                "critical sections overlapped"
            )
            break
        highest = w if highest is None or w.token > highest.token else highest
        if granted.get(w.token) != w.holder:
            rep.problems.append(
                f"lock-unknown-token: the resource holds a write of holder {w.holder} with token {w.token}, "
                f"which was granted to {granted.get(w.token, 'no one')}"
            )
    stored = {(w.holder, w.token, w.seq) for w in fenced}
    for r in records:
        if r["ev"] != "write":
            continue
        there = (r["h"], r["token"], r["seq"]) in stored
        if r["ok"] is True and not there:
            rep.problems.append(f"lost: holder {r['h']}'s fenced write {r['token']}/{r['seq']} was acknowledged")
        if r["ok"] is False and there:
            rep.problems.append(
                f"lock-unfenced: holder {r['h']}'s write {r['token']}/{r['seq']} was refused, yet applied"
            )
    events = Counter(r["ev"] for r in records)
    rep.stats = {
        "acquired": events["acquired"],
        "holdings that wrote": len({w.token for w in fenced}),
        "fenced writes": len(fenced),
        "writes refused": sum(1 for r in records if r["ev"] == "write" and r["ok"] is False),
        "writes unknown": sum(1 for r in records if r["ev"] == "write" and r["ok"] is None),
        "lost leases": events["lost"],
        "acquire failed": events["acquire-failed"],
    }
    return rep
