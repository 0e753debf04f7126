"""The client-facing ``Client`` service of a node: ping, status, and the generic propose/applied operations.

Handlers never let a Python exception cross the wire: expected outcomes become typed error codes
(``notLeader`` with the leader's id and client address, ``timeout``, ``proposalDropped``), and anything else
is logged here and answered with ``internal``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from raftkv.errors import NodeFailed, NotLeader, ProposalDropped, Timeout
from raftkv.kv.commands import decode_command, encode_result
from raftkv.kv.errors import CommandError
from raftkv.kv.errors import Compacted as KVCompacted
from raftkv.kv.machine import KVStateMachine
from raftkv.raft.types import SnapshotMeta
from raftkv.server.kv import execute_batch
from raftkv.transport.address import Address
from raftkv.transport.streams import PLAIN, Listener
from raftkv.transport.wire import schema

if TYPE_CHECKING:
    from raftkv.server.node import RaftNode

log = logging.getLogger("raftkv.client")
BACKUP_CHUNK_BYTES = 1 << 20


class ClientService(schema.Client.Server):  # type: ignore[misc]
    def __init__(self, node: RaftNode) -> None:
        self.node = node
        self._backup: tuple[SnapshotMeta, bytes, int] | None = None
        """The image this connection is downloading (``raftkv snapshot save``)."""

    def _check(self, header: Any, results: Any) -> bool:
        cluster = str(header.clusterId)
        if cluster and cluster != self.node.config.cluster_id:
            results.error.code = "wrongCluster"
            results.error.message = f"this is cluster {self.node.config.cluster_id!r}, not {cluster!r}"
            return False
        if self.node.core is None or self.node.failure is not None:
            results.error.code = "stopped"
            results.error.message = "the node is not serving"
            return False
        return True

    async def ping(self, header: Any, payload: Any, _context: Any, **_kw: Any) -> None:
        r = _context.results
        if not self._check(header, r):
            return
        r.payload = payload
        r.nodeId = self.node.id
        r.term = self.node.core.term if self.node.core else 0

    async def status(self, header: Any, _context: Any, **_kw: Any) -> None:
        r = _context.results
        if not self._check(header, r):
            return
        s = self.node.status()
        out = r.init("status")
        out.id = s.id
        out.role = s.role
        out.term = s.term
        out.leader = s.leader or 0
        out.commit = s.commit
        out.applied = s.applied
        out.lastIndex = s.last_index
        out.clusterId = s.cluster_id
        peers = out.init("peers", len(s.peers))
        for k, (pid, info) in enumerate(s.peers.items()):
            p = peers[k]
            p.id = pid
            p.address = info["address"]
            p.connected = info["connected"]
            p.match = info.get("match", 0)
            p.next = info.get("next", 0)
            p.state = info.get("state", "")

    async def propose(self, header: Any, data: Any, timeoutMs: int, _context: Any, **_kw: Any) -> None:  # noqa: N803
        r = _context.results
        if not self._check(header, r):
            return
        timeout = (timeoutMs or 5000) / 1000
        try:
            index, term, result = await self.node.propose_indexed(bytes(data), timeout)
            r.index = index
            r.term = term
            r.result = str(result).encode() if result is not None else b""
        except NotLeader as e:
            self._not_leader(r, e)
        except Timeout as e:
            r.error.code = "timeout"
            r.error.message = str(e)
        except (ProposalDropped, NodeFailed) as e:
            r.error.code = "proposalDropped"
            r.error.message = str(e)
        except Exception as e:
            log.exception("node %s: propose failed", self.node.id)
            r.error.code = "internal"
            r.error.message = f"{type(e).__name__}: {e}"[:200]

    async def applied(self, header: Any, index: int, _context: Any, **_kw: Any) -> None:
        r = _context.results
        if not self._check(header, r):
            return
        commands = getattr(self.node.state_machine, "commands", None)
        if isinstance(commands, dict) and index in commands:
            r.found = True
            r.data = commands[index]

    async def execute(self, header: Any, requests: Any, timeoutMs: int, _context: Any, **_kw: Any) -> None:  # noqa: N803
        r = _context.results
        if not self._check(header, r):
            return
        if not isinstance(self.node.state_machine, KVStateMachine):
            r.error.code = "invalid"
            r.error.message = "this node does not run the key-value store"
            return
        try:
            commands = [(decode_command(bytes(q.command)), bool(q.serializable)) for q in requests]
        except CommandError as e:
            r.error.code = "invalid"
            r.error.message = str(e)[:300]
            return
        timeout = (timeoutMs or 5000) / 1000
        try:
            results = await execute_batch(self.node, commands, timeout)
        except NotLeader as e:
            self._not_leader(r, e)
            return
        except TimeoutError:
            r.error.code = "timeout"
            r.error.message = f"not completed within {timeout} s; outcomes unknown, retry the batch as is"
            return
        except (ProposalDropped, NodeFailed) as e:
            r.error.code = "proposalDropped"
            r.error.message = str(e)
            return
        except Exception as e:
            log.exception("node %s: execute failed", self.node.id)
            r.error.code = "internal"
            r.error.message = f"{type(e).__name__}: {e}"[:200]
            return
        out = r.init("results", len(results))
        for k, res in enumerate(results):
            out[k] = encode_result(res)

    async def backupChunk(self, header: Any, offset: int, _context: Any, **_kw: Any) -> None:  # noqa: N802
        r = _context.results
        if not self._check(header, r):
            return
        try:
            if offset == 0 or self._backup is None:
                self._backup = await self.node.backup_image()
            meta, image, crc = self._backup
            chunk = image[offset : offset + BACKUP_CHUNK_BYTES]
        except Exception as e:
            log.exception("node %s: backup failed", self.node.id)
            r.error.code = "internal"
            r.error.message = f"cannot take a backup: {type(e).__name__}: {e}"[:200]
            return
        r.lastIndex = meta.index
        r.lastTerm = meta.term
        r.voters = [int(v) for v in meta.voters]
        r.totalSize = len(image)
        r.crc32c = crc
        r.data = chunk

    def _not_leader(self, r: Any, e: NotLeader) -> None:
        r.error.code = "notLeader"
        r.error.message = str(e)
        r.error.leaderId = int(e.leader_hint)
        r.error.leaderAddress = self.node.leader_client_address()

    async def watch(
        self,
        header: Any,
        key: Any,
        rangeEnd: Any,  # noqa: N803
        hasRangeEnd: bool,  # noqa: N803
        startRevision: int,  # noqa: N803
        watcher: Any,
        _context: Any,
        **_kw: Any,
    ) -> None:
        r = _context.results
        if not self._check(header, r):
            return
        if self.node.watches is None:
            r.error.code = "invalid"
            r.error.message = "this node does not run the key-value store"
            return
        try:
            r.watchId = self.node.watches.start(
                bytes(key), bytes(rangeEnd) if hasRangeEnd else None, int(startRevision), watcher
            )
        except KVCompacted as e:
            r.error.code = "compacted"
            r.error.message = str(e)
            r.compactRevision = e.oldest_revision

    async def cancelWatch(self, header: Any, watchId: int, _context: Any, **_kw: Any) -> None:  # noqa: N802, N803
        r = _context.results
        if self._check(header, r) and self.node.watches is not None:
            self.node.watches.cancel(int(watchId))


async def serve_clients(node: RaftNode, address: Address) -> Listener:
    return await PLAIN.listen(address, lambda _close: ClientService(node), name=f"node {node.id} client port")
