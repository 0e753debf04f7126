"""The etcd client libraries people use from Python, unchanged, against the gateway: python-etcd3 and aetcd,
each in its own process (a process holds one set of etcdserverpb descriptors, and theirs are not ours), from a
virtualenv of their own that ``make compat-clients`` builds (tests/etcdgw/compat/requirements.txt). Their
put/get/txn/lease/lock/watch/members calls, each result checked. Skipped, saying why, where that virtualenv
is missing (``make test`` builds it when the package index is reachable)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from raftkv.kv import MemoryBackend
from raftkv.kvserver import KVServer
from raftkv.transport.address import Address
from tests.runtime.cluster import configs, free_ports, leader_of, wait_until

COMPAT = Path(__file__).parent / "compat"
PYTHON = Path(os.environ.get("RAFTKV_COMPAT_VENV", Path(__file__).parents[2] / ".venv-compat")) / "bin" / "python"
pytestmark = pytest.mark.skipif(
    not PYTHON.exists(), reason=f"{PYTHON} is missing: `make compat-clients` builds the etcd client libraries' venv"
)


@pytest.fixture
async def endpoints(tmp_path: Path) -> AsyncIterator[list[str]]:
    cfgs = configs(tmp_path, 3)
    for cfg, port in zip(cfgs, free_ports(3), strict=True):
        cfg.listen_etcd = Address("127.0.0.1", port)
    servers = [KVServer(cfg, backend=MemoryBackend()) for cfg in cfgs]
    try:
        for s in servers:
            await s.start()
        await wait_until(lambda: leader_of(servers) is not None, 5.0, "a leader")
        yield [str(s.config.listen_etcd) for s in servers]
    finally:
        for s in servers:
            await s.aclose()


async def _run(script: str, endpoint: str, prefix: str, **env: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        str(PYTHON), str(COMPAT / script), endpoint, prefix,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ, **env),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(out)
    return result


def _check(out: dict[str, Any]) -> None:
    value, mod_revision, version = out["get"]
    assert (value, version) == ("1", 1) and mod_revision >= 2, out["get"]  # etcd's numbering: 2 is the first write
    assert out["txn"] == [True, "2"], "the compare held and the put in success ran"
    assert out["lease"] == [30, ["/leased"]], "granted TTL, and the key attached to the lease"
    assert out["after_revoke"] is None, "revoking the lease deleted its key"
    assert out["lock"] == [True, True] and out["released"] is False
    assert out["watch"] == ["/w", "seen"]
    assert out["members"] == [1, 2, 3]


async def test_python_etcd3_works_unchanged_against_a_follower_and_the_leader(endpoints: list[str]) -> None:
    for endpoint in endpoints[:2]:  # whichever node: each serves every call
        out = await _run(
            "etcd3_client.py", endpoint, f"etcd3-{endpoint}", PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python"
        )
        _check(out)


async def test_aetcd_works_unchanged(endpoints: list[str]) -> None:
    _check(await _run("aetcd_client.py", endpoints[2], "aetcd"))
