"""Snapshot files: streamed saves, checksums, retention, crash leftovers, and the fallback rule."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from crc32c import crc32c
from storage_testlib import run, write_v1_snapshot

from raftkv.raft.types import ConfState, Index, Member, NodeId, SnapshotMeta, Term
from raftkv.storage.datadir import open_data_dir
from raftkv.storage.errors import CorruptSnapshotError, UnsupportedFormatError
from raftkv.storage.snapshots import META_FIXED, PREFIX, DamagedSnapshot, SnapshotStore, snapshot_name
from raftkv.storage.wal import WAL

VOTERS = (NodeId(1), NodeId(2), NodeId(3))


def meta(index: int, term: int = 1) -> SnapshotMeta:
    return SnapshotMeta(Index(index), Term(term), ConfState.of_voters(VOTERS))


CONF = ConfState(
    (
        Member(NodeId(1), "10.0.0.1:7001", "10.0.0.1:8001"),
        Member(NodeId(2), "10.0.0.2:7001", ""),
        Member(NodeId(5), "10.0.0.5:7001", "10.0.0.5:8001", learner=True),
    )
)


def flip(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def test_save_and_load_bytes_chunks_and_file_objects(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path / "snap", retain=5)
    store.save(meta(10), b"ten")
    store.save(meta(20, 2), (bytes([k]) * 1000 for k in range(50)))
    store.save(meta(30, 2), io.BytesIO(b"thirty" * 10_000))
    snap = store.load(Index(31))
    assert snap is not None
    assert snap.meta == meta(30, 2)
    assert snap.read() == b"thirty" * 10_000
    with snap.open() as f:
        assert f.read(6) == b"thirty"
    assert [Path(p).name for p in store.paths()] == [snapshot_name(i, t) for i, t in ((30, 2), (20, 2), (10, 1))]


def test_large_snapshots_are_streamed_not_held_in_memory(tmp_path: Path) -> None:
    import tracemalloc

    store = SnapshotStore.open(tmp_path / "snap")

    def chunks() -> Iterator[bytes]:
        for k in range(64):  # 64 MiB in 1 MiB chunks
            yield bytes([k]) * (1 << 20)

    tracemalloc.start()
    try:
        info = store.save(meta(5), chunks())
        snap = store.load(Index(6))
        assert snap is not None
        total = sum(len(c) for c in snap.chunks())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.data_len == total == 64 << 20
    assert peak < 8 << 20, f"peak traced memory {peak} bytes"


def test_only_the_newest_few_are_kept(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path / "snap", retain=2)
    for i in (5, 10, 15, 20):
        store.save(meta(i), b"x")
    assert [Path(p).name for p in store.paths()] == [snapshot_name(20, 1), snapshot_name(15, 1)]


def test_a_crash_mid_save_leaves_only_a_temp_file_which_open_removes(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path / "snap")
    store.save(meta(10), b"good")
    leftover = tmp_path / "snap" / (snapshot_name(20, 1) + ".tmp")
    leftover.write_bytes(b"half a snapshot")
    assert store.load(Index(11)) is not None  # a .tmp file is never mistaken for a snapshot
    store = SnapshotStore.open(tmp_path / "snap")
    assert not leftover.exists()
    snap = store.load(Index(11))
    assert snap is not None and snap.meta.index == 10


@pytest.mark.parametrize(
    "damage",
    ["data bit flip", "header bit flip", "truncated", "bad magic", "renamed"],
)
def test_every_kind_of_damage_is_detected(tmp_path: Path, damage: str) -> None:
    store = SnapshotStore.open(tmp_path / "snap")
    store.save(meta(10), b"only snapshot" * 100)
    path = Path(store.paths()[0])
    if damage == "data bit flip":
        flip(path, 5)
    elif damage == "header bit flip":
        data = bytearray(path.read_bytes())
        data[20] ^= 0x04
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-1])
    elif damage == "bad magic":
        path.write_bytes(b"X" + path.read_bytes()[1:])
    else:
        path.rename(path.with_name(snapshot_name(11, 1)))
    with pytest.raises(CorruptSnapshotError, match="no older snapshot exists; the log starts at index 11"):
        store.load(Index(11))


def test_a_damaged_newest_snapshot_falls_back_only_if_the_log_covers_the_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SnapshotStore.open(tmp_path / "snap")
    store.save(meta(100), b"state at 100")
    store.save(meta(200), b"state at 200")
    newest = Path(store.paths()[0])
    flip(newest, 3)
    with caplog.at_level(logging.WARNING, logger="raftkv.storage.snapshots"):
        snap = store.load(Index(101))  # the log still holds 101.. : the older snapshot will do
    assert snap is not None and snap.meta.index == 100 and snap.read() == b"state at 100"
    assert any("using the older" in r.getMessage() for r in caplog.records)
    with pytest.raises(CorruptSnapshotError) as info:
        store.load(Index(150))  # the log was compacted past 100: entries 101..149 exist nowhere
    msg = str(info.value)
    assert newest.name in msg and "compacted up to index 149" in msg and "rejoin" in msg
    assert "\n" not in msg


def test_a_log_compacted_past_every_snapshot_is_refused(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path / "snap")
    assert store.load(Index(1)) is None  # no snapshot, and none needed
    with pytest.raises(CorruptSnapshotError, match="no snapshot, but the log starts at index 5"):
        store.load(Index(5))
    store.save(meta(3), b"")
    with pytest.raises(CorruptSnapshotError, match="ends at index 3 but the log starts at index 5"):
        store.load(Index(5))


def test_data_dir_restart_picks_the_snapshot_matching_the_log(tmp_path: Path) -> None:
    node = open_data_dir(tmp_path / "node", segment_bytes=4096)
    assert node.snapshot is None
    node.wal.append(run(1, 300))
    node.wal.sync()
    node.snapshots.save(meta(250), b"state machine at 250")
    node.wal.compact(Index(250))
    node.close()
    node = open_data_dir(tmp_path / "node", segment_bytes=4096)
    assert node.snapshot is not None and node.snapshot.meta.index == 250
    assert node.wal.first_index() == 251
    node.close()
    flip(tmp_path / "node" / "snap" / snapshot_name(250, 1), 1)
    for _ in range(2):  # the same error twice: a failed open releases the log's lock (no StorageInUseError)
        with pytest.raises(CorruptSnapshotError):
            open_data_dir(tmp_path / "node")


@pytest.mark.parametrize("case", ["past the log", "conflicting term"])
def test_a_received_snapshot_the_log_never_installed_is_installed_on_open(tmp_path: Path, case: str) -> None:
    # The transport saves a leader's snapshot before the core accepts it; a crash in between left a store whose
    # newest snapshot the log knows nothing of, and the node could not restart (applied index past the log).
    node = open_data_dir(tmp_path / "node", segment_bytes=4096)
    node.wal.append(run(1, 5, term=1) if case == "past the log" else run(1, 30, term=1))
    node.wal.sync()
    leader_snapshot = SnapshotMeta(Index(10), Term(2), ConfState.of_voters((NodeId(1), NodeId(2), NodeId(3))))
    node.snapshots.save(leader_snapshot, b"the leader's state at 10")
    node.close()
    node = open_data_dir(tmp_path / "node", segment_bytes=4096)
    assert node.snapshot is not None and node.snapshot.meta == leader_snapshot
    assert node.wal.first_index() == 11 and node.wal.last_index() == 10, "the log now starts after the snapshot"
    assert node.wal.term(Index(10)) == 2
    node.close()
    # And the install is durable: a second open finds the log and the snapshot in agreement.
    node = open_data_dir(tmp_path / "node", segment_bytes=4096)
    assert node.wal.first_index() == 11 and node.snapshot is not None
    node.close()


def test_a_snapshot_the_log_agrees_with_leaves_the_log_alone(tmp_path: Path) -> None:
    node = open_data_dir(tmp_path / "node", segment_bytes=4096)
    node.wal.append(run(1, 30, term=1))
    node.wal.sync()
    node.snapshots.save(meta(20), b"our own state at 20")
    node.close()
    node = open_data_dir(tmp_path / "node", segment_bytes=4096)
    assert node.wal.first_index() == 1 and node.wal.last_index() == 30, "the trailing entries stay"
    node.close()


# --- the configuration in the metadata (format 2) ------------------------------------------------------------


def test_the_configuration_round_trips_with_learners_and_addresses(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path / "snap")
    saved = store.save(SnapshotMeta(Index(40), Term(3), CONF), b"state at 40")
    assert saved.meta.conf == CONF
    snap = SnapshotStore.open(tmp_path / "snap").load(Index(41))
    assert snap is not None
    assert snap.meta == SnapshotMeta(Index(40), Term(3), CONF)
    assert snap.meta.voters == (1, 2) and snap.meta.conf.learners == (5,)
    assert snap.read() == b"state at 40"


def test_a_received_snapshot_installed_on_open_gives_the_log_its_configuration(tmp_path: Path) -> None:
    node = open_data_dir(tmp_path / "node", segment_bytes=4096)
    node.wal.append(run(1, 5))
    node.wal.sync()
    node.snapshots.save(SnapshotMeta(Index(10), Term(2), CONF), b"the leader's state at 10")
    node.close()
    open_data_dir(tmp_path / "node", segment_bytes=4096).close()  # completes the install in the log
    with WAL.open(tmp_path / "node" / "wal") as wal:
        assert wal.initial_state()[1] == SnapshotMeta(Index(10), Term(2), CONF)


def test_a_configuration_that_does_not_parse_is_damage(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path / "snap")
    store.save(meta(10), b"ten")
    (path,) = (Path(p) for p in store.paths())
    data = bytearray(path.read_bytes())
    _, meta_len, _ = PREFIX.unpack_from(data, 0)
    conf_at = PREFIX.size + META_FIXED.size
    data[conf_at] = ord("[")  # the JSON no longer parses; a matching CRC: as if a bug had written it
    PREFIX.pack_into(data, 0, b"RKSNAP\x00\x02", meta_len, crc32c(bytes(data[PREFIX.size : PREFIX.size + meta_len])))
    path.write_bytes(bytes(data))
    ((_, result),) = store.check_all()
    assert isinstance(result, DamagedSnapshot)
    assert "malformed configuration" in str(result)


def test_a_version_1_snapshot_is_refused_with_one_line_not_passed_over(tmp_path: Path) -> None:
    store = SnapshotStore.open(tmp_path / "snap")
    store.save(meta(5), b"a version 2 snapshot")  # an older usable snapshot must not hide the problem
    old = write_v1_snapshot(tmp_path / "snap", 10, 1, (1, 2, 3), b"state at 10")
    before = old.read_bytes()
    for call in (lambda: store.load(Index(6)), store.check_all):
        with pytest.raises(UnsupportedFormatError) as info:
            call()
        message = str(info.value)
        assert message.startswith(f"{old} was written by an older raftkv (snapshot format 1, this one reads 2); ")
        assert "\n" not in message and "restore it from a backup" in message
    assert old.read_bytes() == before
    for _ in range(2):  # a failed open releases the log's lock: the same error again, not StorageInUseError
        with pytest.raises(UnsupportedFormatError):
            open_data_dir(tmp_path)  # (wal/ is created empty; snap/ is the store above)
