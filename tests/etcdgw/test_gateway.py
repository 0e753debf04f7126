"""The etcd v3 gateway (issue 18) on a 3-node cluster in process, through a gRPC client of etcd's own protocol:
every node serves every call (followers forward), revisions are etcd's, errors carry etcd's codes and words."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest

from raftkv.backup import read_backup
from raftkv.kv import MemoryBackend
from raftkv.kvserver import KVServer, etcd_api
from raftkv.kvserver.etcd_api import load_protos
from raftkv.raft.types import NodeId
from raftkv.transport.address import Address
from tests.kvserver.test_auth_inprocess import set_up_users
from tests.runtime.cluster import configs, free_ports, leader_of, wait_until
from tests.tlscerts import CA

PB, SERVICES = load_protos()


@pytest.fixture
async def gateways(tmp_path: Path) -> AsyncIterator[list[tuple[KVServer, Any, Any]]]:
    """Three nodes, each with --listen-etcd; per node: (server, KV stub, Maintenance stub)."""
    cfgs = configs(tmp_path, 3)
    for cfg, port in zip(cfgs, free_ports(3), strict=True):
        cfg.listen_etcd = Address("127.0.0.1", port)
    servers = [KVServer(cfg, backend=MemoryBackend()) for cfg in cfgs]
    channels = []
    try:
        for s in servers:
            await s.start()
        await wait_until(lambda: leader_of(servers) is not None, 5.0, "a leader")
        out = []
        for s in servers:
            assert s.config.listen_etcd is not None
            ch = grpc.aio.insecure_channel(str(s.config.listen_etcd))
            channels.append(ch)
            out.append((s, SERVICES.KVStub(ch), SERVICES.MaintenanceStub(ch)))
        yield out
    finally:
        for ch in channels:
            await ch.close()
        for s in servers:
            await s.aclose()


async def test_put_get_delete_txn_through_every_node_with_etcds_revisions(gateways: list[Any]) -> None:
    (_s1, kv1, _m1), (_s2, kv2, _m2), (_s3, kv3, m3) = gateways
    first = await kv1.Put(PB.PutRequest(key=b"a", value=b"1"))
    assert first.header.revision == 2, "etcd: an empty store is at 1, its first write makes 2"
    await kv2.Put(PB.PutRequest(key=b"b", value=b"2"))  # whichever node: a follower forwards
    got = await kv3.Range(PB.RangeRequest(key=b"a", range_end=b"c"))
    assert [(kv.key, kv.value, kv.create_revision, kv.version) for kv in got.kvs] == [
        (b"a", b"1", 2, 1),
        (b"b", b"2", 3, 1),
    ]
    assert (got.count, got.more, got.header.revision) == (2, False, 3)
    old = await kv3.Range(PB.RangeRequest(key=b"a", revision=2, serializable=False))
    assert [kv.value for kv in old.kvs] == [b"1"]
    put = await kv1.Put(PB.PutRequest(key=b"a", value=b"one", prev_kv=True))
    assert put.prev_kv.value == b"1" and put.header.revision == 4
    txn = await kv2.Txn(
        PB.TxnRequest(
            compare=[PB.Compare(key=b"a", target=PB.Compare.VALUE, result=PB.Compare.EQUAL, value=b"one")],
            success=[PB.RequestOp(request_put=PB.PutRequest(key=b"c", value=b"3"))],
            failure=[PB.RequestOp(request_range=PB.RangeRequest(key=b"a"))],
        )
    )
    assert txn.succeeded and txn.responses[0].WhichOneof("response") == "response_put"
    mod = await kv3.Txn(  # a compare on a mod revision, in etcd's numbers
        PB.TxnRequest(compare=[PB.Compare(key=b"a", target=PB.Compare.MOD, result=PB.Compare.EQUAL, mod_revision=4)])
    )
    assert mod.succeeded
    gone = await kv1.DeleteRange(PB.DeleteRangeRequest(key=b"a", range_end=b"\0", prev_kv=True))
    assert gone.deleted == 3 and sorted(kv.key for kv in gone.prev_kvs) == [b"a", b"b", b"c"]
    local = await kv3.Range(PB.RangeRequest(key=b"a", range_end=b"\0", serializable=True))
    assert local.header.member_id == 3
    async with grpc.aio.insecure_channel(str(gateways[0][0].config.listen_etcd)) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await SERVICES.AuthStub(ch).Authenticate(PB.AuthenticateRequest(name="root", password="x"))
        assert (e.value.code(), e.value.details()) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "etcdserver: authentication is not enabled",
        )
    status = await m3.Status(PB.StatusRequest())
    assert status.version == "3.4.0" and status.leader in (1, 2, 3) and status.header.member_id == 3


async def test_errors_carry_etcds_codes_and_messages(gateways: list[Any]) -> None:
    (_s1, kv1, _m1), _second, _third = gateways
    for k in range(3):
        await kv1.Put(PB.PutRequest(key=b"k", value=b"%d" % k))
    await kv1.Compact(PB.CompactionRequest(revision=3))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await kv1.Range(PB.RangeRequest(key=b"k", revision=2))
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert e.value.details() == "etcdserver: mvcc: required revision has been compacted"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await kv1.Range(PB.RangeRequest(key=b"k", revision=99))
    assert e.value.details() == "etcdserver: mvcc: required revision is a future revision"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await kv1.Put(PB.PutRequest(key=b"k", value=b"v", lease=12345))
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
    ops = [PB.RequestOp(request_put=PB.PutRequest(key=b"t%d" % k, value=b"")) for k in range(129)]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await kv1.Txn(PB.TxnRequest(success=ops))
    assert e.value.details() == "etcdserver: too many operations in txn request"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await kv1.Put(PB.PutRequest(key=b"", value=b"v"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def etcdctl(endpoints: list[str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["etcdctl", f"--endpoints={','.join(endpoints)}", "--command-timeout=5s", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, ETCDCTL_API="3"),
        check=False,
    )


async def ctl(endpoints: list[str], *args: str, stdin: str | None = None, with_stderr: bool = False) -> str:
    """etcdctl's output (stderr too with ``with_stderr``: it writes some answers there); it must succeed."""
    r = await asyncio.to_thread(etcdctl, endpoints, *args, stdin=stdin)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout + r.stderr if with_stderr else r.stdout


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed (Debian: etcd-client)")
async def test_the_real_etcdctl_puts_gets_deletes_and_runs_a_txn(gateways: list[Any]) -> None:
    endpoints = [str(s.config.listen_etcd) for s, _kv, _m in gateways]

    async def run(*args: str, stdin: str | None = None) -> str:
        return await ctl(endpoints, *args, stdin=stdin)

    assert await run("put", "greeting", "hello") == "OK\n"
    assert await run("put", "app/a", "A") == "OK\n"
    assert await run("put", "app/b", "B") == "OK\n"
    assert await run("get", "greeting") == "greeting\nhello\n"
    assert await run("get", "app/", "--prefix", "--keys-only") == "app/a\n\napp/b\n\n"
    assert await run("get", "app/", "--prefix", "--limit", "1", "--print-value-only") == "A\n"
    assert (
        await run("get", "app/", "--prefix", "--sort-by", "KEY", "--order", "DESCEND", "--print-value-only") == "B\nA\n"
    )
    assert await run("get", "greeting", "--rev", "2", "--print-value-only") == "hello\n"
    assert await run("get", "greeting", "--consistency", "s", "--print-value-only") == "hello\n"
    assert await run("get", "a", "--from-key", "--keys-only") == "app/a\n\napp/b\n\ngreeting\n\n"
    txn = 'value("greeting") = "hello"\n\nput greeting bonjour\n\nput greeting nope\n\n'
    assert (await run("txn", stdin=txn)).startswith("SUCCESS")
    assert await run("get", "greeting", "--print-value-only") == "bonjour\n"
    assert await run("del", "app/", "--prefix") == "2\n"
    assert "3.4.0" in await run("endpoint", "status")
    assert await run("get", "greeting", "--rev", "1") == "", "etcd's revision 1: the store before any write"


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed (Debian: etcd-client)")
async def test_the_real_etcdctl_grants_keeps_alive_lists_and_revokes_a_lease(gateways: list[Any]) -> None:
    endpoints = [str(s.config.listen_etcd) for s, _kv, _m in gateways]

    async def run(*args: str) -> str:
        return await ctl(endpoints, *args)

    granted = await run("lease", "grant", "30")
    assert granted.startswith("lease ") and granted.rstrip().endswith("granted with TTL(30s)"), granted
    lease_hex = granted.split()[1]
    await run("put", "svc/a", "up", "--lease", lease_hex)
    assert "granted with TTL(30s)" in await run("lease", "timetolive", lease_hex, "--keys")
    assert "svc/a" in await run("lease", "timetolive", lease_hex, "--keys")
    assert f"lease {lease_hex} keepalived with TTL(30)" in await run("lease", "keep-alive", "--once", lease_hex)
    assert lease_hex in await run("lease", "list")
    assert await run("lease", "revoke", lease_hex) == f"lease {lease_hex} revoked\n"
    assert await run("get", "svc/a") == "", "the lease's key went with it"
    assert "already expired" in await run("lease", "timetolive", lease_hex)


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed (Debian: etcd-client)")
async def test_the_real_etcdctl_watches_from_a_past_revision_with_prev_kv(gateways: list[Any]) -> None:
    endpoints = [str(s.config.listen_etcd) for s, _kv, _m in gateways]
    (_s, kv1, _m1) = gateways[0]
    await kv1.Put(PB.PutRequest(key=b"w/a", value=b"1"))  # etcd revision 2
    await kv1.Put(PB.PutRequest(key=b"w/a", value=b"2"))  # 3
    await kv1.DeleteRange(PB.DeleteRangeRequest(key=b"w/a"))  # 4
    proc = await asyncio.create_subprocess_exec(
        "etcdctl", f"--endpoints={','.join(endpoints)}", "watch", "w/", "--prefix", "--rev", "3", "--prev-kv",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ, ETCDCTL_API="3"),
    )  # fmt: skip
    try:
        await kv1.Put(PB.PutRequest(key=b"w/b", value=b"live"))  # 5: a live event after the replay
        lines: list[str] = []
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            while len(lines) < 11:
                lines.append((await proc.stdout.readline()).decode().rstrip("\n"))
        # From revision 3 on: the put of "2" (with its previous value), the delete (with it), the live put.
        assert lines == ["PUT", "w/a", "1", "w/a", "2", "DELETE", "w/a", "2", "w/a", "", "PUT"], lines
    finally:
        proc.kill()
        await proc.wait()


