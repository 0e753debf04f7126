"""Request limits (issue 17): an over-limit command is refused on its own, named by its flag, never proposed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftkv.client import connect
from raftkv.errors import LimitExceeded
from raftkv.kv.commands import Put
from tests.runtime.cluster import kv_servers


async def test_an_over_limit_command_is_refused_alone_and_the_node_serves_on(tmp_path: Path) -> None:
    nodes = await kv_servers(tmp_path, 3, max_request_bytes=64 * 1024, max_txn_ops=4)
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
    finally:
        for n in nodes:
            await n.aclose()


def test_the_limits_are_flags_with_etcds_defaults_and_bad_values_are_one_line(tmp_path: Path) -> None:
    from raftkv.errors import ConfigError
    from raftkv.runtime.config import build_config

    base = {"id": 1, "data_dir": str(tmp_path), "listen_peer": "127.0.0.1:7001", "peers": "1=127.0.0.1:7001"}
    cfg = build_config(base)
    assert (cfg.max_request_bytes, cfg.max_txn_ops) == (1_572_864, 128)
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
