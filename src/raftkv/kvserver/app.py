"""Assembling a running raftkv server from a ``NodeConfig``: the one place that wires the pieces together.

Theory of operation
-------------------
``raftkv serve``, the tests and the benchmarks all start a server through :class:`KVServer` (``raftkv cluster
up`` and ``make demo`` start ``raftkv serve`` processes). Starting one is, in order:

1. claim the data directory (``raftkv.storage.datadir``: it must belong to this node of this cluster);
2. open the state machine: the key-value store on LMDB in the data directory by default, or on a backend the
   caller gives (an in-memory one in tests), or one of the generic machines (``commandlog``, ``dict``);
3. start the runtime (:class:`~raftkv.runtime.node.RaftNode`) on it: log, snapshots, peers;
4. start the wire-neutral services (``KVService``, ``WatchRegistry``, ``Admin``) and the front ends on
   them (the Cap'n Proto client port when ``listen_client`` is set).

Stopping runs the same steps backwards: the runtime first (it hands leadership over while clients can still be
redirected), then the watches, the front ends, and the store. :meth:`KVServer.aclose` is idempotent.

The KV store is handed to the runtime through a small adapter that says what it can do there: on LMDB it keeps
its applied index and streams its snapshots from a worker thread; in memory it does neither (the dict it lives
in cannot be read from another thread while the loop applies), so the runtime snapshots it on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import ssl
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import IO, Any, Literal

from raftkv.client import connect
from raftkv.errors import ConfigError, RaftError, Unavailable
from raftkv.kv.backend import Backend
from raftkv.kv.commands import Compact, CompactResult, Internal, encode_command
from raftkv.kv.compactor import AutoCompactor, Retention, parse_retention
from raftkv.kv.machine import KVStateMachine
from raftkv.kvserver.admin import Admin
from raftkv.kvserver.browser import KeyBrowser
from raftkv.kvserver.capnp_api import serve_capnp
from raftkv.kvserver.leases import LeaseKeeper
from raftkv.kvserver.service import KVService
from raftkv.kvserver.watches import WatchRegistry
from raftkv.raft.types import Entry, NodeId
from raftkv.runtime.config import NodeConfig
from raftkv.runtime.node import RaftNode
from raftkv.runtime.statemachine import CommandLog, ReplicatedDict, SnapshotStream, StateMachine
from raftkv.storage import DataDir
from raftkv.storage.kv_lmdb import LMDBBackend
from raftkv.transport.address import Address
from raftkv.transport.streams import PLAIN, Listener, StreamLayer

log = logging.getLogger("raftkv.server")

MachineKind = Literal["kv", "commandlog", "dict"]


class _InMemoryKV:
    """The KV store on a non-durable backend, as the runtime sees it: a plain ``StateMachine``."""

    def __init__(self, kv: KVStateMachine) -> None:
        self.kv = kv

    def apply(self, entries: Sequence[Entry]) -> Sequence[Any]:
        return self.kv.apply(entries)

    def snapshot(self) -> bytes:
        return self.kv.snapshot()

    def restore(self, data: bytes) -> None:
        self.kv.restore(data)


class _DurableKV(_InMemoryKV):
    """The KV store on LMDB, as the runtime sees it: ``KeepsAppliedIndex`` and ``StreamsSnapshots`` too."""

    @property
    def applied_index(self) -> int:
        return self.kv.applied_index

    def open_snapshot(self) -> AbstractContextManager[SnapshotStream]:
        return self.kv.open_snapshot()

    def load_snapshot(self, reader: IO[bytes]) -> None:
        self.kv.load_snapshot(reader)

    def finish_restore(self) -> None:
        self.kv.finish_restore()


def _same_listener(added: str, listen: Address) -> bool:
    """Whether a node listening on ``listen`` is reachable at the address it was added with: the same
    address, or the same port on a wildcard listener (``--listen-peer 0.0.0.0:7004`` for ``10.0.0.4:7004``)."""
    if added == str(listen):
        return True
    try:
        where = Address.parse(added, "the added peer address")
    except ValueError:
        return False
    return listen.host in ("0.0.0.0", "::", "") and where.port == listen.port


def retention_of(config: NodeConfig) -> Retention:
    """The KV store's automatic-compaction flags, validated: ``ConfigError`` naming the flag (the runtime's own
    validation knows nothing of the store)."""
    try:
        return parse_retention(config.auto_compaction_mode, config.auto_compaction_retention)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _describe(r: Retention) -> str:
    return f"{int(r.amount)} revisions" if r.mode == "revision" else f"{r.amount:g} s"


class KVServer:
    """One raftkv server: ``async with KVServer(config) as server: ...`` (see the module docstring)."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        state_machine: MachineKind = "kv",
        backend: Backend | None = None,
        streams: StreamLayer = PLAIN,
        check_ports: bool = True,
    ) -> None:
        """``backend``: the KV store's backend (default: LMDB in the data directory, opened at start)."""
        config.validate(check_ports=check_ports)
        self.retention = retention_of(config)
        self.config = config
        self.kind: MachineKind = state_machine
        tls = config.client_tls()
        if streams is PLAIN and tls is not None:
            streams = StreamLayer(server_tls=tls)  # --cert-file and --key-file: the client port speaks TLS only
        self.streams = streams
        self._backend = backend
        self._owns_backend = False
        self.kv: KVStateMachine | None = None
        """The key-value store (None with a generic state machine)."""
        self.node: RaftNode | None = None
        self.watches: WatchRegistry | None = None
        self._listener: Listener | None = None
        self._compactor: asyncio.Task[None] | None = None
        self.leases: LeaseKeeper | None = None
        self.service: KVService | None = None
        self._etcd: tuple[Any, Any] | None = None
        """The etcd gateway's gRPC server and its raftkv client (``--listen-etcd``)."""
        """The key-value service (None for the benchmark state machines); its ``auth`` authenticates clients."""
        """The leader's lease timers (None with a generic state machine)."""
        self._started = False
        self._closed = False

    @property
    def running(self) -> RaftNode:
        """The runtime of a started server."""
        if self.node is None:
            raise RuntimeError("the server is not started")
        return self.node

    async def __aenter__(self) -> KVServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        cfg = self.config
        # A node that joins asks the cluster for its members until its own log holds a configuration: also
        # after a stop before the leader's first entries or snapshot reached it.
        if cfg.join and not await asyncio.to_thread(DataDir(cfg.data_dir).holds_configuration):
            cfg = self.config = await self._join(cfg)
        try:
            # On the loop thread, although it blocks for a few milliseconds: opening the store in a worker thread
            # made every sequential put ~8% dearer in CPU and ~6% slower at p50 afterwards (bench/ab.py, six
            # interleaved rounds; docs/benchmarks.md). Nothing else runs on the loop yet.
            machine = self._open_machine()
            node = self.node = RaftNode(cfg, machine, check_ports=False)
            await node.start()
            admin = Admin(node, self.kv, kv_durable=isinstance(machine, _DurableKV))
            kv_service = None
            if self.kv is not None:
                self.leases = LeaseKeeper(node, self.kv)
                self.leases.start()
                kv = self.kv
                node.status_extras.append(
                    lambda: {
                        "revision": kv.revision,
                        "compact_revision": kv.compact_revision,
                        "leases": len(kv.lease_ttls),
                    }
                )
                kv_service = self.service = KVService(node, self.kv, self.leases)
                node.http_handlers["keys"] = KeyBrowser(kv_service)
                self.watches = WatchRegistry(self.kv, node.id, max_pending_bytes=cfg.max_watch_pending_bytes)
            if cfg.listen_client is not None:
                self._listener = await serve_capnp(
                    self.streams, cfg.listen_client, node, admin, kv_service, self.watches
                )
            if cfg.listen_etcd is not None and kv_service is not None and cfg.listen_client is not None:
                self._etcd = await self._serve_etcd(cfg.listen_etcd, cfg.listen_client, kv_service)
        except BaseException:
            await self.aclose(transfer_leadership=False)
            raise
        if self.kv is not None and self.retention.enabled:
            self._compactor = asyncio.ensure_future(self._auto_compact(AutoCompactor(self.retention)))
        self._started = True
        tls = " over TLS" if self.streams.server_tls is not None else ""
        if self.streams.server_tls is not None and self.streams.server_tls.verify_mode == ssl.CERT_REQUIRED:
            tls = " over mutual TLS"
        log.info("node %s: clients on %s%s (%s)", cfg.id, cfg.listen_client or "-", tls, self.kind)

    async def _auto_compact(self, compactor: AutoCompactor) -> None:
        """While leader, propose the compactions ``compactor`` asks for (raftkv.kv.compactor); about once a
        second, or ten times per retention in periodic mode if that is shorter."""
        node, kv = self.running, self.kv
        assert kv is not None
        r = compactor.retention
        interval = min(1.0, r.amount / 10) if r.mode == "periodic" else 1.0
        loop = asyncio.get_running_loop()
        leading = False
        while True:
            await asyncio.sleep(interval)
            if not node.is_leader:
                leading = False
                continue
            if not leading:
                compactor.reset()  # a new leader measures the retention on its own clock, from now
                leading = True
            target = compactor.due(loop.time(), kv.revision, kv.compact_revision)
            if target is None:
                continue
            try:
                _index, _term, (fut,) = node.submit_batch([encode_command(Internal(Compact(target)))], timeout=5.0)
                result = await fut
            except RaftError as e:
                log.debug("node %s: automatic compaction at revision %s not done: %s", node.id, target, e)
                continue
            if isinstance(result, CompactResult):
                log.info(
                    "node %s: compacted the history at revision %s (%s retention %s)",
                    node.id,
                    target,
                    r.mode,
                    _describe(r),
                )

    async def _join(self, cfg: NodeConfig) -> NodeConfig:
        """A fresh node joining: ask the cluster for its members, check this node was added (with this peer
        address), and learn where every member listens. The node then bootstraps nothing: the configuration
        reaches it in the log or a snapshot from the leader."""
        where = ",".join(map(str, cfg.join))
        try:
            join_tls = cfg.join_tls()
            streams = StreamLayer(client_tls=join_tls) if join_tls is not None else PLAIN
            async with connect(list(cfg.join), cluster_id=cfg.cluster_id, timeout=5.0, streams=streams) as client:
                members = await client.members(timeout=5.0)
        except RaftError as e:
            raise Unavailable(f"cannot join cluster {cfg.cluster_id!r} through {where}: {e}") from None
        me = next((m for m in members if m.id == cfg.id), None)
        listed = ",".join(str(m.id) for m in members) or "none"
        if me is None:
            raise ConfigError(
                f"node {cfg.id} is not a member of cluster {cfg.cluster_id!r} (members: {listed}): add it first, "
                f"with `raftkv member add {cfg.id} --peer-addr {cfg.listen_peer} --client-addr "
                f"{cfg.listen_client or 'HOST:PORT'} --learner --endpoints {where}`"
            )
        if me.peer_address and not _same_listener(me.peer_address, cfg.listen_peer):
            raise ConfigError(
                f"node {cfg.id} was added with peer address {me.peer_address}, but --listen-peer is "
                f"{cfg.listen_peer}: start it on that address, or remove and add it again"
            )
        peers = {NodeId(m.id): Address.parse(m.peer_address, f"member {m.id}") for m in members if m.peer_address}
        peers[cfg.id] = cfg.listen_peer
        log.info("node %s: joining cluster %r through %s (members %s)", cfg.id, cfg.cluster_id, where, listed)
        return dataclasses.replace(cfg, peers=peers)

    def _open_machine(self) -> StateMachine:
        """Claim the data directory, then open the state machine (blocking, briefly: see ``start``)."""
        cfg = self.config
        if self.kind == "commandlog":
            return CommandLog()
        if self.kind == "dict":
            return ReplicatedDict()
        data_dir = DataDir(cfg.data_dir)
        data_dir.claim(cfg.cluster_id, cfg.id)  # before anything is created in it
        backend = self._backend
        if backend is None:
            backend = self._backend = LMDBBackend(data_dir.kv)
            self._owns_backend = True
        self.kv = KVStateMachine(backend)
        return _DurableKV(self.kv) if isinstance(backend, LMDBBackend) else _InMemoryKV(self.kv)

    async def aclose(self, transfer_leadership: bool = True) -> None:
        """Stop the node (handing leadership over if quick and safe), then the watches, front ends and store."""
        if self._closed:
            if self.node is not None:
                await self.node.stopped.wait()
            return
        self._closed = True
        if self._etcd is not None:
            server, client = self._etcd
            await server.stop(0.5)
            await client.aclose()
        if self._compactor is not None:
            self._compactor.cancel()
            await asyncio.gather(self._compactor, return_exceptions=True)
        if self.leases is not None:
            await self.leases.aclose()
        if self.node is not None:
            await self.node.aclose(transfer_leadership=transfer_leadership)
        if self.watches is not None:
            await self.watches.aclose()
        if self._listener is not None:
            await self._listener.aclose()
        if self._owns_backend and self._backend is not None:
            self._backend.close()

    async def _serve_etcd(self, address: Address, client_port: Address, service: KVService) -> tuple[Any, Any]:
        """The etcd gateway (raftkv.kvserver.etcd_api), with a raftkv client of this node's own client port
        (its retry loop follows the redirection to the leader)."""
        # Imported here: grpc (and the client) cost a node that does not serve the gateway nothing.
        from raftkv.client import Client  # noqa: PLC0415
        from raftkv.kvserver.etcd_api import serve_etcd  # noqa: PLC0415

        # Over TLS it dials its own client port as a joining node does: trusting --trusted-ca-file, with its cert.
        join_tls = self.config.join_tls()
        streams = StreamLayer(client_tls=join_tls) if join_tls is not None else PLAIN
        client = Client([client_port], self.config.cluster_id, timeout=5.0, streams=streams)
        try:
            return await serve_etcd(address, self.running, service, client), client
        except BaseException:
            await client.aclose()
            raise

    def reload_tls(self) -> None:
        """SIGHUP: load every TLS file again (both ports); connections made from now on use the new
        certificates, open ones keep theirs. A file that does not load is logged and changes nothing."""
        node = self.running
        try:
            client = self.config.client_tls()
            if client is not None and self.streams.server_tls is not None:
                self.streams.replace_tls(client, self.streams.client_tls)
            peer = node.reload_peer_tls()
        except ConfigError as e:
            log.error("node %s: SIGHUP: certificates not reloaded, the old ones stay in use: %s", node.id, e)
            return
        if client is None and not peer:
            log.info("node %s: SIGHUP: no TLS configured, nothing to reload", node.id)
            return
        ports = " and ".join(p for p, on in (("client", client is not None), ("peer", peer)) if on)
        log.info("node %s: SIGHUP: certificates reloaded for the %s port (new connections use them)", node.id, ports)

    async def serve_until_signal(self) -> int:
        """Run until SIGTERM/SIGINT or a node failure; stop gracefully; 0, or 1 if the node failed. SIGHUP
        reloads the TLS certificates (:meth:`reload_tls`)."""
        node = self.running
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_tls)
        try:
            stopping = asyncio.ensure_future(stop.wait())
            failed = asyncio.ensure_future(node.stopped.wait())
            await asyncio.wait({stopping, failed}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            failed.cancel()
            await asyncio.gather(stopping, failed, return_exceptions=True)
            if stop.is_set():
                log.info("node %s: signal received, stopping", node.id)
            await self.aclose()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
        return 0 if node.failure is None else 1
