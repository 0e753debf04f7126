"""Layout 3 of the LMDB store (a ``key_revs`` index) is converted on open to layout 4 (chained history, ``graves``).

The fixture ``fixtures/layout3/data.mdb`` was written by raftkv at commit 05a85e9 (layout 3) applying
:func:`commands_before` (``python -m tests.kv.test_lmdb_upgrade OUT_DIR`` run on that tree). The test opens a
copy with today's code, checks that every read at every retained revision, the history and the snapshot image
match a memory backend fed the same commands, then goes on writing to both and checks again.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import lmdb

from raftkv.kv import Command, KVStateMachine, MemoryBackend
from raftkv.kv.commands import Compact, DeleteRange, LeaseGrant, LeaseRevoke, Put, Range
from raftkv.storage.kv_lmdb import LMDBBackend
from tests.kv.kvtestlib import Feeder

FIXTURE = Path(__file__).parent / "fixtures" / "layout3"


def commands_before() -> list[list[Command]]:
    """Batches with puts, overwrites, deletes, re-creations, a range delete, a lease and a compaction."""
    batches: list[list[Command]] = []
    for round_ in range(6):
        batches.append([Put(b"k%d" % k, b"v%d.%d" % (k, round_)) for k in range(8)])
        batches.append([DeleteRange(b"k%d" % (round_ % 8))])
    batches.append([DeleteRange(b"k2", b"k5")])
    batches.append([Put(b"k3", b"back"), LeaseGrant(60, id=7), Put(b"leased", b"x", lease=7)])
    batches.append([Compact(20)])
    batches.append([Put(b"k4", b"again"), DeleteRange(b"k3")])
    batches.append([LeaseRevoke(7)])
    return batches


def commands_after() -> list[list[Command]]:
    return [
        [Put(b"k3", b"third life"), Put(b"k9", b"new")],
        [DeleteRange(b"k0", b"k2")],
        [Compact(40)],
        [Put(b"k0", b"z"), Put(b"k1", b"z")],
    ]


def _feed(sm: KVStateMachine, batches: list[list[Command]]) -> None:
    feed = Feeder(sm)
    for batch in batches:
        feed(*batch)


def _same(lm: KVStateMachine, mem: KVStateMachine) -> None:
    assert lm.revision == mem.revision and lm.compact_revision == mem.compact_revision
    with lm.backend.read() as a, mem.backend.read() as b:
        assert a.key_histories(b"", 1000) == b.key_histories(b"", 1000)
        for rev in range(max(lm.compact_revision, 1), lm.revision + 1):
            assert a.scan_at(b"", None, rev) == b.scan_at(b"", None, rev), f"at revision {rev}"
            for k in range(10):
                assert a.get_at(b"k%d" % k, rev) == b.get_at(b"k%d" % k, rev), f"k{k} at {rev}"
        for record in b.history(max(lm.compact_revision, 1)):
            assert a.previous(record) == b.previous(record)
    assert lm.snapshot() == mem.snapshot()
    assert lm.read(Range(b"", b"\0")) == mem.read(Range(b"", b"\0"))


def test_a_layout_3_store_is_converted_and_reads_and_writes_as_before(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "kv")
    env = lmdb.open(str(tmp_path / "kv"), max_dbs=8)
    with env.begin() as txn:
        assert txn.get(b"format", db=env.open_db(b"meta", txn=txn)) == b"raftkv-kv-lmdb/3"
    env.close()
    lm = KVStateMachine(LMDBBackend(tmp_path / "kv"))
    mem = KVStateMachine(MemoryBackend())
    _feed(mem, commands_before())
    _same(lm, mem)
    _feed(lm, commands_after())
    _feed(mem, commands_after())
    _same(lm, mem)
    lm.backend.close()  # type: ignore[attr-defined]
    env = lmdb.open(str(tmp_path / "kv"), max_dbs=8)
    with env.begin() as txn:
        assert txn.get(b"format", db=env.open_db(b"meta", txn=txn)) == b"raftkv-kv-lmdb/4"
        assert txn.get(b"key_revs") is None, "the old index is gone"
    env.close()


if __name__ == "__main__":  # writes the fixture (run on a layout-3 tree)
    out = Path(sys.argv[1])
    sm = KVStateMachine(LMDBBackend(out))
    _feed(sm, commands_before())
    sm.backend.close()  # type: ignore[attr-defined]
