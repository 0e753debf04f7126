"""Real ``raftkv serve`` processes on 127.0.0.1, a fault proxy between them, and bounded waits.

Every peer link goes through a :class:`FaultProxy`: node *i* reaches node *j* at a proxy port that relays to
*j*'s real peer port (each node's ``--peers`` map says where *it* reaches the others). A link can be cut
(blackholed: bytes are swallowed, so calls time out as with a real partition) one way or both ways, delayed
(with jitter, in order) or lossy (a lost chunk resets its connection). ``tests/e2e/torture.py`` builds its
nemesis on these.

Processes are started and stopped by PID only; every wait has a deadline; teardown kills whatever is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from raftkv.client import StatusReport, connect
from raftkv.transport.address import Address
from tests.runtime.cluster import free_ports


class _Relay:
    """One relayed TCP connection through a :class:`FaultProxy`: both sockets and whether it is poisoned."""

    def __init__(self, writers: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        self.writers = writers
        self.poisoned = False
        """Bytes were swallowed: a TCP stream never skips bytes, so from then on nothing more is relayed (the
        endpoints' deadlines notice, as with a real partition, and they reconnect)."""

    def abort(self) -> None:
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.transport.abort()


class FaultProxy:
    """A TCP relay for one directed link (dialer → listener) that can swallow, delay or lose traffic.

    Faults (set the attributes at any time; :meth:`clear` resets them):

    - ``blocked``: a blackhole. Bytes vanish, the connection stays open, so calls time out as with a real
      partition. A connection that lost bytes stays a blackhole after the link is unblocked (a TCP stream cannot
      resume after a hole); new connections flow normally.
    - ``delay_s`` (+ up to ``jitter_s`` more, uniformly): every chunk is delivered that much later, in order.
    - ``loss``: the probability that a relayed chunk is lost. The connection it travelled on is reset with it
      (what was in flight on it is lost too), since bytes cannot go missing from the middle of a TCP stream.

    The blackhole and the loss apply to both directions of a connection dialed through this proxy (the
    dialer's requests and the listener's answers); the other direction of the *link* has its own proxy.
    """

    def __init__(self, listen_port: int, target_port: int, *, rng: random.Random | None = None) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self.blocked = False
        self.delay_s = 0.0
        self.jitter_s = 0.0
        self.loss = 0.0
        self.rng = rng or random.Random(listen_port)
        self.chunks_relayed = 0
        self.chunks_swallowed = 0
        self.resets = 0
        self._server: asyncio.Server | None = None
        self._relays: set[_Relay] = set()

    def clear(self) -> None:
        """Remove every fault (poisoned connections stay dead; see the class docstring)."""
        self.blocked = False
        self.delay_s = 0.0
        self.jitter_s = 0.0
        self.loss = 0.0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", self.listen_port)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        relay = _Relay((writer, up_writer))
        self._relays.add(relay)
        try:
            await asyncio.gather(
                self._pipe(relay, reader, up_writer), self._pipe(relay, up_reader, writer), return_exceptions=True
            )
        finally:
            self._relays.discard(relay)
            for w in relay.writers:
                w.close()

    async def _pipe(self, relay: _Relay, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read chunks and hand them, stamped with their delivery time, to a task that writes them in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(maxsize=1024)
        deliver = asyncio.ensure_future(self._deliver(relay, queue, writer))
        last_at = 0.0
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.blocked or relay.poisoned:
                    relay.poisoned = True  # blackhole: the bytes vanish, the connection stays open
                    self.chunks_swallowed += 1
                    continue
                if self.loss and self.rng.random() < self.loss:
                    self.resets += 1
                    relay.abort()  # the chunk and whatever is still in flight on this connection are lost
                    return
                at = loop.time()
                if self.delay_s or self.jitter_s:
                    at += self.delay_s + self.rng.uniform(0.0, self.jitter_s)
                last_at = max(at, last_at)  # in order, whatever the jitter
                await queue.put((last_at, data))
            await queue.put(None)
            await deliver
        finally:
            deliver.cancel()
            with contextlib.suppress(BaseException):
                await deliver
            with contextlib.suppress(Exception):
                writer.close()

    async def _deliver(
        self, relay: _Relay, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while (item := await queue.get()) is not None:
            at, data = item
            if (wait := at - loop.time()) > 0:
                await asyncio.sleep(wait)
            if self.blocked or relay.poisoned:
                relay.poisoned = True  # cut while it was on its way
                self.chunks_swallowed += 1
                continue
            self.chunks_relayed += 1
            writer.write(data)
            await writer.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for relay in list(self._relays):
            relay.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)


class ProcCluster:
    def __init__(
        self,
        tmp: Path,
        n: int,
        *,
        cluster_id: str = "e2e",
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        seed: int = 0,
        client_tls: Mapping[str, Path] | None = None,
    ) -> None:
        """``env``: extra environment variables for every node process (e.g. a test-only switch); ``extra_args``:
        more ``raftkv serve`` options (e.g. ``--snapshot-entries 500``); ``seed`` seeds the proxies' loss and
        jitter; ``client_tls``: ``raftkv.connect``'s TLS arguments, for the harness's own status calls."""
        self.tmp = tmp
        self.client_tls: dict[str, Any] = dict(client_tls or {})
        self.node_args: dict[int, list[str]] = {}
        """More ``raftkv serve`` options for one node (e.g. its own certificate)."""
        self.n = n
        self.cluster_id = cluster_id
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        ports = free_ports(2 * n + n * n)
        self.peer_port = {i: ports[i - 1] for i in range(1, n + 1)}
        self.client_port = {i: ports[n + i - 1] for i in range(1, n + 1)}
        extra = iter(ports[2 * n :])
        self.proxies: dict[tuple[int, int], FaultProxy] = {}
        for i in range(1, n + 1):
            for j in range(1, n + 1):
                if i != j:
                    rng = random.Random(seed * 1_000_003 + i * 1_000 + j)
                    self.proxies[(i, j)] = FaultProxy(next(extra), self.peer_port[j], rng=rng)
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
            *self.extra_args,
            *self.node_args.get(i, ()),
        ]

    async def start(self) -> None:
        for proxy in self.proxies.values():
            await proxy.start()
        for i in range(1, self.n + 1):
            self.spawn(i)

    def spawn(self, i: int) -> None:
        log = open(self.tmp / f"node{i}.log", "ab")  # noqa: SIM115 - owned by the process
        env = {**os.environ, **self.env} if self.env else None
        self.procs[i] = subprocess.Popen(self.command(i), stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)

    def pause(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGCONT)

    def running(self, i: int) -> bool:
        """The process was spawned and has not exited (a SIGSTOPped process is running)."""
        proc = self.procs.get(i)
        return proc is not None and proc.poll() is None

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
        """Remove every network fault: cuts, delays, losses."""
        for proxy in self.proxies.values():
            proxy.clear()

    def links(self) -> list[tuple[int, int]]:
        """Every directed link (dialer, listener)."""
        return sorted(self.proxies)

    def set_delay(self, links: list[tuple[int, int]], delay_s: float, jitter_s: float = 0.0) -> None:
        for link in links:
            self.proxies[link].delay_s = delay_s
            self.proxies[link].jitter_s = jitter_s

    def set_loss(self, links: list[tuple[int, int]], loss: float) -> None:
        for link in links:
            self.proxies[link].loss = loss

    # --- observation -------------------------------------------------------------------------------------

    def endpoint(self, i: int) -> Address:
        return Address("127.0.0.1", self.client_port[i])

    def endpoints(self, ids: list[int] | None = None) -> list[Address]:
        return [self.endpoint(i) for i in (ids or range(1, self.n + 1))]

    async def statuses(self, ids: list[int] | None = None) -> dict[int, StatusReport]:
        ids = ids or list(range(1, self.n + 1))
        out: dict[int, StatusReport] = {}
        async with connect(self.endpoints(ids), cluster_id=self.cluster_id, **self.client_tls) as c:
            for r in await c.admin.statuses(timeout=0.5):
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
