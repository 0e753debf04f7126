"""TLS on the client port with real processes: `raftkv serve` with etcd's TLS flags, the CLI with etcdctl's."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from raftkv.client import connect
from raftkv.errors import Unavailable
from raftkv.transport.address import Address
from raftkv.transport.streams import StreamLayer
from raftkv.transport.tls import TLSFiles, peer_contexts
from tests.e2e.harness import ProcCluster
from tests.runtime.cluster import free_ports
from tests.tlscerts import CA, Pair

pytestmark = pytest.mark.e2e


@dataclass
class TLSCluster:
    c: ProcCluster
    ca: CA
    client: Pair
    expired: Pair
    stranger: Pair


@pytest.fixture
async def tls_cluster(tmp_path: Path) -> AsyncIterator[TLSCluster]:
    ca = CA.make(tmp_path / "pki")
    node = ca.issue(tmp_path / "pki", "node")  # one certificate for the three nodes: all on 127.0.0.1
    client = ca.issue(tmp_path / "pki", "alice")
    flags = ["--cert-file", str(node.cert), "--key-file", str(node.key)]
    flags += ["--trusted-ca-file", str(ca.path), "--client-cert-auth"]
    c = ProcCluster(
        tmp_path, 3, extra_args=flags, client_tls={"cacert": ca.path, "cert": client.cert, "key": client.key}
    )
    await c.start()
    try:
        await c.wait_leader(timeout=15.0)
        stranger = CA.make(tmp_path / "other", name="another CA").issue(tmp_path / "other", "mallory")
        yield TLSCluster(c, ca, client, ca.issue(tmp_path / "pki", "alice", expired=True), stranger)
    finally:
        await c.close()


def cli(t: TLSCluster, *args: str, pair: Pair | None = None, cacert: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAFTKV_ENDPOINTS=",".join(map(str, t.c.endpoints())))
    tls = ["--cacert", str(t.ca.path)] if cacert else []
    if pair is not None:
        tls += ["--cert", str(pair.cert), "--key", str(pair.key)]
    return subprocess.run(
        [sys.executable, "-m", "raftkv.cli", *args, *tls, "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


async def test_the_cli_and_the_client_work_over_mutual_tls(tls_cluster: TLSCluster) -> None:
    t = tls_cluster
    r = await asyncio.to_thread(cli, t, "put", "greeting", "hello", pair=t.client)
    assert r.returncode == 0, r.stderr
    r = await asyncio.to_thread(cli, t, "get", "greeting", pair=t.client)
    assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr
    r = await asyncio.to_thread(cli, t, "status", pair=t.client)
    assert r.returncode == 0 and "leader" in r.stdout, r.stderr
    async with connect(t.c.endpoints(), cluster_id="e2e", cacert=t.ca.path, cert=t.client.cert, key=t.client.key) as c:
        kv = await c.get("greeting")
        assert kv is not None and kv.value == b"hello"
    assert "clients on" in t.c.logs(1) and "over mutual TLS" in t.c.logs(1)


async def test_users_and_roles_over_the_cli_and_the_certificates_common_name_as_the_user(
    tls_cluster: TLSCluster,
) -> None:
    """etcd's rule under --client-cert-auth: a request without a token is from its certificate's CN (alice)."""
    t = tls_cluster

    async def run(*args: str, code: int = 0) -> str:
        r = await asyncio.to_thread(cli, t, *args, pair=t.client)
        assert r.returncode == code, (args, r.stdout, r.stderr)
        return r.stdout if code == 0 else r.stderr

    assert await run("user", "add", "root", "--new-user-password", "rootpw") == "User root created\n"
    await run("user", "grant-role", "root", "root")
    await run("user", "add", "alice", "--no-password")
    await run("role", "add", "app")
    assert await run("role", "grant-permission", "app", "readwrite", "app/", "--prefix") == "Role app updated\n"
    await run("user", "grant-role", "alice", "app")
    assert await run("auth", "enable") == "Authentication Enabled\n"
    await run("put", "app/x", "1")  # alice, by her certificate
    assert "permission denied" in await run("put", "other", "1", code=1)
    assert "permission denied" in await run("user", "list", code=1)
    await run("put", "other", "1", "--user", "root:rootpw")
    assert await run("user", "list", "--user", "root", "--password", "rootpw") == "alice\nroot\n"
    assert "[app/, app0) (prefix app/)" in await run("role", "get", "app", "--user", "root:rootpw")
    assert "authentication failed" in await run("get", "other", "--user", "root:wrong", code=1)
    err = await run("get", "other", "--user", "root", code=2)  # no terminal to ask for the password on
    assert "needs a password" in err and len(err.strip().splitlines()) == 1
    assert "Authentication Status: true" in await run("auth", "status")
    await run("auth", "disable", "--user", "root:rootpw")
    assert await run("get", "other") == "1\n", "auth off: alice reads everything again"


@pytest.mark.parametrize("who", ["plaintext", "no certificate", "expired certificate", "another CA"])
async def test_clients_without_a_good_certificate_are_refused(tls_cluster: TLSCluster, who: str) -> None:
    t = tls_cluster
    pair = {"plaintext": None, "no certificate": None, "expired certificate": t.expired, "another CA": t.stranger}
    r = await asyncio.to_thread(cli, t, "put", "k", "v", pair=pair[who], cacert=who != "plaintext")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith("raftkv: error:") and len(r.stderr.strip().splitlines()) == 1
    logs = "".join(t.c.logs(i) for i in (1, 2, 3))
    assert "refused a connection" in logs and "TLS handshake failed" in logs
    r = await asyncio.to_thread(cli, t, "get", "k", pair=t.client)
    assert r.returncode == 1 and r.stdout == ""  # nothing was written


async def test_a_client_that_does_not_trust_the_ca_says_so(tls_cluster: TLSCluster, tmp_path: Path) -> None:
    t = tls_cluster
    other = CA.make(tmp_path / "third", name="a third CA")
    env_ca = ["--cacert", str(other.path)]
    r = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "raftkv.cli", "get", "k", *env_ca, "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, RAFTKV_ENDPOINTS=",".join(map(str, t.c.endpoints()))),
        check=False,
    )
    assert r.returncode == 1 and "certificate did not verify" in r.stderr, r.stderr


def test_a_missing_certificate_file_stops_serve_with_one_line(tmp_path: Path) -> None:
    peer, client = free_ports(2)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "raftkv.cli",
            "serve",
            "--id",
            "1",
            "--data-dir",
            str(tmp_path / "d"),
            "--listen-peer",
            f"127.0.0.1:{peer}",
            "--listen-client",
            f"127.0.0.1:{client}",
            "--peers",
            f"1=127.0.0.1:{peer}",
            "--cert-file",
            str(tmp_path / "missing.crt"),
            "--key-file",
            str(tmp_path / "missing.key"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        == f"raftkv: error: --cert-file {tmp_path / 'missing.crt'}: cannot be read (No such file or directory)"
    )


def peer_flags(ca: CA, pair: Pair) -> list[str]:
    return [
        "--peer-cert-file",
        str(pair.cert),
        "--peer-key-file",
        str(pair.key),
        "--peer-trusted-ca-file",
        str(ca.path),
    ]


async def test_members_talk_mutual_tls_and_one_cannot_pose_as_another(tmp_path: Path) -> None:
    ca = CA.make(tmp_path / "pki")
    member = {i: ca.issue(tmp_path / "pki", f"node-{i}", dns=(f"node-{i}",)) for i in (1, 2, 3)}
    c = ProcCluster(tmp_path, 3)
    c.node_args = {1: peer_flags(ca, member[1]), 2: peer_flags(ca, member[2]), 3: peer_flags(ca, member[2])}
    await c.start()  # node 3 shows node 2's certificate: the CA's, but not its own
    try:
        lead = await c.wait_leader([1, 2], timeout=15.0)
        async with connect(c.endpoints([1, 2]), cluster_id="e2e") as client:
            await client.put("k", "v")
            kv = await client.get("k")
            assert kv is not None and kv.value == b"v"

        def refused() -> bool:
            logs = c.logs(1) + c.logs(2)
            return "names node-2, not node-3" in logs  # node 3's own links, refused by the header check

        deadline = asyncio.get_running_loop().time() + 10
        while not refused():
            assert asyncio.get_running_loop().time() < deadline, c.logs(1) + c.logs(2)
            await asyncio.sleep(0.1)
        st = await c.statuses([3])
        assert 3 not in st or st[3].leader != lead  # node 3 never joined the cluster
        # And the other way: dialling node 3 as node 3 fails the dialler's name check (what the links of nodes
        # 1 and 2 do; their log says so only once per peer, and it may first have said "connection refused").
        server_ctx, client_ctx = peer_contexts(TLSFiles(member[1].cert, member[1].key, ca.path))
        layer = StreamLayer(server_tls=server_ctx, client_tls=client_ctx)
        node3 = Address("127.0.0.1", c.peer_port[3])
        with pytest.raises(ssl.SSLCertVerificationError, match="not valid for 'node-3'"):
            await layer.dial_plain(node3, asyncio.Protocol, timeout=5.0, name="node-3")
        transport, _ = await layer.dial_plain(node3, asyncio.Protocol, timeout=5.0, name="node-2")
        transport.close()  # the name its certificate does carry passes
    finally:
        await c.close()


async def test_a_peer_without_tls_cannot_join_a_mutual_tls_cluster(tmp_path: Path) -> None:
    ca = CA.make(tmp_path / "pki")
    member = {i: ca.issue(tmp_path / "pki", f"node-{i}", dns=(f"node-{i}",)) for i in (1, 2)}
    c = ProcCluster(tmp_path, 3)
    c.node_args = {1: peer_flags(ca, member[1]), 2: peer_flags(ca, member[2])}
    await c.start()  # node 3 speaks plaintext
    try:
        await c.wait_leader([1, 2], timeout=15.0)
        deadline = asyncio.get_running_loop().time() + 10
        while "TLS handshake failed" not in c.logs(1) + c.logs(2):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
    finally:
        await c.close()


async def test_sighup_reloads_the_certificates_for_new_connections(tmp_path: Path) -> None:
    old_ca, new_ca = CA.make(tmp_path / "old", name="old CA"), CA.make(tmp_path / "new", name="new CA")
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "node.crt", live / "node.key"

    def install(pair: Pair) -> None:
        cert.write_bytes(pair.cert.read_bytes())
        key.write_bytes(pair.key.read_bytes())

    install(old_ca.issue(tmp_path / "old", "node"))
    c = ProcCluster(
        tmp_path, 3, extra_args=["--cert-file", str(cert), "--key-file", str(key)], client_tls={"cacert": old_ca.path}
    )
    await c.start()
    try:
        await c.wait_leader(timeout=15.0)

        async def put_with(ca: CA) -> None:
            async with connect(c.endpoints(), cluster_id="e2e", cacert=ca.path, timeout=2.0) as client:
                await client.put("k", ca.name)

        await put_with(old_ca)
        install(new_ca.issue(tmp_path / "new", "node"))
        await put_with(old_ca)  # nothing reloaded yet
        for proc in c.procs.values():
            proc.send_signal(signal.SIGHUP)
        deadline = asyncio.get_running_loop().time() + 10
        while not all("certificates reloaded for the client port" in c.logs(i) for i in (1, 2, 3)):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        await put_with(new_ca)
        with pytest.raises(Unavailable, match="certificate did not verify"):
            await put_with(old_ca)

        key.write_text("not a key")  # a broken file: logged, and the certificates in use stay
        c.procs[1].send_signal(signal.SIGHUP)
        while "certificates not reloaded, the old ones stay in use" not in c.logs(1):
            assert asyncio.get_running_loop().time() < deadline + 10
            await asyncio.sleep(0.05)
        await put_with(new_ca)
        assert all(c.running(i) for i in (1, 2, 3))
    finally:
        await c.close()
