"""Conformance with etcd where the semantics are etcd's: one sequence of operations against a real etcd (its v3
JSON gateway) and against raftkv's state machine gives the same revisions, versions and results.

raftkv's revisions are etcd's minus one (an empty raftkv store is at 0, etcd's at 1: docs/kv.md "Departures"),
so every revision is compared through that mapping. Skipped, saying why, when no etcd binary is installed
(``apt-get install etcd-server``, which ``make bench-compare`` does).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftkv.kv import FROM_KEY, Compare, DeleteRange, KVStateMachine, MemoryBackend, Put, Range, Txn
from raftkv.kv.commands import (
    Compact,
    CompactResult,
    DeleteResult,
    ErrorResult,
    KeyValue,
    LeaseGrant,
    LeaseRevoke,
    PutResult,
    RangeResult,
    TxnResult,
)
from tests.kv.kvtestlib import Feeder
from tests.runtime.cluster import free_ports

pytestmark = pytest.mark.e2e

OFFSET = 1
"""etcd revision = raftkv revision + OFFSET."""


class Etcd:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            self.base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as e:
            return {"error": json.loads(e.read()).get("error", "")}


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    binary = shutil.which("etcd")
    if binary is None:
        pytest.skip("no etcd binary: apt-get install etcd-server (make bench-compare installs it)")
    client, peer = free_ports(2)
    proc = subprocess.Popen(
        [binary, "--data-dir", str(tmp_path / "etcd"), "--name", "conformance",
         "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"conformance=http://127.0.0.1:{peer}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    e = Etcd(client)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if "header" in e.call("/v3/kv/range", {"key": _b64(b"x")}):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("etcd did not start")
            time.sleep(0.1)
        yield e
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _kv(j: dict[str, Any]) -> KeyValue:
    """An etcd JSON KeyValue as raftkv's (revisions mapped back)."""
    return KeyValue(
        base64.b64decode(j.get("key", "")),
        base64.b64decode(j.get("value", "")),
        int(j.get("create_revision", 0)) - OFFSET,
        int(j.get("mod_revision", 0)) - OFFSET,
        int(j.get("version", 0)),
        int(j.get("lease", 0)),
    )


def _rev(j: dict[str, Any]) -> int:
    return int(j["header"]["revision"]) - OFFSET


