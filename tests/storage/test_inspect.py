"""``python -m raftkv.storage inspect DIR``: a read-only report; exit 0 when healthy, else 1 and one clear line."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from storage_testlib import run, segment_files, write_v1_log, write_v1_snapshot

from raftkv.raft.membership import encode_conf
from raftkv.raft.types import ConfState, Entry, EntryType, HardState, Index, Member, NodeId, SnapshotMeta, Term
from raftkv.storage.__main__ import main
from raftkv.storage.datadir import open_data_dir
from raftkv.storage.snapshots import snapshot_name


def inspect(path: Path) -> tuple[int, list[str]]:
    out = io.StringIO()
    old, sys.stdout = sys.stdout, out
    try:
        code = main(["inspect", str(path)])
    finally:
        sys.stdout = old
    return code, out.getvalue().splitlines()


CONF = ConfState(
    (
        Member(NodeId(1), "10.0.0.1:7001", "10.0.0.1:8001"),
        Member(NodeId(2), "10.0.0.2:7001", "10.0.0.2:8001"),
        Member(NodeId(3), "10.0.0.3:7001", "", learner=True),
    )
)
MEMBER_LINES = [
    "    member 1: voter, peer 10.0.0.1:7001, client 10.0.0.1:8001",
    "    member 2: voter, peer 10.0.0.2:7001, client 10.0.0.2:8001",
    "    member 3: learner, peer 10.0.0.3:7001, client -",
]


def make_node(path: Path) -> None:
    node = open_data_dir(path, segment_bytes=4096)
    node.wal.append(run(1, 9, term=2))
    node.wal.append([Entry(Term(2), Index(10), encode_conf(CONF), EntryType.CONF_CHANGE)])
    node.wal.append(run(11, 69, term=2))
    promoted = CONF.with_member(Member(NodeId(3), "10.0.0.3:7001", "10.0.0.3:8001"))
    node.wal.append([Entry(Term(2), Index(80), encode_conf(promoted), EntryType.CONF_CHANGE)])
    node.wal.append(run(81, 40, term=2))
    node.wal.set_hard_state(HardState(Term(2), NodeId(3), Index(110)))
    node.wal.sync()
    node.snapshots.save(SnapshotMeta(Index(50), Term(2), CONF), b"state at 50")
    node.wal.compact(Index(50))
    node.close()


def test_a_healthy_data_dir(tmp_path: Path) -> None:
    make_node(tmp_path / "node")
    code, lines = inspect(tmp_path / "node")
    text = "\n".join(lines)
    assert code == 0, text
    boundary = lines.index(
        "  index range: first 51, last 120 (70 entries); compacted through index 50 (term 2, voters 1,2 learners 3)"
    )
    assert lines[boundary + 1 : boundary + 5] == [*MEMBER_LINES, "  configuration entries above the boundary: 80"]
    assert "hard state: term 2, vote 3, commit 110" in text
    assert "segment-0000000001.wal" not in text and "segment-0000000002.wal" in text  # compacted away
    snap = lines.index(f"  {snapshot_name(50, 2)}  index 50 term 2 voters 1,2 learners 3  11 data bytes  ok")
    assert lines[snap + 1 : snap + 4] == MEMBER_LINES
    assert "records verify" in text
    assert lines[-1] == "status: healthy"


def test_a_torn_tail_is_reported_but_not_repaired(tmp_path: Path) -> None:
    make_node(tmp_path / "node")
    last = segment_files(tmp_path / "node" / "wal")[-1]
    last.write_bytes(last.read_bytes()[:-3])
    size = last.stat().st_size
    code, lines = inspect(tmp_path / "node")
    assert code == 0
    assert any("torn tail: " in line and "the next open cuts it off" in line for line in lines)
    assert last.stat().st_size == size  # read-only


def test_a_corrupt_record_fails_with_one_line_naming_file_offset_and_remedy(tmp_path: Path) -> None:
    make_node(tmp_path / "node")
    seg = segment_files(tmp_path / "node" / "wal")[0]
    data = bytearray(seg.read_bytes())
    data[200] ^= 0x08
    seg.write_bytes(bytes(data))
    code, lines = inspect(tmp_path / "node")
    assert code == 1
    assert lines[-1].startswith(f"error: corrupt write-ahead log: {seg} at offset ")
    assert "wipe it and let the node rejoin" in lines[-1]


def test_a_log_in_the_older_format_fails_with_one_line(tmp_path: Path) -> None:
    seg = write_v1_log(tmp_path / "node" / "wal")
    before = seg.read_bytes()
    code, lines = inspect(tmp_path / "node")
    assert code == 1
    assert lines[-1].startswith(f"error: {seg} was written by an older raftkv (write-ahead log format 1, this one")
    assert seg.read_bytes() == before


def test_a_snapshot_in_the_older_format_fails_with_one_line(tmp_path: Path) -> None:
    make_node(tmp_path / "node")
    old = write_v1_snapshot(tmp_path / "node" / "snap", 60, 2, (1, 2, 3), b"state at 60")
    code, lines = inspect(tmp_path / "node")
    assert code == 1
    assert lines[-1].startswith(f"error: {old} was written by an older raftkv (snapshot format 1, this one reads 2)")


def test_a_damaged_snapshot_is_a_problem_even_with_a_fallback(tmp_path: Path) -> None:
    make_node(tmp_path / "node")
    snap = tmp_path / "node" / "snap" / snapshot_name(50, 2)
    snap.write_bytes(snap.read_bytes()[:-1])
    code, lines = inspect(tmp_path / "node")
    assert code == 1
    assert any("DAMAGED" in line for line in lines)
    assert lines[-1].startswith(f"error: unusable snapshot: {snap}: ")


def test_not_a_data_dir(tmp_path: Path) -> None:
    code, lines = inspect(tmp_path)
    assert code == 1 and lines == [f"error: no raftkv storage in {tmp_path} (expected wal/ and snap/, "
                                    "segment-*.wal or snapshot-*.snap files)"]  # fmt: skip
    code, lines = inspect(tmp_path / "missing")
    assert code == 1 and "is not a directory" in lines[-1]


def test_the_module_entry_point(tmp_path: Path) -> None:
    make_node(tmp_path / "node")
    res = subprocess.run(
        [sys.executable, "-m", "raftkv.storage", "inspect", str(tmp_path / "node" / "wal")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[-1] == "status: healthy"
