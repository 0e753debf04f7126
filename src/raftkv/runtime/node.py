"""``RaftNode``: one Raft server on asyncio — the consensus core, its write-ahead log and its network, joined.

Theory of operation
-------------------
A node owns one ``asyncio.TaskGroup`` with

* the **ticker** — drives ``RawNode.tick()`` every ``tick_ms``; like the seed's periodic timer it can be paused
  (and is, while the node stops); after a stall it does not fire a burst of catch-up ticks, which would turn a
  slow event loop into spurious elections;
* the **ready loop** — carries out each ``Ready`` under the contract of ``raftkv.raft.ready``: the leader's
  messages leave at once; entries and hard state are written and fsync'd in a worker thread, off the event
  loop, while the loop keeps stepping incoming messages and collecting proposals (which is what batches them:
  the next Ready carries everything that arrived during this fsync — group commit); then the messages that
  depend on that write, then the committed entries are applied and their proposals resolved, then
  ``advance()``;
* the **peer transport** (``raftkv.transport``): the peer port and one supervised link per peer.

The runtime is generic: it replicates any :class:`~raftkv.runtime.statemachine.StateMachine` and knows nothing
of the key-value store or of client protocols. Optional protocols (``KeepsAppliedIndex``, ``StreamsSnapshots``)
tell it what more a state machine can do; front ends (``raftkv.kvserver``) use only its public methods.

Everything that touches the core runs on the event loop thread; only the WAL writes run in the worker thread,
and the WAL is safe for the loop's concurrent reads of already-stable entries.

Proposals resolve with the state machine's result for their entry, or fail with ``NotLeader`` (at once, with
the leader's id), ``ProposalDropped``, or ``Timeout`` — never silently lost. A proposal whose index ends up
holding another entry (leadership changed before it committed) fails with ``ProposalDropped``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from raftkv import trace
from raftkv.errors import NodeFailed, Timeout
from raftkv.raft.config import RaftConfig
from raftkv.raft.driver import ReadyPlanner
from raftkv.raft.errors import InvariantViolation, NotLeader, ProposalDropped, invariant
from raftkv.raft.membership import ChangeType, ConfChange, InvalidConfChange
from raftkv.raft.messages import AppendEntries, AppendEntriesResponse, Message
from raftkv.raft.node import RawNode, Status
from raftkv.raft.ready import Ready, Role
from raftkv.raft.types import (
    NO_NODE,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Index,
    Member,
    NodeId,
    SnapshotMeta,
    Term,
)
from raftkv.runtime.config import NodeConfig
from raftkv.runtime.http import HttpHandler, HttpServer
from raftkv.runtime.metrics import NodeMetrics
from raftkv.runtime.statemachine import KeepsAppliedIndex, StateMachine, StreamsSnapshots
from raftkv.storage import DataDir, NodeStorage, StorageError
from raftkv.storage.snapshots import Snapshot
from raftkv.transport.address import Address, AddressError
from raftkv.transport.kjloop import kj_loop
from raftkv.transport.peers import Transport, TransportSettings
from raftkv.transport.streams import PLAIN, StreamLayer

log = logging.getLogger("raftkv.node")

HISTORY_EVENTS = 200
"""Leader, role and membership changes a node remembers for its dashboard."""


_DEADLINE_GRAIN_S = 0.01
"""Proposal deadlines are rounded up to this, so that the proposals of one moment share one timer."""
_COMMIT_CLOCK_MAX = 65536
"""Batches awaiting their commit-latency sample; past it the oldest go unmeasured (never unbounded memory)."""


_T = TypeVar("_T")


def _started(part: _T | None) -> _T:
    """``part`` of a started node (its core, storage or transport); a bug if it is not there."""
    if part is None:
        raise InvariantViolation("the node is not started (or already stopped)")
    return part


@dataclass(slots=True)
class _DeadlineBucket:
    """Proposals ``first..last`` of ``term``, made with ``timeout``, that expire at ``deadline`` (loop time)."""

    deadline: float
    term: Term
    timeout: float
    first: Index
    last: Index


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What ``raftkv status`` shows for one node."""

    id: NodeId
    cluster_id: str
    role: str
    term: int
    leader: NodeId | None
    commit: int
    applied: int
    last_index: int
    peers: dict[NodeId, dict[str, Any]]


