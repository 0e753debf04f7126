"""The write-ahead log and cluster configuration: the BOUNDARY record's ConfState, the tracked indexes of
configuration entries, and the refusal of a log written in the older (voters-only) format."""

from __future__ import annotations

from pathlib import Path

import pytest
from crc32c import crc32c
from storage_testlib import FaultyIO, run, segment_files, write_v1_log

from raftkv.raft.membership import encode_conf
from raftkv.raft.types import ConfState, Entry, EntryType, HardState, Index, Member, NodeId, SnapshotMeta, Term
from raftkv.storage import records as rec
from raftkv.storage.errors import CorruptLogError, DiskFullError, StorageError, UnsupportedFormatError
from raftkv.storage.wal import WAL, scan

SEG = 4096

CONF_A = ConfState(
    (
        Member(NodeId(1), "10.0.0.1:7001", "10.0.0.1:8001"),
        Member(NodeId(2), "10.0.0.2:7001", "10.0.0.2:8001"),
        Member(NodeId(3), "10.0.0.3:7001", "", learner=True),
    )
)
CONF_B = CONF_A.with_member(Member(NodeId(3), "10.0.0.3:7001", "10.0.0.3:8001")).with_member(
    Member(NodeId(4), "10.0.0.4:7001", "10.0.0.4:8001", learner=True)
)
CONF_C = CONF_B.without(NodeId(1))


def conf_entry(index: int, conf: ConfState, term: int = 1) -> Entry:
    return Entry(Term(term), Index(index), encode_conf(conf), EntryType.CONF_CHANGE)


def log_with_confs(n: int, confs: dict[int, ConfState], term: int = 1) -> list[Entry]:
    """Entries 1..n of 100 data bytes, with configuration entries at the given indexes."""
    return [conf_entry(e.index, confs[e.index], term) if e.index in confs else e for e in run(1, n, term)]


def reopen(w: WAL, **kw: int) -> WAL:
    w.close()
    return WAL.open(w.path, **kw)


