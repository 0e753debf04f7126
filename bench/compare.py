"""raftkv vs etcd vs PySyncObj, side by side, in one run on this machine.

    PYTHONPATH=. .venv/bin/python bench/compare.py [--quick] [--profile] [--json out.json]

Starts a 3-node raftkv cluster, a 3-member etcd cluster (Debian's ``etcd-server``, installed with apt-get if
missing, or skipped with a message) and a 3-process PySyncObj cluster (``pysyncobj``, pip-installed into this
interpreter if missing), one system at a time, drives each with the same load shape (N operations in flight,
100-byte values, fixed duration, bounded op count) and prints one markdown table.

* **Library rows** compare raftkv's embedding API (``RaftNode.propose`` / ``read_barrier`` in this process, the
  leader; two ``raftkv serve --state-machine dict`` followers) with PySyncObj (``@replicated`` calls with
  callbacks inside the leader's process: ``bench/compare_pysyncobj_node.py``), tuned and with its defaults.
  Both replicate the same object, a dict of keys to 100-byte values (raftkv's ``ReplicatedDict``).
  Both propose in-process on the leader; the CPU column is the leader+load process.
* **Service rows** compare ``raftkv.Client`` against three ``raftkv serve`` (KV store on LMDB) with etcd's
  gRPC API (``grpc.aio`` with the ``etcd3aio`` package's stubs, one channel) and its HTTP/JSON gateway
  (``/v3/kv/put``, ``/v3/kv/range``; one keep-alive connection per request in flight). The CPU column is this
  process: the load generator alone.
* **Failover**: kill -9 the leader, time until a write succeeds; 5 trials (3 with ``--quick``).

The machine is shared and its speed drifts, so the measurement is split into rounds (3; 1 with ``--quick``):
each round starts every system in turn (in reverse order every other round), runs every load shape for
duration/rounds seconds and stops it; a row merges its rounds (ops and seconds summed, latencies pooled).

Every child process is stopped by PID at the end (and gets SIGKILL from the kernel if this process dies).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime
import importlib
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from pathlib import Path
from typing import Any

from raftkv.cli.local import free_ports
from raftkv.client import StatusReport, connect
from raftkv.raft.types import NodeId
from raftkv.runtime.config import NodeConfig
from raftkv.runtime.node import RaftNode
from raftkv.runtime.statemachine import ReplicatedDict
from raftkv.transport.address import Address

HERE = Path(__file__).resolve().parent
VALUE = b"x" * 100
PUT_KEYS = 10_000
GET_KEYS = 1_000
PUT_KEY_BYTES = [f"k{k}".encode() for k in range(PUT_KEYS)]
GET_KEY_BYTES = PUT_KEY_BYTES[:GET_KEYS]

# Run a child with PR_SET_PDEATHSIG=SIGKILL (kept across exec): if this process dies, the kernel kills it.
_PDEATHSIG = "import ctypes,os,sys; ctypes.CDLL('libc.so.6').prctl(1, 9); os.execvp(sys.argv[1], sys.argv[1:])"

ROWS: list[tuple[str, str]] = [
    ("lib_seq", "library: sequential proposals (1 in flight)"),
    ("lib_64", "library: proposals, 64 in flight"),
    ("lib_256", "library: proposals, 256 in flight"),
    ("lib_4096", "library: proposals, 4,096 in flight (deep pipelining)"),
    ("lib_get64", "library: linearizable reads, 64 in flight"),
    ("svc_seq", "service: sequential puts (1 in flight)"),
    ("svc_64", "service: puts, 64 in flight"),
    ("svc_256", "service: puts, 256 in flight"),
    ("svc_get64", "service: linearizable gets, 64 in flight"),
    ("failover", "failover: kill -9 leader → first successful write"),
]
SHAPES: dict[str, tuple[str, int]] = {
    "seq": ("put", 1),
    "64": ("put", 64),
    "256": ("put", 256),
    "4096": ("put", 4096),
    "get64": ("get", 64),
}
LIBRARY_ONLY = {"4096"}
"""Shapes run at the library level only (PySyncObj's best figure needs 4,096 in flight per node)."""
SYSTEMS = ["raftkv", "etcd", "etcd_http", "pysyncobj", "pysyncobj_default", "raftkv_gw"]
"""``raftkv_gw``: the raftkv service cluster driven through its etcd gateway (``--listen-etcd``) by the very same
gRPC client code as etcd's column (issue 18)."""
PSO_TUNED = ["--append-period", "0.001", "--tick-period", "0.001"]


@dataclasses.dataclass
class Run:
    ops: int
    seconds: float
    cpu_seconds: float
    leader_changes: int | None
    latencies: list[float] = dataclasses.field(default_factory=list, repr=False)
    errors: int = 0
    note: str = ""
    rounds: int = 1
    leader_cpu_seconds: float = 0.0
    """CPU of the leader's process during the run (for library rows: the leader+load process)."""
    nodes_cpu_seconds: float = 0.0
    """CPU of all three nodes' processes during the run."""

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    @property
    def p50_ms(self) -> float:
        return pct(self.latencies, 0.5) * 1000

    @property
    def p99_ms(self) -> float:
        return pct(self.latencies, 0.99) * 1000

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: Run) -> Run:
        lc = None if self.leader_changes is None or other.leader_changes is None else self.leader_changes
        return Run(
            ops=self.ops + other.ops,
            seconds=self.seconds + other.seconds,
            cpu_seconds=self.cpu_seconds + other.cpu_seconds,
            leader_changes=lc if lc is None else lc + (other.leader_changes or 0),
            latencies=self.latencies + other.latencies,
            errors=self.errors + other.errors,
            note=self.note or other.note,
            rounds=self.rounds + other.rounds,
            leader_cpu_seconds=self.leader_cpu_seconds + other.leader_cpu_seconds,
            nodes_cpu_seconds=self.nodes_cpu_seconds + other.nodes_cpu_seconds,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "seconds": round(self.seconds, 3),
            "ops_per_s": round(self.ops_per_s, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "cpu_percent": round(self.cpu_percent, 1),
            "leader_cpu_percent": round(100 * self.leader_cpu_seconds / self.seconds, 1) if self.seconds else 0,
            "nodes_cpu_percent": round(100 * self.nodes_cpu_seconds / self.seconds, 1) if self.seconds else 0,
            "leader_changes": self.leader_changes,
            "errors": self.errors,
            "note": self.note,
            "rounds": self.rounds,
        }


@dataclasses.dataclass
class Failover:
    times_ms: list[float] = dataclasses.field(default_factory=list)
    failed: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")

    @property
    def max(self) -> float:
        return max(self.times_ms) if self.times_ms else float("nan")

    def summary(self) -> dict[str, Any]:
        return {"times_ms": [round(t) for t in self.times_ms], "failed": self.failed}


Cell = Run | Failover | str  # a str: why the cell is empty


@dataclasses.dataclass
class Settings:
    duration: float
    """Measured seconds per row in all (split over the rounds)."""
    warmup: float
    max_ops: int
    trials: int
    rounds: int
    profile: bool
    etcd_target: str
    tmp: Path
    etcd_grpc: bool = False
    shapes: tuple[str, ...] = tuple(SHAPES)
    failover: bool = True

    @property
    def slice(self) -> float:
        return self.duration / self.rounds


class Results:
    def __init__(self) -> None:
        self.cells: dict[tuple[str, str], Cell] = {}
        self.notes: list[str] = []

    def add_run(self, row: str, system: str, run: Run) -> None:
        old = self.cells.get((row, system))
        self.cells[(row, system)] = old.merge(run) if isinstance(old, Run) else run

    def add_failover(self, system: str, ms: float | None) -> Failover:
        fo = self.cells.get(("failover", system))
        if not isinstance(fo, Failover):
            fo = self.cells[("failover", system)] = Failover()
        if ms is None:
            fo.failed += 1
        else:
            fo.times_ms.append(ms)
        return fo

    def skip(self, system: str, why: str) -> None:
        self.cells[("skipped", system)] = why


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class NodeCpu:
    """CPU used by the nodes' processes between ``start`` and ``stop``: the leader's and all three's."""

    def __init__(self, pids: list[int], leader: int | None) -> None:
        self.pids = pids
        self.leader = leader
        self.before = {p: proc_cpu(p) for p in pids}

    def stop(self, run: Run) -> Run:
        used = {p: proc_cpu(p) - self.before[p] for p in self.pids}
        run.nodes_cpu_seconds = sum(used.values())
        run.leader_cpu_seconds = used.get(self.leader, 0.0) if self.leader is not None else 0.0
        return run


def pkg_version(name: str) -> str:
    try:
        return _version(name)
    except PackageNotFoundError:
        return "?"


def say(text: str) -> None:
    print(text, flush=True)


# ==============================================================================================================
# Child processes: started with a parent-death signal, tracked, stopped by PID
# ==============================================================================================================


class Children:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.aprocs: list[asyncio.subprocess.Process] = []

    def spawn(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            p = subprocess.Popen(
                [sys.executable, "-c", _PDEATHSIG, *cmd], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self.procs.append(p)
        return p

    async def spawn_pipe(self, cmd: list[str], log: Path) -> asyncio.subprocess.Process:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as err:
            p = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err, limit=1 << 26
            )
        self.aprocs.append(p)
        return p

    @staticmethod
    def stop(p: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=grace)

    async def stop_async(self, p: asyncio.subprocess.Process, grace: float = 5.0) -> None:
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
            try:
                await asyncio.wait_for(p.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(p.wait(), grace)

    async def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
        for ap in self.aprocs:
            await self.stop_async(ap)

    def kill_all_now(self) -> None:
        """Last resort, outside the event loop: SIGKILL whatever is still running."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
        for ap in self.aprocs:
            if ap.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(ap.pid, signal.SIGKILL)


# ==============================================================================================================
# The load shape: N workers, each with one operation in flight, for a fixed time or a bounded count
# ==============================================================================================================


async def drive(op: Callable[[int], Awaitable[None]], inflight: int, duration: float, max_ops: int) -> Run:
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(max_ops))
    stop_at = time.perf_counter() + duration

    async def worker() -> None:
        for i in counter:
            if time.perf_counter() >= stop_at or len(errors) > 1000:
                return
            t0 = time.perf_counter()
            try:
                await op(i)
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
                await asyncio.sleep(0.01)
                continue
            latencies.append(time.perf_counter() - t0)

    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(inflight))), duration + 60)
    elapsed = time.perf_counter() - t0  # includes draining the last operations, as their latencies are counted
    return Run(
        ops=len(latencies),
        seconds=elapsed,
        cpu_seconds=cpu_seconds() - cpu0,
        leader_changes=None,
        latencies=latencies,
        errors=len(errors),
        note=errors[0][:160] if errors else "",
    )


async def measured(
    s: Settings,
    op: Callable[[int], Awaitable[None]],
    inflight: int,
    term: Callable[[], Awaitable[int]],
    pids: tuple[list[int], int | None],
) -> Run:
    """A warm-up at the same concurrency (not counted), then the measured run, with the term before and after
    and the CPU the nodes (``pids``: all of them, and the leader's) used during it."""
    if s.warmup:
        await drive(op, inflight, s.warmup, s.max_ops)
    term0 = await term()
    cpu = NodeCpu(*pids)
    run = cpu.stop(await drive(op, inflight, s.slice, s.max_ops))
    run.leader_changes = await term() - term0
    return run


def show(system: str, shape: str, r: Cell) -> None:
    if isinstance(r, Run):
        lc = "?" if r.leader_changes is None else str(r.leader_changes)
        err = f", {r.errors} errors ({r.note})" if r.errors else ""
        say(
            f"    {system:<18} {shape:<6} {r.ops_per_s:>9,.0f} ops/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  "
            f"load-gen CPU {r.cpu_percent:4.0f}%  nodes {fmt_cell(r, 'nodes')}  leader changes {lc}{err}"
        )
    elif isinstance(r, Failover):
        say(f"    {system:<18} failover median {r.median:.0f} ms, max {r.max:.0f} ms over {len(r.times_ms)} trials")


class System:
    """One system under test: started and stopped once per round."""

    title = ""
    level = ""  # "lib" or "svc": which rows it fills
    has_failover = False
    failover_columns: tuple[str, ...] = ()

    def __init__(self, s: Settings, kids: Children, results: Results) -> None:
        self.s = s
        self.kids = kids
        self.results = results
        self.round = 0

    def running(self) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def shape(self, shape: str) -> dict[str, Run]:
        raise NotImplementedError

    async def failover_trial(self, trial: int) -> float | None:
        """kill -9 the leader; ms until a write succeeded (None: none within the deadline)."""
        raise NotImplementedError

    async def finish(self, last_round: bool) -> None:
        """Called in the cluster's last moments of each round (before it stops)."""


# ==============================================================================================================
# raftkv
# ==============================================================================================================


def raftkv_serve_cmd(i: int, root: Path, peer: dict[int, int], client: dict[int, int], *extra: str) -> list[str]:
    peers = ",".join(f"{j}=127.0.0.1:{peer[j]}" for j in sorted(peer))
    return [
        sys.executable, "-m", "raftkv.cli", "serve", "--id", str(i), "--cluster-id", "compare",
        "--data-dir", str(root / f"n{i}"), "--listen-peer", f"127.0.0.1:{peer[i]}",
        "--listen-client", f"127.0.0.1:{client[i]}", "--peers", peers, "--log-level", "warning", *extra,
    ]  # fmt: skip


class RaftkvLibrary(System):
    """RaftNode in this process as the leader, with two ``raftkv serve --state-machine dict`` followers. As in
    bench/cluster.py, the followers wait longer before campaigning (here 100 ticks = 1 s) so that the in-process
    node wins the first election; on a loaded machine it may still lose, and then the cluster is started anew
    (at most 3 attempts)."""

    title = "raftkv, library level (RaftNode.propose / read_barrier in this process = the leader; fsync on)"
    level = "lib"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        for attempt in range(3):
            root = self.s.tmp / f"raftkv-lib-{self.round}-{attempt}"
            ports = free_ports(6)
            peer = {1: ports[0], 2: ports[1], 3: ports[2]}
            client = {1: ports[3], 2: ports[4], 3: ports[5]}
            extra = ("--state-machine", "dict", "--election-ticks", "100")
            self.followers = [
                self.kids.spawn(raftkv_serve_cmd(i, root, peer, client, *extra), root / f"n{i}.log") for i in (2, 3)
            ]
            cfg = NodeConfig(
                id=NodeId(1),
                data_dir=root / "n1",
                listen_peer=Address("127.0.0.1", peer[1]),
                peers={NodeId(j): Address("127.0.0.1", peer[j]) for j in peer},
                cluster_id="compare",
                log_level="warning",
            )
            self.sm = ReplicatedDict()
            self.node = node = RaftNode(cfg, self.sm)
            await node.start()
            try:
                async with asyncio.timeout(15):
                    while node.core is None or node.core.role.value != "leader":
                        await asyncio.sleep(0.05)
                break
            except TimeoutError:
                leader = node.core.leader if node.core is not None else None
                say(f"    the in-process node is not the leader after 15 s (leader: {leader}); starting anew")
                await node.aclose(transfer_leadership=False)
                for p in self.followers:
                    Children.stop(p)
        else:
            raise RuntimeError("the in-process raftkv node did not win an election in 3 attempts")
        try:
            # The keys the gets read, as PySyncObj's preload writes them.
            await asyncio.gather(*(node.propose(ReplicatedDict.put_command(k, VALUE)) for k in GET_KEY_BYTES))
            yield
        finally:
            await node.aclose(transfer_leadership=False)
            for p in self.followers:
                Children.stop(p)

    async def shape(self, shape: str) -> dict[str, Run]:
        node, sm = self.node, self.sm
        kind, n = SHAPES[shape]

        async def term() -> int:
            assert node.core is not None
            return int(node.core.term)

        async def put(i: int) -> None:
            await node.propose(ReplicatedDict.put_command(PUT_KEY_BYTES[i % PUT_KEYS], VALUE), timeout=10)

        async def get(i: int) -> None:
            await node.read_barrier(timeout=10)
            sm.data.get(GET_KEY_BYTES[i % GET_KEYS])  # the read itself: a local lookup once the barrier has passed

        pids = [os.getpid(), *(p.pid for p in self.followers)]
        return {"raftkv": await measured(self.s, put if kind == "put" else get, n, term, (pids, os.getpid()))}


class RaftkvService(System):
    """Three ``raftkv serve`` processes (KV store on LMDB, fsync on, default timeouts); ``raftkv.Client``."""

    title = "raftkv, service level (3 x `raftkv serve`, KV on LMDB, fsync on; raftkv.Client in this process)"
    level = "svc"
    has_failover = True
    failover_columns = ("raftkv",)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self.root = self.s.tmp / f"raftkv-svc-{self.round}"
        ports = free_ports(9)
        self.peer = {1: ports[0], 2: ports[1], 3: ports[2]}
        self.client = {1: ports[3], 2: ports[4], 3: ports[5]}
        self.etcd = {1: ports[6], 2: ports[7], 3: ports[8]} if self.s.etcd_grpc else {}
        """The etcd gateways (issue 18), when the etcd gRPC stubs are there to drive them."""
        self.procs = {i: self.start(i) for i in self.peer}
        endpoints = [Address("127.0.0.1", self.client[i]) for i in self.peer]
        try:
            async with connect(endpoints, cluster_id="compare", timeout=10.0) as kv:
                self.kv = kv
                await self.settled()
                await kv.put("warmup", VALUE)
                await asyncio.gather(*(kv.put(f"k{k}", VALUE) for k in range(GET_KEYS)))
                yield
        finally:
            for p in self.procs.values():
                Children.stop(p)

    def start(self, i: int) -> subprocess.Popen[bytes]:
        gateway = ("--listen-etcd", f"127.0.0.1:{self.etcd[i]}") if self.etcd else ()
        cmd = raftkv_serve_cmd(i, self.root, self.peer, self.client, *gateway)
        return self.kids.spawn(cmd, self.root / f"n{i}.log")

    async def reports(self) -> list[StatusReport]:
        return [r for r in await self.kv.admin.statuses(1.0) if isinstance(r, StatusReport)]

    async def settled(self, timeout: float = 30.0) -> int:
        """Wait until all three nodes answer and agree on one leader; returns its id."""
        async with asyncio.timeout(timeout):
            while True:
                rs = await self.reports()
                leaders = {r.leader for r in rs}
                if len(rs) == 3 and len(leaders) == 1 and None not in leaders:
                    leader = leaders.pop()
                    assert leader is not None
                    return leader
                await asyncio.sleep(0.05)

    async def term(self) -> int:
        return max(r.term for r in await self.reports())

    async def put(self, i: int) -> None:
        await self.kv.put(f"k{i % PUT_KEYS}", VALUE)

    async def get(self, i: int) -> None:
        await self.kv.get(f"k{i % GET_KEYS}")

    async def shape(self, shape: str) -> dict[str, Run]:
        kind, n = SHAPES[shape]
        leader = await self.settled()
        pids = ([p.pid for p in self.procs.values()], self.procs[leader].pid)
        out = {"raftkv": await measured(self.s, self.put if kind == "put" else self.get, n, self.term, pids)}
        if self.etcd:
            # Spread over the members or sent to the leader, as etcd's column is (--etcd-target).
            targets = [self.etcd[leader]] if self.s.etcd_target == "leader" else list(self.etcd.values())
            out["raftkv_gw"] = await grpc_kv_shape(self.s, targets, kind, n, self.term, pids)
        return out

    async def failover_trial(self, trial: int) -> float | None:
        leader = await self.settled()
        await self.kv.put(f"warm{trial}", "x")
        await asyncio.sleep(0.2 + 0.05 * (trial % 3))  # land the kill at varied heartbeat phases
        self.procs[leader].kill()
        self.procs[leader].wait()
        killed = time.perf_counter()
        try:
            await self.kv.put(f"after{trial}", "x", timeout=30)  # the client retries until a leader accepts it
            return (time.perf_counter() - killed) * 1000
        except Exception as e:
            say(f"    raftkv: no write within 30 s after kill -9 ({e})")
            return None
        finally:
            self.procs[leader] = self.start(leader)
            await self.settled()

    async def finish(self, last_round: bool) -> None:
        if last_round and self.s.profile:
            leader = await self.settled()
            await profile_leader(
                self.s, self.procs[leader].pid, lambda: drive(self.put, 64, self.s.slice, self.s.max_ops)
            )


async def profile_leader(s: Settings, pid: int, load: Callable[[], Awaitable[Run]]) -> None:
    """An extra put@64 run (not in the table) with py-spy sampling the leader; prints where its time goes."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        say("  profile: py-spy not found (pip install py-spy); skipped")
        return
    out = s.tmp / "profile.txt"
    seconds = max(1, round(s.slice))
    rec = await asyncio.create_subprocess_exec(
        pyspy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200", "--format", "raw",
        "--output", str(out), "--nonblocking", "--threads",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        cpu = NodeCpu([pid], pid)
        run = cpu.stop(await load())
        _out, err = await asyncio.wait_for(rec.communicate(), s.slice + 30)
    finally:
        if rec.returncode is None:
            rec.kill()
            await rec.wait()
    show("raftkv (profiled)", "64", run)
    say(f"  profile: the leader process used {100 * run.leader_cpu_seconds / run.seconds:.0f}% of a core (from /proc)")
    if not out.exists():
        say(f"  profile: py-spy wrote nothing ({err.decode(errors='replace').strip()[:300]})")
        return
    summarize_profile(out, seconds * 200)
    keep = Path(tempfile.gettempdir()) / "raftkv-compare-profile.txt"
    shutil.copy(out, keep)
    say(f"  profile: raw stacks kept in {keep} (flamegraph-compatible 'collapsed' format)")


def summarize_profile(path: Path, wall_samples: float) -> None:
    self_t: dict[str, int] = {}
    incl: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[frames[0]] = threads.get(frames[0], 0) + count
        names = [_frame_name(f) for f in frames[1:]] or [frames[0]]
        self_t[names[-1]] = self_t.get(names[-1], 0) + count
        for name in set(names):
            incl[name] = incl.get(name, 0) + count
    if not total:
        say("  profile: no samples")
        return
    say(
        f"  profile: {total} samples py-spy judged active, at 200 Hz (= {100 * total / wall_samples:.0f}% of one core "
        "over all threads; py-spy's idle detection is heuristic)"
    )
    for name, n in sorted(threads.items(), key=lambda kv: -kv[1])[:4]:
        say(f"    thread {name}: {100 * n / total:.0f}%")
    say("    self time (leaf frame), share of on-CPU samples:")
    for name, n in sorted(self_t.items(), key=lambda kv: -kv[1])[:15]:
        say(f"      {100 * n / total:5.1f}%  {name}")
    say("    inclusive time, share of on-CPU samples (entry points and event-loop plumbing left out):")
    boring = ("runpy", "click/", "asyncio/runners", "asyncio/base_events", "threading.py", "raftkv/cli/")
    interesting = [(k, v) for k, v in incl.items() if not any(b in k for b in boring)]
    for name, n in sorted(interesting, key=lambda kv: -kv[1])[:20]:
        say(f"      {100 * n / total:5.1f}%  {name}")


def _frame_name(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (file.py)'."""
    func, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{func} ({'/'.join(Path(where).parts[-2:])})" if where else func


# ==============================================================================================================
# etcd
# ==============================================================================================================


def ensure_etcd(no_install: bool) -> tuple[str | None, str]:
    """Returns (path to etcd or None, what was done / why it is skipped)."""
    found = shutil.which("etcd")
    if found:
        return found, "found"
    if no_install:
        return None, "etcd is not installed and --no-install was given (apt-get install etcd-server)"
    if not shutil.which("apt-get"):
        return None, "etcd is not installed and there is no apt-get to install the Debian package etcd-server"
    if os.geteuid() != 0:
        return None, "etcd is not installed; installing etcd-server with apt-get needs root"
    say("etcd not found: installing the Debian package etcd-server (apt-get install -y etcd-server) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    last = ""
    for cmds in (
        [["apt-get", "install", "-y", "etcd-server"]],
        [["apt-get", "update"], ["apt-get", "install", "-y", "etcd-server"]],
    ):
        for cmd in cmds:
            try:
                r = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600)
            except subprocess.TimeoutExpired:
                return None, f"`{' '.join(cmd)}` did not finish within 600 s"
            last = r.stderr.strip()[-300:]
        if shutil.which("etcd"):
            break
    else:
        return None, f"apt-get could not install etcd-server: {last}"
    return shutil.which("etcd"), "installed the Debian package etcd-server with apt-get"


class Http:
    """A minimal HTTP/1.1 keep-alive client connection (etcd's JSON gateway answers with Content-Length)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
        async with asyncio.timeout(timeout):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            assert self.reader is not None
            try:
                self.writer.write(
                    b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
                )
                head = await self.reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = -1
                chunked = False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    lname = name.strip().lower()
                    if lname == b"content-length":
                        length = int(value)
                    elif lname == b"transfer-encoding" and b"chunked" in value.lower():
                        chunked = True
                if chunked:
                    data = b""
                    while True:
                        size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        data += await self.reader.readexactly(size + 2)
                        if size == 0:
                            break
                    return status, data
                return status, await self.reader.readexactly(max(0, length))
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def etcd_status(port: int, timeout: float = 1.0) -> dict[str, Any] | None:
    conn = Http(port)
    try:
        status, body = await conn.post("/v3/maintenance/status", b"{}", timeout)
        return json.loads(body) if status == 200 else None
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        return None
    finally:
        conn.close()


class Etcd(System):
    """Three etcd members on 127.0.0.1 with default timeouts (heartbeat 100 ms, election 1000 ms), fsync on."""

    level = "svc"
    has_failover = True
    failover_columns = ("etcd", "etcd_http")  # one measurement of the cluster, shown in both columns

    def __init__(self, s: Settings, kids: Children, results: Results, etcd: str) -> None:
        super().__init__(s, kids, results)
        self.etcd = etcd
        self.title = (
            f"etcd, service level (3 members, defaults, fsync on; {'gRPC and ' if s.etcd_grpc else ''}"
            f"the HTTP/JSON gateway, requests to the {s.etcd_target})"
        )
        self.put_bodies = [
            json.dumps({"key": b64(f"k{k}".encode()), "value": b64(VALUE)}).encode() for k in range(PUT_KEYS)
        ]
        self.get_bodies = [json.dumps({"key": b64(f"k{k}".encode())}).encode() for k in range(GET_KEYS)]

    def cmd(self, i: int) -> list[str]:
        peer, client = self.peer, self.client
        return [
            self.etcd, "--name", f"e{i}", "--data-dir", str(self.root / f"e{i}"),
            "--listen-client-urls", f"http://127.0.0.1:{client[i]}",
            "--advertise-client-urls", f"http://127.0.0.1:{client[i]}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer[i]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer[i]}",
            "--initial-cluster", ",".join(f"e{j}=http://127.0.0.1:{peer[j]}" for j in peer),
            "--initial-cluster-state", "new", "--initial-cluster-token", "compare",
            "--logger", "zap", "--log-level", "warn",
        ]  # fmt: skip

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self.root = self.s.tmp / f"etcd-{self.round}"
        ports = free_ports(6)
        self.peer = {i: ports[i - 1] for i in (1, 2, 3)}
        self.client = {i: ports[i + 2] for i in (1, 2, 3)}
        self.procs = {i: self.kids.spawn(self.cmd(i), self.root / f"e{i}.log") for i in self.peer}
        try:
            leader = await self.settled()
            warm = Http(self.client[leader])
            try:
                for k in range(GET_KEYS):
                    status, body = await warm.post("/v3/kv/put", self.put_bodies[k])
                    if status != 200:
                        raise RuntimeError(f"etcd put failed: HTTP {status} {body[:200]!r}")
            finally:
                warm.close()
            yield
        finally:
            for p in self.procs.values():
                Children.stop(p)

    async def statuses(self) -> dict[int, dict[str, Any]]:
        got = await asyncio.gather(*(etcd_status(self.client[i]) for i in self.peer))
        return {i: st for i, st in zip(self.peer, got, strict=True) if st is not None}

    async def settled(self, timeout: float = 60.0) -> int:
        """Wait until all three members answer and agree on a leader; returns the leader's index (1..3)."""
        async with asyncio.timeout(timeout):
            while True:
                sts = await self.statuses()
                leaders = {st.get("leader") for st in sts.values()}
                if len(sts) == 3 and len(leaders) == 1 and None not in leaders:
                    leader = leaders.pop()
                    for i, st in sts.items():
                        if st["header"]["member_id"] == leader:
                            return i
                await asyncio.sleep(0.1)

    async def term(self) -> int:
        return max(int(st.get("raftTerm", 0)) for st in (await self.statuses()).values())

    async def shape(self, shape: str) -> dict[str, Run]:
        kind, n = SHAPES[shape]
        out: dict[str, Run] = {}
        leader = await self.settled()
        targets = [self.client[leader]] if self.s.etcd_target == "leader" else list(self.client.values())
        pids = ([p.pid for p in self.procs.values()], self.procs[leader].pid)
        if self.s.etcd_grpc:
            out["etcd"] = await self.grpc_shape(targets, kind, n, pids)
        out["etcd_http"] = await self.http_shape(targets, kind, n, pids)
        return out

    async def http_shape(self, targets: list[int], kind: str, n: int, pids: tuple[list[int], int | None]) -> Run:
        """n keep-alive HTTP/1.1 connections to the JSON gateway, one per request in flight."""
        conns = [Http(targets[w % len(targets)]) for w in range(n)]
        free = list(conns)
        path, bodies = ("/v3/kv/put", self.put_bodies) if kind == "put" else ("/v3/kv/range", self.get_bodies)

        async def op(i: int) -> None:
            conn = free.pop()
            try:
                status, body = await conn.post(path, bodies[i % len(bodies)])
            finally:
                free.append(conn)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:120]!r}")

        try:
            return await measured(self.s, op, n, self.term, pids)
        finally:
            for c in conns:
                c.close()

    async def grpc_shape(self, targets: list[int], kind: str, n: int, pids: tuple[list[int], int | None]) -> Run:
        return await grpc_kv_shape(self.s, targets, kind, n, self.term, pids)

    async def failover_trial(self, trial: int) -> float | None:
        leader = await self.settled()
        warm = Http(self.client[leader])
        try:
            await warm.post("/v3/kv/put", self.put_bodies[trial])
        finally:
            warm.close()
        await asyncio.sleep(0.2 + 0.05 * (trial % 3))
        self.procs[leader].kill()
        self.procs[leader].wait()
        killed = time.perf_counter()
        try:
            survivors = [self.client[i] for i in self.peer if i != leader]
            ok = await etcd_first_write(survivors, self.put_bodies[trial], 30.0)
            return None if ok is None else (ok - killed) * 1000
        finally:
            self.procs[leader] = self.kids.spawn(self.cmd(leader), self.root / f"e{leader}.log")
            await self.settled()


async def grpc_kv_shape(
    s: Settings,
    targets: list[int],
    kind: str,
    n: int,
    term: Callable[[], Awaitable[int]],
    pids: tuple[list[int], int | None],
) -> Run:
    """etcd's native API: KV.Put / KV.Range (linearizable by default) over one grpc.aio channel per target,
    the way an etcd client multiplexes its requests on one HTTP/2 connection. Stubs: the etcd3aio package's.
    The same code drives etcd and raftkv's etcd gateway."""
    grpc_aio: Any = importlib.import_module("grpc.aio")
    rpc_pb2: Any = importlib.import_module("etcd3aio.proto.etcd.api.etcdserverpb.rpc_pb2")
    rpc_pb2_grpc: Any = importlib.import_module("etcd3aio.proto.etcd.api.etcdserverpb.rpc_pb2_grpc")

    channels = [grpc_aio.insecure_channel(f"127.0.0.1:{port}") for port in targets]
    stubs = [rpc_pb2_grpc.KVStub(c) for c in channels]

    async def put(i: int) -> None:
        await stubs[i % len(stubs)].Put(rpc_pb2.PutRequest(key=PUT_KEY_BYTES[i % PUT_KEYS], value=VALUE), timeout=10)

    async def get(i: int) -> None:
        await stubs[i % len(stubs)].Range(rpc_pb2.RangeRequest(key=GET_KEY_BYTES[i % GET_KEYS]), timeout=10)

    try:
        for stub in stubs:  # every target answering (a gateway may still be starting)
            await stub.Range(rpc_pb2.RangeRequest(key=GET_KEY_BYTES[0]), timeout=30, wait_for_ready=True)
        return await measured(s, put if kind == "put" else get, n, term, pids)
    finally:
        for c in channels:
            await c.close()


async def etcd_first_write(ports: list[int], body: bytes, deadline_s: float) -> float | None:
    """Start a put on every surviving member every 20 ms (each on a new connection, each allowed 10 s) until one
    succeeds. A member holds a put it cannot commit for its request timeout (~7 s with the defaults), so a single
    sequential client would measure that timeout rather than the election: this measures the cluster."""
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    tasks: set[asyncio.Task[None]] = set()

    async def attempt(port: int) -> None:
        conn = Http(port)
        try:
            status, _ = await conn.post("/v3/kv/put", body, timeout=10.0)
            if status == 200 and not done.done():
                done.set_result(time.perf_counter())
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            conn.close()

    end = time.monotonic() + deadline_s
    try:
        while time.monotonic() < end and not done.done():
            for port in ports:
                if len(tasks) < 400:
                    t = asyncio.ensure_future(attempt(port))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), 0.02)
        return done.result() if done.done() else None
    finally:
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ==============================================================================================================
# PySyncObj
# ==============================================================================================================


