"""Membership changes on real processes with the `raftkv member` commands: replace a dead machine while
clients write, then check every acknowledged write is on the new node; bad changes are refused in one line."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raftkv.cli.local import LocalCluster, free_ports
from raftkv.client import connect
from raftkv.errors import RaftError
from raftkv.transport.address import Address

pytestmark = pytest.mark.e2e


def cli(endpoints: list[Address], *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAFTKV_ENDPOINTS=",".join(map(str, endpoints)))
    return subprocess.run(
        [sys.executable, "-m", "raftkv.cli", *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def members(endpoints: list[Address]) -> list[dict[str, object]]:
    r = cli(endpoints, "member", "list", "--json")
    assert r.returncode == 0, r.stderr
    out: list[dict[str, object]] = json.loads(r.stdout)
    return out


async def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(cond):  # type: ignore[arg-type]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def test_replace_a_dead_node_while_clients_write(tmp_path: Path) -> None:
    lc = LocalCluster(tmp_path, 3, cluster_id="members")
    lc.start_all()
    try:
        survivors = lc.endpoints([1, 2])
        async with connect(lc.endpoints(), cluster_id="members", timeout=15.0) as client:
            await client.put("warm-up", "1")
            acked: list[int] = []
            stop = asyncio.Event()

            async def writer() -> None:
                k = 0
                while not stop.is_set():
                    try:
                        await client.put(f"k{k}", f"v{k}", timeout=5.0)
                        acked.append(k)
                    except RaftError:
                        await asyncio.sleep(0.05)
                    k += 1

            task = asyncio.ensure_future(writer())
            await asyncio.sleep(1.0)
            # Node 3's machine dies with its disk.
            lc.procs[3].kill()
            lc.procs[3].wait(timeout=10)
            shutil.rmtree(tmp_path / "node3")
            r = await asyncio.to_thread(cli, survivors, "member", "remove", "3")
            assert r.returncode == 0, r.stderr
            assert "voters 1,2" in r.stdout
            lc.peer[4], lc.client[4] = free_ports(2)
            r = await asyncio.to_thread(
                cli,
                survivors,
                "member",
                "add",
                "4",
                "--peer-addr",
                f"127.0.0.1:{lc.peer[4]}",
                "--client-addr",
                f"127.0.0.1:{lc.client[4]}",
                "--learner",
            )
            assert r.returncode == 0, r.stderr
            assert "raftkv serve --id 4" in r.stdout and "--join" in r.stdout
            lc.start_joining(4, via=[1, 2])

            def caught_up() -> bool:
                m = {int(str(x["id"])): x for x in members(survivors)}
                lag = m.get(4, {}).get("lag")
                return isinstance(lag, int) and lag < 100

            await _wait(caught_up, 30.0, "node 4 catching up")
            r = await asyncio.to_thread(cli, survivors, "member", "promote", "4")
            assert r.returncode == 0, r.stderr
            await asyncio.sleep(1.0)
            stop.set()
            await task
            assert len(acked) > 50, "the writer made progress throughout"
            m = {int(str(x["id"])): x for x in members(survivors)}
            assert {i: x["role"] for i, x in m.items()} == {1: "voter", 2: "voter", 4: "voter"}
            last = acked[-1]
        # Every acknowledged write is on node 4 (its own state, no leader involved).
        async with connect([Address("127.0.0.1", lc.client[4])], cluster_id="members", timeout=10.0) as c4:
            deadline = time.monotonic() + 20
            while (kv := await c4.get(f"k{last}", serializable=True)) is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert kv is not None and kv.value == f"v{last}".encode()
            for k in acked:
                got = await c4.get(f"k{k}", serializable=True)
                assert got is not None and got.value == f"v{k}".encode(), f"acknowledged k{k} missing on node 4"
    finally:
        lc.stop_all()


async def test_bad_changes_are_one_line_errors_and_a_node_not_added_cannot_join(tmp_path: Path) -> None:
    lc = LocalCluster(tmp_path, 3, cluster_id="bad")
    lc.start_all()
    try:
        eps = lc.endpoints()
        async with connect(eps, cluster_id="bad", timeout=15.0) as client:
            await client.put("warm-up", "1")
        for args, message in [
            (("member", "remove", "9"), "node 9 is not a member"),
            (("member", "add", "2", "--peer-addr", "127.0.0.1:1", "--client-addr", "127.0.0.1:2"), "already a member"),
            (
                ("member", "add", "5", "--peer-addr", f"127.0.0.1:{lc.peer[1]}", "--client-addr", "127.0.0.1:3"),
                "already used by node 1",
            ),
            (("member", "add", "5", "--peer-addr", "nonsense", "--client-addr", "127.0.0.1:3"), "--peer-addr"),
        ]:
            r = await asyncio.to_thread(cli, eps, *args)
            assert r.returncode != 0, (args, r.stdout)
            assert message in r.stderr, (args, r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert {int(str(m["id"])) for m in members(eps)} == {1, 2, 3}
        # A node that was never added refuses to start (it would otherwise form a cluster of its own).
        lc.start_joining(7)
        assert lc.procs[7].wait(timeout=30) == 2  # a configuration error: exit code 2
        log = (tmp_path / "node7.log").read_text()
        assert "node 7 is not a member" in log and "raftkv member add 7" in log
    finally:
        lc.stop_all()


async def test_grow_3_to_5_and_shrink_to_3_removing_the_leader_under_load_is_linearizable(tmp_path: Path) -> None:
    """Clients write and read a few keys throughout; the cluster grows to 5 voters (learner, then promote, one
    at a time) and shrinks back to 3, removing the leader among others. The recorded history must be
    linearizable (raftkv.check) and every member must end with the same data."""
    from raftkv.check import Kind
    from raftkv.check import check as check_history
    from raftkv.check import get as op_get
    from raftkv.check import put as op_put

    lc = LocalCluster(tmp_path, 3, cluster_id="grow")
    lc.start_all()
    history = []
    t0 = time.monotonic()
    try:
        async with connect(lc.endpoints(), cluster_id="grow", timeout=15.0) as admin:
            await admin.put("warm-up", "1")
            stop = asyncio.Event()

            async def client_loop(w: int) -> None:
                async with connect(lc.endpoints(), cluster_id="grow", timeout=5.0) as c:
                    k = 0
                    while not stop.is_set():
                        key = f"r{k % 3}"
                        call = time.monotonic() - t0
                        if k % 2 == 0:
                            value = f"w{w}-{k}"
                            try:
                                await c.put(key, value, timeout=3.0)
                                history.append(op_put(w, key, value, call, time.monotonic() - t0))
                            except RaftError:
                                history.append(op_put(w, key, value, call, None))  # outcome unknown
                        else:
                            try:
                                kv = await c.get(key, timeout=3.0)
                                got = kv.value.decode() if kv is not None else None
                                history.append(op_get(w, key, got, call, time.monotonic() - t0))
                            except RaftError:
                                pass  # a read that failed constrains nothing
                        k += 1

            clients = [asyncio.ensure_future(client_loop(w)) for w in range(3)]
            await asyncio.sleep(1.0)
            for i in (4, 5):
                lc.peer[i], lc.client[i] = free_ports(2)
                await admin.add_member(i, f"127.0.0.1:{lc.peer[i]}", f"127.0.0.1:{lc.client[i]}", learner=True)
                lc.start_joining(i, via=[1, 2, 3])
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    m = {x.id: x for x in await admin.members()}
                    if m[i].lag is not None and m[i].lag < 100:
                        break
                    await asyncio.sleep(0.2)
                await admin.promote_member(i)
            assert {m.id for m in await admin.members() if not m.learner} == {1, 2, 3, 4, 5}
            await asyncio.sleep(1.0)
            leader = next(m.id for m in await admin.members() if m.is_leader)
            for i in (leader, next(j for j in (1, 2, 3) if j != leader)):
                await admin.remove_member(i, timeout=15.0)
                await asyncio.sleep(0.5)
            final = await admin.members()
            assert len(final) == 3 and all(not m.learner for m in final)
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*clients)
            remaining = [m.id for m in final]
            # Every member ends with the same value of every key (read locally on each, once caught up).
            expected = {}
            for key in ("r0", "r1", "r2"):
                kv = await admin.get(key)
                expected[key] = kv.value if kv is not None else None
        for i in remaining:
            async with connect([Address("127.0.0.1", lc.client[i])], cluster_id="grow", timeout=10.0) as c:
                for key, value in expected.items():
                    deadline = time.monotonic() + 10
                    while True:
                        kv = await c.get(key, serializable=True)
                        got = kv.value if kv is not None else None
                        if got == value or time.monotonic() > deadline:
                            break
                        await asyncio.sleep(0.1)
                    assert got == value, f"node {i} has {key}={got!r}, the leader {value!r}"
    finally:
        lc.stop_all()
    assert sum(1 for op in history if op.return_s is not None) > 100
    verdict = check_history(history, timeout_s=60)
    assert verdict.kind is not Kind.ILLEGAL, verdict.reason
