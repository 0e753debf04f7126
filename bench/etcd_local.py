"""A local 3-member etcd cluster for the side-by-side benchmarks (``bench/idle_write.py``, ``bench/coordination.py``).

etcd 3.4 from Debian's ``etcd-server`` (``/usr/bin/etcd``), defaults but for the addresses, fsync on; driven
through its gRPC API with ``grpc.aio`` and the etcd3aio package's generated stubs (what ``bench/compare.py``
uses too).
"""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from raftkv.cli.local import free_ports


def etcd_cluster(etcd: str, root: Path) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """Start three members under ``root``; their processes and client ports."""
    root.mkdir(parents=True, exist_ok=True)
    ports = free_ports(6)
    peer, client = ports[:3], ports[3:]
    procs = []
    for i in range(3):
        log = open(root / f"e{i}.log", "ab")  # noqa: SIM115 - the child owns it
        cmd = [
            etcd, "--name", f"e{i}", "--data-dir", str(root / f"e{i}"),
            "--listen-client-urls", f"http://127.0.0.1:{client[i]}",
            "--advertise-client-urls", f"http://127.0.0.1:{client[i]}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer[i]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer[i]}",
            "--initial-cluster", ",".join(f"e{j}=http://127.0.0.1:{peer[j]}" for j in range(3)),
            "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn",
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    return procs, client


def stubs() -> Any:
    """The generated messages (``pb.PutRequest`` ...) with the service stubs as ``pb.grpc`` (``pb.grpc.KVStub``)."""
    pb: Any = importlib.import_module("etcd3aio.proto.etcd.api.etcdserverpb.rpc_pb2")
    grpc_stubs = importlib.import_module("etcd3aio.proto.etcd.api.etcdserverpb.rpc_pb2_grpc")
    return SimpleNamespace(**{k: getattr(pb, k) for k in dir(pb) if not k.startswith("_")}, grpc=grpc_stubs)


async def etcd_leader(ports: list[int], timeout: float = 60.0) -> tuple[Any, Any]:
    """The stubs and a ``grpc.aio`` channel to the member that leads, once one does (and took a first write)."""
    grpc_aio: Any = importlib.import_module("grpc.aio")
    pb = stubs()
    deadline = time.monotonic() + timeout
    while True:
        for port in ports:
            channel = grpc_aio.insecure_channel(f"127.0.0.1:{port}")
            try:
                st = await pb.grpc.MaintenanceStub(channel).Status(pb.StatusRequest(), timeout=1)
                if st.leader and st.leader == st.header.member_id:
                    await pb.grpc.KVStub(channel).Put(pb.PutRequest(key=b"warm", value=b"1"), timeout=10)
                    return pb, channel
            except Exception:  # not up yet, or not the leader
                pass
            await channel.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the etcd cluster elected no leader within {timeout:g} s")
        await asyncio.sleep(0.2)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
