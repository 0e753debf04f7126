"""The node's HTTP port (issue 21): /status.json and /events say who leads and who is reachable, /health is
etcd's shape and flips to 503 on a node cut off from the majority, and back; the dashboard page and its
assets are served."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from raftkv.runtime.node import RaftNode
from raftkv.transport.address import Address
from tests.runtime.cluster import CommandLog, configs, free_ports, leader_of, start_all, wait_until


def get(addr: Address, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


async def status(addr: Address) -> dict[str, Any]:
    code, body = await asyncio.to_thread(get, addr, "/status.json")
    assert code == 200
    out: dict[str, Any] = json.loads(body)
    return out


async def health(addr: Address) -> tuple[int, dict[str, str]]:
    code, body = await asyncio.to_thread(get, addr, "/health")
    return code, json.loads(body)


async def test_status_health_events_and_the_page(tmp_path: Path) -> None:
    cfgs = configs(tmp_path, 3)
    http = [Address("127.0.0.1", p) for p in free_ports(3)]
    for cfg, addr in zip(cfgs, http, strict=True):
        cfg.listen_metrics = addr
    nodes = start_all(cfgs)
    restarted: list[RaftNode] = []
    try:
        for n in nodes:
            await n.start()
        await wait_until(lambda: leader_of(nodes) is not None, 5.0, "a leader")
        lead = leader_of(nodes)
        assert lead is not None
        await lead.propose(b"x")
        k = next(i for i, n in enumerate(nodes) if n is not lead)
        await wait_until(lambda: nodes[k].applied_index >= 2, 5.0, "the follower applies the proposal")
        seen = await status(http[k])
        assert (seen["id"], seen["role"], seen["leader"]) == (nodes[k].id, "follower", lead.id)
        assert {(m["id"], m["leader"], m["reachable"]) for m in seen["members"]} == {
            (n.id, n is lead, True) for n in nodes
        }
        assert any(e["kind"] == "role" and e["leader"] == lead.id for e in seen["history"]), seen["history"]
        assert seen["counters"]["applied"] >= 2
        assert seen["store"] == {}, "a bare RaftNode: no key-value store adds to its status"
        await lead.read_barrier()
        led = (await status(http[nodes.index(lead)]))["counters"]
        assert led["reads"] == 1
        # One proposal batch, timed from its proposal to its application, on the leader only.
        assert led["commits"] == 1 and led["commit_seconds"] > 0, led
        assert seen["counters"]["commits"] == 0, "a follower proposes nothing, so times no commit"
        for addr in http:
            assert await health(addr) == (200, {"health": "true"})

        code, page = await asyncio.to_thread(get, http[k], "/")
        assert code == 200 and b'<script src="/static/dashboard.js">' in page
        for asset in ("uPlot.iife.min.js", "uPlot.min.css", "dashboard.js"):
            assert (await asyncio.to_thread(get, http[k], f"/static/{asset}"))[0] == 200
        reader, writer = await asyncio.open_connection(http[k].host, http[k].port)
        writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            while not (line := await reader.readline()).startswith(b"data: "):
                pass
        assert json.loads(line[6:])["id"] == nodes[k].id, "a server-sent event with the node's status"
        writer.close()

        # Cut node k off from the majority: the two others stop.
        others = [n for i, n in enumerate(nodes) if i != k]
        for n in others:
            await n.aclose(transfer_leadership=False)
        await wait_until_async(lambda: health(http[k]), lambda h: h[0] == 503, 10.0, "503 on the lone node")
        code, body = await health(http[k])
        assert body["health"] == "false" and body["reason"], body
        lone = await status(http[k])
        assert all(not m["reachable"] for m in lone["members"] if m["id"] != nodes[k].id)

        restarted = [RaftNode(cfgs[i], CommandLog()) for i in range(3) if i != k]
        for n in restarted:
            await n.start()
        await wait_until_async(lambda: health(http[k]), lambda h: h[0] == 200, 10.0, "200 again, with a majority")
    finally:
        for n in [*nodes, *restarted]:
            await n.aclose(transfer_leadership=False)


async def wait_until_async(get_value: Any, ok: Any, timeout: float, what: str) -> None:
    """Poll the coroutine ``get_value()`` every 100 ms until ``ok(value)``; fail with ``what`` after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while not ok(await get_value()):
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for: {what}") from None
