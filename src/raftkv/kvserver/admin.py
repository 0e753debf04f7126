"""Administration of a node, wire-neutral: status, membership, leadership transfer, backups of the KV store.

Theory of operation
-------------------
What an operator asks a node, answered from the runtime's public methods only, so that every front end (Cap'n
Proto today; the etcd gateway and the HTTP dashboard later) gives the same answers. A backup is one consistent
image of the key-value store (one read transaction, taken in a worker thread while the node keeps applying
when the store is durable) with the log index and term it reflects and the configuration, and the CRC32C of the
image; ``raftkv snapshot save`` downloads it in chunks.
"""

from __future__ import annotations

import asyncio
from typing import Any

import crc32c

from raftkv.errors import InvalidRequest
from raftkv.kv.machine import KVStateMachine
from raftkv.raft.membership import ChangeType, ConfChange
from raftkv.raft.types import ConfState, Index, NodeId, SnapshotMeta, Term
from raftkv.runtime.node import NodeStatus, RaftNode


class Admin:
    """The administrative operations of one node (``kv`` is None when it does not run the KV store)."""

    def __init__(self, node: RaftNode, kv: KVStateMachine | None, *, kv_durable: bool) -> None:
        self.node = node
        self.kv = kv
        self.kv_durable = kv_durable
        """The KV store lives on disk (LMDB): its image is taken in a worker thread."""

    def status(self) -> NodeStatus:
        return self.node.status()

    async def backup_image(self) -> tuple[SnapshotMeta, bytes, int]:
        """A consistent image of the KV store now, with its metadata and CRC32C."""
        kv = self.kv
        if kv is None:
            raise InvalidRequest("this node does not run the key-value store: backups need it")
        index, data = await asyncio.to_thread(kv.snapshot_with_index) if self.kv_durable else kv.snapshot_with_index()
        term = self.node.term_at(Index(index))
        meta = SnapshotMeta(Index(index), term if term is not None else Term(0), self.node.conf_at(Index(index)))
        return meta, data, crc32c.crc32c(data)

    # --- membership (docs/membership.md) -------------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        """This node's view of the configuration, with each member's lag when this node leads."""
        return self.node.members()

    async def change_members(
        self, kind: ChangeType, node: NodeId, peer: str, client: str, *, timeout: float = 10.0
    ) -> ConfState:
        """One membership change on the leader, returned once committed (errors: see ``RaftNode``)."""
        if kind is ChangeType.PROMOTE:
            return await self.node.promote(node, timeout=timeout)
        return await self.node.change_membership(ConfChange(kind, node, peer, client), timeout)

    async def transfer_leadership(self, to: NodeId | None, *, timeout: float = 5.0) -> NodeId:
        return await self.node.transfer_leadership(to, timeout)
