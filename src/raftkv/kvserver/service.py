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
from raftkv.kv.auth import ROOT, AuthStore
from raftkv.kv.commands import (
    Authed,
    AuthEnable,
    Authenticate,
    AuthQuery,
    AuthStatus,
    AuthStatusResult,
    Command,
    ErrorResult,
    Internal,
    LeaseKeepAlive,
    LeaseLeases,
    LeaseTimeToLive,
    NamesResult,
    Range,
    Result,
    RoleGet,
    RoleGetResult,
    RoleList,
    UserAdd,
    UserChangePassword,
    UserGet,
    UserGetResult,
    UserList,
    encode_command,
    stamp,
)
from raftkv.kv.errors import ErrorCode
from raftkv.kv.machine import KVStateMachine
from raftkv.kvserver.auth import Authenticator
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
        self.auth = Authenticator(lambda: kv.auth, node.config.auth_token_ttl)
        self.unsafe_stale_reads = unsafe_stale_reads()
        if self.unsafe_stale_reads:
            log.warning("node %s: TEST-ONLY unsafe stale reads are ON: reads are NOT linearizable", node.id)

    async def execute(
        self, commands: Sequence[tuple[Command, bool]], timeout: float, user: str = ""
    ) -> list[Result | None]:
        """Execute ``(command, serializable)`` pairs on behalf of ``user`` (``""``: nobody, which is everyone
        while authentication is off); results in the same order. A command the user may not run gets its
        ``ErrorResult`` (``PERMISSION_DENIED``, ``USER_EMPTY``) and the others run.

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
        # Once the auth store was ever touched, every command is checked and every write proposed as Authed
        # (raftkv.kv.auth); before that, nothing here costs more than this test.
        auth = kv.auth if kv.auth.revision > 0 else None
        now_ms = int(time.time() * 1000)
        results: list[Result | None] = [None] * len(commands)
        write_at: list[int] = []
        datas: list[bytes] = []
        linearizable: list[tuple[int, Range | AuthQuery]] = []
        for k, (cmd, serializable) in enumerate(commands):
            if auth is not None and not isinstance(cmd, AuthQuery | Range):
                why = auth.check(user, cmd, kv.lease_keys)
                if why is not None:
                    results[k] = why
                    continue
            if isinstance(cmd, LeaseKeepAlive | LeaseTimeToLive | LeaseLeases):
                results[k] = self.leases.answer(cmd)  # the leader's timers: never proposed (checked above)
            elif isinstance(cmd, Range):
                if serializable:
                    results[k] = self._read(cmd, user, auth)
                else:
                    linearizable.append((k, cmd))
            elif isinstance(cmd, AuthQuery):
                linearizable.append((k, cmd))  # the store as of now: after the read barrier
            elif isinstance(cmd, Authed | Internal):
                results[k] = ErrorResult(ErrorCode.INVALID_COMMAND, f"a client may not send {type(cmd).__name__}")
            else:
                proposed: Command = cmd
                if isinstance(cmd, UserAdd | UserChangePassword | AuthEnable):
                    proposed = await self.auth.prepare(cmd)  # hash the password, draw the token secret
                wire = stamp(proposed, now_ms)
                if auth is not None:
                    wire = Authed(user, wire)  # type: ignore[arg-type]  # checked again when applied
                write_at.append(k)
                datas.append(encode_command(wire))
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
                    auth = kv.auth if kv.auth.revision > 0 else None  # as of the barrier
                    for k, query in linearizable:
                        if isinstance(query, Range):
                            results[k] = self._read(query, user, auth)
                        else:
                            results[k] = await self._auth_query(query, user)
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

    def _read(self, rng: Range, user: str, auth: AuthStore | None) -> Result:
        if auth is not None and (why := auth.check(user, rng, self.kv.lease_keys)) is not None:
            return why
        return self.kv.read(rng)

    async def _auth_query(self, query: AuthQuery, user: str) -> Result:
        """A question about users and roles, from the applied store: root's, but for one's own user and roles
        and the status, which anyone may ask."""
        if isinstance(query, Authenticate):
            return await self.auth.authenticate(query.name, query.password)
        store = self.kv.auth
        if isinstance(query, AuthStatus):
            return AuthStatusResult(store.enabled, store.revision)
        own = store.users.get(user)
        mine = (isinstance(query, UserGet) and query.name == user) or (
            isinstance(query, RoleGet) and own is not None and query.name in own.roles
        )
        if store.enabled and not store.is_root(user) and not mine:
            if not user:
                return ErrorResult(ErrorCode.USER_EMPTY, "user name is empty: authenticate first (--user)")
            return ErrorResult(
                ErrorCode.PERMISSION_DENIED, f"permission denied: {type(query).__name__} needs role root"
            )
        match query:
            case UserGet():
                record = store.users.get(query.name)
                if record is None:
                    return ErrorResult(ErrorCode.USER_NOT_FOUND, f"user name not found: {query.name!r}")
                return UserGetResult(record.name, record.roles)
            case UserList():
                return NamesResult(tuple(sorted(store.users)))
            case RoleGet():
                role = store.roles.get(query.name)
                if role is None:
                    if query.name == ROOT:
                        return RoleGetResult(ROOT, ())  # granted without being created (etcd)
                    return ErrorResult(ErrorCode.ROLE_NOT_FOUND, f"role name not found: {query.name!r}")
                return RoleGetResult(role.name, role.permissions)
            case RoleList():
                return NamesResult(tuple(sorted(store.roles)))
        raise AssertionError(query)  # pragma: no cover - every query is matched above


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
