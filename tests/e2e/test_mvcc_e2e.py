"""The multi-version store on real processes: reads at past revisions from the CLI, compaction, and a watch from
revision N after the whole cluster restarted (the in-memory window is empty: the events come from LMDB)."""

from __future__ import annotations

import asyncio
import json

import pytest

from raftkv.client import Compacted, FutureRevision, connect
from raftkv.kv.watch import EventType
from tests.e2e.harness import ProcCluster
from tests.e2e.test_kv_cli import cli

pytestmark = pytest.mark.e2e


async def test_cli_reads_the_past_sorts_and_compacts(cluster: ProcCluster) -> None:
    c = cluster
    async with connect(c.endpoints(), cluster_id=c.cluster_id) as kv:
        first = await kv.put("cfg/a", "1")
        await kv.put("cfg/b", "1")
        await kv.put("cfg/a", "2")
        last = await kv.put("cfg/c", "1")
    r = await asyncio.to_thread(cli, c, "get", "cfg/a", "--rev", str(first.revision))
    assert (r.returncode, r.stdout) == (0, "1\n")
    r = await asyncio.to_thread(cli, c, "get", "cfg/a")
    assert (r.returncode, r.stdout) == (0, "2\n")
    r = await asyncio.to_thread(
        cli, c, "get", "cfg/", "--prefix", "--sort-by", "create", "--order", "descend", "--limit", "2", "--json"
    )
    got = json.loads(r.stdout)
    assert [kv["key"] for kv in got["kvs"]] == ["cfg/c", "cfg/b"] and got["count"] == 3 and got["more"]
    r = await asyncio.to_thread(cli, c, "get", "cfg/", "--prefix", "--sort-by", "MODIFY", "--keys-only")
    assert r.stdout.split() == ["cfg/b", "cfg/a", "cfg/c"]
    r = await asyncio.to_thread(cli, c, "get", "cfg/", "--prefix", "--count-only")
    assert (r.returncode, r.stdout) == (0, "3\n")
    r = await asyncio.to_thread(cli, c, "get", "cfg/a", "--rev", str(last.revision + 5))
    assert r.returncode == 1
    assert f"revision {last.revision + 5} is in the future: the store is at revision {last.revision}" in r.stderr
    r = await asyncio.to_thread(cli, c, "get", "cfg/a", "--sort-by", "size")
    assert r.returncode == 2 and "'size' is not one of" in r.stderr

    r = await asyncio.to_thread(cli, c, "compaction", str(last.revision - 1))
    assert (r.returncode, r.stdout) == (0, f"compacted revision {last.revision - 1}\n")
    r = await asyncio.to_thread(cli, c, "get", "cfg/a", "--rev", str(first.revision))
    assert r.returncode == 1
    assert f"revision {first.revision} is compacted; the oldest revision still held is {last.revision - 1}" in (
        r.stderr
    )
    r = await asyncio.to_thread(cli, c, "compaction", str(last.revision - 1))
    assert r.returncode == 1 and "is compacted" in r.stderr, "at or below the last compaction: refused (etcd)"
    async with connect(c.endpoints(), cluster_id=c.cluster_id) as kv:
        with pytest.raises(Compacted):
            await kv.get("cfg/a", revision=first.revision)
        with pytest.raises(FutureRevision):
            await kv.compact(last.revision + 1)
        # Every node answers the same past read (serializable: its own copy).
        for i in range(1, c.n + 1):
            async with connect([c.endpoint(i)], cluster_id=c.cluster_id) as one:
                old = await one.range("cfg/", prefix=True, revision=last.revision - 1, serializable=True)
                assert [(x.key, x.value) for x in old.kvs] == [(b"cfg/a", b"2"), (b"cfg/b", b"1")]


async def test_a_watch_from_revision_n_after_a_full_restart_gets_exactly_the_events_after_n(
    cluster: ProcCluster,
) -> None:
    c = cluster
    async with connect(c.endpoints(), cluster_id=c.cluster_id, timeout=10.0) as kv:
        revisions = [(await kv.put(f"log/{k:03d}", str(k))).revision for k in range(60)]
        await kv.delete("log/010")
        await kv.put("other", "x")
    for i in range(1, c.n + 1):  # every node restarts: no event is left in any node's memory
        c.kill(i)
    for i in range(1, c.n + 1):
        c.spawn(i)
    await c.wait_leader(timeout=20.0)
    n = revisions[20]
    async with connect(c.endpoints(), cluster_id=c.cluster_id, timeout=10.0) as kv:
        seen: list[tuple[EventType, bytes, int]] = []
        async with kv.watch("log/", prefix=True, start_revision=n) as w:
            end = await kv.put("log/end", "")
            async for ev in w:
                seen.append((ev.type, ev.kv.key, ev.kv.mod_revision))
                if ev.kv.key == b"log/end":
                    break
    expected = [(EventType.PUT, f"log/{k:03d}".encode(), revisions[k]) for k in range(20, 60)]
    expected += [(EventType.DELETE, b"log/010", revisions[-1] + 1), (EventType.PUT, b"log/end", end.revision)]
    assert seen == expected, "from the durable history, then live: each event once, in order, none before N"
