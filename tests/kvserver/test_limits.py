"""Request limits (issue 17): an over-limit command is refused on its own, named by its flag, never proposed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.client import connect
from raftkv.client.connection import Connection
from raftkv.errors import LimitExceeded
from raftkv.kv.commands import Compare, Put, Range, Request, Txn, decode_command, encode_command
from raftkv.kvserver.capnp_api import _txn_shape
from raftkv.transport.kjloop import kj_loop
from raftkv.transport.wire import schema
from tests.runtime.cluster import kv_servers, wait_until


async def test_an_over_limit_command_is_refused_alone_and_the_node_serves_on(tmp_path: Path) -> None:
    nodes = await kv_servers(tmp_path, 3, max_request_bytes=64 * 1024, max_txn_ops=4, max_key_bytes=16)
    try:
        async with connect([str(n.config.listen_client) for n in nodes], cluster_id="test") as c:
            big, small = b"x" * (100 * 1024), b"y" * 100
            # One loop turn: both go in one batch. Only the big one is refused.
            got = await asyncio.gather(c.put("big", big), c.put("small", small), return_exceptions=True)
            assert isinstance(got[0], LimitExceeded) and "--max-request-bytes" in str(got[0])
            assert "over the limit of 65536" in str(got[0])
            assert not isinstance(got[1], BaseException)
            assert await c.get("big") is None  # never proposed
            kv = await c.get("small")
            assert kv is not None and kv.value == small

            ops = [Put(f"t/{k}".encode(), b"v") for k in range(5)]
            with pytest.raises(LimitExceeded, match=r"--max-txn-ops"):
                await c.txn([], ops)
            assert (await c.range("t/", prefix=True)).count == 0
            r = await c.txn([], ops[:4])  # at the limit: fine
            assert r.succeeded and (await c.range("t/", prefix=True)).count == 4

            with pytest.raises(LimitExceeded, match=r"a key of 17 bytes is over the limit of 16 \(--max-key-bytes"):
                await c.put("k" * 17, "v")
            with pytest.raises(LimitExceeded, match="--max-key-bytes"):
                await c.txn([Compare(b"c" * 20, "version", "=", 0)], [])  # a compared key counts too
            with pytest.raises(LimitExceeded, match="--max-key-bytes"):
                await c.range("a", "z" * 17)  # and a range end
            await c.put("k" * 16, "v")  # at the limit: fine
    finally:
        for n in nodes:
            await n.aclose()


def test_the_limits_are_flags_with_etcds_defaults_and_bad_values_are_one_line(tmp_path: Path) -> None:
    from raftkv.errors import ConfigError
    from raftkv.runtime.config import build_config

    base = {"id": 1, "data_dir": str(tmp_path), "listen_peer": "127.0.0.1:7001", "peers": "1=127.0.0.1:7001"}
    cfg = build_config(base)
    assert (cfg.max_request_bytes, cfg.max_txn_ops) == (1_572_864, 128)
    assert (cfg.max_key_bytes, cfg.max_watchers_per_connection, cfg.max_watch_pending_bytes) == (511, 1000, 64 << 20)
    with pytest.raises(ConfigError, match=r"--max-key-bytes must be 1\.\.511"):
        build_config({**base, "max_key_bytes": 600}).validate(check_ports=False)
    with pytest.raises(ConfigError, match="--max-request-bytes must be at least 1024, got 10"):
        build_config({**base, "max_request_bytes": 10}).validate(check_ports=False)
    with pytest.raises(ConfigError, match="--max-txn-ops must be at least 1, got 0"):
        build_config({**base, "max_txn_ops": 0}).validate(check_ports=False)


async def test_connections_beyond_the_limit_are_closed_at_once_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import socket

    nodes = await kv_servers(tmp_path, 1, max_connections=5)
    try:
        address = nodes[0].config.listen_client
        assert address is not None
        loop = asyncio.get_running_loop()
        held = []
        for _ in range(5):  # idle connections: each counts while the port waits for its first bytes
            s = socket.create_connection((address.host, address.port))
            held.append(s)
        await asyncio.sleep(0.1)
        with caplog.at_level(logging.WARNING, logger="raftkv.transport"):
            extra = [socket.create_connection((address.host, address.port)) for _ in range(3)]
            for s in extra:
                s.setblocking(False)
                async with asyncio.timeout(2):
                    assert await loop.sock_recv(s, 1) == b""  # closed by the node at once
                s.close()
        lines = [r for r in caplog.records if "--max-connections 5" in r.getMessage()]
        assert len(lines) == 1 and "5 connections are open" in lines[0].getMessage()
        for s in held:
            s.close()
        async with connect([str(address)], cluster_id="test", timeout=5.0) as c:  # room again
            await c.put("k", "v")
    finally:
        for n in nodes:
            await n.aclose()


class _Recorder(schema.Watcher.Server):  # type: ignore[misc]
    """A watcher that records events, or (``stall``) never finishes taking them."""

    def __init__(self, stall: bool = False) -> None:
        self.stall = stall
        self.seen = 0
        self.reasons: list[str] = []

    async def events(self, events: Any, _context: Any, **_kw: Any) -> None:
        self.seen += len(events)
        if self.stall:
            await asyncio.Event().wait()  # the node must give up on it, never wait for it

    async def cancelled(self, reason: str, compactRevision: int, _context: Any, **_kw: Any) -> None:  # noqa: N803
        self.reasons.append(str(reason))


async def test_watchers_per_connection_and_pending_bytes_per_watcher_are_bounded(tmp_path: Path) -> None:
    nodes = await kv_servers(tmp_path, 3, max_watchers_per_connection=3, max_watch_pending_bytes=1 << 20)
    endpoints = [n.config.listen_client for n in nodes]
    leader = next(n for n in nodes if n.running.is_leader)
    assert leader.config.listen_client is not None
    try:
        async with kj_loop():
            conn, other = (
                Connection(leader.config.listen_client, "test"),
                Connection(leader.config.listen_client, "test"),
            )
            await conn.open(2.0)
            await other.open(2.0)
            try:
                ids = [await conn.watch(f"w{k}".encode(), None, 0, _Recorder(), 2.0) for k in range(3)]
                with pytest.raises(LimitExceeded, match="--max-watchers-per-connection"):
                    await conn.watch(b"w3", None, 0, _Recorder(), 2.0)
                await other.watch(b"w3", None, 0, _Recorder(), 2.0)  # another connection has its own budget
                await conn.cancel_watch(ids[0], 2.0)
                await conn.watch(b"w4", None, 0, _Recorder(), 2.0)  # room again

                stalled = _Recorder(stall=True)
                await other.watch(b"big", None, 0, stalled, 2.0)
                async with connect([str(e) for e in endpoints], cluster_id="test") as c:
                    for _ in range(12):  # 1.2 MB of values: over the 1 MiB the stalled watcher may hold
                        await c.put("big", b"x" * 100_000)
                    await wait_until(lambda: bool(stalled.reasons), 4.0, "the stalled watch's cancellation")
                    assert "--max-watch-pending-bytes" in stalled.reasons[0], stalled.reasons
                    assert leader.watches is not None
                    assert all(w.key != b"big" for w in leader.watches.watches.values()), "its buffer is gone"
                    await c.put("after", "the node serves on")
            finally:
                conn.close()
                other.close()
    finally:
        for n in nodes:
            await n.aclose()


@settings(max_examples=60, deadline=None)
@given(
    compares=st.integers(0, 300),
    success=st.integers(0, 70_000),
    failure=st.integers(0, 300),
    in_session=st.booleans(),
)
def test_the_txn_sizes_counted_before_decoding_are_the_decoded_ones(
    compares: int, success: int, failure: int, in_session: bool
) -> None:
    """The pre-decode count (what refuses a 100k-op txn without building it) agrees with the real decoder."""
    txn = Txn([Compare(b"c", "version", "=", 0)] * compares, [Put(b"k", b"")] * success, [Range(b"r")] * failure)
    data = encode_command(Request(1, 1, 0, txn) if in_session else txn)
    decoded = decode_command(data)
    inner = decoded.op if isinstance(decoded, Request) else decoded
    assert isinstance(inner, Txn)
    assert _txn_shape(data) == (len(inner.compare), len(inner.success), len(inner.failure))
    assert _txn_shape(encode_command(Put(b"k", b"v" * 20_000))) is None


async def test_the_client_cuts_its_batches_by_bytes_under_the_nodes_frame_limit(tmp_path: Path) -> None:
    """100 puts of 100 KB at once: 10 MB, over the 4.25 MiB frame a node reads; the client sends it in parts."""
    nodes = await kv_servers(tmp_path, 3)
    try:
        async with connect([str(n.config.listen_client) for n in nodes], cluster_id="test") as c:
            value = b"v" * 100_000
            await c.put("first", "opens the session")  # so that the 100 below go in one loop turn
            await asyncio.gather(*(c.put(f"big/{k}", value) for k in range(100)))
            r = await c.range("big/", prefix=True, count_only=True)
            assert r.count == 100
    finally:
        for n in nodes:
            await n.aclose()
