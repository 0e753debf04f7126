"""``Admin``: the operator's calls on a cluster — status of every endpoint, ping, the generic propose, backups,
membership changes and leadership transfer.

Theory of operation
-------------------
An ``Admin`` is a view of a :class:`~raftkv.client.Client`: it shares the client's :class:`Router`, so it uses
the same pooled connections and the same retry loop. ``statuses`` and ``ping`` ask each endpoint itself (an
endpoint that fails is reported, with the reason, not raised); ``propose`` replicates a command of whatever
state machine the cluster runs, following the leader like a KV write does.

``download_backup`` asks every endpoint for its status, then downloads a consistent image of the store from the
leader (or, failing that, from any node that answers) in chunks, checking its size and CRC32C. It returns the
image and its metadata; writing the backup file is :mod:`raftkv.backup`'s job.

Membership calls (``members``, ``add_member``, ``promote_member``, ``remove_member``, ``transfer_leader``) go to
the leader through the same retry loop as a write, and return once the change is committed; a refused change
raises :class:`~raftkv.errors.InvalidConfChange` or :class:`~raftkv.errors.ConfChangeInProgress` with the
node's one-line reason, and changes nothing. ``members`` asks the leader too (only it knows each member's lag).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import crc32c

from raftkv.client.connection import BROKEN, FAILED, Connection, explain
from raftkv.client.router import Router
from raftkv.errors import BackupError, NotLeader, Timeout
from raftkv.raft.types import ConfState, Index, NodeId, SnapshotMeta, Term
from raftkv.transport.address import Address
from raftkv.transport.kjloop import kj_loop
from raftkv.transport.snapshot_stream import conf_from_wire
from raftkv.transport.streams import PLAIN, StreamLayer

BACKUP_CHUNK_TIMEOUT_S = 30.0
"""The least time allowed for one chunk: the first one makes the node dump its whole store."""


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One node's answer to ``status``."""

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


def _report(endpoint: Address, s: Any) -> StatusReport:
    return StatusReport(
        endpoint=str(endpoint),
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


@dataclass(frozen=True, slots=True)
class MemberReport:
    """One member of the configuration, as the answering node (the leader, normally) sees it."""

    id: int
    peer_address: str
    client_address: str
    learner: bool
    is_leader: bool
    reachable: bool
    """The answering node's link to this member is up (the answering node itself: True)."""
    match: int | None = None
    """The last log index the member is known to hold (known to the leader only)."""
    lag: int | None = None
    """How many entries it is behind the leader's last index (known to the leader only)."""

    @property
    def role(self) -> str:
        return "learner" if self.learner else "voter"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "leader": self.is_leader,
            "peer_address": self.peer_address,
            "client_address": self.client_address,
            "reachable": self.reachable,
            "match": self.match,
            "lag": self.lag,
        }


def _member_report(m: Any) -> MemberReport:
    w = m.member
    return MemberReport(
        id=int(w.id),
        peer_address=str(w.peerAddress),
        client_address=str(w.clientAddress),
        learner=bool(w.learner),
        is_leader=bool(m.isLeader),
        reachable=bool(m.reachable),
        match=int(m.match) if m.hasProgress else None,
        lag=int(m.lag) if m.hasProgress else None,
    )


