"""The raftkv command against a real 3-node cluster, and a watch that survives the death of its node."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raftkv.client import connect
from tests.e2e.harness import ProcCluster

pytestmark = pytest.mark.e2e


def cli(c: ProcCluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAFTKV_ENDPOINTS=",".join(map(str, c.endpoints())))
    return subprocess.run(
        [sys.executable, "-m", "raftkv.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


async def test_cli_put_get_del_txn_status(cluster: ProcCluster) -> None:
    c = cluster
    r = await asyncio.to_thread(cli, c, "put", "greeting", "hello")
    assert r.returncode == 0 and r.stdout.startswith("OK (revision ")
    r = await asyncio.to_thread(cli, c, "get", "greeting")
    assert (r.returncode, r.stdout) == (0, "hello\n")
    r = await asyncio.to_thread(cli, c, "get", "nothing-here")
    assert (r.returncode, r.stdout) == (1, "")
    for k in ("a", "b"):
        assert (await asyncio.to_thread(cli, c, "put", f"app/{k}", k.upper())).returncode == 0
    r = await asyncio.to_thread(cli, c, "get", "app/", "--prefix", "--json")
    got = json.loads(r.stdout)
    assert [(kv["key"], kv["value"]) for kv in got["kvs"]] == [("app/a", "A"), ("app/b", "B")]
    txn = {
        "compare": [{"key": "greeting", "target": "value", "op": "=", "value": "hello"}],
        "success": [{"put": {"key": "greeting", "value": "bonjour"}}],
        "failure": [{"get": {"key": "greeting"}}],
    }
    r = await asyncio.to_thread(cli, c, "txn", stdin=json.dumps(txn))
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "SUCCESS"
    r = await asyncio.to_thread(cli, c, "txn", stdin=json.dumps(txn))  # the compare now fails
    assert r.stdout.splitlines()[0] == "FAILURE" and '"bonjour"' in r.stdout
    r = await asyncio.to_thread(cli, c, "del", "app/", "--prefix")
    assert (r.returncode, r.stdout) == (0, "2\n")
    r = await asyncio.to_thread(cli, c, "status", "--json")
    nodes = json.loads(r.stdout)
    assert r.returncode == 0 and sorted(n["role"] for n in nodes) == ["follower", "follower", "leader"]
    r = await asyncio.to_thread(cli, c, "txn", stdin="{not json")
    assert r.returncode == 2 and "invalid JSON" in r.stderr


async def test_cli_against_a_stopped_cluster_says_what_to_do(tmp_path: Path) -> None:
    env = dict(os.environ, RAFTKV_ENDPOINTS="127.0.0.1:1")
    r = subprocess.run(
        [sys.executable, "-m", "raftkv.cli", "get", "k", "--timeout", "0.5"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert r.returncode == 1
    assert "no leader reachable at 127.0.0.1:1: is the cluster running? try raftkv status" in r.stderr


async def test_cli_watch_prints_changes(cluster: ProcCluster) -> None:
    c = cluster
    env = dict(os.environ, RAFTKV_ENDPOINTS=",".join(map(str, c.endpoints())))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "raftkv.cli", "watch", "w/", "--prefix", "--rev", "1",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with connect(c.endpoints(), cluster_id=c.cluster_id) as kv:
            await kv.put("w/x", "1")
            await kv.put("other", "y")
            await kv.delete("w/x")
        assert proc.stdout is not None
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip() for _ in range(2)]
        assert lines[0].startswith("PUT w/x 1 (revision ")
        assert lines[1].startswith("DELETE w/x (revision ")
    finally:
        proc.terminate()
        await proc.wait()


async def test_watch_resumes_on_the_new_leader_without_gap_or_duplicate(cluster: ProcCluster) -> None:
    c = cluster
    leader = await c.wait_leader()
    # The watcher is served by the leader (the client prefers it); writes go on while the leader is killed.
    async with connect(c.endpoints(), cluster_id=c.cluster_id, timeout=10.0) as kv:
        first = await kv.put("watched/0", "0")
        seen: list[tuple[bytes, int]] = []
        done = asyncio.Event()

        resumes: list[int] = []

        async def watcher() -> None:
            async with kv.watch("watched/", prefix=True, start_revision=first.revision) as w:
                async for ev in w:
                    seen.append((ev.kv.key, ev.kv.mod_revision))
                    if ev.kv.key == b"watched/end":
                        resumes.append(w.resumes)
                        done.set()
                        return

        task = asyncio.ensure_future(watcher())
        written = [b"watched/0"]
        for k in range(1, 40):
            await kv.put(f"watched/{k}", str(k))
            written.append(f"watched/{k}".encode())
            if k == 15:
                c.kill(leader)
        await kv.put("watched/end", "")
        written.append(b"watched/end")
        await asyncio.wait_for(done.wait(), 20)
        await task
    assert resumes == [1], "the watch was served by the killed leader and had to move"
    keys = [k for k, _rev in seen]
    assert keys == written, "every write exactly once, in order"
    revisions = [rev for _k, rev in seen]
    assert revisions == sorted(set(revisions))