class RaftNode:
    """A Raft server. ``async with RaftNode(config, state_machine) as node: await node.propose(b"...")``."""

    def __init__(self, config: NodeConfig, state_machine: StateMachine, *, check_ports: bool = True) -> None:
        config.validate(check_ports=check_ports)
        self.config = config
        self.id = config.id
        self.state_machine = state_machine
        self.metrics = NodeMetrics(config.id)
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_EVENTS)
        """The last leader, role and membership changes this node saw, with their wall-clock times (the
        dashboard's timeline; ``raftkv.runtime.http``)."""
        self.http: HttpServer | None = None
        self.status_extras: list[Callable[[], dict[str, Any]]] = []
        """What the layers above add to ``/status.json`` and the dashboard (the key-value store: its revision,
        leases...): each called at every status, its dict merged under ``store``."""
        self.http_handlers: dict[str, HttpHandler] = {}
        """``/kv/NAME`` on the HTTP port, served by the layers above (the key-value store's key browser):
        called with the query and the request's ``Authorization`` header, answering (status, JSON body)."""
        self.core: RawNode | None = None
        self.transport: Transport | None = None
        self._storage: NodeStorage | None = None
        self._stack = contextlib.AsyncExitStack()
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._ticking = asyncio.Event()
        self._stopping = False
        self._closed = False
        self._loop_done = asyncio.Event()
        self.ready_event = asyncio.Event()
        """Set once the node is serving (readiness is an Event)."""
        self.stopped = asyncio.Event()
        """Set when the node has stopped, gracefully or because of a failure (see ``failure``)."""
        self.failure: BaseException | None = None
        self._waiters: dict[Index, tuple[Term, asyncio.Future[Any]]] = {}
        self._read_waiters: dict[bytes, asyncio.Future[Index]] = {}
        self._read_seq = 0
        self._apply_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        """Heap of (index, seq, future): resolved once the state machine has applied ``index``."""
        self._spawned: set[asyncio.Task[None]] = set()
        self._wal_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raftkv-wal-{config.id}")
        """WAL writes run here when the planner says so (``ReadyPlan.on_loop`` is false: a candidate's, a snapshot
        install's, or a write queued behind a compaction):
        invariant, WAL writes never overlap (the ready loop awaits each persist; compactions go through here)."""
        self._wal_jobs = 0
        """Compactions submitted to the WAL thread and not finished: while any is, persists queue behind it."""
        self._last_snapshot = 0
        self._snapshot_failed_at = 0
        self._bytes_since_snapshot = 0
        self._last_snapshot_bytes = 0
        """Size of the newest snapshot's data: ``snapshot_growth`` scales the triggers by it."""
        self._snapshotting = False
        self._deadline_bucket: _DeadlineBucket | None = None
        """The newest proposals' shared deadline timer (see ``_arm_deadline``)."""
        self._commit_clock: deque[tuple[Index, Term, float]] = deque(maxlen=_COMMIT_CLOCK_MAX)
        """(last index, term, loop time) of each batch proposed here, oldest first, until applied: the
        commit-latency histogram's samples (one per batch, not per command, so the hot path pays one append)."""
        self._conf_pending = Index(0)
        """The index of a configuration change not yet committed, whose removed members are still linked."""
        self._committed_conf: ConfState | None = None
        """The committed configuration the peer links were last brought in line with."""
        self._removed: set[NodeId] = set()
        """Members removed by a committed change (and not added back): their links stop, their messages are
        refused."""
        self._warned_conf: ConfState | None = None

    # ======================================================================================================
    # Lifecycle
    # ======================================================================================================

    async def __aenter__(self) -> RaftNode:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        cfg = self.config
        data_dir = DataDir(cfg.data_dir)
        await asyncio.to_thread(data_dir.claim, cfg.cluster_id, cfg.id)
        await self._stack.enter_async_context(kj_loop())
        self._storage = await asyncio.to_thread(data_dir.open, segment_bytes=cfg.wal_segment_bytes)
        self._stack.callback(self._storage.close)
        self._stack.callback(self._wal_thread.shutdown)
        snapshot = self._storage.snapshot
        sm = self.state_machine
        sm_applied = int(sm.applied_index) if isinstance(sm, KeepsAppliedIndex) else 0
        if snapshot is not None and snapshot.meta.index > sm_applied:
            # The state machine is behind the snapshot (a fresh node, or LMDB lost unsynced transactions):
            # restore it, then replay the log from the snapshot on.
            log.info("node %s: restoring the state machine from the snapshot at index %s", cfg.id, snapshot.meta.index)
            await self._restore_state_machine(snapshot)
        self._last_snapshot = snapshot.meta.index if snapshot is not None else 0
        self._last_snapshot_bytes = snapshot.info.data_len if snapshot is not None else 0
        # The bootstrap configuration (--peers) matters only to a node whose storage holds none; after the first
        # start, the log (or the snapshot) is the address book. A joining node has none: it learns it from
        # the leader and never campaigns before it does.
        own_client = str(cfg.listen_client) if cfg.listen_client else ""
        bootstrap = ConfState(
            tuple(
                Member(nid, str(addr), own_client if nid == cfg.id else "") for nid, addr in sorted(cfg.peers.items())
            )
        )
        self.core = RawNode(
            RaftConfig(
                id=cfg.id,
                voters=() if cfg.join else tuple(sorted(cfg.peers)),
                bootstrap=None if cfg.join else bootstrap,
                rng=random.Random(),
                election_ticks=cfg.election_ticks,
                heartbeat_ticks=cfg.heartbeat_ticks,
                pre_vote=cfg.pre_vote,
                check_quorum=cfg.check_quorum,
                lazy_commit=cfg.lazy_commit,
                # A state machine that persists its progress (the LMDB-backed KV store) resumes where it was.
                applied=Index(max(snapshot.meta.index if snapshot is not None else 0, sm_applied)),
            ),
            self._storage.wal,
        )
        if snapshot is not None:
            self.core.set_snapshot(snapshot.meta)
        # What was applied since the last snapshot before this restart counts toward the next one: with a state
        # machine that keeps its progress (LMDB) those entries are not re-applied, and a node restarted more
        # often than --snapshot-growth's worth of commands would otherwise never snapshot again.
        self._bytes_since_snapshot = self._storage.wal.entry_bytes(
            Index(self._last_snapshot + 1), Index(self.core.log.applied + 1)
        )
        conf = self.core.conf
        if not cfg.join and conf.ids and set(conf.ids) != set(cfg.peers):
            log.warning(
                "node %s: --peers lists %s, but the log's configuration is %s: the log wins (membership changes "
                "go through `raftkv member`)",
                cfg.id,
                ",".join(map(str, sorted(cfg.peers))),
                conf.describe(),
            )
        self.transport = Transport(
            cfg.id,
            cfg.cluster_id,
            self._peer_addresses(conf),
            self._on_messages,
            lambda: int(self.core.term) if self.core else 0,
            TransportSettings(call_timeout_s=cfg.peer_timeout_ms / 1000, max_connections=cfg.max_connections),
            client_address=str(cfg.listen_client) if cfg.listen_client else "",
            on_peer_down=self._on_peer_down,
            etcd_address=(f"{'https' if cfg.cert_file else 'http'}://{cfg.listen_etcd}" if cfg.listen_etcd else ""),
            snapshot_source=self._snapshot_source,
            on_snapshot_sent=self._on_snapshot_sent,
            snapshot_received=self._snapshot_received,
            incoming_dir=str(data_dir.incoming),
            accept_peer=self._accept_peer,
            streams=self._peer_streams(),
        )
        self._on_conf(conf)  # the committed configuration the links start from
        await self.transport.listen(cfg.listen_peer)
        self._stack.push_async_callback(self.transport.close)
        if cfg.listen_metrics is not None:
            self.metrics.watch_transport(lambda: self.transport)
            self.http = HttpServer(self, self.metrics.registry)
            await self.http.start(cfg.listen_metrics)
            self._stack.push_async_callback(self.http.stop)
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._ticking.set()
        self._tasks.append(self._tg.create_task(self._ticker(), name=f"raftkv-ticker-{cfg.id}"))
        self._tg.create_task(self._ready_loop(), name=f"raftkv-ready-{cfg.id}")
        self.transport.start()
        self._wake.set()
        self.ready_event.set()
        log.info(
            "node %s serving cluster %r: peers on %s, data in %s", cfg.id, cfg.cluster_id, cfg.listen_peer, cfg.data_dir
        )

    def reload_peer_tls(self) -> bool:
        """Load the peer port's certificate files again (SIGHUP): new connections use them, open ones keep
        theirs. False if peer TLS is off; a file that does not load raises ``ConfigError`` and changes nothing."""
        tls = self.config.peer_tls()
        if tls is None or self.transport is None:
            return False
        self.transport.streams.replace_tls(*tls)
        return True

    def _peer_streams(self) -> StreamLayer:
        """Plain TCP, or mutual TLS on the peer port (``--peer-cert-file`` ...; ``NodeConfig.peer_tls``)."""
        tls = self.config.peer_tls()
        if tls is None:
            return PLAIN
        return StreamLayer(server_tls=tls[0], client_tls=tls[1])

    async def aclose(self, transfer_leadership: bool = True) -> None:
        """Stop the node: hand leadership over if that is quick and safe, then stop everything. Idempotent."""
        if self._closed:
            await self.stopped.wait()
            return
        self._closed = True
        try:
            if transfer_leadership and self.failure is None:
                await self._handover(timeout_s=1.0)
            self._stopping = True
            self.pause()
            self._wake.set()
            if self._tg is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await self._loop_done.wait()  # the ready loop finishes the write it is doing
                for task in [*self._tasks, *self._spawned]:  # the ready loop ended by itself
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await self._tg.__aexit__(None, None, None)
            if self.core is not None:
                self.core.stop()
            self._fail_waiters(ProposalDropped("the node stopped"))
            await self._stack.aclose()
        finally:
            self.stopped.set()
            if self.core is not None:
                log.info("node %s stopped", self.id)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a task owned by this node: cancelled when the node stops."""
        if self._tg is None:
            coro.close()
            raise ProposalDropped("the node is not started")
        task = self._tg.create_task(coro, name=name)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        return task

    def pause(self) -> None:
        """Pause the ticker (the seed's pausable timer): no elections, no heartbeats until ``resume``."""
        self._ticking.clear()

    def resume(self) -> None:
        self._ticking.set()

    async def _handover(self, timeout_s: float) -> None:
        """If leader, transfer leadership to the most caught-up connected voter and wait briefly for it."""
        core = self.core
        if core is None or core.role is not Role.LEADER or self.transport is None:
            return
        status = core.status()
        candidates = [
            (p.match, peer)
            for peer, p in status.progress.items()
            if peer != self.id and peer in core.voters and p.recent_active and self.transport.connected(peer)
        ]
        if not candidates:
            return
        _match, target = max(candidates)
        log.info("node %s: stopping as leader; handing leadership to node %s", self.id, target)
        with contextlib.suppress(NotLeader, ValueError):
            core.transfer_leadership(target)
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while core.role is Role.LEADER:
                    await asyncio.sleep(self.config.tick_ms / 1000)

    # ======================================================================================================
    # Proposals and status
    # ======================================================================================================

    async def propose(self, data: bytes, timeout: float | None = 5.0) -> Any:
        """Replicate ``data`` and return the state machine's result for it.

        Raises ``NotLeader`` (with ``leader_hint``), ``ProposalDropped`` or ``Timeout``.
        """
        _index, _term, result = await self.propose_indexed(data, timeout)
        return result

    async def propose_indexed(self, data: bytes, timeout: float | None = 5.0) -> tuple[Index, Term, Any]:
        """``propose``, also returning the index and term the command was committed at."""
        index, term, (fut,) = self.submit_batch((data,), timeout)
        try:
            return index, term, await fut
        finally:
            waiter = self._waiters.get(index)
            if waiter is not None and waiter[1] is fut:
                del self._waiters[index]  # cancelled by the caller

    def submit_batch(
        self, datas: Sequence[bytes], timeout: float | None = None
    ) -> tuple[Index, Term, list[asyncio.Future[Any]]]:
        """Append commands on this leader now, at consecutive indexes from the returned one, in one step of the
        core (a client's batch costs one proposal, not one per command); each future resolves with its command's
        result (``propose`` awaits one). With a ``timeout``, each future fails
        with ``Timeout`` if its command is not applied within it (give or take ``_DEADLINE_GRAIN_S``)."""
        if self._closed or self.core is None:
            raise ProposalDropped("the node is stopped")
        if self.failure is not None:
            raise NodeFailed(str(self.failure))
        core = self.core
        first = core.propose_batch(datas)
        term = core.term
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[Any]] = []
        waiters = self._waiters
        for k in range(len(datas)):
            fut: asyncio.Future[Any] = loop.create_future()
            index = Index(first + k)
            old = waiters.get(index)
            if old is not None and not old[1].done():
                # An earlier term's proposal at this index: its entry was truncated away (this node lost the
                # leadership and won it back), so it will never apply. Nothing else would ever resolve it.
                taken = f"index {index} was taken by a later leader's entry (term {term})"
                old[1].set_exception(ProposalDropped(taken))
            waiters[index] = (term, fut)
            futs.append(fut)
        self.metrics.proposals.inc(len(datas))
        self._commit_clock.append((Index(first + len(datas) - 1), term, loop.time()))
        if timeout is not None and math.isfinite(timeout):
            self._arm_deadline(first, Index(first + len(datas) - 1), term, timeout)
        self._wake.set()
        return first, term, futs

    def _time_commits(self, applied: Index, term: Term) -> None:
        """Observe the commit latency of every batch applied by now. A batch of an earlier term is dropped
        unobserved: this node lost the leadership meanwhile, and its entries may have been truncated away."""
        clock = self._commit_clock
        now = asyncio.get_running_loop().time()
        histogram = self.metrics.commit_seconds
        while clock and clock[0][0] <= applied:
            _last, batch_term, proposed_at = clock.popleft()
            if batch_term == term:
                histogram.observe(now - proposed_at)

    def _arm_deadline(self, first: Index, last: Index, term: Term, timeout: float) -> None:
        """Fail the proposals ``first..last`` of ``term`` still pending after ``timeout`` seconds.

        One timer per grain of time, not per proposal: ``asyncio.timeout`` around each proposal cost ~10 µs
        each (measured), about a third of a proposal's whole cost on the leader at 4,096 in flight. Proposals
        made in one grain with the same timeout share a timer, found again by (index, term), which names a
        proposal uniquely: a later leader at that index has a higher term.
        """
        loop = asyncio.get_running_loop()
        deadline = math.ceil((loop.time() + timeout) / _DEADLINE_GRAIN_S) * _DEADLINE_GRAIN_S
        b = self._deadline_bucket
        if b is not None and b.deadline == deadline and b.term == term and b.timeout == timeout and first == b.last + 1:
            b.last = last
            return
        b = self._deadline_bucket = _DeadlineBucket(deadline, term, timeout, first, last)
        loop.call_at(deadline, self._expire, b)

    def _expire(self, b: _DeadlineBucket) -> None:
        if self._deadline_bucket is b:
            self._deadline_bucket = None
        waiters = self._waiters
        for index in range(b.first, b.last + 1):
            waiter = waiters.get(Index(index))
            if waiter is None or waiter[0] != b.term:
                continue  # applied, failed, or another proposal's
            del waiters[Index(index)]
            if not waiter[1].done():
                waiter[1].set_exception(
                    Timeout(f"proposal at index {index} (term {b.term}) not applied within {b.timeout} s")
                )

    async def read_barrier(self, timeout: float | None = 5.0) -> Index:
        """Wait until a read served from this node's state machine is linearizable (ReadIndex, §6.4).

        Confirms leadership with a heartbeat round (shared by every read that arrives before the round starts),
        then waits until the state machine has applied the read index. No log write. Raises ``NotLeader`` on a
        follower, ``ProposalDropped`` if leadership is lost meanwhile, ``Timeout`` after ``timeout`` seconds.
        """
        if self._closed or self.core is None:
            raise ProposalDropped("the node is stopped")
        self.metrics.read_barriers.inc()
        self._read_seq += 1
        ctx = self._read_seq.to_bytes(8, "big")
        self.core.read_index(ctx)
        fut: asyncio.Future[Index] = asyncio.get_running_loop().create_future()
        self._read_waiters[ctx] = fut
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                index = await fut
                await self.wait_applied(index)
                return index
        except TimeoutError:
            raise Timeout(f"read not confirmed within {timeout} s") from None
        finally:
            self._read_waiters.pop(ctx, None)

    async def wait_applied(self, index: Index) -> None:
        """Wait until the state machine has applied ``index``."""
        core = self.core
        if core is None or core.log.applied >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._read_seq += 1
        heapq.heappush(self._apply_waiters, (int(index), self._read_seq, fut))
        await fut

    def status(self) -> NodeStatus:
        core = _started(self.core)
        s: Status = core.status()
        peers: dict[NodeId, dict[str, Any]] = {}
        # The members of the configuration in effect (not --peers: the log is the address book).
        for peer, addr in sorted(self._peer_addresses(core.conf).items()):
            if peer == self.id:
                continue
            info: dict[str, Any] = {
                "address": str(addr),
                "connected": self.transport.connected(peer) if self.transport else False,
            }
            p = s.progress.get(peer)
            if p is not None:
                info.update(match=int(p.match), next=int(p.next), state=p.state)
            peers[peer] = info
        return NodeStatus(
            id=self.id,
            cluster_id=self.config.cluster_id,
            role=s.role.value,
            term=int(s.term),
            leader=s.leader if s.leader != NO_NODE else None,
            commit=int(s.commit),
            applied=int(s.applied),
            last_index=int(s.last_index),
            peers=peers,
        )

    # --- what front ends and services may ask (public; they never reach into the core or the transport) ----

    @property
    def serving(self) -> bool:
        """Started, not stopped, not failed: requests may be served."""
        return self.core is not None and self.failure is None and not self._stopping

    @property
    def term(self) -> Term:
        return self.core.term if self.core is not None else Term(0)

    @property
    def is_leader(self) -> bool:
        return self.core is not None and self.core.role is Role.LEADER

    @property
    def leader_id(self) -> NodeId:
        """The leader this node knows of (``NO_NODE`` if none)."""
        return self.core.leader if self.core is not None else NO_NODE

    @property
    def voters(self) -> tuple[NodeId, ...]:
        return self.core.voters if self.core is not None else tuple(sorted(self.config.peers))

    @property
    def conf(self) -> ConfState:
        """The configuration in effect on this node (the latest in its log, committed or not)."""
        return _started(self.core).conf

    @property
    def conf_index(self) -> Index:
        """The log index of the entry the configuration in effect comes from (0: bootstrap, not in the log)."""
        return self.core.conf_index if self.core is not None else Index(0)

    def conf_at(self, index: Index) -> ConfState:
        """The configuration as of log index ``index`` (what a snapshot or backup taken there records).
        Raises ``ProposalDropped`` (retry) if a snapshot installed meanwhile put ``index`` below the log."""
        core = _started(self.core)
        if index < core.conf_base_index:
            raise ProposalDropped(f"index {index} went below the log (a snapshot was installed): retry")
        return core.conf_at(index)

    @property
    def applied_index(self) -> Index:
        return self.core.log.applied if self.core is not None else Index(0)

    def term_at(self, index: Index) -> Term | None:
        """The term of the entry at ``index`` in this node's log or its newest snapshot (None if unknown)."""
        core = self.core
        if core is None:
            return None
        term = core.log.term_or_none(index)
        if term is None and core.latest_snapshot.index == index:
            term = core.latest_snapshot.term
        return term

    def not_leader(self) -> NotLeader:
        """The error for a request that needs the leader, naming the leader and its client address if known."""
        return NotLeader(self.leader_id, self.leader_client_address())

    def etcd_url_of(self, member: NodeId) -> str:
        """Where ``member`` serves etcd's API (``http://`` or ``https://HOST:PORT``, as it announced in the
        peer handshake; this node's own from its config); "" if it serves none or is not known yet."""
        return self.transport.etcd_address_of(member) if self.transport else ""

    def leader_client_address(self) -> str:
        """The client address of the leader this node knows of ("" if unknown)."""
        core = self.core
        if core is None or core.leader == NO_NODE:
            return ""
        if core.leader == self.id:
            return str(self.config.listen_client or "")
        return self.transport.client_address_of(core.leader) if self.transport else ""

    async def wait_for_leader(self, timeout: float = 5.0) -> NodeId:
        async with asyncio.timeout(timeout):
            while True:
                core = self.core
                if core is not None and core.leader != NO_NODE:
                    return core.leader
                await asyncio.sleep(self.config.tick_ms / 1000)

    # --- membership (the rules: raftkv.raft.membership) -----------------------------------------------------

    def _peer_addresses(self, conf: ConfState) -> dict[NodeId, Address]:
        """Where this node dials each member of ``conf`` (before a joining node has a configuration: the
        members the cluster told it of).

        The configuration says *who* the members are and where each listens; this node's own ``--peers`` entry
        for a member, where it has one, says where *it* reaches that member, and wins: a proxy may sit between
        two nodes (the fault-injection harness does that), and a restored backup's addresses are the old
        cluster's. A member ``--peers`` does not list (one added later) is dialled at its configured address.
        """
        if conf.is_empty():
            return dict(self.config.peers)
        out: dict[NodeId, Address] = {}
        for m in conf.members:
            local = self.config.peers.get(m.id)
            if m.id == self.id:
                out[m.id] = local or self.config.listen_peer
            elif local is not None:
                out[m.id] = local
            elif m.peer_address:
                try:
                    out[m.id] = Address.parse(m.peer_address, f"the peer address of member {m.id}")
                except AddressError as e:  # in the log already (an older node let it in): skip, say so once
                    log.warning("node %s: cannot dial member %s: %s", self.id, m.id, e)
        return out

    def _on_conf(self, conf: ConfState) -> None:
        """The configuration changed (or a change committed): bring the peer links in line with it.

        Links to members of the configuration in effect start; a member's link stops (and its messages are
        refused) only once a *committed* change removed it. So a leader that appended its own removal still
        hears the acknowledgements that commit it, a removal truncated away cuts nobody off, and a node whose
        log lags — a new member replaying old configurations, a node that was down while the current leader
        was added — never drops a member its log does not know of yet (``Transport.admit`` links such a
        sender when it first writes).
        """
        transport = self.transport
        core = self.core
        if transport is None or core is None or conf.is_empty():
            return
        try:
            committed = core.conf_at(core.log.committed)
        except InvariantViolation:  # a commit index below the boundary (cannot happen after start): be safe
            committed = conf
        previous = self._committed_conf
        if previous is not None and committed != previous:
            self._removed |= set(previous.ids) - set(committed.ids)
        self._removed -= set(conf.ids) | set(committed.ids)  # added back: welcome again
        self._committed_conf = committed
        self._conf_pending = core.conf_index if core.conf_index > core.log.committed else Index(0)
        wanted = self._peer_addresses(committed)
        wanted.update(self._peer_addresses(conf))
        for peer, addr in wanted.items():
            if peer == self.id:
                continue
            if peer not in transport.peers:
                transport.add_peer(peer, addr)
            elif transport.peers[peer] != addr:
                transport.update_peer(peer, addr)
        for peer in [p for p in transport.peers if p in self._removed and p != self.id]:
            transport.remove_peer(peer)
        if conf.member(self.id) is None and committed.member(self.id) is None:
            self._warn_not_member(conf)

    def _warn_not_member(self, conf: ConfState) -> None:
        """Say once per configuration that this node is not a member (it takes no part in anything)."""
        if self._warned_conf == conf:
            return
        self._warned_conf = conf
        log.warning(
            "node %s: this node is not in the configuration (%s): it was removed, or is not added yet; it takes "
            "no part in elections or commits (stop it, or add it with `raftkv member add`)",
            self.id,
            conf.describe(),
        )

    def _accept_peer(self, peer: NodeId) -> bool:
        """May a sender outside our peer links be linked? Yes, unless a committed change removed it."""
        return peer not in self._removed

    async def change_membership(self, cc: ConfChange, timeout: float = 10.0) -> ConfState:
        """Propose a single-server change on this leader and return the configuration once it is committed
        and applied here. Raises ``NotLeader`` (with the leader's address), ``ConfChangeInProgress`` (retry),
        ``InvalidConfChange`` (nothing changed), ``ProposalDropped`` or ``Timeout``."""
        core = _started(self.core)
        if not self.serving:
            raise ProposalDropped("the node is stopping")
        for flag, address in (("peer", cc.peer_address), ("client", cc.client_address)):
            if address:
                try:
                    Address.parse(address, f"the {flag} address of node {cc.node}")
                except AddressError as e:
                    raise InvalidConfChange(str(e)) from None
        try:
            index = core.propose_conf_change(cc)
        except NotLeader:
            raise self.not_leader() from None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[index] = (core.term, fut)
        self._wake.set()
        log.info("node %s: membership change %s %s proposed at index %s", self.id, cc.type.value, cc.node, index)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            raise Timeout(f"the membership change at index {index} did not commit within {timeout} s") from None
        finally:
            if self._waiters.get(index, (None, None))[1] is fut:
                del self._waiters[index]
        return core.conf_at(index)

    async def add_voter(self, node: NodeId, peer_address: str, client_address: str = "") -> ConfState:
        return await self.change_membership(ConfChange(ChangeType.ADD_VOTER, node, peer_address, client_address))

    async def add_learner(self, node: NodeId, peer_address: str, client_address: str = "") -> ConfState:
        return await self.change_membership(ConfChange(ChangeType.ADD_LEARNER, node, peer_address, client_address))

    async def promote(self, node: NodeId, max_lag: int = 1000, timeout: float = 10.0) -> ConfState:
        """Make learner ``node`` a voter; refused (``InvalidConfChange``, naming the lag) while it is more than
        ``max_lag`` entries behind this leader: a voter that cannot keep up makes every commit wait for it."""
        core = _started(self.core)
        pr = core.progress.get(node) if core.role is Role.LEADER else None
        member = core.conf.member(node)
        if pr is not None and member is not None and member.learner:
            lag = core.log.last_index() - pr.match
            if lag > max_lag:
                raise InvalidConfChange(
                    f"node {node} is {lag:,} entries behind the leader (it holds {pr.match:,} of "
                    f"{core.log.last_index():,}); promote it once it has caught up (`raftkv member list` shows the lag)"
                )
        return await self.change_membership(ConfChange(ChangeType.PROMOTE, node), timeout)

    async def remove(self, node: NodeId) -> ConfState:
        """Remove ``node`` (a leader removing itself hands over once the removal commits)."""
        return await self.change_membership(ConfChange(ChangeType.REMOVE, node))

    async def transfer_leadership(self, to: NodeId | None = None, timeout: float = 5.0) -> NodeId:
        """Hand leadership to ``to`` (default: the most caught-up voter) and wait until it leads; its id."""
        core = _started(self.core)
        try:
            target = core.transfer_leadership(to or NO_NODE)
        except NotLeader:
            raise self.not_leader() from None
        except ValueError as e:
            raise InvalidConfChange(str(e)) from None
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                while not (core.leader == target and core.role is not Role.LEADER):
                    await asyncio.sleep(self.config.tick_ms / 1000)
        except TimeoutError:
            raise Timeout(f"node {target} did not take over the leadership within {timeout} s") from None
        return target

    def members(self) -> list[dict[str, Any]]:
        """The configuration with each member's replication state, as this node knows it (a leader knows the
        lag of each; others report what they can)."""
        core = _started(self.core)
        s = core.status()
        last = s.last_index
        out: list[dict[str, Any]] = []
        for m in s.conf.members:
            info: dict[str, Any] = {
                "id": int(m.id),
                "peer_address": m.peer_address or str(self.config.peers.get(m.id, "")),
                "client_address": m.client_address
                or (
                    str(self.config.listen_client or "")
                    if m.id == self.id
                    else (self.transport.client_address_of(m.id) if self.transport else "")
                ),
                "learner": m.learner,
                "leader": m.id == s.leader,
                "reachable": m.id == self.id or (self.transport.connected(m.id) if self.transport else False),
            }
            p = s.progress.get(m.id)
            if p is not None:
                info["match"] = int(p.match)
                info["lag"] = int(last - p.match)
            out.append(info)
        return out

    # ======================================================================================================
    # The ticker and the ready loop
    # ======================================================================================================

    def _on_messages(self, messages: list[Message]) -> None:
        core = self.core
        if core is None or self._stopping:
            return
        if trace.ON:
            _trace_messages(messages, "in")
        for msg in messages:
            core.step(msg)
        self._wake.set()

    # --- snapshots (Raft §7) ---------------------------------------------------------------------------------

    def _snapshot_due(self) -> bool:
        cfg = self.config
        core = self.core
        if self._snapshotting or core is None or self.failure is not None:
            return False
        since = core.log.applied - max(self._last_snapshot, self._snapshot_failed_at)
        by_entries = bool(cfg.snapshot_entries) and since >= cfg.snapshot_entries
        by_bytes = bool(cfg.snapshot_bytes) and self._bytes_since_snapshot >= cfg.snapshot_bytes
        # Amortize: a snapshot rewrites the whole state, so wait until the new commands are worth it.
        grown = self._bytes_since_snapshot >= cfg.snapshot_growth * self._last_snapshot_bytes
        return (by_entries or by_bytes) and grown

    def _start_snapshot(self) -> None:
        """Called by the ready loop right after ``advance``: the state machine holds exactly the applied entries.

        A state machine without streaming is dumped here, synchronously, so the image matches ``core.log.applied``
        exactly; only the file write happens in the background. A streaming one is dumped in the background.
        """
        core = _started(self.core)
        self._snapshotting = True
        index = core.log.applied
        image: bytes | None = None
        if not isinstance(self.state_machine, StreamsSnapshots):
            try:
                image = self.state_machine.snapshot()
            except Exception:
                self._snapshot_failed(index, "the state machine's snapshot() failed")
                return
        self.spawn(self._take_snapshot(index, image), name=f"raftkv-snapshot-{self.id}")

    def _snapshot_failed(self, index: Index, what: str) -> None:
        # Retry only after another interval's worth of entries, not on every loop turn.
        log.exception("node %s: %s; the log is kept; trying again later", self.id, what)
        self._snapshot_failed_at = int(index)
        self._bytes_since_snapshot = 0
        self._snapshotting = False

    async def _take_snapshot(self, applied: Index, image: bytes | None) -> None:
        """Save a snapshot durably without stopping the node, then compact the log (Raft §7)."""
        core, storage = self.core, self._storage
        if core is None or storage is None:
            self._snapshotting = False
            return
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        last_snapshot = self._last_snapshot

        def at(index: Index) -> tuple[Term | None, ConfState]:
            """The term and the configuration of ``index`` (on the loop: the core lives there); no term when
            the index went below the log meanwhile (a snapshot was installed)."""
            term = core.log.term_or_none(index)
            if term is None or index < core.conf_base_index:
                return None, core.conf
            return term, core.conf_at(index)

        def term_from_loop(index: int) -> tuple[Term | None, ConfState]:
            # This runs in a worker thread. A loop that is shutting down may never answer: give up rather
            # than hold the thread.
            answer: concurrent.futures.Future[tuple[Term | None, ConfState]] = concurrent.futures.Future()
            loop.call_soon_threadsafe(lambda: answer.set_result(at(Index(index))))
            return answer.result(timeout=10)

        def stream() -> tuple[SnapshotMeta, int] | None:
            # Open, stream and close the read transaction in this one thread; the file is fsync'd and renamed
            # into place by the store, so a crash leaves either the old snapshots or the new one.
            sm = self.state_machine
            invariant(isinstance(sm, StreamsSnapshots), "only a streaming state machine is snapshotted here")
            with cast(StreamsSnapshots, sm).open_snapshot() as img:
                term, conf = term_from_loop(img.index)
                if term is None or img.index <= last_snapshot:
                    return None
                meta = SnapshotMeta(Index(img.index), term, conf)
                return meta, storage.snapshots.save(meta, img.chunks()).data_len

        def save(data: bytes, term: Term | None, conf: ConfState) -> tuple[SnapshotMeta, int] | None:
            if term is None or applied <= last_snapshot:
                return None
            meta = SnapshotMeta(applied, term, conf)
            return meta, storage.snapshots.save(meta, data).data_len

        try:
            if image is None:
                saved = await asyncio.to_thread(stream)
            else:
                # The term and configuration are read here, on the loop; only the write goes to a thread.
                term, conf = at(applied)
                saved = await asyncio.to_thread(save, image, term, conf) if term is not None else None
            if saved is None:
                self._snapshotting = False
                return
            meta, size = saved
            # Tell the core first, then compact. Invariant: the core's newest snapshot always covers every entry
            # the log has dropped (first_index - 1 <= latest_snapshot.index), because a leader that finds a
            # follower's next entry compacted away sends it that snapshot (§7). The compaction is awaited in
            # another thread: in the other order the ready loop could run in between and find the entries gone
            # but only an older snapshot to send (found by the torture harness, seed 105).
            core.set_snapshot(meta)
            # Compact only below the snapshot, keeping a trailing window; never past what the snapshot covers.
            compact_to = Index(min(meta.index - self.config.snapshot_trailing, storage.wal.last_index()))
            if compact_to > storage.wal.first_index() - 1:
                self._wal_jobs += 1
                try:
                    await loop.run_in_executor(self._wal_thread, storage.wal.compact, compact_to)
                finally:
                    self._wal_jobs -= 1
            self._last_snapshot = int(meta.index)
            self._last_snapshot_bytes = size
            self._bytes_since_snapshot = 0
            self.metrics.snapshots.inc()
            log.info(
                "node %s: snapshot at index %s (term %s, %s bytes) in %.2f s; log compacted to %s",
                self.id,
                meta.index,
                meta.term,
                size,
                time.perf_counter() - started,
                max(compact_to, storage.wal.first_index() - 1),
            )
            self._snapshotting = False
        except Exception:
            self._snapshot_failed(applied, "taking a snapshot failed")

    def _snapshot_source(self) -> tuple[SnapshotMeta, Iterator[bytes]] | None:
        """The newest snapshot, for a follower that needs it (called in a worker thread by the transport)."""
        storage = self._storage
        if storage is None:
            return None
        snapshot = storage.snapshots.load(storage.wal.first_index())
        if snapshot is None:
            return None
        return snapshot.meta, snapshot.chunks()

    def _on_snapshot_sent(self, peer: NodeId, ok: bool) -> None:
        if self.core is not None:
            self.core.report_snapshot(peer, ok)
            self._wake.set()

    async def _snapshot_received(self, meta: SnapshotMeta, path: str) -> None:
        """A verified snapshot arrived from the leader: keep it durably before the core may install it."""
        storage = _started(self._storage)

        def save() -> None:
            with open(path, "rb") as f:
                storage.snapshots.save(meta, f)
            os.unlink(path)

        await asyncio.to_thread(save)
        log.info("node %s: received the leader's snapshot at index %s", self.id, meta.index)

    async def _restore_state_machine(self, snapshot: Snapshot) -> None:
        """Replace the state machine's state with a snapshot's. The LMDB-backed KV store reads the file in frames
        in a worker thread (neither the loop nor memory holds the whole image); others get the bytes."""
        sm = self.state_machine
        if isinstance(sm, StreamsSnapshots):
            streaming = sm

            def load() -> None:
                with snapshot.open() as f:
                    streaming.load_snapshot(f)

            # Nothing else applies meanwhile: the ready loop is waiting on this.
            await asyncio.to_thread(load)
            sm.finish_restore()
        else:
            sm.restore(await asyncio.to_thread(snapshot.read))

    async def _restore_installed(self, meta: SnapshotMeta) -> None:
        storage = _started(self._storage)
        snapshot = await asyncio.to_thread(storage.snapshots.load, Index(meta.index + 1))
        if snapshot is None or snapshot.meta.index != meta.index:
            raise StorageError(f"the snapshot at index {meta.index} to install is missing from the snapshot store")
        await self._restore_state_machine(snapshot)
        self._last_snapshot = max(self._last_snapshot, int(meta.index))
        self._last_snapshot_bytes = snapshot.info.data_len
        self._bytes_since_snapshot = 0
        log.info("node %s: installed the leader's snapshot at index %s", self.id, meta.index)

    def _on_peer_down(self, peer: NodeId) -> None:
        if self.core is not None and not self._stopping:
            self.core.report_unreachable(peer)
            self._wake.set()

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.tick_ms / 1000
        next_at = loop.time() + interval
        core = _started(self.core)
        while True:
            if not self._ticking.is_set():
                await self._ticking.wait()
                next_at = loop.time() + interval
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at = max(next_at + interval, loop.time())
            core.tick()
            self._wake.set()

    async def _ready_loop(self) -> None:
        core = _started(self.core)
        storage = _started(self._storage)
        transport = _started(self.transport)
        planner = ReadyPlanner()
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                while core.has_ready() and not self._stopping:
                    if trace.ON:
                        trace.point("n.ready", int(core.log.last_index()))
                    rd = core.ready()
                    self._observe(rd)
                    if trace.ON:
                        _trace_ready(rd)
                    if rd.messages:
                        transport.send(rd.messages)
                    # The decisions (apply early, defer a commit-only hard state, write on the loop) are made
                    # by the planner the simulator runs too: raftkv.raft.driver explains each and why it is safe.
                    plan = planner.plan(rd, core.role, writes_queued=bool(self._wal_jobs))
                    if plan.apply_early:
                        self._apply(rd.committed_entries)
                    if plan.write:
                        if plan.on_loop:
                            self._persist(storage, rd, plan.hard_state)
                        else:
                            await asyncio.get_running_loop().run_in_executor(
                                self._wal_thread, self._persist, storage, rd, plan.hard_state
                            )
                    if rd.snapshot is not None:
                        await self._restore_installed(rd.snapshot)
                    if rd.messages_after_sync:
                        if trace.ON:
                            _trace_messages(rd.messages_after_sync, "out")
                        transport.send(rd.messages_after_sync)
                    if rd.committed_entries and not plan.apply_early:
                        self._apply(rd.committed_entries)
                    core.advance()
                    if self._commit_clock:
                        self._time_commits(core.log.applied, core.term)
                    if self._conf_pending and core.log.committed >= self._conf_pending:
                        self._on_conf(core.conf)  # the change committed: drop the links it removed
                    if rd.read_states or rd.dropped_reads:
                        self._answer_reads(rd)
                    if self._apply_waiters:
                        self._release_apply_waiters(core.log.applied)
                    if self._snapshot_due():
                        self._start_snapshot()
        except StorageError as e:
            # The disk refused a write: this node cannot promise durability any more. Stop it (the rest of the
            # cluster carries on); the log stays consistent for a restart once the disk is fixed.
            self._fatal(e, f"storage failure, stopping this node: {e}")
        except Exception as e:
            self._fatal(e, f"internal error in the ready loop, stopping this node: {type(e).__name__}: {e}")
            log.exception("node %s: ready loop failed", self.id)
        finally:
            self._loop_done.set()

    def _fatal(self, error: BaseException, message: str) -> None:
        self.failure = error
        log.critical("node %s: %s", self.id, message)
        self._stopping = True
        self.pause()
        if self.core is not None:
            self.core.stop()
        self._fail_waiters(NodeFailed(message))
        self.stopped.set()

    def _persist(self, storage: NodeStorage, rd: Ready, hard_state: HardState | None) -> None:
        """Step 1 of the Ready contract: entries, then hard state, then one fsync.

        On the loop thread for a leader's or a follower's plain write (``ReadyPlan.on_loop``): a follower's
        acknowledgement waits for the write, the leader's own vote is usually one of the two a 3-node commit
        needs (``bench/trace_put.py``), and the two thread hand-offs around a write in the WAL thread cost
        ~0.3 ms of a sequential put here. Frames and requests that arrive meanwhile wait in their sockets and
        make the next Ready larger: the same group commit. Invariant: WAL writes never overlap (the ready loop
        awaits each one, and writes queue behind a compaction in the WAL thread).
        """
        wal = storage.wal
        started = time.perf_counter()
        if rd.snapshot is not None:
            wal.apply_snapshot(rd.snapshot)  # the snapshot file itself was saved when it arrived
        if rd.entries:
            wal.append(rd.entries)
        if hard_state is not None:
            wal.set_hard_state(hard_state)
        if trace.ON and rd.entries:
            trace.point("n.written", int(rd.entries[-1].index))
        if rd.must_sync:
            wal.sync()
            self.metrics.fsync_seconds.observe(time.perf_counter() - started)
            if trace.ON and rd.entries:
                trace.point("n.synced", int(rd.entries[-1].index))
        self.metrics.append_seconds.observe(time.perf_counter() - started)

    def _apply(self, entries: Sequence[Entry]) -> None:
        commands = [e for e in entries if e.type is EntryType.NORMAL]
        self._bytes_since_snapshot += sum(len(e.data) for e in commands)
        results = list(self.state_machine.apply(commands)) if commands else []
        if trace.ON and entries:
            trace.point("n.applied", int(entries[-1].index))
        by_index = {e.index: r for e, r in zip(commands, results, strict=True)}
        waiters = self._waiters
        for e in entries:
            waiter = waiters.pop(e.index, None)
            if waiter is None:
                continue
            term, fut = waiter
            if fut.done():
                continue
            if e.term == term:
                fut.set_result(by_index.get(e.index))
            else:
                fut.set_exception(
                    ProposalDropped(f"index {e.index} was taken by another leader's entry (term {e.term}, not {term})")
                )
        self.metrics.applied.set(int(entries[-1].index))

    def _observe(self, rd: Ready) -> None:
        core = _started(self.core)
        for event in rd.events:
            log.info("node %s term %s: %s", self.id, core.term, event)
        if rd.conf_state is not None:
            self._on_conf(rd.conf_state)
            self.history.append(
                {
                    "time": time.time(),
                    "kind": "members",
                    "voters": [int(v) for v in rd.conf_state.voters],
                    "learners": [int(v) for v in rd.conf_state.learners],
                }
            )
        if rd.soft_state is not None:
            ss = rd.soft_state
            self.history.append(
                {
                    "time": time.time(),
                    "kind": "role",
                    "term": int(ss.term),
                    "role": ss.role.value,
                    "leader": int(ss.leader) if ss.leader != NO_NODE else None,
                }
            )
            self.metrics.term.set(int(rd.soft_state.term))
            self.metrics.is_leader.set(1 if rd.soft_state.role is Role.LEADER else 0)
            self.metrics.leader_changes.inc()
        if rd.hard_state is not None:
            self.metrics.commit.set(int(rd.hard_state.commit))

    def _answer_reads(self, rd: Ready) -> None:
        for rs in rd.read_states:
            fut = self._read_waiters.get(rs.ctx)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)
        for ctx in rd.dropped_reads:
            fut = self._read_waiters.get(ctx)
            if fut is not None and not fut.done():
                fut.set_exception(ProposalDropped("leadership changed before the read was confirmed"))

    def _release_apply_waiters(self, applied: Index) -> None:
        heap = self._apply_waiters
        while heap and heap[0][0] <= applied:
            _index, _seq, fut = heapq.heappop(heap)
            if not fut.done():
                fut.set_result(None)

    def _fail_waiters(self, error: BaseException) -> None:
        waiters, self._waiters = self._waiters, {}
        for _term, fut in waiters.values():
            if not fut.done():
                fut.set_exception(error)
        reads, self._read_waiters = self._read_waiters, {}
        for rfut in reads.values():
            if not rfut.done():
                rfut.set_exception(error)
        heap, self._apply_waiters = self._apply_waiters, []
        for _index, _seq, afut in heap:
            if not afut.done():
                afut.set_exception(error)


def _trace_messages(messages: Sequence[Message], direction: str) -> None:
    """Trace points for the appends and acknowledgements among ``messages`` (``raftkv.trace``)."""
    for m in messages:
        if isinstance(m, AppendEntries) and m.entries:
            trace.point(f"n.ae.{direction}", int(m.entries[-1].index))
        elif isinstance(m, AppendEntriesResponse) and not m.reject:
            trace.point(f"n.ack.{direction}", int(m.index))


def _trace_ready(rd: Ready) -> None:
    if rd.committed_entries:
        trace.point("n.commit", int(rd.committed_entries[-1].index))
    _trace_messages(rd.messages, "out")
