"""The dashboard's key browser (``/kv/keys`` on the HTTP port, issue 21): lists a prefix and reads a key from
the node's store; once authentication is on, only with a raftkv user's Basic credentials, and only what that
user's roles allow."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from raftkv.client import connect
from raftkv.kv import MemoryBackend
from raftkv.kvserver import KVServer
from raftkv.transport.address import Address
from tests.runtime.cluster import configs, free_ports, leader_of, wait_until


def get(addr: Address, path: str, user: str = "") -> tuple[int, Any]:
    headers = {"Authorization": "Basic " + base64.b64encode(user.encode()).decode()} if user else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://{addr}{path}", headers=headers), timeout=5) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), json.loads(e.read())


async def test_the_key_browser_reads_as_the_user_once_auth_is_on(tmp_path: Path) -> None:
    cfgs = configs(tmp_path, 3)
    http = [Address("127.0.0.1", p) for p in free_ports(3)]
    for cfg, addr in zip(cfgs, http, strict=True):
        cfg.listen_metrics = addr
    servers = [KVServer(cfg, backend=MemoryBackend()) for cfg in cfgs]
    try:
        for s in servers:
            await s.start()
        await wait_until(lambda: leader_of(servers) is not None, 5.0, "a leader")
        async with connect([str(s.config.listen_client) for s in servers], cluster_id="test") as c:
            for key, value in (("app/a", "1"), ("app/b", "2"), ("secret/x", "s")):
                await c.put(key, value)
            await c.auth.user_add("root", "rootpw")
            await c.auth.user_grant_role("root", "root")
            await c.auth.user_add("alice", "alicepw")
            await c.auth.role_add("app")
            await c.auth.role_grant_permission("app", "read", "app/", prefix=True)
            await c.auth.user_grant_role("alice", "app")
            follower = next(s for s in servers if s is not leader_of(servers))
            await wait_until(lambda: follower.kv is not None and follower.kv.revision >= 3, 5.0, "the writes")
            addr = http[servers.index(follower)]  # any node's page browses its own store
            code, body = await asyncio.to_thread(get, addr, "/kv/keys?prefix=app/")
            assert code == 200 and [(kv["key"], kv["value"]) for kv in body["kvs"]] == [("app/a", "1"), ("app/b", "2")]
            code, body = await asyncio.to_thread(get, addr, "/kv/keys?key=secret/x")
            assert code == 200 and [kv["value"] for kv in body["kvs"]] == ["s"]
            await c.auth.enable()
        await wait_until(lambda: follower.kv is not None and follower.kv.auth.enabled, 5.0, "auth on everywhere")
        code, body = await asyncio.to_thread(get, addr, "/kv/keys?prefix=app/")
        assert code == 401 and "user name and password" in body["error"]
        assert (await asyncio.to_thread(get, addr, "/kv/keys?prefix=app/", "alice:wrong"))[0] == 401
        code, body = await asyncio.to_thread(get, addr, "/kv/keys?prefix=app/", "alice:alicepw")
        assert code == 200 and len(body["kvs"]) == 2
        code, body = await asyncio.to_thread(get, addr, "/kv/keys?key=secret/x", "alice:alicepw")
        assert code == 403, body
        code, body = await asyncio.to_thread(get, addr, "/kv/keys?key=secret/x", "root:rootpw")
        assert code == 200 and body["kvs"][0]["value"] == "s"
        assert (await asyncio.to_thread(get, addr, "/kv/nothing"))[0] == 404
    finally:
        for s in servers:
            await s.aclose()
