"""Backup files (``raftkv snapshot save|restore``) without a cluster: format 2 with the configuration, the refusal
of format 1, and a restore that seeds the snapshot store and the log with the backed-up configuration."""

from __future__ import annotations

import json
import re
from pathlib import Path

import crc32c
import pytest

from raftkv.backup import FORMAT, Backup, read_backup, restore_backup, write_backup
from raftkv.errors import BackupError
from raftkv.raft.types import ConfState, HardState, Index, Member, NodeId, SnapshotMeta, Term
from raftkv.storage import open_data_dir

CONF = ConfState(
    (
        Member(NodeId(1), "10.0.0.1:7001", "10.0.0.1:8001"),
        Member(NodeId(2), "10.0.0.2:7001", "10.0.0.2:8001"),
        Member(NodeId(4), "10.0.0.4:7001", "", learner=True),
    )
)
BACKUP = Backup(SnapshotMeta(Index(120), Term(3), CONF), "prod", b"the image of the store" * 50)


def header_of(path: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads(path.read_bytes().partition(b"\n")[0])
    return doc


def test_a_backup_round_trips_with_learners_and_addresses(tmp_path: Path) -> None:
    path = tmp_path / "b.raftkv"
    write_backup(path, BACKUP)
    header = header_of(path)
    assert header["format"] == FORMAT == "raftkv-backup/2"
    assert "voters" not in header
    assert header["conf"] == {
        "members": [
            {"id": 1, "peer": "10.0.0.1:7001", "client": "10.0.0.1:8001", "learner": False},
            {"id": 2, "peer": "10.0.0.2:7001", "client": "10.0.0.2:8001", "learner": False},
            {"id": 4, "peer": "10.0.0.4:7001", "client": "", "learner": True},
        ]
    }
    assert read_backup(path) == BACKUP


def _v1_backup(path: Path) -> None:
    image = b"old image"
    header = {"format": "raftkv-backup/1", "cluster_id": "prod", "index": 7, "term": 2, "voters": [1, 2, 3]}
    header |= {"size": len(image), "crc32c": crc32c.crc32c(image)}
    path.write_bytes(json.dumps(header).encode() + b"\n" + image)


def test_a_format_1_backup_is_refused_with_one_line_before_anything_is_created(tmp_path: Path) -> None:
    path = tmp_path / "old.raftkv"
    _v1_backup(path)
    with pytest.raises(BackupError) as info:
        read_backup(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path} is an older backup format (raftkv-backup/1, this raftkv reads raftkv-backup/2")
    assert "restore it with the raftkv release that wrote it" in message
    with pytest.raises(BackupError, match="older backup format"):
        restore_backup(path, tmp_path / "node", NodeId(1), None)
    assert not (tmp_path / "node").exists()


@pytest.mark.parametrize(
    "conf",
    [
        {"members": [{"id": 1, "peer": "a:1", "client": ""}]},  # no "learner"
        {"members": [{"id": 1, "peer": "a:1", "client": "", "learner": "no"}]},
        {"members": [{"id": 2, "peer": "", "client": "", "learner": False}] * 2},  # duplicate ids
        [1, 2, 3],  # a voters list under the new name
    ],
)
def test_a_malformed_configuration_is_not_a_backup(tmp_path: Path, conf: object) -> None:
    path = tmp_path / "b.raftkv"
    write_backup(path, BACKUP)
    header = header_of(path)
    header["conf"] = conf
    path.write_bytes(json.dumps(header).encode() + b"\n" + BACKUP.image)
    with pytest.raises(BackupError, match=rf"^{re.escape(str(path))} is not a raftkv backup \(") as info:
        read_backup(path)
    assert "\n" not in str(info.value)


def test_restore_seeds_the_snapshot_and_the_log_with_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "b.raftkv"
    write_backup(path, BACKUP)
    restore_backup(path, tmp_path / "node", NodeId(2), None)
    node = open_data_dir(tmp_path / "node")
    try:
        assert node.snapshot is not None
        assert node.snapshot.meta == BACKUP.meta
        assert node.snapshot.read() == BACKUP.image
        hs, boundary = node.wal.initial_state()
        assert boundary == BACKUP.meta  # the log starts after the snapshot, with its configuration
        assert hs == HardState(Term(3), NodeId(0), Index(120))
        assert (node.wal.first_index(), node.wal.last_index(), node.wal.conf_indexes()) == (121, 120, [])
    finally:
        node.close()