class _Taken(Exception):
    """A membership call a node took and timed out on: final for the retry loop (see ``Admin._once``)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Admin:
    """Operator calls on the endpoints of one client (``client.admin``)."""

    def __init__(self, router: Router, timeout: float) -> None:
        self._router = router
        self.timeout = timeout
        """Default deadline of ``propose``, leader changes and retries included."""

    async def statuses(self, timeout: float = 1.0) -> list[StatusReport | tuple[str, str]]:
        """Every endpoint's status, or ``(endpoint, why it did not answer)``, in the order of the endpoints."""

        async def one(endpoint: Address) -> StatusReport | tuple[str, str]:
            try:
                conn = await self._router.connection(endpoint, timeout)
                return _report(endpoint, await conn.status(timeout))
            except FAILED as e:
                self._router.drop(endpoint)
                return (str(endpoint), explain(e))

        return list(await asyncio.gather(*(one(e) for e in self._router.endpoints)))

    async def ping(self, endpoint: Address, timeout: float, payload: bytes = b"ping") -> tuple[int, int, float]:
        """Echo through ``endpoint``: (node id, term, round trip in seconds). Raises what went wrong."""
        try:
            conn = await self._router.connection(endpoint, timeout)
            return await conn.ping(timeout, payload)
        except BROKEN:
            self._router.drop(endpoint)
            raise

    async def propose(self, data: bytes, timeout: float | None = None) -> tuple[int, int, bytes]:
        """Replicate ``data`` through the leader: (index, term, the state machine's result)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        return await self._router.run(lambda conn, left: conn.propose(data, left), deadline)

    # --- membership -------------------------------------------------------------------------------------------

    async def members(self, timeout: float | None = None) -> list[MemberReport]:
        """The configuration, as the leader sees it (each member's lag included); ``Unavailable`` if no
        leader answers before the deadline."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)

        async def op(conn: Connection, left: float) -> list[MemberReport]:
            r = await conn.members(left)
            leader = int(r.leader)
            if leader != int(r.nodeId):
                # Only the leader's view is current (a removed node keeps its last one) and has each member's
                # lag: follow the redirection, or, with no leader known there, try the other endpoints.
                address = next((str(m.member.clientAddress) for m in r.members if int(m.member.id) == leader), "")
                raise NotLeader(NodeId(leader), address)
            return [_member_report(m) for m in r.members]

        return await self._router.run(op, deadline)

    async def add_member(
        self,
        node: int,
        peer_address: str,
        client_address: str = "",
        *,
        learner: bool = False,
        timeout: float | None = None,
    ) -> ConfState:
        """Add ``node`` (as a learner, or a voter at once); the configuration once the change is committed."""
        kind = "addLearner" if learner else "addVoter"
        return await self._change(kind, node, peer_address, client_address, timeout)

    async def promote_member(self, node: int, timeout: float | None = None) -> ConfState:
        """Make learner ``node`` a voter (refused, naming its lag, while it is behind)."""
        return await self._change("promote", node, "", "", timeout)

    async def remove_member(self, node: int, timeout: float | None = None) -> ConfState:
        """Remove ``node`` (the leader too: it hands over once its removal commits)."""
        return await self._change("remove", node, "", "", timeout)

    async def transfer_leader(self, to: int | None = None, timeout: float | None = None) -> int:
        """Move the leadership to ``to`` (default: the most caught-up voter); the new leader's id."""
        return int(await self._once(lambda conn, left: conn.leader_transfer(to or 0, left), timeout))

    async def _change(self, kind: str, node: int, peer: str, client: str, timeout: float | None) -> ConfState:
        members = await self._once(lambda conn, left: conn.member_change(kind, node, peer, client, left), timeout)
        return conf_from_wire(members)

    async def _once(self, op: Callable[[Connection, float], Awaitable[Any]], timeout: float | None) -> Any:
        """Run a membership call through the retry loop, but never send it again once a node took it: a
        change whose outcome is unknown (``Timeout``) may have been made, and a second try would fail
        confusingly ("already a member") or, for a transfer, move the leadership again. Redirections to the
        leader are still followed."""

        async def attempt(conn: Connection, left: float) -> Any:
            try:
                return await op(conn, left)
            except Timeout as e:
                raise _Taken(e) from None

        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            return await self._router.run(attempt, deadline)
        except _Taken as taken:
            raise Timeout(f"{taken.error}; it may or may not have been made: check `raftkv member list`") from None

    async def download_backup(self, timeout: float) -> tuple[SnapshotMeta, str, bytes]:
        """A consistent image of the store: (its metadata, the cluster id, the image), checksum verified."""
        endpoints = self._router.endpoints
        reports = [r for r in await self.statuses(timeout) if isinstance(r, StatusReport)]
        if not reports:
            raise BackupError(f"no node reachable at {','.join(map(str, endpoints))}: is the cluster running?")
        lead = next((r.endpoint for r in reports if r.role == "leader"), None)
        order = sorted(endpoints, key=lambda a: str(a) != lead)
        cluster_id = reports[0].cluster_id
        last_error = ""
        for endpoint in order:
            try:
                meta, image = await self._download(endpoint, timeout)
                return meta, cluster_id, image
            except FAILED as e:
                last_error = f"{endpoint}: {explain(e)}"
        raise BackupError(f"could not download a backup ({last_error})")

    async def _download(self, endpoint: Address, timeout: float) -> tuple[SnapshotMeta, bytes]:
        try:
            conn = await self._router.connection(endpoint, timeout)
            parts: list[bytes] = []
            offset = 0
            while True:
                r = await conn.backup_chunk(offset, max(timeout, BACKUP_CHUNK_TIMEOUT_S))
                data = bytes(r.data)
                parts.append(data)
                offset += len(data)
                if offset >= int(r.totalSize) or not data:
                    break
        except BROKEN:
            self._router.drop(endpoint)
            raise
        image = b"".join(parts)
        if len(image) != int(r.totalSize) or crc32c.crc32c(image) != int(r.crc32c):
            raise BackupError("the downloaded image does not match its checksum")
        try:
            conf = conf_from_wire(r.conf)
        except ValueError as e:
            raise BackupError(f"the node sent a malformed configuration with the backup: {e}") from None
        return SnapshotMeta(Index(int(r.lastIndex)), Term(int(r.lastTerm)), conf), image


async def download_backup(
    endpoints: Sequence[Address], timeout: float, *, cluster_id: str = "", streams: StreamLayer = PLAIN
) -> tuple[SnapshotMeta, str, bytes]:
    """``raftkv snapshot save``: :meth:`Admin.download_backup` on a router of its own."""
    async with kj_loop():
        router = Router(endpoints, cluster_id, streams)
        try:
            return await Admin(router, timeout).download_backup(timeout)
        finally:
            router.close()
