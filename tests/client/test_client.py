"""The client against an in-process cluster: redirections, the bounded watch queue, ownership of tasks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from raftkv.client import Connection, NotLeader, Unavailable, WatchCancelled, connect
from raftkv.client.router import Router
from raftkv.client.watch import MAX_QUEUED_EVENTS
from raftkv.kv.commands import Range, encode_command
from raftkv.kvserver import KVServer
from raftkv.transport.address import Address
from raftkv.transport.kjloop import kj_loop
from tests.runtime.cluster import kv_servers, leader_of, wait_until


async def _close(servers: list[KVServer]) -> None:
    for s in servers:
        await s.aclose(transfer_leadership=False)


async def _leader_and_follower(servers: list[KVServer]) -> tuple[KVServer, KVServer]:
    """The leader, and a follower once it knows the leader's client address (learned from the leader)."""
    lead = leader_of(servers)
    assert lead is not None
    follower = next(s for s in servers if s is not lead)
    address = str(lead.config.listen_client)
    await wait_until(lambda: follower.running.leader_client_address() == address, 5.0, "the follower knows the leader")
    return lead, follower


class _Read:
    """A linearizable read: a follower must refuse it with notLeader."""

    command = encode_command(Range(b"k", None, 0, False, False))
    serializable = False


async def test_not_leader_from_a_follower_carries_the_leaders_client_address(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 3)
    try:
        lead, follower = await _leader_and_follower(servers)
        address = str(lead.config.listen_client)
        follower_address = follower.config.listen_client
        assert follower_address is not None
        async with kj_loop():
            conn = Connection(follower_address, "test")
            try:
                await conn.open(1.0)
                with pytest.raises(NotLeader) as caught:
                    await conn.execute([_Read()], 1.0)
            finally:
                conn.close()
        assert caught.value.leader_address == address
        assert caught.value.leader_hint == lead.running.id
    finally:
        await _close(servers)


async def test_a_client_of_one_follower_follows_the_redirection(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 3)
    try:
        lead, follower = await _leader_and_follower(servers)
        address = str(lead.config.listen_client)
        async with connect([str(follower.config.listen_client)], cluster_id="test", timeout=5.0) as c:
            await c.put("k", "v")
            assert str(c.router.leader) == address
            kv = await c.get("k")
            assert kv is not None and kv.value == b"v"
            index, _term, _result = await c.admin.propose(b"generic", timeout=5.0)
            assert index > 0
    finally:
        await _close(servers)


async def test_the_retry_loop_gives_up_at_the_deadline_with_unavailable() -> None:
    async with kj_loop():
        router = Router([Address("127.0.0.1", 1)])
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"no leader reachable at 127\.0\.0\.1:1 before the deadline") as caught:
            await router.run(lambda conn, left: conn.ping(left), time.monotonic() + 0.3)
        router.close()
    assert time.monotonic() - started < 2.0
    assert "connection refused" in str(caught.value)


async def test_a_watch_queue_is_bounded_and_a_consumer_too_far_behind_gets_watch_cancelled(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 3)
    try:
        endpoints = [str(s.config.listen_client) for s in servers]
        async with connect(endpoints, cluster_id="test") as c:
            assert c.watch("any").max_queued == MAX_QUEUED_EVENTS > 0  # bounded by default
            bound = 8
            first = await c.put("w/0", "0")
            w = c.watch("w/", prefix=True, start_revision=first.revision, max_queued=bound)
            assert w._queue.maxsize == bound
            ev = await asyncio.wait_for(anext(w), 5.0)  # starts the watch
            assert ev.kv.key == b"w/0"
            # The consumer stops reading while the cluster writes far more than the bound.
            for k in range(1, 4 * bound):
                await c.put(f"w/{k}", str(k))
            await wait_until(lambda: isinstance(w._ending, WatchCancelled), 5.0, "the watch to overflow")
            # The overflow cancels the watch on its node, so nothing more is pushed to us.
            await wait_until(
                lambda: all(s.watches is None or not s.watches.watches for s in servers), 5.0, "the node's watch gone"
            )
            for k in range(4 * bound, 5 * bound):
                await c.put(f"w/{k}", str(k))
            assert w._queue.qsize() <= bound  # the queue never grew past its bound
            # The events queued are delivered, in order, with no gap; then the watch ends, saying why.
            got = []
            with pytest.raises(WatchCancelled, match=f"fell more than {bound} events behind"):
                while True:
                    got.append((await asyncio.wait_for(anext(w), 5.0)).kv.key)
            assert got == [f"w/{k}".encode() for k in range(1, len(got) + 1)]
            assert 1 <= len(got) <= bound
            assert not w._tasks.tasks  # its health check was reaped
            with pytest.raises(StopAsyncIteration):
                await anext(w)
    finally:
        await _close(servers)


async def test_closing_the_client_closes_its_watches_and_their_tasks(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 3)
    try:
        endpoints = [str(s.config.listen_client) for s in servers]
        async with connect(endpoints, cluster_id="test") as c:
            first = await c.put("x", "1")
            w = c.watch("x", start_revision=first.revision)
            assert (await asyncio.wait_for(anext(w), 5.0)).kv.value == b"1"
            assert w._tasks.tasks  # the health check runs
            waiting = asyncio.create_task(anext(w))  # a consumer waiting for the next event when the client closes
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 5.0)
        assert not w._tasks.tasks and w._tasks.closed
        assert not c._tasks.tasks and c._tasks.closed
        with pytest.raises(StopAsyncIteration):
            await anext(w)
    finally:
        await _close(servers)