def test_the_boundary_keeps_learners_and_addresses_through_compaction_and_reopen(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    w.append(log_with_confs(120, {10: CONF_A, 60: CONF_B, 100: CONF_C}))
    assert w.conf_indexes() == [10, 60, 100]
    w.compact(Index(5))  # no configuration entry at or below 5: the boundary keeps its (empty) one
    assert w.initial_state()[1] == SnapshotMeta(Index(5), Term(1), ConfState())
    w.compact(Index(59))
    assert w.initial_state()[1] == SnapshotMeta(Index(59), Term(1), CONF_A)
    assert w.conf_indexes() == [60, 100]
    w.sync()
    w = reopen(w, segment_bytes=SEG)
    assert w.initial_state()[1] == SnapshotMeta(Index(59), Term(1), CONF_A)
    assert w.conf_indexes() == [60, 100]
    w.compact(Index(60))  # exactly at a configuration entry: it is part of the boundary now
    assert w.initial_state()[1].conf == CONF_B
    assert w.conf_indexes() == [100]
    w.compact(Index(99))  # nothing new at or below 99: still the boundary's
    assert w.initial_state()[1].conf == CONF_B
    w.compact(Index(120))
    assert (w.initial_state()[1].conf, w.conf_indexes()) == (CONF_C, [])
    w = reopen(w, segment_bytes=SEG)
    assert w.initial_state()[1] == SnapshotMeta(Index(120), Term(1), CONF_C)
    assert w.conf_indexes() == []
    w.close()


def test_apply_snapshot_stores_the_whole_configuration(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal")
    w.append(log_with_confs(30, {5: CONF_A, 20: CONF_B, 28: CONF_C}))
    w.apply_snapshot(SnapshotMeta(Index(10), Term(1), CONF_A))  # matches: 11..30 stay, with 20 and 28
    assert w.conf_indexes() == [20, 28]
    w = reopen(w)
    assert w.initial_state()[1] == SnapshotMeta(Index(10), Term(1), CONF_A)
    assert w.conf_indexes() == [20, 28]
    w.apply_snapshot(SnapshotMeta(Index(25), Term(7), CONF_C))  # conflicts: the log goes, 28 with it
    assert (w.last_index(), w.conf_indexes()) == (25, [])
    w = reopen(w)
    assert w.initial_state()[1] == SnapshotMeta(Index(25), Term(7), CONF_C)
    assert w.conf_indexes() == []
    w.close()


def test_conf_indexes_follow_appends_and_overwrites_also_after_reopen(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    w.append(log_with_confs(10, {3: CONF_A, 5: CONF_B, 8: CONF_C}))
    assert w.conf_indexes() == [3, 5, 8]
    w.append(run(5, 2, term=2))  # overwrites 5..10 with plain entries: 5 and 8 go
    assert w.conf_indexes() == [3]
    w.append([conf_entry(7, CONF_C, term=2), *run(8, 3, term=2)])
    assert w.conf_indexes() == [3, 7]
    w.append([conf_entry(4, CONF_B, term=3)])  # overwrites 4..10
    assert (w.last_index(), w.conf_indexes()) == (4, [3, 4])
    w.sync()
    w = reopen(w, segment_bytes=SEG)  # replay applies the same overwrites
    assert w.conf_indexes() == [3, 4]
    w.append(run(5, 3, term=3))
    w.sync()
    w = reopen(w, segment_bytes=SEG, cache_entries=0)
    assert w.conf_indexes() == [3, 4]
    w.compact(Index(4))
    assert (w.initial_state()[1].conf, w.conf_indexes()) == (CONF_B, [])
    w.close()


def test_a_batch_split_over_segments_tracks_every_configuration_entry(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    confs = {1: CONF_A, 30: CONF_B, 31: CONF_A, 64: CONF_C, 100: CONF_B}
    w.append(log_with_confs(100, confs))
    assert len(segment_files(tmp_path / "wal")) >= 3  # the batch really was split
    assert w.conf_indexes() == sorted(confs)
    w.sync()
    w = reopen(w, segment_bytes=SEG)
    assert w.conf_indexes() == sorted(confs)
    w.close()


def test_a_batch_cut_short_by_a_full_disk_tracks_only_what_was_written(tmp_path: Path) -> None:
    io = FaultyIO()
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG, io=io)
    confs = {2: CONF_A, 20: CONF_B, 50: CONF_C}
    io.open_failures = 1  # the rotation in the middle of the batch cannot create the next segment
    with pytest.raises(DiskFullError):
        w.append(log_with_confs(60, confs))
    last = w.last_index()
    assert 20 < last < 50, last  # the first segment's share of the batch stands
    assert w.conf_indexes() == [2, 20]
    w.append(log_with_confs(60, confs)[last:])  # the retry writes the rest
    assert w.conf_indexes() == [2, 20, 50]
    w.sync()
    w = reopen(w, segment_bytes=SEG)
    assert w.conf_indexes() == [2, 20, 50]
    w.close()


def test_compaction_reads_at_most_the_one_configuration_entry_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG, cache_entries=0)  # every entry read goes to the files
    w.append(log_with_confs(300, {50: CONF_A, 120: CONF_B, 200: CONF_C}))
    reads: list[tuple[int, int]] = []
    read_disk = w._read_disk  # white-box: count what compaction reads

    def counting(lo: int, hi: int) -> list[Entry]:
        reads.append((lo, hi))
        return read_disk(lo, hi)

    monkeypatch.setattr(w, "_read_disk", counting)
    assert w.conf_indexes() == [50, 120, 200]
    assert reads == []  # no log read to list them
    w.compact(Index(150))
    assert reads == [(120, 121)]  # the latest configuration entry at or below 150, and nothing else
    assert w.initial_state()[1].conf == CONF_B
    reads.clear()
    w.compact(Index(190))  # no configuration entry in 151..190: the boundary's stays, nothing is read
    assert reads == []
    assert w.initial_state()[1].conf == CONF_B
    w.close()


def test_a_boundary_whose_configuration_does_not_parse_is_corruption(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal")
    w.append(run(1, 3))
    w.sync()
    w.close()
    (seg,) = segment_files(tmp_path / "wal")
    good_size = seg.stat().st_size
    payload = rec.BOUNDARY_FIXED.pack(2, 1, 5, 0) + b"{not)"
    record = bytearray(rec.HEADER_SIZE) + payload
    rec.HEADER.pack_into(record, 0, 0, rec.MAGIC, rec.KIND_BOUNDARY, 0, len(payload))
    rec.CRC.pack_into(record, 0, crc32c(bytes(record[4:])))  # a valid CRC: the bytes are what was written
    with seg.open("ab") as f:
        f.write(record)
    with pytest.raises(CorruptLogError, match=f"at offset {good_size}: malformed boundary record") as info:
        WAL.open(tmp_path / "wal")
    assert "\n" not in str(info.value)


# --- the older format ----------------------------------------------------------------------------------------


def test_a_log_in_the_older_format_is_refused_with_one_line_and_left_untouched(tmp_path: Path) -> None:
    seg = write_v1_log(tmp_path / "wal")
    before = seg.read_bytes()
    with pytest.raises(UnsupportedFormatError) as info:
        WAL.open(tmp_path / "wal")
    message = str(info.value)
    assert isinstance(info.value, StorageError)
    assert "\n" not in message
    assert message.startswith(f"{seg} was written by an older raftkv (write-ahead log format 1, this one reads 2); ")
    assert "restore it from a backup" in message and "rejoin" in message
    assert (info.value.found, info.value.expected) == (1, 2)
    assert sorted(p.name for p in (tmp_path / "wal").iterdir()) == ["LOCK", seg.name]  # no new segment ...
    assert seg.read_bytes() == before  # ... and not one byte changed
    with pytest.raises(UnsupportedFormatError):
        scan(str(tmp_path / "wal"))  # what inspect runs
    # The directory lock was released: the refusal can be retried (and fails the same way).
    with pytest.raises(UnsupportedFormatError):
        WAL.open(tmp_path / "wal")


def test_a_segment_from_a_newer_release_is_refused_too(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal")
    w.append(run(1, 2))
    w.set_hard_state(HardState(Term(1), NodeId(1), Index(2)))
    w.sync()
    w.close()
    (seg,) = segment_files(tmp_path / "wal")
    data = bytearray(seg.read_bytes())
    rec.SEGMENT_RECORD.pack_into(
        data, 0, 0, rec.MAGIC, rec.KIND_SEGMENT, 0, rec.SEGMENT_PAYLOAD.size, rec.FORMAT_VERSION + 1, 0, 1
    )
    rec.CRC.pack_into(data, 0, crc32c(bytes(data[4 : rec.SEGMENT_RECORD_SIZE])))
    seg.write_bytes(bytes(data))
    with pytest.raises(UnsupportedFormatError, match=r"written by a newer raftkv \(write-ahead log format 3, this"):
        WAL.open(tmp_path / "wal")


def test_a_data_dir_holds_a_configuration_only_once_one_reached_its_log(tmp_path: Path) -> None:
    """What `raftkv serve --join` decides on: a fresh data dir, and one whose log holds entries but no
    configuration yet (a joining node stopped before the leader's first configuration reached it), must both
    join again; one with a configuration entry, or a boundary carrying one, must not."""
    from raftkv.storage.datadir import DataDir

    d = DataDir(tmp_path / "node")
    assert not d.holds_configuration()
    storage = d.open()
    storage.wal.append([Entry(Term(1), Index(1), b"", EntryType.NOOP)])
    storage.wal.sync()
    storage.close()
    assert d.holds_log() and not d.holds_configuration()
    storage = d.open()
    conf = ConfState.of_voters((NodeId(1), NodeId(2)), {NodeId(1): "h:1", NodeId(2): "h:2"})
    storage.wal.append([Entry(Term(1), Index(2), encode_conf(conf), EntryType.CONF_CHANGE)])
    storage.wal.sync()
    storage.wal.compact(Index(2))  # the boundary now carries it, and no entry does
    storage.close()
    assert d.holds_configuration()
