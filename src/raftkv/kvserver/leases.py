"""A node's lease keeper: the leader's lease timers, their expiry, and the lease queries (etcd's lessor).

Theory of operation
-------------------
Grants and revocations go through the log like any write. Expiry does not: the leader keeps a deadline per
lease in a :class:`~raftkv.kv.lessor.Lessor` (the rules and the guarantee are in that module), refreshes it on
each keep-alive, and proposes ``LeaseRevoke(id, expired=True)`` once a deadline has passed. Every
``check_interval_s`` the keeper checks who leads: on taking office it promotes the lessor with every stored
lease extended by the maximum election timeout; on losing it, it drops the timers. Between checks it
follows the state machine's lease table (grants applied start their TTL then).

Keep-alive, time-to-live and list are *node queries*: answered by the leader from its timers and its store,
never proposed. A follower refuses them with ``NotLeader``, as it does writes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time

from raftkv.errors import RaftError
from raftkv.kv.commands import (
    ErrorResult,
    Internal,
    LeaseKeepAlive,
    LeaseKeepAliveResult,
    LeaseLeases,
    LeaseLeasesResult,
    LeaseQuery,
    LeaseRevoke,
    LeaseTimeToLive,
    LeaseTimeToLiveResult,
    Result,
    encode_command,
)
from raftkv.kv.errors import ErrorCode
from raftkv.kv.lessor import Lessor
from raftkv.kv.machine import KVStateMachine
from raftkv.runtime.node import RaftNode

log = logging.getLogger("raftkv.kv")


class LeaseKeeper:
    """The lessor of one node, and its expiry loop (see the module docstring)."""

    def __init__(self, node: RaftNode, kv: KVStateMachine, check_interval_s: float = 0.05) -> None:
        self.node = node
        self.kv = kv
        self.check_interval_s = check_interval_s
        cfg = node.config
        self.extend_s = 2 * cfg.election_ticks * cfg.tick_ms / 1000
        """The longest election timeout: how far behind a new leader the last acknowledged keep-alive may be."""
        self.lessor = Lessor()
        self._revoking: dict[int, float] = {}
        """Expired leases whose revocation is proposed, and when (proposed again if it does not commit)."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def current(self) -> Lessor:
        """The lessor, promoted or demoted to match this node's role, and synced with the store."""
        now = time.monotonic()
        lessor = self.lessor
        if self.node.is_leader:
            if not lessor.leading:
                lessor.promote(now, self.kv.lease_ttls, self.extend_s)
                self._revoking.clear()
                if len(lessor):
                    log.info(
                        "node %s: leading: %s leases live at least %.2f s longer than their TTL",
                        self.node.id,
                        len(lessor),
                        self.extend_s,
                    )
            else:
                lessor.sync(now, self.kv.lease_ttls)
        elif lessor.leading:
            lessor.demote()
            self._revoking.clear()
        return lessor

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval_s)
            lessor = self.current()
            now = time.monotonic()
            for lease in lessor.expired(now):
                proposed = self._revoking.get(lease)
                if proposed is not None and now - proposed < 5.0:
                    continue
                self._revoking[lease] = now
                if self.propose_revoke(lease):
                    log.info("node %s: lease %s expired: revoking it", self.node.id, lease)

    def propose_revoke(self, lease: int) -> bool:
        """Propose the expiry of ``lease``; whether it was proposed. Nobody awaits the outcome: a revocation
        that does not commit (the leadership changed) is proposed again while the lease is still expired, so
        its failure is only noted, never left unretrieved on the future."""
        try:
            _index, _term, futs = self.node.submit_batch(
                [encode_command(Internal(LeaseRevoke(lease, expired=True)))], timeout=5.0
            )
        except RaftError as e:
            log.debug("node %s: revoking expired lease %s: %s", self.node.id, lease, e)
            return False
        for fut in futs:
            fut.add_done_callback(functools.partial(self._revoke_done, lease))
        return True

    def _revoke_done(self, lease: int, fut: asyncio.Future[object]) -> None:
        if not fut.cancelled() and (e := fut.exception()) is not None:
            log.debug("node %s: the revocation of lease %s did not commit: %s", self.node.id, lease, e)

    def answer(self, query: LeaseQuery) -> Result:
        """A lease query, on the leader (the caller checked this node leads)."""
        lessor = self.current()
        now = time.monotonic()
        match query:
            case LeaseKeepAlive():
                ttl = lessor.keep_alive(query.id, now)
                return _not_found(query.id) if ttl is None else LeaseKeepAliveResult(query.id, ttl)
            case LeaseTimeToLive():
                remaining = lessor.remaining(query.id, now)
                granted = self.kv.lease_ttls.get(query.id)
                if remaining is None or granted is None:
                    return _not_found(query.id)
                keys = tuple(self.kv.lease_keys(query.id)) if query.keys else ()
                return LeaseTimeToLiveResult(query.id, math.floor(remaining), granted, keys)
            case LeaseLeases():
                return LeaseLeasesResult(tuple(sorted(self.kv.lease_ttls)))


def _not_found(lease: int) -> ErrorResult:
    return ErrorResult(
        ErrorCode.LEASE_NOT_FOUND, f"lease {lease} not found: it was never granted, or was revoked or expired"
    )
