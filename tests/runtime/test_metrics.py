"""The /metrics endpoint exposes the node's state, latencies and per-peer transport counters."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from raftkv.transport.address import Address
from tests.runtime.cluster import configs, free_ports, leader_of, start_all, wait_until


def scrape(addr: Address) -> str:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=2) as r:
        return str(r.read().decode())


async def test_metrics_endpoint(tmp_path: Path) -> None:
    cfgs = configs(tmp_path, 3)
    metrics = [Address("127.0.0.1", p) for p in free_ports(3)]
    for cfg, addr in zip(cfgs, metrics, strict=True):
        cfg.listen_metrics = addr
    nodes = start_all(cfgs)
    for n in nodes:
        await n.start()
    try:
        await wait_until(lambda: leader_of(nodes) is not None, 2.0, "a leader")
        lead = leader_of(nodes)
        assert lead is not None
        for k in range(5):
            await lead.propose(f"m{k}".encode())
        text = await asyncio.to_thread(scrape, metrics[nodes.index(lead)])
        values = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        assert values["raftkv_is_leader"] == 1
        assert values["raftkv_term"] >= 1
        assert values["raftkv_proposals_total"] == 5
        assert values["raftkv_applied_index"] >= 6
        assert values["raftkv_fsync_seconds_count"] >= 1
        peers = [p for p in (1, 2, 3) if p != lead.id]
        for p in peers:
            assert values[f'raftkv_peer_connected{{peer="{p}"}}'] == 1
            assert values[f'raftkv_messages_sent_total{{peer="{p}"}}'] > 0
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)
