"""Helpers for in-process clusters of real RaftNodes over loopback TCP (each with its own data dir)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from raftkv.cli.local import free_ports
from raftkv.kv.backend import Backend, MemoryBackend
from raftkv.kvserver import KVServer
from raftkv.raft.types import NodeId
from raftkv.runtime.config import NodeConfig
from raftkv.runtime.node import RaftNode
from raftkv.runtime.statemachine import CommandLog
from raftkv.transport.address import Address


def configs(tmp: Path, n: int, **overrides: object) -> list[NodeConfig]:
    ports = free_ports(2 * n)
    peers = {NodeId(i + 1): Address("127.0.0.1", ports[i]) for i in range(n)}
    out = []
    for i in range(n):
        cfg = NodeConfig(
            id=NodeId(i + 1),
            data_dir=tmp / f"node{i + 1}",
            listen_peer=peers[NodeId(i + 1)],
            peers=dict(peers),
            listen_client=Address("127.0.0.1", ports[n + i]),
            cluster_id="test",
        )
        for k, v in overrides.items():
            setattr(cfg, k, v)
        out.append(cfg)
    return out


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``cond`` every 10 ms until it holds; fail with ``what`` after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for: {what}") from None


N = TypeVar("N", RaftNode, KVServer)


def _node(item: RaftNode | KVServer) -> RaftNode | None:
    return item if isinstance(item, RaftNode) else item.node


def leader_of(items: Sequence[N]) -> N | None:
    """The node (or server) every live one agrees leads, if any."""
    live = [x for x in items if (n := _node(x)) is not None and n.core is not None and not n.stopped.is_set()]
    leaders = [x for x in live if (n := _node(x)) is not None and n.core is not None and n.core.role.value == "leader"]
    if len(leaders) != 1:
        return None
    lead = leaders[0]
    lead_node = _node(lead)
    if lead_node is not None and all((n := _node(x)) is not None and n.leader_id == lead_node.id for x in live):
        return lead
    return None


async def kv_servers(
    tmp: Path, n: int = 3, *, backend: Callable[[], Backend] | None = MemoryBackend, **overrides: object
) -> list[KVServer]:
    """``n`` started KV servers (in-memory stores by default; ``backend=None``: LMDB) with an elected leader."""
    servers = [KVServer(cfg, backend=backend() if backend else None) for cfg in configs(tmp, n, **overrides)]
    for s in servers:
        await s.start()
    await wait_until(lambda: leader_of(servers) is not None, 2.0, "a leader")
    return servers


def start_all(cfgs: list[NodeConfig]) -> list[RaftNode]:
    return [RaftNode(c, CommandLog()) for c in cfgs]


async def start_and_elect(nodes: list[RaftNode], timeout: float = 2.0) -> RaftNode:
    """Start every node and return the leader they agree on (fails after ``timeout`` seconds)."""
    for n in nodes:
        await n.start()
    await wait_until(lambda: leader_of(nodes) is not None, timeout, "a leader")
    lead = leader_of(nodes)
    assert lead is not None
    return lead