def test_the_same_operations_give_the_same_revisions_versions_and_results(etcd: Etcd) -> None:
    sm = KVStateMachine(MemoryBackend())
    feed = Feeder(sm)

    def put(key: bytes, value: bytes, **kw: Any) -> None:
        ours = feed.one(Put(key, value, prev_kv=True, lease=kw.get("lease", 0)))
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value), "prev_kv": True}
        if kw.get("lease"):
            body["lease"] = str(kw["lease"])
        theirs = etcd.call("/v3/kv/put", body)
        assert isinstance(ours, PutResult)
        assert ours.revision == _rev(theirs)
        assert ours.prev_kv == (_kv(theirs["prev_kv"]) if "prev_kv" in theirs else None)

    def delete(key: bytes, range_end: bytes | None = None) -> None:
        ours = feed.one(DeleteRange(key, range_end, prev_kv=True))
        body: dict[str, Any] = {"key": _b64(key), "prev_kv": True}
        if range_end:
            body["range_end"] = _b64(range_end)
        theirs = etcd.call("/v3/kv/deleterange", body)
        assert isinstance(ours, DeleteResult)
        assert (ours.revision, ours.deleted) == (_rev(theirs), int(theirs.get("deleted", 0)))
        assert list(ours.prev_kvs) == [_kv(k) for k in theirs.get("prev_kvs", [])]

    def range_(key: bytes, range_end: bytes | None = None, **options: Any) -> None:
        ours = sm.read(Range(key, range_end, **options))
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end:
            body["range_end"] = _b64(range_end)
        for name, value in options.items():
            if name == "revision":
                body[name] = str(value + OFFSET)
            elif name in ("sort_order", "sort_target"):
                body[name] = str(value).upper()  # etcd's enum names: DESCEND, MOD, CREATE...
            elif name.startswith(("min_", "max_")):
                body[name] = str(value + OFFSET)
            else:
                body[name] = value
        theirs = etcd.call("/v3/kv/range", body)
        if isinstance(ours, ErrorResult):
            assert "error" in theirs, f"raftkv refused ({ours.message}), etcd answered {theirs}"
            want = {"compacted": "required revision has been compacted", "future_revision": "future revision"}
            assert want[ours.code] in theirs["error"]
            return
        assert isinstance(ours, RangeResult), ours
        assert ours.revision == _rev(theirs)
        assert list(ours.kvs) == [_kv(k) for k in theirs.get("kvs", [])]
        assert (ours.count, ours.more) == (int(theirs.get("count", 0)), bool(theirs.get("more", False)))

    put(b"a", b"1")
    put(b"b", b"1")
    put(b"a", b"2")
    put(b"c", b"3")
    delete(b"b")
    delete(b"nothing")  # deletes nothing: no new revision
    put(b"b", b"again")  # a new life: version 1, a new create revision
    range_(b"a", FROM_KEY)
    range_(b"a", FROM_KEY, limit=2)
    range_(b"a", FROM_KEY, count_only=True)
    range_(b"a", FROM_KEY, keys_only=True)
    range_(b"a", FROM_KEY, sort_order="descend", sort_target="mod", limit=1)
    range_(b"a", FROM_KEY, sort_target="create")  # "none" with a target other than key: ascending
    range_(b"a", FROM_KEY, min_mod_revision=3)
    range_(b"a", FROM_KEY, max_create_revision=2)
    for rev in range(1, sm.revision + 1):
        range_(b"a", FROM_KEY, revision=rev)
        range_(b"b", revision=rev)

    # A transaction: compare a's version, put and read in the branch.
    ours = feed.one(Txn([Compare(b"a", "version", "=", 2)], [Put(b"d", b"4"), Range(b"a")], [Put(b"e", b"5")]))
    theirs = etcd.call(
        "/v3/kv/txn",
        {
            "compare": [{"key": _b64(b"a"), "target": "VERSION", "result": "EQUAL", "version": "2"}],
            "success": [
                {"request_put": {"key": _b64(b"d"), "value": _b64(b"4")}},
                {"request_range": {"key": _b64(b"a")}},
            ],
            "failure": [{"request_put": {"key": _b64(b"e"), "value": _b64(b"5")}}],
        },
    )
    assert isinstance(ours, TxnResult)
    assert (ours.succeeded, ours.revision) == (bool(theirs.get("succeeded")), _rev(theirs))
    read = theirs["responses"][1]["response_range"]
    assert [_kv(k) for k in read["kvs"]] == list(ours.responses[1].kvs)  # type: ignore[union-attr]

    # Leases: a key attached, then revoked with it at one new revision.
    lease_id = 4242
    etcd.call("/v3/lease/grant", {"TTL": "60", "ID": str(lease_id)})
    feed.one(LeaseGrant(60, id=lease_id))
    put(b"svc/x", b"1", lease=lease_id)
    put(b"svc/y", b"1", lease=lease_id)
    range_(b"svc/", b"svc0")
    revoked = feed.one(LeaseRevoke(lease_id))
    etcd.call("/v3/lease/revoke", {"ID": str(lease_id)})
    after = etcd.call("/v3/kv/range", {"key": _b64(b"a")})
    assert revoked.revision == _rev(after)  # type: ignore[union-attr]
    range_(b"svc/", b"svc0")
    missing = etcd.call("/v3/kv/put", {"key": _b64(b"z"), "value": _b64(b"1"), "lease": str(lease_id)})
    assert "requested lease not found" in missing["error"]
    assert feed.one(Put(b"z", b"1", lease=lease_id)).code == "lease_not_found"  # type: ignore[union-attr]

    # Compaction: the same refusals, the same reads around it.
    compact_at = sm.revision - 2
    assert feed.one(Compact(compact_at)) == CompactResult(compact_at, sm.revision)
    assert "error" not in etcd.call("/v3/kv/compaction", {"revision": str(compact_at + OFFSET)})
    range_(b"a", FROM_KEY, revision=compact_at - 1)  # compacted on both
    range_(b"a", FROM_KEY, revision=compact_at)
    range_(b"a", FROM_KEY, revision=sm.revision + 1)  # in the future on both
    again = etcd.call("/v3/kv/compaction", {"revision": str(compact_at + OFFSET)})
    assert "required revision has been compacted" in again["error"]
    assert feed.one(Compact(compact_at)).code == "compacted"  # type: ignore[union-attr]
