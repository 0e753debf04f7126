"""One lock contender of the torture harness's lock workload, as its own process (so that the nemesis can kill it,
pause it past its lease, or cut it off from the cluster).

Until its deadline it loops: take the lock ``NAME`` (the client recipe, ``raftkv.client.Lock``), then write a few
times to the *fenced resource* while holding it, then release. A fenced write is a transaction that succeeds only
while the writer's lock key still exists with its token as create revision (etcd's ``IsOwner`` guard); it
creates a key of its own, ``lockres/<token>/<holder>/<seq>``, never overwritten, so the store keeps every write at
its revision through compaction. Every step is appended to ``--out`` as one JSON line, flushed, with the
machine's monotonic clock (shared by every process here), so the file survives a kill -9 up to the last step.

Its client reaches the nodes only through the proxies it is given (``--endpoints``); ``--address-map`` says which
real client address each proxy stands for, so that a redirection to the leader goes through the leader's proxy
too and a cut holder stays cut (test-only: the real client follows the address the node names).

``--unsafe-skip-wait`` plants a bug: the contender holds the lock as soon as it has queued (for showing that the
checker bites).

``python -m tests.e2e.lock_holder --holder 1 --endpoints ... --address-map ... --deadline T --out FILE``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from raftkv.client import Client, connect, recipes
from raftkv.client import router as client_router
from raftkv.errors import RaftError
from raftkv.kv.commands import Compare, Put
from raftkv.transport.address import Address

RESOURCE_PREFIX = "lockres/"
LOCK_NAME = "torture/lock"


def resource_key(token: int, holder: str, seq: int) -> str:
    return f"{RESOURCE_PREFIX}{token:012d}/{holder}/{seq}"


class Recorder:
    def __init__(self, f: TextIO, holder: str) -> None:
        self.f = f
        self.holder = holder

    def __call__(self, ev: str, **fields: Any) -> None:
        self.f.write(json.dumps({"h": self.holder, "ev": ev, "t": round(time.monotonic(), 6), **fields}) + "\n")
        self.f.flush()


def _translate(mapping: dict[Address, Address]) -> None:
    parse = client_router._parse

    def parse_via_proxy(address: str) -> Address | None:
        real = parse(address)
        return mapping.get(real, real) if real is not None else None

    client_router._parse = parse_via_proxy


async def _skip_wait(*_args: Any) -> None:
    return None


async def hold_once(c: Client, rec: Recorder, rng: random.Random, ttl: int, acquire_timeout: float) -> None:
    lock = c.lock(LOCK_NAME, ttl=ttl)
    rec("wait")
    try:
        await asyncio.wait_for(lock.acquire(), acquire_timeout)
    except (RaftError, TimeoutError) as e:
        rec("acquire-failed", error=type(e).__name__)
        return
    rec("acquired", token=lock.token, key=lock.key.decode())
    try:
        for seq in range(rng.randint(2, 5)):
            if lock.lost.is_set():
                rec("lost")
                break
            key = resource_key(lock.token, rec.holder, seq)
            try:
                r = await c.txn([Compare(lock.key, "create", "=", lock.token)], [Put(key.encode(), b"")])
            except RaftError as e:
                rec("write", token=lock.token, seq=seq, ok=None, error=type(e).__name__)
                continue
            rec("write", token=lock.token, seq=seq, ok=r.succeeded, rev=r.revision)
            if not r.succeeded:
                rec("fenced-out", token=lock.token)
                break
            await asyncio.sleep(rng.uniform(0.0, 0.2))
    finally:
        try:
            await asyncio.wait_for(lock.release(), 10.0)
            rec("released", token=lock.token)
        except (RaftError, TimeoutError) as e:
            rec("release-failed", token=lock.token, error=type(e).__name__)


async def run(a: argparse.Namespace) -> None:
    pairs = [p.split("=", 1) for p in a.address_map.split(",") if p]
    _translate({Address.parse(real): Address.parse(proxy) for real, proxy in pairs})
    if a.unsafe_skip_wait:
        recipes._wait_for_turn = _skip_wait  # type: ignore[assignment]
    rng = random.Random(a.seed)
    with Path(a.out).open("a", buffering=1) as f:
        rec = Recorder(f, a.holder)
        rec("start", pid=os.getpid())
        async with connect(a.endpoints.split(","), cluster_id=a.cluster_id, timeout=a.timeout) as c:
            while time.monotonic() < a.deadline:
                await hold_once(c, rec, rng, a.ttl, a.acquire_timeout)
                await asyncio.sleep(rng.uniform(0.0, 0.1))
        rec("stop")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.e2e.lock_holder", description=__doc__.split("\n\n")[0])
    p.add_argument("--holder", required=True, help="this contender's name in the records (e.g. 2.1: holder 2, run 1)")
    p.add_argument("--endpoints", required=True, help="comma-separated proxy addresses")
    p.add_argument("--address-map", default="", help="REAL=PROXY,... for the nodes' client addresses")
    p.add_argument("--cluster-id", default="")
    p.add_argument("--deadline", type=float, required=True, help="time.monotonic() at which to stop")
    p.add_argument("--out", required=True)
    p.add_argument("--ttl", type=int, default=2)
    p.add_argument("--timeout", type=float, default=2.0, help="each call's deadline (s)")
    p.add_argument("--acquire-timeout", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unsafe-skip-wait", action="store_true")
    a = p.parse_args(argv)
    asyncio.run(run(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
