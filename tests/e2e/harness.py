"""Real ``raftkv serve`` processes on 127.0.0.1, a fault proxy between them, and bounded waits.

Every peer link goes through a :class:`FaultProxy`: node *i* reaches node *j* at a proxy port that relays to
*j*'s real peer port (each node's ``--peers`` map says where *it* reaches the others). A link can be cut
(blackholed: bytes are swallowed, so calls time out as with a real partition) one way or both ways.

Processes are started and stopped by PID only; every wait has a deadline; teardown kills whatever is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from raftkv.client import StatusReport, connect
from raftkv.transport.address import Address
from tests.server.cluster import free_ports


class FaultProxy:
    """A TCP relay for one directed link (dialer → listener) that can swallow traffic."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self.blocked = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", self.listen_port)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if self.blocked:
                continue  # blackhole: the bytes vanish, the connection stays open
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)


class ProcCluster:
    def __init__(self, tmp: Path, n: int, *, cluster_id: str = "e2e") -> None:
        self.tmp = tmp
        self.n = n
        self.cluster_id = cluster_id
        ports = free_ports(2 * n + n * n)
        self.peer_port = {i: ports[i - 1] for i in range(1, n + 1)}
        self.client_port = {i: ports[n + i - 1] for i in range(1, n + 1)}
        extra = iter(ports[2 * n :])
        self.proxies: dict[tuple[int, int], FaultProxy] = {}
        for i in range(1, n + 1):
            for j in range(1, n + 1):
                if i != j:
                    self.proxies[(i, j)] = FaultProxy(next(extra), self.peer_port[j])
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    # --- processes ---------------------------------------------------------------------------------------

    def command(self, i: int) -> list[str]:
        peers = ",".join(
            f"{j}=127.0.0.1:{self.peer_port[j] if j == i else self.proxies[(i, j)].listen_port}"
            for j in range(1, self.n + 1)
        )
        return [
            sys.executable,
            "-m",
            "raftkv.cli",
            "serve",
            "--id",
            str(i),
            "--cluster-id",
            self.cluster_id,
            "--data-dir",
            str(self.tmp / f"node{i}"),
            "--listen-peer",
            f"127.0.0.1:{self.peer_port[i]}",
            "--listen-client",
            f"127.0.0.1:{self.client_port[i]}",
            "--peers",
            peers,
        ]

    async def start(self) -> None:
        for proxy in self.proxies.values():
            await proxy.start()
        for i in range(1, self.n + 1):
            self.spawn(i)

    def spawn(self, i: int) -> None:
        log = open(self.tmp / f"node{i}.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[i] = subprocess.Popen(self.command(i), stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)

    def pause(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGCONT)

    def terminate(self, i: int, timeout: float = 5.0) -> int:
        proc = self.procs[i]
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    async def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        for proxy in self.proxies.values():
            await proxy.close()

    def logs(self, i: int) -> str:
        return (self.tmp / f"node{i}.log").read_text(errors="replace")

    # --- network faults ----------------------------------------------------------------------------------

    def cut(self, a: list[int], b: list[int], both_ways: bool = True) -> None:
        for i in a:
            for j in b:
                if i != j:
                    self.proxies[(i, j)].blocked = True
                    if both_ways:
                        self.proxies[(j, i)].blocked = True

    def heal(self) -> None:
        for proxy in self.proxies.values():
            proxy.blocked = False

    # --- observation -------------------------------------------------------------------------------------

    def endpoint(self, i: int) -> Address:
        return Address("127.0.0.1", self.client_port[i])

    def endpoints(self, ids: list[int] | None = None) -> list[Address]:
        return [self.endpoint(i) for i in (ids or range(1, self.n + 1))]

    async def statuses(self, ids: list[int] | None = None) -> dict[int, StatusReport]:
        ids = ids or list(range(1, self.n + 1))
        out: dict[int, StatusReport] = {}
        async with connect(self.endpoints(ids), self.cluster_id) as c:
            for r in await c.statuses(timeout=0.5):
                if isinstance(r, StatusReport):
                    out[r.id] = r
        return out

    async def wait_leader(self, ids: list[int] | None = None, timeout: float = 5.0) -> int:
        """Wait until every node in ``ids`` answers and follows one leader at one term; return its id."""
        ids = ids or list(range(1, self.n + 1))
        found: list[int] = []

        async def settled() -> bool:
            st = await self.statuses(ids)
            if len(st) != len(ids):
                return False
            leaders = {s.leader for s in st.values()}
            terms = {s.term for s in st.values()}
            if len(leaders) == 1 and len(terms) == 1 and None not in leaders:
                lead = leaders.pop()
                if lead in st and st[lead].role == "leader":
                    found.append(lead)
                    return True
            return False

        await wait_for(settled, timeout, f"one leader among {ids}")
        return found[-1]


async def wait_for(cond: Callable[[], object], timeout: float, what: str, every: float = 0.05) -> None:
    """Poll ``cond`` (sync or async) until truthy; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        await asyncio.sleep(every)