# ==============================================================================================================
# PySyncObj
# ==============================================================================================================


def ensure_pip(module: str, package: str, no_install: bool) -> tuple[bool, str]:
    """Is ``module`` importable here? If not, pip-install ``package`` into this interpreter (unless told not to)."""
    if importlib.util.find_spec(module) is not None:
        return True, "found"
    if no_install:
        return False, f"{package} is not installed and --no-install was given (pip install {package})"
    say(f"{package} not found: installing it with `{sys.executable} -m pip install {package}` ...")
    try:
        r = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", package],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        return False, f"pip install {package} did not finish within 300 s"
    importlib.invalidate_caches()
    if r.returncode != 0 or importlib.util.find_spec(module) is None:
        return False, f"pip could not install {package}: {r.stderr.strip()[-300:]}"
    return True, f"installed {package} with pip"


class PsoNode:
    def __init__(self, proc: asyncio.subprocess.Process, addr: str) -> None:
        self.proc = proc
        self.addr = addr

    async def ask(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        await self.proc.stdin.drain()
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(
                f"PySyncObj node {self.addr}: no answer to {req.get('cmd')} within {timeout} s"
            ) from None
        if not line:
            raise RuntimeError(f"PySyncObj node {self.addr} exited (code {self.proc.returncode})")
        out: dict[str, Any] = json.loads(line)
        return out


class PySyncObj(System):
    """Three ``bench/compare_pysyncobj_node.py`` processes; the load runs inside the leader's process."""

    level = "lib"

    def __init__(self, s: Settings, kids: Children, results: Results, name: str, tuned: bool) -> None:
        super().__init__(s, kids, results)
        self.name = name
        self.extra = PSO_TUNED if tuned else []
        self.has_failover = tuned
        self.failover_columns = (name,)
        self.title = (
            "PySyncObj, library level, tuned (batching on, appendEntriesPeriod = autoTickPeriod = 1 ms; no fsync)"
            if tuned
            else "PySyncObj, library level, defaults (batching on, appendEntriesPeriod 100 ms, autoTick 50 ms)"
        )

    async def start(self, i: int) -> PsoNode:
        others = ",".join(a for j, a in enumerate(self.addrs) if j != i)
        cmd = [
            sys.executable, str(HERE / "compare_pysyncobj_node.py"), "--self", self.addrs[i], "--partners", others,
            "--dir", str(self.root / f"n{i}"), *self.extra,
        ]  # fmt: skip
        return PsoNode(await self.kids.spawn_pipe(cmd, self.root / f"n{i}.log"), self.addrs[i])

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self.root = self.s.tmp / f"{self.name}-{self.round}"
        self.addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
        self.nodes: list[PsoNode] = []
        try:
            for i in range(3):
                self.nodes.append(await self.start(i))
            leader = await self.settled()
            await self.nodes[leader].ask({"cmd": "preload", "keys": GET_KEYS}, 60)
            yield
        finally:
            for n in self.nodes:
                with contextlib.suppress(Exception):
                    if n.proc.returncode is None and n.proc.stdin is not None:
                        n.proc.stdin.write(b'{"cmd": "quit"}\n')
                        await n.proc.stdin.drain()
            for n in self.nodes:
                await self.kids.stop_async(n.proc)

    async def settled(self, timeout: float = 60.0) -> int:
        """Wait until the three nodes agree on a leader and are connected to each other; returns its index."""
        sts: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    sts = [await n.ask({"cmd": "status"}, 5) for n in self.nodes]
                    leaders = {st["leader"] for st in sts}
                    if len(leaders) == 1 and None not in leaders and all(st["connected"] for st in sts):
                        leader = leaders.pop()
                        return next(i for i, n in enumerate(self.nodes) if n.addr == leader)
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise RuntimeError(f"{self.name}: no settled leader within {timeout} s; last statuses {sts}") from None

    async def shape(self, shape: str) -> dict[str, Run]:
        kind, n = SHAPES[shape]
        leader = await self.settled()
        node = self.nodes[leader]
        if self.s.warmup:
            warm = {"cmd": "bench", "op": kind, "inflight": n, "duration": self.s.warmup, "max_ops": self.s.max_ops}
            await node.ask(warm, self.s.warmup + 90)
        req = {"cmd": "bench", "op": kind, "inflight": n, "duration": self.s.slice, "max_ops": self.s.max_ops}
        cpu = NodeCpu([n.proc.pid for n in self.nodes], node.proc.pid)
        out = await node.ask(req, self.s.slice + 90)
        run = Run(
            ops=int(out["ops"]),
            seconds=float(out["seconds"]),
            cpu_seconds=float(out["cpu_seconds"]),
            leader_changes=int(out["term_changes"]),
            latencies=[x / 1e6 for x in out["latencies_us"]],
            errors=int(out["errors"]),
            note=f"PySyncObj FAIL_REASON counts {out['error_kinds']}" if out["errors"] else "",
        )
        return {self.name: cpu.stop(run)}

    async def failover_trial(self, trial: int) -> float | None:
        leader = await self.settled()
        await asyncio.sleep(0.2 + 0.05 * (trial % 3))
        self.nodes[leader].proc.kill()
        await self.nodes[leader].proc.wait()
        killed = time.monotonic()  # CLOCK_MONOTONIC: the nodes report time.monotonic() too
        try:
            survivors = [n for i, n in enumerate(self.nodes) if i != leader]
            answers = await asyncio.gather(
                *(n.ask({"cmd": "write", "deadline": 30}, 40) for n in survivors), return_exceptions=True
            )
            oks = [a["t"] for a in answers if isinstance(a, dict) and a.get("ok")]
            return (min(oks) - killed) * 1000 if oks else None
        finally:
            self.nodes[leader] = await self.start(leader)
            await self.settled()

    async def finish(self, last_round: bool) -> None:
        """Integrity: once idle, do the three replicas hold the same data?"""
        digests: list[dict[str, Any]] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                while True:
                    digests = [await n.ask({"cmd": "digest"}, 10) for n in self.nodes]
                    if len({d["applied"] for d in digests}) == 1:
                        break
                    await asyncio.sleep(0.2)
        same = len({d["hash"] for d in digests}) == 1
        say(f"    {self.name}: replicas {'identical' if same else 'DIFFER'} once idle ({digests})")
        if not same:
            self.results.notes.append(f"{self.name}: the replicas' data differed once idle: {digests}")

    def critical_lines(self) -> int:
        return sum(
            p.read_text(errors="replace").count("CRITICAL")
            for p in self.s.tmp.glob(f"{self.name}-*/n*.log")
            if p.is_file()
        )


# ==============================================================================================================
# The table
# ==============================================================================================================


def fmt_cell(r: Cell | None, metric: str) -> str:
    if r is None:
        return "—"
    if isinstance(r, str):
        return r
    if isinstance(r, Failover):
        if not r.times_ms:
            return "no write" if metric in ("ops", "lat") else f"{r.failed} failed"
        if metric == "ops":
            return f"{r.median:,.0f} ms"
        if metric == "lat":
            return f"{r.max:,.0f} ms"
        return f"{len(r.times_ms)}" + (f" ({r.failed} failed)" if r.failed else "")
    if metric == "ops":
        return f"{r.ops_per_s:,.0f}" + (f" ({r.errors} err)" if r.errors else "")
    if metric == "lat":
        return f"{r.p50_ms:.2f} / {r.p99_ms:.2f}"
    if metric == "cpu":
        return f"{r.cpu_percent:.0f}%"
    if metric == "nodes":
        if not r.seconds:
            return "—"
        return f"{100 * r.leader_cpu_seconds / r.seconds:.0f}% / {100 * r.nodes_cpu_seconds / r.seconds:.0f}%"
    return "?" if r.leader_changes is None else str(r.leader_changes)


def ratio(a: Cell | None, b: Cell | None, metric: str) -> str:
    if isinstance(a, Run) and isinstance(b, Run):
        if metric == "ops" and b.ops_per_s > 0:
            return f"{a.ops_per_s / b.ops_per_s:.2f}x"
        if metric == "lat" and b.p50_ms > 0 and b.p99_ms > 0:
            return f"{a.p50_ms / b.p50_ms:.2f}x / {a.p99_ms / b.p99_ms:.2f}x"
    if isinstance(a, Failover) and isinstance(b, Failover) and a.times_ms and b.times_ms:
        if metric == "ops":
            return f"{a.median / b.median:.2f}x"
        if metric == "lat":
            return f"{a.max / b.max:.2f}x"
    return "—"


def table(results: Results) -> str:
    metrics = [
        ("ops", "ops/s"),
        ("lat", "p50 / p99 ms"),
        ("cpu", "load-gen CPU"),
        ("nodes", "node CPU: leader / all 3"),
        ("lc", "leader changes"),
    ]
    failover_metrics = [("ops", "median"), ("lat", "max"), ("cpu", "trials")]
    lines = [
        "| row | metric | raftkv | etcd (gRPC) | etcd (HTTP gateway) | PySyncObj (tuned) | PySyncObj (defaults) "
        "| raftkv's etcd gateway (gRPC) | raftkv/etcd gRPC | raftkv/etcd HTTP | raftkv/PySyncObj tuned "
        "| gateway/etcd gRPC |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row, title in ROWS:
        cells: list[Cell | None] = []
        for system in SYSTEMS:
            if (
                (row.startswith("lib_") and (system.startswith("etcd") or system == "raftkv_gw"))
                or (row.startswith("svc_") and system.startswith("pysyncobj"))
                or (row == "failover" and system == "raftkv_gw")
            ):
                cells.append("n/a")
            elif ("skipped", system) in results.cells:
                cells.append("skipped")
            elif row == "failover" and system == "pysyncobj_default":
                cells.append("n/a")
            else:
                cells.append(results.cells.get((row, system)))
        for k, (metric, name) in enumerate(failover_metrics if row == "failover" else metrics):
            lines.append(
                f"| {title if k == 0 else ''} | {name} | "
                + " | ".join(fmt_cell(c, metric) for c in cells)
                + " | "
                + " | ".join(ratio(cells[0], cells[j], metric) for j in (1, 2, 3))
                + f" | {ratio(cells[5], cells[1], metric)} |"
            )
    return "\n".join(lines)


def notes(results: Results) -> list[str]:
    out = []
    for system in SYSTEMS:
        reason = results.cells.get(("skipped", system))
        if isinstance(reason, str):
            out.append(f"* {system} skipped: {reason}")
    out += [f"* {n}" for n in results.notes]
    for (row, system), r in sorted(results.cells.items()):
        if isinstance(r, Run) and r.errors:
            out.append(f"* {row} / {system}: {r.errors} failed operations, e.g. {r.note}")
    return out


# ==============================================================================================================
# Main
# ==============================================================================================================


def machine() -> str:
    load = os.getloadavg()
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({model or platform.machine()}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, load average {load[0]:.1f} at start"
    )


async def failover_trials(system: System, rnd: int, results: Results) -> None:
    """This round's share of the trials. A trial that raises counts as failed and ends the round's trials."""
    s = system.s
    for trial in range(rnd, s.trials, s.rounds):
        error = ""
        try:
            ms = await system.failover_trial(trial)
        except Exception as e:
            ms, error = None, f"{type(e).__name__}: {e}"
        for name in system.failover_columns:
            results.add_failover(name, ms)
        say(f"    failover trial {trial + 1}: " + (f"{ms:.0f} ms" if ms is not None else f"FAILED {error}"))
        if error:
            results.notes.append(f"failover trial {trial + 1}, {system.title.split(',')[0]}: {error}")
            keep_logs(s.tmp, results)
            return


def keep_logs(tmp: Path, results: Results) -> None:
    """After a failure, copy the nodes' logs out of the temporary directory (deleted at the end)."""
    dest = Path(tempfile.gettempdir()) / f"raftkv-compare-logs-{os.getpid()}"
    for log in tmp.glob("*/*.log"):
        target = dest / log.parent.name / log.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, target)
    note = f"the nodes' logs are kept in {dest}"
    if note not in results.notes:
        results.notes.append(note)


async def amain(args: argparse.Namespace, kids: Children, results: Results) -> None:
    s = Settings(
        duration=args.duration,
        warmup=args.warmup,
        max_ops=args.max_ops,
        trials=args.failover_trials,
        rounds=args.rounds,
        profile=args.profile,
        etcd_target=args.etcd_target,
        tmp=Path(args.tmp),
    )
    if args.shapes:
        wanted = tuple(x.strip() for x in args.shapes.split(",") if x.strip())
        unknown = [x for x in wanted if x not in SHAPES and x != "failover"]
        if unknown:
            raise SystemExit(
                f"bench/compare.py: unknown shape(s) {','.join(unknown)}; pick from {','.join(SHAPES)},failover"
            )
        s.shapes = tuple(x for x in wanted if x in SHAPES)
        s.failover = "failover" in wanted
    only = set(args.only.split(",")) if args.only else {"raftkv", "etcd", "pysyncobj"}
    say(f"bench/compare.py, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {machine()}")
    say(
        f"each row: {s.rounds} round(s) x ({s.warmup:g} s warm-up + {s.slice:g} s measured, at most "
        f"{s.max_ops:,} ops); 100-byte values; failover: {s.trials} trials"
    )
    etcd, etcd_why = ensure_etcd(args.no_install) if "etcd" in only else (None, "not selected (--only)")
    if etcd:
        version = subprocess.run([etcd, "--version"], check=False, capture_output=True, text=True, timeout=30).stdout
        say(f"etcd: {etcd} ({version.splitlines()[0] if version else '?'}; {etcd_why})")
        s.etcd_grpc, why = ensure_pip("etcd3aio", "etcd3aio", args.no_install)
        if s.etcd_grpc:
            say(f"etcd gRPC stubs: etcd3aio {pkg_version('etcd3aio')}, grpcio {pkg_version('grpcio')} ({why})")
        else:
            say(f"etcd gRPC: SKIPPED (the HTTP/JSON gateway rows still run) — {why}")
            results.skip("etcd", why)
            results.skip("raftkv_gw", why)
    else:
        say(f"etcd: SKIPPED — {etcd_why}")
        results.skip("etcd", etcd_why)
        results.skip("etcd_http", etcd_why)
        results.skip("raftkv_gw", f"the same client as etcd's gRPC column, not set up: {etcd_why}")
    pso_ok, pso_why = (
        ensure_pip("pysyncobj", "pysyncobj", args.no_install) if "pysyncobj" in only else (False, "not selected")
    )
    if pso_ok:
        say(f"PySyncObj: {pkg_version('pysyncobj')} ({pso_why})")
    else:
        say(f"PySyncObj: SKIPPED — {pso_why}")
        results.skip("pysyncobj", pso_why)
        results.skip("pysyncobj_default", pso_why)
    if "raftkv" not in only:
        results.skip("raftkv", "not selected (--only)")
        results.skip("raftkv_gw", "not selected (--only)")
    if args.profile and not (shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists()):
        if args.no_install:
            say("py-spy: not installed and --no-install was given; the profile will be skipped")
        else:
            say(f"py-spy not found: installing it with `{sys.executable} -m pip install py-spy` ...")
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=False, timeout=300)

    systems: list[System] = []
    if "raftkv" in only:
        systems.append(RaftkvLibrary(s, kids, results))
    if pso_ok:
        systems.append(PySyncObj(s, kids, results, "pysyncobj", tuned=True))
        if not args.skip_pso_defaults:
            systems.append(PySyncObj(s, kids, results, "pysyncobj_default", tuned=False))
    if "raftkv" in only:
        systems.append(RaftkvService(s, kids, results))
    if etcd:
        systems.append(Etcd(s, kids, results, etcd))

    for rnd in range(s.rounds):
        for system in systems if rnd % 2 == 0 else systems[::-1]:
            system.round = rnd
            say(f"\nround {rnd + 1}/{s.rounds}: {system.title}")
            try:
                async with system.running():
                    for shape in s.shapes:
                        if shape in LIBRARY_ONLY and system.level != "lib":
                            continue
                        for name, run in (await system.shape(shape)).items():
                            results.add_run(f"{system.level}_{shape}", name, run)
                            show(name, shape, run)
                    if system.has_failover and s.failover:
                        await failover_trials(system, rnd, results)
                    await system.finish(rnd == s.rounds - 1)
            except Exception as e:
                say(f"    FAILED: {type(e).__name__}: {e}")
                results.notes.append(f"round {rnd + 1}, {system.title.split(',')[0]}: {type(e).__name__}: {e}")
                keep_logs(s.tmp, results)
    for system in systems:
        if isinstance(system, PySyncObj) and (n := system.critical_lines()):
            results.notes.append(
                f"{system.name}: the nodes logged {n} CRITICAL lines 'truncating already-applied log entries … "
                "state machine may have diverged' (see docs/compare.md)"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (~2 minutes in all)")
    ap.add_argument("--duration", type=float, help="measured seconds per row, over all rounds (default 9; --quick 2)")
    ap.add_argument("--rounds", type=int, help="rounds the measurement is split into (default 3; --quick 1)")
    ap.add_argument("--warmup", type=float, help="seconds of warm-up before each run (default 1; --quick 0.5)")
    ap.add_argument("--max-ops", type=int, default=500_000, help="bound on the ops of one run")
    ap.add_argument("--failover-trials", type=int, help="default 5 (--quick 3)")
    ap.add_argument("--only", help="comma-separated subset of raftkv,etcd,pysyncobj")
    ap.add_argument(
        "--etcd-target", choices=["leader", "all"], default="leader", help="etcd requests go to the leader, or all"
    )
    ap.add_argument("--skip-pso-defaults", action="store_true", help="skip PySyncObj with its default timings")
    ap.add_argument("--no-install", action="store_true", help="never apt-get/pip install a missing peer: skip it")
    ap.add_argument("--shapes", help=f"comma-separated subset of {','.join(SHAPES)},failover (default: all)")
    ap.add_argument("--profile", action="store_true", help="py-spy the raftkv leader during an extra put@64 run")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    args.duration = args.duration or (2.0 if args.quick else 9.0)
    args.rounds = max(1, args.rounds or (1 if args.quick else 3))
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.failover_trials = args.failover_trials if args.failover_trials is not None else (3 if args.quick else 5)

    kids = Children()
    results = Results()
    started = time.monotonic()

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    failure = ""
    with tempfile.TemporaryDirectory(prefix="raftkv-compare-") as tmp:
        args.tmp = tmp

        async def run_all() -> None:
            try:
                await amain(args, kids, results)
            finally:
                await kids.stop_all()

        try:
            asyncio.run(run_all())
        except (Exception, KeyboardInterrupt, SystemExit) as e:
            failure = f"{type(e).__name__}: {e}"
        finally:
            kids.kill_all_now()
    say(f"\n## Results ({time.monotonic() - started:.0f} s in all; load average {os.getloadavg()[0]:.1f} at the end)\n")
    say(table(results))
    say("")
    say(
        "ops/s: higher is better; latencies and failover: lower is better. Ratios are raftkv / peer: > 1 means "
        "raftkv is faster for ops/s, slower for latency and failover. load-gen CPU: library rows, the leader+load "
        "process; service rows, the load generator alone (100% = one core). Node CPU: the leader's process and the "
        "three nodes' processes together (library rows: the leader is the load process). Leader changes: term "
        "increments during the measured runs. Failover: median and max over the trials (etcd: measured once, "
        "shown in both columns)."
    )
    for note in notes(results):
        say(note)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    f"{row}/{system}": (cell if isinstance(cell, str) else cell.summary())
                    for (row, system), cell in results.cells.items()
                }
                | {"notes": results.notes},
                indent=1,
            )
        )
    if failure:
        say(f"\nthe run stopped early: {failure}")
        sys.exit(1)


if __name__ == "__main__":
    main()
