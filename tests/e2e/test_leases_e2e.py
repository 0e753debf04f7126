"""Leases on real processes, through the CLI: grant, attach, time-to-live, keep-alive, revoke; a keep-alive
process killed with -9 loses its key after the TTL; a lease kept alive survives killing the leader."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import pytest

from raftkv.client import connect
from tests.e2e.harness import ProcCluster
from tests.e2e.test_kv_cli import cli

pytestmark = pytest.mark.e2e


async def test_the_lease_commands(cluster: ProcCluster) -> None:
    c = cluster
    r = await asyncio.to_thread(cli, c, "lease", "grant", "60")
    assert r.returncode == 0 and r.stdout.startswith("lease ") and r.stdout.endswith(" granted with TTL(60s)\n")
    lease_id = r.stdout.split()[1]
    r = await asyncio.to_thread(cli, c, "put", "svc/web", "10.0.0.1", "--lease", lease_id)
    assert r.returncode == 0
    r = await asyncio.to_thread(cli, c, "lease", "timetolive", lease_id, "--keys")
    assert r.returncode == 0 and f"lease {lease_id} granted with TTL(60s), remaining(" in r.stdout
    assert r.stdout.rstrip().endswith("attached keys([svc/web])")
    r = await asyncio.to_thread(cli, c, "lease", "keep-alive", lease_id, "--once")
    assert (r.returncode, r.stdout) == (0, f"lease {lease_id} keepalived with TTL(60)\n")
    r = await asyncio.to_thread(cli, c, "lease", "list", "--json")
    assert json.loads(r.stdout) == {"leases": [int(lease_id)]}
    r = await asyncio.to_thread(cli, c, "lease", "revoke", lease_id)
    assert (r.returncode, r.stdout) == (0, f"lease {lease_id} revoked (1 keys deleted)\n")
    r = await asyncio.to_thread(cli, c, "get", "svc/web")
    assert r.returncode == 1, "the key went with its lease"
    for args in (("lease", "revoke", lease_id), ("put", "k", "v", "--lease", lease_id)):
        r = await asyncio.to_thread(cli, c, *args)
        assert r.returncode == 1 and f"lease {lease_id} not found" in r.stderr
    r = await asyncio.to_thread(cli, c, "lease", "grant", "0")
    assert r.returncode == 2 and "TTL must be 1..9000000000 seconds, not 0" in r.stderr


async def test_a_holder_killed_with_9_loses_its_key_after_the_ttl(cluster: ProcCluster) -> None:
    c = cluster
    r = await asyncio.to_thread(cli, c, "lease", "grant", "2")
    lease_id = r.stdout.split()[1]
    assert (await asyncio.to_thread(cli, c, "put", "lock/holder", "me", "--lease", lease_id)).returncode == 0
    env = dict(os.environ, RAFTKV_ENDPOINTS=",".join(map(str, c.endpoints())))
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "raftkv.cli", "lease", "keep-alive", lease_id,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with connect(c.endpoints(), cluster_id=c.cluster_id, timeout=10.0) as kv:
        assert holder.stdout is not None
        await asyncio.wait_for(holder.stdout.readline(), 10)  # the first keep-alive went through
        await asyncio.sleep(3.0)  # longer than the TTL: the keep-alive holds the key
        assert await kv.get("lock/holder") is not None
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
        killed = time.monotonic()
        deadline = killed + 10.0
        while await kv.get("lock/holder") is not None:
            assert time.monotonic() < deadline, "the key outlived its dead holder's lease"
            await asyncio.sleep(0.05)
        gone = time.monotonic() - killed
    # Its last keep-alive was at most a third of the TTL before the kill: the key lasts about 1.3-2 s more, and
    # at most TTL + a check interval + a commit after the kill.
    assert 0.5 < gone < 2.0 + 1.0, f"gone {gone:.2f} s after the kill"


async def test_a_kept_alive_lease_survives_killing_the_leader(cluster: ProcCluster) -> None:
    c = cluster
    async with connect(c.endpoints(), cluster_id=c.cluster_id, timeout=10.0) as kv, kv.lease(2) as lease:
        await kv.put("registered", "yes", lease=lease.id)
        leader = await c.wait_leader()
        c.kill(leader)
        await asyncio.sleep(4.0)  # two TTLs across the failover
        assert not lease.lost.is_set()
        assert (await kv.get("registered")).value == b"yes"  # type: ignore[union-attr]


async def test_raftkv_lock_runs_a_command_under_the_lock_and_exits_with_its_code(cluster: ProcCluster) -> None:
    c = cluster
    script = "import os, sys; print(os.environ['RAFTKV_LOCK_TOKEN']); sys.exit(3)"
    r = await asyncio.to_thread(cli, c, "lock", "jobs/backup", sys.executable, "-c", script)
    assert r.returncode == 3, r.stderr
    key, token = r.stdout.split()
    assert key.startswith("jobs/backup/") and int(token) > 0
    # A second holder waits for the first: run one holding the lock, then a contender.
    env = dict(os.environ, RAFTKV_ENDPOINTS=",".join(map(str, c.endpoints())))
    first = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "raftkv.cli", "lock", "jobs/backup",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert first.stdout is not None
    await asyncio.wait_for(first.stdout.readline(), 10)  # it holds the lock
    second = asyncio.ensure_future(asyncio.to_thread(cli, c, "lock", "jobs/backup", sys.executable, "-c", script))
    await asyncio.sleep(1.0)
    assert not second.done(), "the lock is held by the first process"
    first.send_signal(signal.SIGINT)  # Ctrl-C: it releases the lock and exits 0
    assert await asyncio.wait_for(first.wait(), 10) == 0
    r = await asyncio.wait_for(second, 20)
    assert r.returncode == 3 and int(r.stdout.split()[1]) > int(token), "a later holder, a higher fencing token"


async def test_raftkv_lock_terminates_its_command_when_the_lease_is_lost(cluster: ProcCluster) -> None:
    """A lost session fails the holder: the lease behind ``raftkv lock`` is revoked (as if it had expired while
    the holder was cut off), and the command it runs is terminated; ``lock`` exits 1 saying why."""
    c = cluster
    env = dict(os.environ, RAFTKV_ENDPOINTS=",".join(map(str, c.endpoints())))
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "raftkv.cli", "lock", "jobs/report", "--ttl", "3", "--",
        sys.executable, "-c", "import time; time.sleep(60)",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stderr is not None
    try:
        key = (await asyncio.wait_for(holder.stdout.readline(), 10)).decode().strip()
        assert key.startswith("jobs/report/"), key
        lease_id = int(key.rsplit("/", 1)[1])
        async with connect(c.endpoints(), cluster_id=c.cluster_id) as client:
            await client.lease_revoke(lease_id)
        code = await asyncio.wait_for(holder.wait(), 10)  # the keep-alive runs every TTL/3: within a second
        err = (await holder.stderr.read()).decode()
        assert code == 1, err
        assert "lost the lock 'jobs/report'" in err and "terminated" in err, err
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_ctrl_c_while_waiting_for_the_lock_leaves_the_queue(cluster: ProcCluster) -> None:
    c = cluster
    env = dict(os.environ, RAFTKV_ENDPOINTS=",".join(map(str, c.endpoints())))

    async def spawn() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "raftkv.cli", "lock", "jobs/queue",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    holder = await spawn()
    waiter: asyncio.subprocess.Process | None = None
    try:
        assert holder.stdout is not None
        await asyncio.wait_for(holder.stdout.readline(), 10)  # it holds the lock
        waiter = await spawn()
        async with connect(c.endpoints(), cluster_id=c.cluster_id) as client:
            deadline = time.monotonic() + 10
            while (await client.range("jobs/queue/", prefix=True)).count < 2:
                assert time.monotonic() < deadline, "the waiter never queued"
                await asyncio.sleep(0.05)
            waiter.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(waiter.wait(), 10) == 0
            assert (await client.range("jobs/queue/", prefix=True)).count == 1, "the waiter left the queue"
            holder.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(holder.wait(), 10) == 0
            assert (await client.range("jobs/queue/", prefix=True)).count == 0, "the holder released"
    finally:
        for p in (holder, waiter):
            if p is not None and p.returncode is None:
                p.kill()
                await p.wait()


async def test_raftkv_elect_and_listen(cluster: ProcCluster) -> None:
    c = cluster
    env = dict(os.environ, RAFTKV_ENDPOINTS=",".join(map(str, c.endpoints())))

    async def spawn(*args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "raftkv.cli", "elect", *args,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    listener = await spawn("db-primary", "--listen")
    a = await spawn("db-primary", "host-a")
    b: asyncio.subprocess.Process | None = None
    try:
        assert a.stdout is not None and listener.stdout is not None
        line = (await asyncio.wait_for(a.stdout.readline(), 10)).decode().split()
        assert line[0].startswith("db-primary/") and line[1] == "host-a"
        b = await spawn("db-primary", "host-b")
        assert (await asyncio.wait_for(listener.stdout.readline(), 10)).decode().strip() == "host-a"
        a.send_signal(signal.SIGINT)  # host-a resigns: host-b takes over
        assert await asyncio.wait_for(a.wait(), 10) == 0
        assert b.stdout is not None
        assert (await asyncio.wait_for(b.stdout.readline(), 10)).decode().split()[1] == "host-b"
        assert (await asyncio.wait_for(listener.stdout.readline(), 10)).decode().strip() == "host-b"
        b.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(b.wait(), 10) == 0
        listener.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(listener.wait(), 10) == 0
    finally:
        for p in (listener, a, b):
            if p is None:
                continue
            if p.returncode is None:
                p.kill()
                await p.wait()
    r = await asyncio.to_thread(cli, c, "elect", "db-primary")
    assert r.returncode == 2 and "give either PROPOSAL" in r.stderr
