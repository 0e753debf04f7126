"""KV runtime details: restart without replay on LMDB, slow watchers, the blocking client, JSON logs."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from raftkv.errors import WatchCancelled
from raftkv.kv.machine import KVStateMachine
from raftkv.kvclient import connect, connect_sync
from raftkv.server.identity import claim_data_dir
from raftkv.server.logs import setup_logging
from raftkv.server.node import RaftNode
from raftkv.storage.kv_lmdb import LMDBBackend
from raftkv.transport.wire import schema
from tests.server.cluster import configs, leader_of, wait_until


async def lmdb_cluster(tmp: Path) -> tuple[list[RaftNode], list[LMDBBackend]]:
    cfgs = configs(tmp, 3)
    for cfg in cfgs:  # as `raftkv serve` does: the data dir is claimed before anything is created in it
        claim_data_dir(cfg.data_dir, cfg.cluster_id, cfg.id)
    backends = [LMDBBackend(cfg.data_dir / "kv") for cfg in cfgs]
    nodes = [RaftNode(cfg, KVStateMachine(b)) for cfg, b in zip(cfgs, backends, strict=True)]
    for n in nodes:
        await n.start()
    await wait_until(lambda: leader_of(nodes) is not None, 2.0, "a leader")
    return nodes, backends


async def test_a_restarted_node_resumes_from_lmdb_without_replaying(tmp_path: Path) -> None:
    nodes, backends = await lmdb_cluster(tmp_path)
    try:
        async with connect([str(n.config.listen_client) for n in nodes], cluster_id="test") as c:
            for k in range(30):
                await c.put(f"k{k}", str(k))
        follower = next(n for n in nodes if n is not leader_of(nodes))
        await wait_until(lambda: follower.state_machine.revision == 30, 2.0, "follower applied all")  # type: ignore[attr-defined]
        i = nodes.index(follower)
        await follower.aclose(transfer_leadership=False)
        backends[i].close()
        # Reopen: the state machine starts at LMDB's applied index, and the core must not hand it those
        # entries again (a re-apply would bump versions and revisions).
        backends[i] = LMDBBackend(follower.config.data_dir / "kv")
        sm = KVStateMachine(backends[i])
        resumed_at = sm.applied_index
        assert resumed_at >= 30
        applied: list[int] = []

        class Spy:
            """Delegates to the state machine, recording the indexes it is asked to apply."""

            applied_index = sm.applied_index

            def apply(self, entries: Any) -> Any:
                applied.extend(e.index for e in entries)
                return sm.apply(entries)

            def snapshot(self) -> bytes:
                return sm.snapshot()

            def restore(self, data: bytes) -> None:
                sm.restore(data)

        again = RaftNode(follower.config, Spy())
        await again.start()
        nodes[i] = again
        await wait_until(lambda: leader_of(nodes) is not None, 3.0, "cluster settled")
        assert all(index > resumed_at for index in applied), "entries already in LMDB were re-applied"
        kv = sm.get(b"k29")
        assert kv is not None and kv.version == 1 and sm.revision == 30
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)
        for b in backends:
            b.close()


class _StuckWatcher(schema.Watcher.Server):  # type: ignore[misc]
    """A watcher that never finishes receiving its first batch of events."""

    def __init__(self) -> None:
        self.cancelled_reason: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def events(self, events: Any, _context: Any, **_kw: Any) -> None:
        await asyncio.sleep(3600)

    async def cancelled(self, reason: str, compactRevision: int, _context: Any, **_kw: Any) -> None:  # noqa: N803
        if not self.cancelled_reason.done():
            self.cancelled_reason.set_result(str(reason))


async def test_a_slow_watcher_is_cancelled_with_a_reason_and_never_slows_the_node(tmp_path: Path) -> None:
    nodes = [RaftNode(cfg, KVStateMachine(_memory())) for cfg in configs(tmp_path, 3)]
    for n in nodes:
        await n.start()
    try:
        await wait_until(lambda: leader_of(nodes) is not None, 2.0, "a leader")
        lead = leader_of(nodes)
        assert lead is not None and lead.watches is not None
        lead.watches.max_buffered = 20
        watcher = _StuckWatcher()
        lead.watches.start(b"s/", b"s0", 0, schema.Watcher._new_client(watcher))  # a capability, as over the wire
        async with connect([str(lead.config.listen_client)], cluster_id="test") as c:
            await asyncio.wait_for(asyncio.gather(*(c.put(f"s/{k}", "v") for k in range(100))), 5)
        reason = await asyncio.wait_for(watcher.cancelled_reason, 5)
        assert "too slow" in reason
        assert lead.watches.watches == {}, "the cancelled watch is gone"
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)


def _memory() -> Any:
    from raftkv.kv.backend import MemoryBackend

    return MemoryBackend()


async def test_the_blocking_client(tmp_path: Path) -> None:
    nodes = [RaftNode(cfg, KVStateMachine(_memory())) for cfg in configs(tmp_path, 3)]
    for n in nodes:
        await n.start()
    try:
        await wait_until(lambda: leader_of(nodes) is not None, 2.0, "a leader")
        endpoints = [str(n.config.listen_client) for n in nodes]

        def use() -> tuple[bytes | None, bool, bool]:
            with connect_sync(endpoints, cluster_id="test") as c:
                c.put("sync", "yes")
                kv = c.get("sync")
                return (kv.value if kv else None, c.cas("sync", "yes", "no"), c.cas("sync", "yes", "again"))

        assert await asyncio.to_thread(use) == (b"yes", True, False)
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)


def test_json_logs_are_one_object_per_line() -> None:
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        setup_logging("info", "json")
        logging.getLogger("raftkv.node").info("node %s term %s: became leader", 1, 7)
    record = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert record["msg"] == "node 1 term 7: became leader"
    assert record["level"] == "info" and record["logger"] == "raftkv.node" and record["ts"].endswith("Z")
    logging.getLogger().handlers.clear()


def test_watch_cancelled_is_a_typed_error() -> None:
    assert issubclass(WatchCancelled, Exception)
    with pytest.raises(WatchCancelled):
        raise WatchCancelled("x")