async def test_a_watch_stream_creates_cancels_and_reports_compaction(gateways: list[Any]) -> None:
    (_s, kv1, _m1), (_s2, _kv2, _m2), (s3, _kv3, _m3) = gateways
    for k in range(3):
        await kv1.Put(PB.PutRequest(key=b"c", value=b"%d" % k))
    await kv1.Compact(PB.CompactionRequest(revision=3))
    assert s3.kv is not None and s3.config.listen_etcd is not None
    await wait_until(lambda: s3.kv is not None and s3.kv.compact_revision == 2, 5.0, "node 3 applies the compaction")
    async with grpc.aio.insecure_channel(str(s3.config.listen_etcd)) as ch:
        stream = SERVICES.WatchStub(ch).Watch()
        await stream.write(PB.WatchRequest(create_request=PB.WatchCreateRequest(key=b"c", start_revision=2)))
        created = await stream.read()
        assert created.created and created.watch_id == 0
        refused = await stream.read()
        assert refused.canceled and refused.compact_revision == 3 and "compacted" in refused.cancel_reason
        await stream.write(PB.WatchRequest(create_request=PB.WatchCreateRequest(key=b"c", filters=[0])))  # NOPUT
        second = await stream.read()
        assert second.created and second.watch_id == 1
        await kv1.Put(PB.PutRequest(key=b"c", value=b"filtered out"))
        await kv1.DeleteRange(PB.DeleteRangeRequest(key=b"c"))
        event = await stream.read()
        assert [e.type for e in event.events] == [1] and event.watch_id == 1, "only the delete passes NOPUT"
        await stream.write(PB.WatchRequest(cancel_request=PB.WatchCancelRequest(watch_id=1)))
        cancelled = await stream.read()
        assert cancelled.canceled and cancelled.watch_id == 1
        await stream.done_writing()


