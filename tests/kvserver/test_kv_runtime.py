"""KV runtime details: restart without replay on LMDB, slow watchers, the blocking client, JSON logs."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from raftkv.client import connect, connect_sync
from raftkv.errors import Compacted, WatchCancelled
from raftkv.kv.machine import KVStateMachine
from raftkv.kv.watch import Event
from raftkv.runtime.logs import setup_logging
from raftkv.runtime.node import RaftNode
from raftkv.storage import DataDir
from raftkv.storage.kv_lmdb import LMDBBackend
from raftkv.transport.address import Address
from tests.runtime.cluster import kv_servers, leader_of, wait_until


async def test_a_restarted_node_resumes_from_lmdb_without_replaying(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 3, backend=None)  # LMDB in each data dir, as `raftkv serve` runs
    nodes: list[RaftNode] = [s.running for s in servers]
    reopened: LMDBBackend | None = None
    try:
        async with connect([str(s.config.listen_client) for s in servers], cluster_id="test") as c:
            for k in range(30):
                await c.put(f"k{k}", str(k))
        i, follower = next((i, s) for i, s in enumerate(servers) if s is not leader_of(servers))
        kv = follower.kv
        assert kv is not None
        await wait_until(lambda: kv.revision == 30, 2.0, "follower applied all")
        await follower.aclose(transfer_leadership=False)  # closes its LMDB environment too
        # Reopen: the state machine starts at LMDB's applied index, and the core must not hand it those
        # entries again (a re-apply would bump versions and revisions).
        reopened = LMDBBackend(DataDir(follower.config.data_dir).kv)
        sm = KVStateMachine(reopened)
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
        got = sm.get(b"k29")
        assert got is not None and got.version == 1 and sm.revision == 30
    finally:
        await nodes[i].aclose(transfer_leadership=False)
        for s in servers:
            await s.aclose(transfer_leadership=False)
        if reopened is not None:
            reopened.close()


class _StuckSink:
    """A watch sink that never finishes taking its first batch of events."""

    def __init__(self) -> None:
        self.cancelled_reason: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def events(self, events: Sequence[Event]) -> None:
        await asyncio.sleep(3600)

    async def cancelled(self, reason: str, compact_revision: int) -> None:
        if not self.cancelled_reason.done():
            self.cancelled_reason.set_result(reason)


async def test_a_slow_watcher_is_cancelled_with_a_reason_and_never_slows_the_node(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 3)
    try:
        lead = leader_of(servers)
        assert lead is not None and lead.watches is not None
        lead.watches.max_buffered = 20
        sink = _StuckSink()
        lead.watches.start(b"s/", b"s0", 0, sink)
        async with connect([str(lead.config.listen_client)], cluster_id="test") as c:
            await asyncio.wait_for(asyncio.gather(*(c.put(f"s/{k}", "v") for k in range(100))), 5)
        reason = await asyncio.wait_for(sink.cancelled_reason, 5)
        assert "too slow" in reason
        assert lead.watches.watches == {}, "the cancelled watch is gone"
    finally:
        for s in servers:
            await s.aclose(transfer_leadership=False)


async def test_the_blocking_client(tmp_path: Path) -> None:
    nodes = await kv_servers(tmp_path, 3)
    try:
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


def test_a_joining_node_may_listen_on_a_wildcard_for_the_address_it_was_added_with() -> None:
    from raftkv.kvserver.app import _same_listener

    assert _same_listener("10.0.0.4:7004", Address("10.0.0.4", 7004))
    assert _same_listener("10.0.0.4:7004", Address("0.0.0.0", 7004))
    assert not _same_listener("10.0.0.4:7004", Address("0.0.0.0", 7005))
    assert not _same_listener("10.0.0.4:7004", Address("10.0.0.5", 7004))
    assert not _same_listener("nonsense", Address("0.0.0.0", 7004))


async def test_the_leader_compacts_the_history_by_itself_and_every_node_follows(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 3, auto_compaction_retention="20")
    try:
        async with connect([str(s.config.listen_client) for s in servers], cluster_id="test") as c:
            for k in range(100):
                await c.put("k", str(k))
            kvs = [s.kv for s in servers if s.kv is not None]
            # Revision mode, 20 kept: compacted to 80 (revision 100 - 20) once the 1 s check runs.
            await wait_until(lambda: all(kv.compact_revision == 80 for kv in kvs), 5.0, "compacted at 80 everywhere")
            assert (await c.get("k", revision=80)).value == b"79"  # type: ignore[union-attr]
            with pytest.raises(Compacted):
                await c.get("k", revision=79)
    finally:
        for s in servers:
            await s.aclose()


async def test_automatic_compaction_can_be_turned_off(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 1, auto_compaction_retention="0")
    try:
        async with connect([str(servers[0].config.listen_client)], cluster_id="test") as c:
            for k in range(30):
                await c.put("k", str(k))
            await asyncio.sleep(1.5)  # past one check interval: nothing may be proposed
            assert servers[0].kv is not None and servers[0].kv.compact_revision == 0
            assert (await c.get("k", revision=1)).value == b"0"  # type: ignore[union-attr]
    finally:
        await servers[0].aclose()
