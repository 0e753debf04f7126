"""Recovery on open: torn tails are cut off with one warning; corruption anywhere else refuses to open."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import pytest
from storage_testlib import ents, run, segment_files

from raftkv.raft.types import Entry, HardState, Index, NodeId, Term
from raftkv.storage import records as rec
from raftkv.storage.errors import CorruptLogError
from raftkv.storage.wal import WAL

SEG = 4096


def record_starts(data: bytes) -> list[int]:
    """Offsets of the records in a well-formed segment image (plus its end)."""
    starts = []
    off = 0
    while off < len(data):
        starts.append(off)
        parsed = rec.parse_valid(data, off, len(data))
        assert parsed is not None
        off += rec.HEADER_SIZE + parsed[2]
    return [*starts, off]


def build(path: Path, last: Entry | None = None) -> bytes:
    """A one-segment log: entries 1..5, a hard state, and ``last`` (entry 6 by default); returns its bytes."""
    w = WAL.open(path)
    w.append(ents(1, [1, 1, 2, 2, 2]))
    w.set_hard_state(HardState(Term(2), NodeId(1), Index(4)))
    w.append([last or Entry(Term(2), Index(6), b"the last record" * 5)])
    w.sync()
    w.close()
    (seg,) = segment_files(path)
    return seg.read_bytes()


def open_image(tmp: Path, name: str, image: bytes) -> WAL:
    d = tmp / name
    d.mkdir()
    (d / "segment-0000000001.wal").write_bytes(image)
    return WAL.open(d)


def torn_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "torn tail" in r.getMessage()]


def test_a_torn_last_record_is_cut_at_every_byte_with_any_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = build(tmp_path / "orig")
    starts = record_starts(image)
    last_start = starts[-2]
    rng = random.Random(7)
    tails = {"none": b"", "zeros": bytes(37), "page of zeros": bytes(4096), "garbage": rng.randbytes(300)}
    cases = 0
    for cut in range(last_start, len(image) + 1):
        for tail_name, tail in tails.items():
            if cut == len(image) and not tail:
                continue  # the intact file; covered below
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="raftkv.storage.wal"):
                w = open_image(tmp_path, f"c{cut}-{tail_name.replace(' ', '_')}", image[:cut] + tail)
            complete = 6 if cut == len(image) else 5
            assert w.last_index() == complete, (cut, tail_name)
            assert w.entries(Index(1), Index(complete + 1)) == build_expected(complete)
            assert w.initial_state()[0] == HardState(Term(2), NodeId(1), Index(4))
            torn = cut > last_start or bool(tail)
            assert len(torn_warnings(caplog)) == (1 if torn else 0), (cut, tail_name)
            # The repair is durable: the file now ends exactly after the last complete record.
            assert segment_files(Path(w.path))[0].stat().st_size == (len(image) if complete == 6 else last_start)
            w.close()
            cases += 1
    assert cases > 4 * 100


def build_expected(n: int) -> list[Entry]:
    return [*ents(1, [1, 1, 2, 2, 2]), Entry(Term(2), Index(6), b"the last record" * 5)][:n]


def test_a_torn_hard_state_record_recovers_the_previous_hard_state(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal")
    w.append(ents(1, [1, 1]))
    w.set_hard_state(HardState(Term(1), NodeId(1), Index(1)))
    w.sync()
    w.set_hard_state(HardState(Term(1), NodeId(1), Index(2)))
    w.close()
    (seg,) = segment_files(tmp_path / "wal")
    data = seg.read_bytes()
    seg.write_bytes(data[:-5])  # the second hard-state record lost its last bytes
    w = WAL.open(tmp_path / "wal")
    assert w.initial_state()[0] == HardState(Term(1), NodeId(1), Index(1))
    w.close()


def test_appending_after_a_torn_tail_does_not_look_like_corruption_later(tmp_path: Path) -> None:
    image = build(tmp_path / "orig")
    w = open_image(tmp_path, "torn", image[:-10] + bytes(100))
    w.append(ents(6, [3, 3]))
    w.sync()
    path = w.path
    w.close()
    w = WAL.open(path)
    assert [w.term(Index(i)) for i in range(1, 8)] == [1, 1, 2, 2, 2, 3, 3]
    w.close()


def test_every_bit_flip_before_the_last_record_is_detected(tmp_path: Path) -> None:
    image = build(tmp_path / "orig")
    starts = record_starts(image)
    last_start = starts[-2]
    rng = random.Random(11)
    for pos in range(last_start):
        bad = bytearray(image)
        bad[pos] ^= 1 << rng.randrange(8)
        with pytest.raises(CorruptLogError) as info:
            open_image(tmp_path, f"flip{pos}", bytes(bad))
        record = max(s for s in starts if s <= pos)
        assert info.value.offset == record, pos
        assert info.value.path.endswith("segment-0000000001.wal")
        msg = str(info.value)
        assert f"at offset {record}" in msg and "wipe it and let the node rejoin" in msg
        assert "\n" not in msg


def test_a_bad_record_in_an_earlier_segment_is_corruption_even_at_its_end(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    w.append(run(1, 80))
    w.sync()
    w.close()
    first = segment_files(tmp_path / "wal")[0]
    data = first.read_bytes()
    starts = record_starts(data)
    shutil.copytree(tmp_path / "wal", tmp_path / "pristine")
    for victim, label in ((starts[-2] + 40, "last record"), (starts[3] + 2, "middle record")):
        shutil.rmtree(tmp_path / "wal")
        shutil.copytree(tmp_path / "pristine", tmp_path / "wal")
        bad = bytearray(data)
        bad[victim] ^= 0x10
        first.write_bytes(bytes(bad))
        with pytest.raises(CorruptLogError, match=r"later segment files exist|followed by a valid record") as info:
            WAL.open(tmp_path / "wal", segment_bytes=SEG)
        assert info.value.offset == max(s for s in starts if s <= victim), label
    # A truncated earlier segment (e.g. copied incompletely) is corruption too.
    shutil.rmtree(tmp_path / "wal")
    shutil.copytree(tmp_path / "pristine", tmp_path / "wal")
    first.write_bytes(data[:-7])
    with pytest.raises(CorruptLogError, match="later segment files exist"):
        WAL.open(tmp_path / "wal", segment_bytes=SEG)


def test_an_empty_or_headerless_last_segment_from_a_crash_during_rotation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name, content in (("empty", b""), ("half_header", rec.encode_segment_header(3)[:10])):
        d = tmp_path / name
        w = WAL.open(d, segment_bytes=SEG)
        w.append(run(1, 40))  # two segments
        w.sync()
        w.close()
        assert len(segment_files(d)) == 2
        (d / "segment-0000000003.wal").write_bytes(content)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="raftkv.storage.wal"):
            w = WAL.open(d, segment_bytes=SEG)
        assert len(torn_warnings(caplog)) == 1
        assert len(segment_files(d)) == 2  # the empty one is gone
        assert w.last_index() == 40
        w.append(run(41, 40))  # rotating again recreates segment 3
        w.sync()
        w.close()
        w = WAL.open(d, segment_bytes=SEG)
        assert w.entries(Index(1), Index(81)) == run(1, 80)
        w.close()


def test_a_misplaced_segment_file_is_refused(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal", segment_bytes=SEG)
    w.append(run(1, 40))
    w.sync()
    w.close()
    a, b = segment_files(tmp_path / "wal")
    a.rename(tmp_path / "tmp")
    b.rename(a)
    (tmp_path / "tmp").rename(b)
    with pytest.raises(CorruptLogError, match="says this is segment 2"):
        WAL.open(tmp_path / "wal", segment_bytes=SEG)