async def test_hundreds_of_open_watch_streams_hold_no_call_back_and_leave_nothing_when_closed(
    gateways: list[Any],
) -> None:
    """Each open watch stream once held one of 256 handler threads: 300 of them blocked every other call.
    On the asyncio server they cost a task each; when their client hangs up, every watch they made is gone."""
    (_s1, _kv1, _m1), (_s2, _kv2, _m2), (s3, kv3, _m3) = gateways
    servers = [g[0] for g in gateways]
    assert s3.config.listen_etcd is not None
    async with grpc.aio.insecure_channel(str(s3.config.listen_etcd)) as ch:
        stub = SERVICES.WatchStub(ch)
        streams = [stub.Watch() for _ in range(300)]
        for stream in streams:
            await stream.write(PB.WatchRequest(create_request=PB.WatchCreateRequest(key=b"w")))
        created = await asyncio.wait_for(asyncio.gather(*(st.read() for st in streams)), 30)
        assert all(c.created for c in created)
        put = await asyncio.wait_for(kv3.Put(PB.PutRequest(key=b"w", value=b"seen")), 10)
        events = await asyncio.wait_for(asyncio.gather(*(st.read() for st in streams)), 30)
        assert {(e.events[0].kv.value, e.events[0].kv.mod_revision) for e in events} == {
            (b"seen", put.header.revision)
        }, "every stream gets the event, with etcd's revision"
        assert sum(len(s.watches.watches) for s in servers if s.watches is not None) >= 300
        for stream in streams:
            stream.cancel()
    await wait_until(
        lambda: sum(len(s.watches.watches) for s in servers if s.watches is not None) == 0,
        10.0,
        "every watch of the closed streams cancelled on the nodes",
    )


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed (Debian: etcd-client)")
async def test_the_real_etcdctl_lists_adds_promotes_and_removes_members(gateways: list[Any], tmp_path: Path) -> None:
    """A learner added with etcdctl, started with the id etcdctl printed, caught up, promoted, removed. The
    members' client URLs are their etcd gateways: ``--cluster`` reaches every one of them."""
    servers = [s for s, _kv, _m in gateways]
    endpoints = [str(s.config.listen_etcd) for s in servers]

    async def run(*args: str) -> str:
        return await ctl(endpoints, *args, with_stderr=True)

    listed = (await run("member", "list")).splitlines()
    assert len(listed) == 3 and all("started, node-" in line for line in listed), listed
    assert all(f"http://{s.config.listen_peer}" in " ".join(listed) for s in servers)
    assert all(f"http://{e}" in " ".join(listed) for e in endpoints), "clientURLs: the etcd gateways"
    health = (await run("endpoint", "health", "--cluster")).splitlines()
    assert sorted(line.split(" ")[0] for line in health) == sorted(f"http://{e}" for e in endpoints), health
    status = json.loads(await run("endpoint", "status", "--cluster", "-w", "json"))
    assert sorted(s["Endpoint"] for s in status) == sorted(f"http://{e}" for e in endpoints)

    peer_port, client_port, etcd_port = free_ports(3)
    added = await run("member", "add", "node-4", f"--peer-urls=http://127.0.0.1:{peer_port}", "--learner")
    assert "Member" in added and "added to cluster" in added, added
    new_id = int(added.split()[1], 16)
    assert new_id == 4, "one above the highest id: the id to start the new node with"
    base = servers[0].config
    cfg = dataclasses.replace(
        base,
        id=NodeId(new_id),
        data_dir=tmp_path / "node4",
        listen_peer=Address("127.0.0.1", peer_port),
        listen_client=Address("127.0.0.1", client_port),
        listen_etcd=Address("127.0.0.1", etcd_port),
        peers={**base.peers, NodeId(new_id): Address("127.0.0.1", peer_port)},
        join=(base.listen_client,),
    )
    fourth = KVServer(cfg, backend=MemoryBackend())
    await fourth.start()
    try:
        lead = leader_of(servers)
        assert lead is not None
        await wait_until(lambda: fourth.running.applied_index >= lead.running.applied_index, 10.0, "the catch-up")
        learner_row = next(line for line in (await run("member", "list")).splitlines() if line.startswith("4,"))
        assert learner_row.endswith(", true"), learner_row
        promoted = await run("member", "promote", "4")
        assert promoted.startswith("Member                4 promoted in cluster"), promoted
        voter_row = next(line for line in (await run("member", "list")).splitlines() if line.startswith("4,"))
        assert voter_row.endswith(", false"), voter_row
        assert "removed from cluster" in await run("member", "remove", "4")
        assert len((await run("member", "list")).splitlines()) == 3
    finally:
        await fourth.aclose()


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed (Debian: etcd-client)")
async def test_the_real_etcdctl_campaigns_observes_and_hands_over_an_election(gateways: list[Any]) -> None:
    """etcd's own election recipe, run by etcdctl: the first campaigner leads, a listener sees it; when the
    leader's session ends, the waiting campaigner leads and the listener sees that too."""
    endpoints = [str(s.config.listen_etcd) for s, _kv, _m in gateways]

    async def start(*args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            "etcdctl", f"--endpoints={','.join(endpoints)}", "elect", "jobs", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ, ETCDCTL_API="3"),
        )  # fmt: skip

    async def lines(proc: asyncio.subprocess.Process, n: int) -> list[str]:
        assert proc.stdout is not None
        async with asyncio.timeout(15):
            return [(await proc.stdout.readline()).decode().rstrip("\n") for _ in range(n)]

    first = await start("alpha")
    procs = [first]
    try:
        key_a, value_a = await lines(first, 2)
        assert key_a.startswith("jobs/") and value_a == "alpha", (key_a, value_a)
        listener = await start("--listen")
        procs.append(listener)
        assert await lines(listener, 2) == [key_a, "alpha"]
        second = await start("beta")
        procs.append(second)
        first.send_signal(signal.SIGINT)  # etcdctl resigns (its session's lease revoked) and exits
        assert await asyncio.wait_for(first.wait(), 10) == 0
        key_b, value_b = await lines(second, 2)
        assert key_b.startswith("jobs/") and key_b != key_a and value_b == "beta"
        assert await lines(listener, 2) == [key_b, "beta"]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_a_stream_that_requires_a_leader_ends_when_its_node_loses_it(gateways: list[Any]) -> None:
    """etcd's ``hasleader`` metadata (etcdctl's watches send it): on a node cut off from the others the watch
    ends with "no leader" (so that etcd's client moves it), and so does a call; a watch without it stays."""
    (s1, _kv1, _m1), (s2, _kv2, _m2), (s3, kv3, _m3) = gateways
    assert s3.config.listen_etcd is not None
    leader = [("hasleader", "true")]
    async with grpc.aio.insecure_channel(str(s3.config.listen_etcd)) as ch:
        required = SERVICES.WatchStub(ch).Watch(metadata=leader)
        plain = SERVICES.WatchStub(ch).Watch()
        for stream in (required, plain):
            await stream.write(PB.WatchRequest(create_request=PB.WatchCreateRequest(key=b"x")))
            assert (await stream.read()).created
        await s1.aclose()
        await s2.aclose()
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await asyncio.wait_for(required.read(), 10)
        assert (e.value.code(), e.value.details()) == (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await kv3.Put(PB.PutRequest(key=b"x", value=b"v"), metadata=leader, timeout=5)
        assert e.value.details() == "etcdserver: no leader"
        await plain.write(PB.WatchRequest(progress_request=PB.WatchProgressRequest()))
        assert (await asyncio.wait_for(plain.read(), 5)).watch_id == -1, "the other watch is still served"


async def test_progress_notify_reports_a_revision_the_watch_has_everything_up_to(
    gateways: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(etcd_api, "PROGRESS_NOTIFY_INTERVAL_S", 0.3)
    (_s1, kv1, _m1), _second, (s3, _kv3, _m3) = gateways
    for k in range(3):
        await kv1.Put(PB.PutRequest(key=b"other%d" % k, value=b"x"))  # etcd revisions 2..4
    await wait_until(lambda: s3.kv is not None and s3.kv.revision == 3, 5.0, "node 3 at the writes")
    assert s3.config.listen_etcd is not None
    async with grpc.aio.insecure_channel(str(s3.config.listen_etcd)) as ch:
        stream = SERVICES.WatchStub(ch).Watch()
        create = PB.WatchCreateRequest(key=b"p", progress_notify=True)
        await stream.write(PB.WatchRequest(create_request=create))
        assert (await stream.read()).created
        quiet = await asyncio.wait_for(stream.read(), 5)
        assert (quiet.watch_id, list(quiet.events), quiet.header.revision) == (0, [], 4), "nothing missed up to 4"
        put = await kv1.Put(PB.PutRequest(key=b"p", value=b"1"))
        event = await asyncio.wait_for(stream.read(), 5)
        assert [e.kv.mod_revision for e in event.events] == [put.header.revision]
        after = await asyncio.wait_for(stream.read(), 5)
        assert after.events == [] and after.header.revision == put.header.revision
        await stream.write(PB.WatchRequest(progress_request=PB.WatchProgressRequest()))
        asked = await asyncio.wait_for(stream.read(), 5)
        while asked.watch_id != -1:  # a timed notification may come first
            asked = await asyncio.wait_for(stream.read(), 5)
        assert asked.header.revision == put.header.revision
        await stream.done_writing()


async def test_progress_never_claims_an_event_the_watch_has_not_delivered(gateways: list[Any]) -> None:
    """Against the store's history directly: a progress revision stops before the first event of the range
    not yet delivered, counting events of one revision (a txn) one by one."""
    (s1, kv1, _m1), _second, _third = gateways
    for key in (b"a", b"p1", b"b", b"p2", b"c"):  # raftkv revisions 1..5
        await kv1.Put(PB.PutRequest(key=key, value=b"v"))
    both = [PB.RequestOp(request_put=PB.PutRequest(key=k, value=b"t")) for k in (b"p1", b"p2")]
    await kv1.Txn(PB.TxnRequest(success=both))  # revision 6: two events in the range
    await wait_until(lambda: s1.kv is not None and s1.kv.revision == 6, 5.0, "node 1 at the writes")
    gw = etcd_api.Gateway(s1.running, SimpleNamespace(kv=s1.kv), None, PB)
    progress = etcd_api._Progress(1)
    expected = {None: 1, 2: 3, 4: 5}
    assert gw.progress_revision(b"p", b"q", progress) == expected[None]
    for revision in (2, 4):
        progress.delivered(revision)
        assert gw.progress_revision(b"p", b"q", progress) == expected[revision]
    progress.delivered(6)
    assert gw.progress_revision(b"p", b"q", progress) == 5, "one of revision 6's two events is still to come"
    progress.delivered(6)
    assert gw.progress_revision(b"p", b"q", progress) == 6


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed (Debian: etcd-client)")
async def test_the_real_etcdctl_manages_users_and_roles_and_turns_auth_on_and_off(gateways: list[Any]) -> None:
    """etcdctl's user, role and auth commands, through the gateway, on raftkv's own users and roles."""
    endpoints = [str(s.config.listen_etcd) for s, _kv, _m in gateways]

    async def run(*args: str) -> str:
        return await ctl(endpoints, *args)

    assert await run("user", "add", "root:rootpw") == "User root created\n"
    assert await run("user", "add", "alice:alicepw") == "User alice created\n"
    assert await run("role", "add", "app") == "Role app created\n"
    assert await run("role", "grant-permission", "app", "read", "app/", "--prefix") == "Role app updated\n"
    assert await run("role", "grant-permission", "app", "readwrite", "app/alice") == "Role app updated\n"
    assert await run("user", "grant-role", "alice", "app") == "Role app is granted to user alice\n"
    role = await run("role", "get", "app")
    assert role.startswith("Role app\nKV Read:\n") and "(prefix app/)" in role and "app/alice" in role, role
    assert await run("user", "get", "alice") == "User: alice\nRoles: app\n"
    assert "alice" in (await run("user", "list")).split() and "app" in (await run("role", "list")).split()
    r = await asyncio.to_thread(etcdctl, endpoints, "user", "add", "alice:again")
    assert r.returncode != 0 and "etcdserver: user name already exists" in r.stderr
    assert await run("put", "app/config", "v1") == "OK\n"
    assert await run("auth", "enable") == "Authentication Enabled\n"
    alice, root = "--user=alice:alicepw", "--user=root:rootpw"
    assert await run(alice, "get", "app/config", "--print-value-only") == "v1\n"
    r = await asyncio.to_thread(etcdctl, endpoints, alice, "put", "app/config", "v2")
    assert r.returncode != 0 and "permission denied" in r.stderr
    assert await run(root, "user", "revoke-role", "alice", "app") == "Role app is revoked from user alice\n"
    r = await asyncio.to_thread(etcdctl, endpoints, alice, "get", "app/config")
    assert r.returncode != 0 and "permission denied" in r.stderr, "her role is gone"
    assert await run(root, "auth", "disable") == "Authentication Disabled\n"
    assert await run("get", "app/config", "--print-value-only") == "v1\n"


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed (Debian: etcd-client)")
async def test_the_real_etcdctl_authenticates_and_is_held_to_its_users_permissions(gateways: list[Any]) -> None:
    """Users and roles made with raftkv's client, auth on: etcdctl's --user authenticates through the gateway
    (etcd's token: raftkv's, checked by the nodes), and each call is allowed or refused as that user's."""
    servers = [s for s, _kv, _m in gateways]
    await set_up_users([str(s.config.listen_client) for s in servers])  # alice reads app/, writes app/alice
    endpoints = [str(s.config.listen_etcd) for s in servers]
    alice = "--user=alice:alicepw"

    async def refused(*args: str) -> str:
        r = await asyncio.to_thread(etcdctl, endpoints, *args)
        assert r.returncode != 0, (args, r.stdout)
        return r.stderr.strip().splitlines()[-1]  # after the client library's own log lines

    assert await ctl(endpoints, alice, "get", "app/config", "--print-value-only") == "v1\n"
    assert await ctl(endpoints, alice, "put", "app/alice", "mine") == "OK\n"
    assert await ctl(endpoints, alice, "get", "app/alice", "--consistency=s", "--print-value-only") == "mine\n"
    assert await refused(alice, "put", "app/config", "v2") == "Error: etcdserver: permission denied"
    assert await refused("--user=alice:wrong", "get", "app/config") == (
        "Error: etcdserver: authentication failed, invalid user ID or password"
    )
    assert await refused("get", "app/config") == "Error: etcdserver: user name is empty"
    assert await ctl(endpoints, "--user=root:rootpw", "get", "app/config", "--print-value-only") == "v1\n"
    watch = await asyncio.create_subprocess_exec(
        "etcdctl", f"--endpoints={','.join(endpoints)}", alice, "watch", "app/alice", "--rev", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ, ETCDCTL_API="3"),
    )  # fmt: skip
    try:
        assert watch.stdout is not None
        async with asyncio.timeout(10):  # a watch as alice, from the store's history: her put
            assert [(await watch.stdout.readline()).decode().strip() for _ in range(3)] == ["PUT", "app/alice", "mine"]
    finally:
        watch.kill()
        await watch.wait()
    (_s1, kv1, _m1) = gateways[0]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await kv1.Range(PB.RangeRequest(key=b"app/config"), metadata=[("token", "rkv1.forged")])
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed (Debian: etcd-client)")
async def test_the_gateway_serves_tls_with_the_client_ports_certificates(tmp_path: Path) -> None:
    """--cert-file/--key-file/--trusted-ca-file/--client-cert-auth, as on the client port: etcdctl with a
    certificate of the cluster's CA is served over TLS, the members' client URLs say https, and a client with
    no certificate or one of another CA is refused."""
    ca = CA.make(tmp_path / "pki")
    node, alice = ca.issue(tmp_path / "pki", "node"), ca.issue(tmp_path / "pki", "alice")
    stranger = CA.make(tmp_path / "other", name="another CA").issue(tmp_path / "other", "mallory")
    cfgs = configs(tmp_path, 3)
    for cfg, port in zip(cfgs, free_ports(3), strict=True):
        cfg.listen_etcd = Address("127.0.0.1", port)
        cfg.cert_file, cfg.key_file, cfg.trusted_ca_file = node.cert, node.key, ca.path
        cfg.client_cert_auth = True
    servers = [KVServer(cfg, backend=MemoryBackend()) for cfg in cfgs]
    try:
        for s in servers:
            await s.start()
        await wait_until(lambda: leader_of(servers) is not None, 5.0, "a leader")
        endpoints = [f"https://{s.config.listen_etcd}" for s in servers]
        tls = [f"--cacert={ca.path}", f"--cert={alice.cert}", f"--key={alice.key}"]
        assert await ctl(endpoints, *tls, "put", "secret", "s3") == "OK\n"
        assert await ctl(endpoints, *tls, "get", "secret", "--print-value-only") == "s3\n"
        listed = await ctl(endpoints, *tls, "member", "list")
        assert sorted(e for e in endpoints if e in listed) == sorted(endpoints), listed
        for without in (
            [f"--cacert={ca.path}"],
            [f"--cacert={ca.path}", f"--cert={stranger.cert}", f"--key={stranger.key}"],
        ):
            r = await asyncio.to_thread(etcdctl, endpoints[:1], *without, "--dial-timeout=2s", "get", "secret")
            assert r.returncode != 0 and "s3" not in r.stdout, (without, r.stdout)
        r = await asyncio.to_thread(etcdctl, [str(servers[0].config.listen_etcd)], "--dial-timeout=2s", "get", "secret")
        assert r.returncode != 0 and "s3" not in r.stdout, "plaintext is not served"
    finally:
        for s in servers:
            await s.aclose()


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed (Debian: etcd-client)")
async def test_hashkv_agrees_across_members_and_stays_the_same_for_a_past_revision(gateways: list[Any]) -> None:
    servers = [s for s, _kv, _m in gateways]
    endpoints = [str(s.config.listen_etcd) for s in servers]
    (_s, kv1, m1) = gateways[0]
    for k in range(5):
        await kv1.Put(PB.PutRequest(key=b"h%d" % (k % 3), value=b"%d" % k))
    at = (await kv1.Range(PB.RangeRequest(key=b"h0"))).header.revision  # etcd's numbering: 6

    def applied_everywhere() -> bool:
        return all(s.kv is not None and s.kv.revision + 1 >= at for s in servers)

    await wait_until(applied_everywhere, 5.0, "every member at the revision")
    hashes = json.loads(await ctl(endpoints, "endpoint", "hashkv", "-w", "json"))
    assert len(hashes) == 3 and len({h["HashKV"]["hash"] for h in hashes}) == 1, hashes
    assert hashes[0]["HashKV"]["hash"] != 0 and hashes[0]["HashKV"]["compact_revision"] == -1
    before = hashes[0]["HashKV"]["hash"]
    later = await kv1.Put(PB.PutRequest(key=b"h1", value=b"later"))
    s1 = servers[0]  # HashKV is answered by the node asked, from what it has applied
    await wait_until(lambda: s1.kv is not None and s1.kv.revision + 1 == later.header.revision, 5.0, "node 1 applies")
    now = await m1.HashKV(PB.HashKVRequest())
    assert now.hash != before, "a new write changes the hash of the whole history"
    past = json.loads(await ctl(endpoints, "endpoint", "hashkv", f"--rev={at}", "-w", "json"))
    assert {h["HashKV"]["hash"] for h in past} == {before}, "the hash at a past revision does not move"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await m1.HashKV(PB.HashKVRequest(revision=at + 10))
    assert e.value.details() == "etcdserver: mvcc: required revision is a future revision"


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed (Debian: etcd-client)")
async def test_the_real_etcdctl_operates_the_cluster(gateways: list[Any], tmp_path: Path) -> None:
    """etcd's own recipes (lock) and operator commands, each output parsed."""
    servers = [s for s, _kv, _m in gateways]
    endpoints = [str(s.config.listen_etcd) for s in servers]

    async def run(*args: str, only: str | None = None) -> str:
        return await ctl([only] if only else endpoints, *args, with_stderr=True)  # endpoint health: on stderr

    assert await run("lock", "jobs/nightly", "--", "echo", "held the lock") == "held the lock\n"
    healthy = (await run("endpoint", "health")).splitlines()
    assert len(healthy) == 3 and all("is healthy: successfully committed proposal" in line for line in healthy)
    status = json.loads(await run("endpoint", "status", "-w", "json"))
    leaders = {s["Status"]["leader"] for s in status}
    assert len(status) == 3 and len(leaders) == 1 and {s["Status"]["version"] for s in status} == {"3.4.0"}
    assert await run("alarm", "list") == ""
    (leader,) = leaders
    target = next(s.config.id for s in servers if s.config.id != leader)
    moved = await run("move-leader", f"{target:x}")
    assert moved == f"Leadership transferred from {leader:x} to {target:x}\n", moved
    await wait_until(lambda: (lead := leader_of(servers)) is not None and lead.config.id == target, 5.0, "the move")
    await run("put", "k", "v")
    assert (await run("compaction", "2")).startswith("compacted revision 2")
    saved = tmp_path / "etcd.snap"
    out = await run("snapshot", "save", str(saved), only=endpoints[0])
    assert f"Snapshot saved at {saved}" in out, out
    data = saved.read_bytes()
    assert hashlib.sha256(data[:-32]).digest() == data[-32:], "etcd's framing: the SHA-256 appended"
    restored = read_backup(saved)  # raftkv snapshot restore takes the file etcdctl saved
    assert restored.cluster_id == "test" and restored.meta.index > 0
