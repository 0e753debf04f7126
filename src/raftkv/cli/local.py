"""A cluster of ``raftkv serve`` processes on this machine: for ``make demo``, ``raftkv cluster up`` and tests.

Processes are started and stopped by PID (SIGTERM, then SIGKILL after a grace period); each node logs to
``ROOT/nodeN.log`` and keeps its data in ``ROOT/nodeN``.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
from pathlib import Path

from raftkv.transport.address import Address

_handed_out: set[int] = set()


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now, chosen *below* the kernel's ephemeral range.

    Binding to port 0 would return an ephemeral port, which any outgoing connection (ours included) may then be
    given as its local port before our server binds it (EADDRINUSE, at random). Ports under the ephemeral range
    are never handed out that way.
    """
    low, high = _ephemeral_range()
    candidates = list(range(10_000, min(low, 32_768)))
    random.shuffle(candidates)
    ports: list[int] = []
    for port in candidates:
        if port in _handed_out:
            continue  # given to an earlier caller in this process, maybe not bound yet
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            _handed_out.update(ports)
            return ports
    raise RuntimeError(f"could not find {n} free ports below the ephemeral range {low}-{high}")


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32_768, 60_999


class LocalCluster:
    def __init__(
        self,
        root: Path,
        n: int = 3,
        *,
        cluster_id: str = "local",
        base_port: int | None = None,
        extra_args: tuple[str, ...] = (),
        etcd: bool = False,
        http: bool = False,
    ) -> None:
        """Peer ports ``base_port + i - 1``, client ports ``base_port + 100 + i - 1``, with ``etcd`` the etcd
        gateways on ``base_port + 200 + i - 1``, and with ``http`` the HTTP ports (the dashboard) on
        ``base_port + 300 + i - 1`` (or free ones)."""
        self.root = root
        self.cluster_id = cluster_id
        self.ids = list(range(1, n + 1))
        if base_port is None:
            ports = free_ports(4 * n)
        else:
            ports = [base_port + offset + i for offset in (0, 100, 200, 300) for i in range(n)]
        self.peer = {i: ports[i - 1] for i in self.ids}
        self.client = {i: ports[n + i - 1] for i in self.ids}
        self.etcd = {i: ports[2 * n + i - 1] for i in self.ids} if etcd else {}
        """Each node's ``--listen-etcd`` port (empty: no gateway)."""
        self.http = {i: ports[3 * n + i - 1] for i in self.ids} if http else {}
        """Each node's ``--listen-http`` port: the dashboard, /health, /status.json, /metrics (empty: none)."""
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.extra_args = extra_args
        """More ``raftkv serve`` flags for every node (e.g. snapshot settings)."""

    def start(self, i: int) -> None:
        self._spawn(i, "--peers", ",".join(f"{j}=127.0.0.1:{self.peer[j]}" for j in self.ids))

    def _spawn(self, i: int, *members: str) -> None:
        """Start ``raftkv serve`` for node ``i``; ``members`` says how it finds the others (--peers or --join)."""
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"node{i}.log", "ab")  # noqa: SIM115 - the child process owns it
        self.procs[i] = subprocess.Popen(
            [
                sys.executable, "-m", "raftkv.cli", "serve", "--id", str(i), "--cluster-id", self.cluster_id,
                "--data-dir", str(self.root / f"node{i}"), "--listen-peer", f"127.0.0.1:{self.peer[i]}",
                "--listen-client", f"127.0.0.1:{self.client[i]}", *members, *self.extra_args,
                *(["--listen-etcd", f"127.0.0.1:{self.etcd[i]}"] if i in self.etcd else []),
                *(["--listen-http", f"127.0.0.1:{self.http[i]}"] if i in self.http else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def start_joining(self, i: int, via: list[int] | None = None) -> None:
        """Start node ``i`` (not yet in ``ids``) empty, joining through the client ports of ``via``
        (default: every current node); add it with ``raftkv member add`` first."""
        if i not in self.peer:
            self.peer[i], self.client[i] = free_ports(2)
        self._spawn(i, "--join", ",".join(f"127.0.0.1:{self.client[j]}" for j in (via or self.ids)))
        if i not in self.ids:
            self.ids.append(i)

    def start_all(self) -> None:
        for i in self.ids:
            self.start(i)

    def endpoints(self, ids: list[int] | None = None) -> list[Address]:
        return [Address("127.0.0.1", self.client[i]) for i in (ids or self.ids)]

    def etcd_endpoints(self) -> list[Address]:
        """The etcd gateways, for etcdctl and etcd's client libraries (empty without ``etcd``)."""
        return [Address("127.0.0.1", self.etcd[i]) for i in self.ids if i in self.etcd]

    def exited(self) -> dict[int, int]:
        """Nodes whose process has exited, with the exit code."""
        return {i: code for i, p in self.procs.items() if (code := p.poll()) is not None}

    def stop_all(self, grace_s: float = 5.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace_s)
