"""The key-value store end to end in one process: three real nodes, the client, linearizable reads, watches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftkv.client import connect
from raftkv.kv.commands import Compare, Put
from raftkv.kv.machine import KVStateMachine
from raftkv.kvserver import KVServer
from tests.runtime.cluster import kv_servers, leader_of, wait_until


async def kv_cluster(tmp: Path) -> list[KVServer]:
    return await kv_servers(tmp, 3)


def endpoints(nodes: list[KVServer]) -> list[str]:
    return [str(n.config.listen_client) for n in nodes]


async def test_put_get_range_delete_txn(tmp_path: Path) -> None:
    nodes = await kv_cluster(tmp_path)
    try:
        # Start from a follower: the client must find the leader by itself.
        lead = leader_of(nodes)
        follower_first = [e for n, e in zip(nodes, endpoints(nodes), strict=True) if n is not lead]
        async with connect([*follower_first, str(lead.config.listen_client)], cluster_id="test") as c:  # type: ignore[union-attr]
            r1 = await c.put("a", "1")
            r2 = await c.put("a", "2", prev_kv=True)
            assert r2.revision == r1.revision + 1 and r2.prev_kv is not None and r2.prev_kv.value == b"1"
            kv = await c.get("a")
            assert kv is not None and (kv.value, kv.version, kv.create_revision) == (b"2", 2, r1.revision)
            await asyncio.gather(*(c.put(f"p/{k}", str(k)) for k in range(50)))  # coalesced into batches
            r = await c.range("p/", prefix=True)
            assert r.count == 50 and len(r.kvs) == 50
            assert [kv.key for kv in r.kvs] == sorted(f"p/{k}".encode() for k in range(50))
            assert (await c.range("p/", prefix=True, count_only=True)).count == 50
            assert await c.cas("a", "2", "3") is True
            assert await c.cas("a", "2", "4") is False
            assert await c.cas("fresh", None, "x") is True
            t = await c.txn([Compare(b"a", "value", "=", b"3")], [Put(b"b", b"from-txn")])
            assert t.succeeded
            d = await c.delete("p/", prefix=True)
            assert d.deleted == 50
            assert (await c.range("p/", prefix=True)).count == 0
            assert await c.get("missing") is None
            # Every node applied the same writes: serializable reads from each agree once caught up.
            for n in nodes:
                await wait_until(lambda n=n: n.kv.revision == nodes[0].kv.revision, 2.0, "sync")  # type: ignore[attr-defined]
        for n in nodes:
            sm = n.kv
            assert isinstance(sm, KVStateMachine)
            kv = sm.get(b"b")
            assert kv is not None and kv.value == b"from-txn"
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)


async def test_serializable_read_on_a_follower_and_linearizable_read_after_write(tmp_path: Path) -> None:
    nodes = await kv_cluster(tmp_path)
    try:
        lead = leader_of(nodes)
        follower = next(n for n in nodes if n is not lead)
        async with connect(endpoints(nodes), cluster_id="test") as c:
            for k in range(20):
                await c.put("counter", str(k))
                kv = await c.get("counter")  # linearizable: always sees the write just acknowledged
                assert kv is not None and kv.value == str(k).encode()
        async with connect([str(follower.config.listen_client)], cluster_id="test") as f:
            await wait_until(lambda: follower.kv.revision >= 20, 2.0, "follower caught up")  # type: ignore[attr-defined]
            kv = await f.get("counter", serializable=True)
            assert kv is not None and kv.value == b"19"
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)


async def test_watch_delivers_history_then_live_events_in_order(tmp_path: Path) -> None:
    nodes = await kv_cluster(tmp_path)
    try:
        async with connect(endpoints(nodes), cluster_id="test") as c:
            first = await c.put("w/a", "0")
            await c.put("other", "x")
            await c.put("w/b", "1")
            got: list[tuple[bytes, bytes, int]] = []
            async with c.watch("w/", prefix=True, start_revision=first.revision) as w:

                async def consume() -> None:
                    async for ev in w:
                        got.append((ev.kv.key, ev.kv.value, ev.kv.mod_revision))
                        if len(got) == 5:
                            return

                task = asyncio.ensure_future(consume())
                await c.put("w/a", "2")
                await c.delete("w/b")
                await c.put("w/c", "3")
                await asyncio.wait_for(task, 5.0)
            keys = [(k, v) for k, v, _r in got]
            assert keys == [(b"w/a", b"0"), (b"w/b", b"1"), (b"w/a", b"2"), (b"w/b", b""), (b"w/c", b"3")]
            revisions = [r for _k, _v, r in got]
            assert revisions == sorted(revisions) and len(set(revisions)) == 5
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)


async def test_unreachable_cluster_gives_a_clear_error(tmp_path: Path) -> None:
    from raftkv.errors import Unavailable

    async with connect(["127.0.0.1:1"], timeout=0.5) as c:
        with pytest.raises(Unavailable, match=r"no leader reachable at 127\.0\.0\.1:1"):
            await c.put("k", "v")


async def test_a_retried_write_is_applied_once(tmp_path: Path) -> None:
    """The reply to a write is lost; the client sends the very same request again (same session and seq)."""
    from raftkv.kv.commands import Request, encode_command

    nodes = await kv_cluster(tmp_path)
    try:
        async with connect(endpoints(nodes), cluster_id="test") as c:
            session = await c._ensure_session(None)
            request = encode_command(Request(session, 7, 0, Put(b"once", b"x"), first_incomplete=7))
            first = await c._call(request, False, None)
            revision = (await c.range("once")).revision
            again = await c._call(request, False, None)
            assert again == first
            r = await c.range("once")
            assert r.revision == revision and r.kvs[0].version == 1, "the retry must not apply the put again"
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)
