"""The key-value service of a node, wire-neutral: execute a client's batch of commands.

Theory of operation
-------------------
A client coalesces its concurrent calls into one batch. On the leader, every write in the batch is stamped
with the leader's clock (the only way time enters the state machine: session expiry runs on log time) and
proposed at once, so the batch travels in one Ready, one fsync and one AppendEntries per follower.
Linearizable reads in the batch share one ReadIndex barrier (dissertation §6.4: confirm leadership with a
heartbeat round, wait until the state machine has applied the read index — no log write), then are served from
the state machine. Serializable reads are served from whatever this node has applied (possibly stale, by
request). A follower refuses a batch that needs the leader with ``NotLeader`` (naming the leader and its
client address when known).

This module knows the runtime's public methods and the KV state machine, and nothing of any wire protocol:
every front end (today Cap'n Proto, ``capnp_api.py``) decodes its requests into commands and calls
:meth:`KVService.execute`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from raftkv import trace
from raftkv.kv.commands import (
    Command,
    LeaseKeepAlive,
    LeaseLeases,
    LeaseTimeToLive,
    Range,
    Result,
    encode_command,
    stamp,
)
from raftkv.kv.machine import KVStateMachine
from raftkv.kvserver.leases import LeaseKeeper
from raftkv.runtime.node import RaftNode

log = logging.getLogger("raftkv.kv")

UNSAFE_STALE_READS_ENV = "RAFTKV_TEST_UNSAFE_STALE_READS"
"""Test-only switch (issue: verification harness): when set to 1, every read is served from this node's local
state, on followers too, without ReadIndex. It breaks linearizability on purpose so that the Jepsen-style
harness can prove it notices. Never set it in production; the node logs a warning at start when it is on."""


def unsafe_stale_reads() -> bool:
    return os.environ.get(UNSAFE_STALE_READS_ENV) == "1"


class KVService:
    """Executes batches of KV commands on one node (``node`` replicates ``kv``)."""

    def __init__(self, node: RaftNode, kv: KVStateMachine, leases: LeaseKeeper | None = None) -> None:
        self.node = node
        self.kv = kv
        self.leases = leases if leases is not None else LeaseKeeper(node, kv)
        self.unsafe_stale_reads = unsafe_stale_reads()
        if self.unsafe_stale_reads:
            log.warning("node %s: TEST-ONLY unsafe stale reads are ON: reads are NOT linearizable", node.id)

    async def execute(self, commands: Sequence[tuple[Command, bool]], timeout: float) -> list[Result | None]:
        """Execute ``(command, serializable)`` pairs; results in the same order.

        Raises ``NotLeader`` / ``TimeoutError`` / ``ProposalDropped`` / ``NodeFailed``.
        """
        node, kv = self.node, self.kv
        if trace.ON:
            trace.point("s.exec", len(commands))
        if self.unsafe_stale_reads:
            commands = [(c, serializable or isinstance(c, Range)) for c, serializable in commands]  # UNSAFE
        needs_leader = any(not (isinstance(c, Range) and serializable) for c, serializable in commands)
        if needs_leader and not node.is_leader:
            raise node.not_leader()
        now_ms = int(time.time() * 1000)
        results: list[Result | None] = [None] * len(commands)
        write_at: list[int] = []
        datas: list[bytes] = []
        linearizable: list[tuple[int, Range]] = []
        for k, (cmd, serializable) in enumerate(commands):
            if isinstance(cmd, LeaseKeepAlive | LeaseTimeToLive | LeaseLeases):
                results[k] = self.leases.answer(cmd)  # the leader's timers: never proposed (checked above)
            elif isinstance(cmd, Range):
                if serializable:
                    results[k] = kv.read(cmd)
                else:
                    linearizable.append((k, cmd))
            else:
                write_at.append(k)
                datas.append(encode_command(stamp(cmd, now_ms)))
        writes: list[tuple[int, asyncio.Future[Any]]] = []
        if datas:
            index, _term, futs = node.submit_batch(datas)
            writes = list(zip(write_at, futs, strict=True))
            if trace.ON:
                trace.point("s.prop", int(index))
        try:
            async with asyncio.timeout(timeout):
                if linearizable:
                    await node.read_barrier(timeout=None)
                    for k, rng in linearizable:
                        results[k] = kv.read(rng)
                for k, fut in writes:
                    results[k] = await fut
        except BaseException:
            # A write failed or the deadline passed: the futures not awaited yet never will be, and their own
            # failure (dropped, timed out) must not be logged as an exception nobody retrieved. Only on this
            # path: the usual batch pays nothing for it.
            for _k, fut in writes:
                if fut.done():
                    _retrieve(fut)
                else:
                    fut.add_done_callback(_retrieve)
            raise
        if trace.ON:
            trace.point("s.done", len(commands))
        return results


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
