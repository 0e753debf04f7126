"""The etcd gateway on real processes: the leader is killed (SIGKILL) while the real etcdctl watches a prefix
through the gateways and a gRPC client of etcd's protocol writes through them. Two watchers, each given every
gateway: etcd's client moves a watch whose endpoint dies to another one and resumes it from the revision after
the last one it got. Every write must reach each watch exactly once, in revision order, with no revision
skipped, and every acknowledged write is in the store.

(A watcher given only the leader's gateway cannot be made to resume through the node's restart: etcdctl's
watches require a leader, and etcd's client ends such a watch, rather than resuming it, when a member answers
"no leader", which a member just restarted does until it hears from the leader. So does etcd.)"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest

from raftkv.cli.local import LocalCluster
from raftkv.client import connect
from raftkv.kvserver.etcd_api import load_protos

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed (Debian: etcd-client)"),
]
PB, SERVICES = load_protos()


async def _put_somewhere(stubs: list[Any], key: bytes, value: bytes, start: int) -> int | None:
    """Put through the gateways, starting at ``start``, moving on when one fails; the etcd revision, or None
    if no gateway answered within the deadline (the put may or may not have been applied)."""
    deadline = time.monotonic() + 10
    k = start
    while time.monotonic() < deadline:
        try:
            r = await stubs[k % len(stubs)].Put(PB.PutRequest(key=key, value=value), timeout=2)
            return int(r.header.revision)
        except grpc.aio.AioRpcError:
            k += 1
            await asyncio.sleep(0.05)
    return None


async def _watch(endpoints: str) -> asyncio.subprocess.Process:
    """``etcdctl watch`` of the prefix from etcd's revision 3 (the first write after the warm-up), in JSON."""
    return await asyncio.create_subprocess_exec(
        "etcdctl", f"--endpoints={endpoints}", "watch", "k/", "--prefix", "--rev", "3", "-w", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ, ETCDCTL_API="3"),
    )  # fmt: skip


async def _events_until(watcher: asyncio.subprocess.Process, last: int) -> list[tuple[int, bytes]]:
    """(mod revision, key) of each event the watcher printed, until it printed revision ``last``."""
    seen: list[tuple[int, bytes]] = []
    assert watcher.stdout is not None and watcher.stderr is not None
    async with asyncio.timeout(60):
        while not seen or seen[-1][0] < last:
            line = await watcher.stdout.readline()
            assert line, f"etcdctl watch ended: {(await watcher.stderr.read()).decode()}"
            for event in json.loads(line).get("Events") or []:
                kv = event["kv"]
                seen.append((int(kv["mod_revision"]), base64.b64decode(kv["key"])))
    return seen


async def test_a_watch_through_the_gateway_survives_a_leader_kill_with_no_event_lost_or_repeated(
    tmp_path: Path,
) -> None:
    lc = LocalCluster(tmp_path, 3, cluster_id="gwkill", etcd=True)
    lc.start_all()
    watchers: list[asyncio.subprocess.Process] = []
    channels = [grpc.aio.insecure_channel(str(a)) for a in lc.etcd_endpoints()]
    try:
        async with connect(lc.endpoints(), cluster_id="gwkill", timeout=20.0) as client:
            await client.put("warm-up", "1")  # etcd revision 2
            status = await client.admin.statuses(timeout=2.0)
            leader = next(s.id for s in status if not isinstance(s, tuple) and s.role == "leader")
            stubs = [SERVICES.KVStub(ch) for ch in channels]
            for stub in stubs:  # every gateway up
                await stub.Range(PB.RangeRequest(key=b"warm-up"), timeout=10, wait_for_ready=True)
            every = ",".join(map(str, lc.etcd_endpoints()))
            for _ in range(2):  # two, so that one is likelier to be on the leader's gateway
                watchers.append(await _watch(every))
            acked: dict[bytes, int] = {}
            for i in range(120):
                if i == 40:
                    lc.procs[leader].kill()  # SIGKILL: its gateway's streams break mid-flight
                    lc.procs[leader].wait(timeout=5)
                key = b"k/%04d" % i
                revision = await _put_somewhere(stubs, key, b"v%d" % i, i)
                if revision is not None:
                    acked[key] = revision
            assert len(acked) >= 100, f"most puts acknowledged across the failover, got {len(acked)}"
            final = await client.range("k/", prefix=True)
            stored = {kv.key: kv.mod_revision + 1 for kv in final.kvs}  # etcd's numbering
            for key, revision in acked.items():
                assert stored.get(key) == revision, f"acknowledged {key!r} at {revision}, stored {stored.get(key)}"
            last = max(stored.values())
        for watcher in watchers:
            seen = await _events_until(watcher, last)
            revisions = [r for r, _k in seen]
            assert revisions == sorted(set(revisions)), "no event repeated, none out of order"
            assert revisions == list(range(3, last + 1)), "no revision skipped: every write reached the watch"
            assert {k: r for r, k in seen} == stored, "the watch saw exactly the writes the store holds"
    finally:
        for watcher in watchers:
            if watcher.returncode is None:
                watcher.kill()
                await watcher.wait()
        for ch in channels:
            await ch.close()
        lc.stop_all()
