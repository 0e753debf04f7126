"""A small async client for a node's client port: ping, status, and the generic propose.

Every call has a deadline (a stopped node never answers by itself). ``propose`` finds the leader by itself:
it follows ``notLeader`` redirections and tries the other endpoints, with a short backoff, until its deadline.
(The key-value client arrives with the KV store.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import capnp  # type: ignore[import-untyped]

from raftkv.errors import NotLeader, ProposalDropped, RaftError, Timeout, Unavailable
from raftkv.raft.types import NodeId
from raftkv.transport.address import Address
from raftkv.transport.kjloop import kj_loop
from raftkv.transport.streams import PLAIN
from raftkv.transport.wire import schema


@dataclass(frozen=True, slots=True)
class StatusReport:
    endpoint: str
    id: int
    role: str
    term: int
    leader: int | None
    commit: int
    applied: int
    last_index: int
    cluster_id: str
    peers: dict[int, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "id": self.id,
            "role": self.role,
            "term": self.term,
            "leader": self.leader,
            "commit": self.commit,
            "applied": self.applied,
            "last_index": self.last_index,
            "peers": {str(k): v for k, v in self.peers.items()},
        }


class NodeConnection:
    """One connection to one node's client port."""

    def __init__(self, endpoint: Address, cluster_id: str = "") -> None:
        self.endpoint = endpoint
        self.cluster_id = cluster_id
        self._client: Any = None
        self._cap: Any = None

    async def connect(self, timeout: float) -> None:
        self._client = await PLAIN.dial_rpc(self.endpoint, timeout)
        self._cap = self._client.bootstrap().cast_as(schema.Client)

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = self._cap = None

    def _header(self) -> dict[str, object]:
        return {"clusterId": self.cluster_id, "from": 0, "to": 0}

    async def ping(self, timeout: float, payload: bytes = b"ping") -> tuple[int, int, float]:
        """Returns (node id, term, round trip in seconds)."""
        started = time.perf_counter()
        async with asyncio.timeout(timeout):
            r = await self._cap.ping(header=self._header(), payload=payload)
        _raise_for(r.error)
        return int(r.nodeId), int(r.term), time.perf_counter() - started

    async def status(self, timeout: float) -> StatusReport:
        async with asyncio.timeout(timeout):
            r = await self._cap.status(header=self._header())
        _raise_for(r.error)
        s = r.status
        return StatusReport(
            endpoint=str(self.endpoint),
            id=int(s.id),
            role=str(s.role),
            term=int(s.term),
            leader=int(s.leader) or None,
            commit=int(s.commit),
            applied=int(s.applied),
            last_index=int(s.lastIndex),
            cluster_id=str(s.clusterId),
            peers={
                int(p.id): {
                    "address": str(p.address),
                    "connected": bool(p.connected),
                    **({"match": int(p.match), "next": int(p.next), "state": str(p.state)} if p.state else {}),
                }
                for p in s.peers
            },
        )

    async def propose(self, data: bytes, timeout: float) -> tuple[int, int, bytes]:
        """Returns (index, term, result) or raises NotLeader / Timeout / ProposalDropped."""
        async with asyncio.timeout(timeout + 0.5):
            r = await self._cap.propose(header=self._header(), data=data, timeoutMs=int(timeout * 1000))
        _raise_for(r.error)
        return int(r.index), int(r.term), bytes(r.result)

    async def applied(self, index: int, timeout: float) -> bytes | None:
        async with asyncio.timeout(timeout):
            r = await self._cap.applied(header=self._header(), index=index)
        _raise_for(r.error)
        return bytes(r.data) if r.found else None


def _raise_for(error: Any) -> None:
    code = str(error.code)
    if code == "none":
        return
    message = str(error.message)
    if code == "notLeader":
        raise NotLeader(NodeId(int(error.leaderId)), str(error.leaderAddress))
    if code == "timeout":
        raise Timeout(message)
    if code == "proposalDropped":
        raise ProposalDropped(message)
    raise RaftError(f"{code}: {message}")


class Cluster:
    """Endpoints of one cluster; ``propose`` follows the leader."""

    def __init__(self, endpoints: Sequence[Address], cluster_id: str = "") -> None:
        if not endpoints:
            raise ValueError("no endpoints given")
        self.endpoints = list(endpoints)
        self.cluster_id = cluster_id
        self._conns: dict[Address, NodeConnection] = {}
        self._leader: Address | None = None

    async def _conn(self, endpoint: Address, timeout: float) -> NodeConnection:
        conn = self._conns.get(endpoint)
        if conn is None:
            conn = NodeConnection(endpoint, self.cluster_id)
            await conn.connect(timeout)
            self._conns[endpoint] = conn
        return conn

    def _drop(self, endpoint: Address) -> None:
        conn = self._conns.pop(endpoint, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for endpoint in list(self._conns):
            self._drop(endpoint)

    async def propose(self, data: bytes, timeout: float = 5.0) -> tuple[int, int, bytes]:
        deadline = time.monotonic() + timeout
        candidates = list(self.endpoints)
        attempt = 0
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            target = self._leader or candidates[attempt % len(candidates)]
            attempt += 1
            left = max(0.05, deadline - time.monotonic())
            try:
                conn = await self._conn(target, min(1.0, left))
                result = await conn.propose(data, min(left, 5.0))
                self._leader = target
                return result
            except NotLeader as e:
                last_error = e
                self._leader = Address.parse(e.leader_address) if e.leader_address else None
            except (OSError, TimeoutError, capnp.KjException, RaftError) as e:
                last_error = e
                self._drop(target)
                self._leader = None
            await asyncio.sleep(min(0.01 * attempt, 0.05))
        raise Unavailable(f"could not commit within {timeout} s ({last_error})")

    async def statuses(self, timeout: float = 1.0) -> list[StatusReport | tuple[str, str]]:
        async def one(endpoint: Address) -> StatusReport | tuple[str, str]:
            try:
                conn = await self._conn(endpoint, timeout)
                return await conn.status(timeout)
            except (OSError, TimeoutError, capnp.KjException, RaftError) as e:
                self._drop(endpoint)
                return (str(endpoint), _why(e))

        return list(await asyncio.gather(*(one(e) for e in self.endpoints)))


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "no answer before the deadline (is the node stopped or overloaded?)"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (is the node running?)"
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text


@contextlib.asynccontextmanager
async def connect(endpoints: Sequence[str | Address], cluster_id: str = "") -> AsyncIterator[Cluster]:
    """``async with connect(["127.0.0.1:9001", ...]) as cluster: await cluster.propose(b"...")``."""
    addrs = [e if isinstance(e, Address) else Address.parse(e, "endpoint") for e in endpoints]
    async with kj_loop():
        cluster = Cluster(addrs, cluster_id)
        try:
            yield cluster
        finally:
            cluster.close()
