"""Snapshots with real processes: a bounded log, a wiped follower brought back by a snapshot, backup/restore."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from raftkv.cli.local import LocalCluster
from raftkv.client import StatusReport, connect
from raftkv.errors import RaftError

pytestmark = pytest.mark.e2e

# Growth 0: snapshot every 1,000 entries whatever the state's size (the default floor of 0.5 would space them
# by the state's size; tests/server/test_snapshots_runtime.py covers it).
SNAPSHOT_ARGS = (
    "--snapshot-entries",
    "1000",
    "--snapshot-trailing",
    "100",
    "--snapshot-growth",
    "0",
    "--wal-segment-bytes",
    str(256 << 10),
)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def wait_serving(lc: LocalCluster, ids: list[int], timeout: float = 20.0) -> int:
    """Wait until every node in ``ids`` answers and they agree on a leader; return it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with connect(lc.endpoints(ids), cluster_id=lc.cluster_id) as c:
            reports = [r for r in await c.admin.statuses(0.5) if isinstance(r, StatusReport)]
        leaders = {r.leader for r in reports}
        if len(reports) == len(ids) and len(leaders) == 1 and None not in leaders:
            leader = leaders.pop()
            assert leader is not None
            return leader
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"nodes {ids} did not settle on a leader within {timeout} s: {reports}")
        await asyncio.sleep(0.1)


async def write_keys(lc: LocalCluster, n: int, value_bytes: int, in_flight: int = 64) -> None:
    async with connect(lc.endpoints(), cluster_id=lc.cluster_id, timeout=20.0) as c:
        value = b"x" * value_bytes
        for start in range(0, n, in_flight):
            await asyncio.gather(*(c.put(f"k{j:07d}", value) for j in range(start, min(n, start + in_flight))))


async def compacted_cluster_scenario(tmp: Path, keys: int, value_bytes: int) -> None:
    lc = LocalCluster(tmp / "c", cluster_id="snap", extra_args=SNAPSHOT_ARGS)
    lc.start_all()
    try:
        leader = await wait_serving(lc, lc.ids)
        follower = next(i for i in lc.ids if i != leader)
        await write_keys(lc, keys, value_bytes)
        log_bytes = keys * (value_bytes + 40)
        for i in lc.ids:
            wal = dir_bytes(lc.root / f"node{i}" / "wal")
            # Without compaction the log would hold every entry; with it, about one snapshot interval.
            assert wal < min(log_bytes / 2, 4 << 20), f"node {i}: the WAL holds {wal} bytes for {log_bytes} written"
        # Wipe a follower's data dir while it is down: it can only come back through the leader's snapshot.
        lc.procs[follower].terminate()
        lc.procs[follower].wait(timeout=10)
        shutil.rmtree(lc.root / f"node{follower}")
        lc.start(follower)
        await wait_serving(lc, lc.ids)
        async with connect([lc.endpoints([follower])[0]], cluster_id=lc.cluster_id, timeout=5.0) as c:
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                r = await c.range("k", prefix=True, count_only=True, serializable=True)
                if r.count == keys:
                    break
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"the wiped follower holds {r.count} of {keys} keys")
                await asyncio.sleep(0.2)
            probe = await c.get(f"k{keys // 2:07d}", serializable=True)
            assert probe is not None and probe.value == b"x" * value_bytes
        log = (lc.root / f"node{follower}.log").read_text()
        assert "installed the leader's snapshot" in log
    finally:
        lc.stop_all()


async def test_compaction_bounds_the_log_and_a_wiped_follower_returns_through_a_snapshot(tmp_path: Path) -> None:
    await compacted_cluster_scenario(tmp_path, keys=10_000, value_bytes=1000)


@pytest.mark.slow
async def test_two_hundred_thousand_keys_with_snapshots_every_ten_thousand(tmp_path: Path) -> None:
    """The issue's full-size run (make test-slow): 200,000 keys."""
    await compacted_cluster_scenario(tmp_path, keys=200_000, value_bytes=100)


def cli(*args: str, env_endpoints: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAFTKV_ENDPOINTS=env_endpoints) if env_endpoints else dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "raftkv.cli", *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


async def test_backup_and_restore_round_trip(tmp_path: Path) -> None:
    src = LocalCluster(tmp_path / "src", cluster_id="prod")
    src.start_all()
    backup = tmp_path / "backup.raftkv"
    try:
        await wait_serving(src, src.ids)
        async with connect(src.endpoints(), cluster_id="prod") as c:
            for j in range(200):
                await c.put(f"app/{j:03d}", f"v{j}")
            await c.delete("app/007")
        endpoints = ",".join(map(str, src.endpoints()))
        r = await asyncio.to_thread(cli, "snapshot", "save", str(backup), env_endpoints=endpoints)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"saved {backup}: index ")
        async with connect(src.endpoints(), cluster_id="prod") as c:
            await c.put("app/after-backup", "not in the backup")
    finally:
        src.stop_all()

    # A damaged backup is refused before anything is created.
    damaged = tmp_path / "damaged.raftkv"
    data = bytearray(backup.read_bytes())
    data[-10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    r = await asyncio.to_thread(
        cli, "snapshot", "restore", str(damaged), "--data-dir", str(tmp_path / "x"), "--id", "1"
    )
    assert r.returncode == 2 and "damaged (checksum mismatch)" in r.stderr
    assert not (tmp_path / "x").exists()

    dst = LocalCluster(tmp_path / "dst", cluster_id="restored")
    for i in dst.ids:
        r = await asyncio.to_thread(
            cli, "snapshot", "restore", str(backup), "--data-dir", str(dst.root / f"node{i}"), "--id", str(i),
            "--cluster-id", "restored",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    dst.start_all()
    try:
        await wait_serving(dst, dst.ids)
        async with connect(dst.endpoints(), cluster_id="restored") as c:
            r2 = await c.range("app/", prefix=True)
            assert r2.count == 199
            kv = await c.get("app/123")
            assert kv is not None and kv.value == b"v123"
            assert await c.get("app/007") is None
            assert await c.get("app/after-backup") is None
            await c.put("app/new", "written after the restore")
            assert (await c.get("app/new")) is not None
    except RaftError as e:
        logs = "\n".join((dst.root / f"node{i}.log").read_text()[-2000:] for i in dst.ids)
        raise AssertionError(f"{e}\n{logs}") from e
    finally:
        dst.stop_all()
