"""Backups: ``raftkv snapshot save FILE`` and ``raftkv snapshot restore FILE --data-dir DIR --id N``.

A backup file is one JSON header line, then the state machine's image::

    {"format": "raftkv-backup/2", "cluster_id": ..., "index": ..., "term": ...,
     "conf": {"members": [{"id": 1, "peer": "host:port", "client": "host:port", "learner": false}, ...]},
     "size": ..., "crc32c": ...}\\n<image bytes>

``conf`` is the cluster configuration as of ``index``: every member, voter or learner, with its addresses.
Format ``raftkv-backup/1`` recorded only the voter ids; reading one is refused with a one-line
:class:`~raftkv.errors.BackupError` rather than guessing the rest.

``save`` gets a consistent image of the store from the client (``raftkv.client.download_backup``: the leader's
when one is known, one read transaction taken while the cluster keeps serving, downloaded in chunks and checked
against its CRC32C) and :func:`write_backup` writes the file atomically (temporary file, fsync, rename).
``restore`` verifies the file (format, size, CRC32C) before touching anything, refuses a data dir that is not
empty, then seeds it: the identity file, the snapshot in the snapshot store, and a log that starts right after
the snapshot (at its term); both carry the backed-up configuration. Start ``raftkv serve`` on each restored
data dir (one per node, same backup) to bring up a new cluster holding the backed-up data. This module does no
network I/O.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import crc32c

from raftkv.errors import BackupError
from raftkv.raft.types import NO_NODE, ConfState, HardState, Index, Member, NodeId, SnapshotMeta, Term
from raftkv.storage import claim_data_dir, open_data_dir

FORMAT = "raftkv-backup/2"
OLDER_FORMATS = frozenset({"raftkv-backup/1"})


@dataclass(frozen=True, slots=True)
class Backup:
    """What a backup file holds: the image of a store, its snapshot metadata and the cluster it came from."""

    meta: SnapshotMeta
    cluster_id: str
    image: bytes


def _conf_json(conf: ConfState) -> dict[str, Any]:
    members = [
        {"id": int(m.id), "peer": m.peer_address, "client": m.client_address, "learner": m.learner}
        for m in conf.members
    ]
    return {"members": members}


def _conf_of_json(doc: Any) -> ConfState:
    """The configuration in a header's ``conf`` field; ``ValueError``/``KeyError``/``TypeError`` if malformed."""
    if not isinstance(doc, dict) or not isinstance(doc["members"], list):
        raise ValueError("conf is not an object with a members list")
    members = []
    for m in doc["members"]:
        if not isinstance(m["peer"], str) or not isinstance(m["client"], str) or not isinstance(m["learner"], bool):
            raise ValueError(f"malformed member {m!r} in conf")
        members.append(Member(NodeId(int(m["id"])), m["peer"], m["client"], m["learner"]))
    return ConfState(tuple(members))  # checks the ids: unique, positive, in order


ETCD_PAGE: Final = 512
"""etcdctl finds the SHA-256 of a snapshot by its size: a multiple of 512 bytes (bbolt's pages), plus 32."""


def etcd_framed(data: bytes) -> bytes:
    """``data`` as etcd's Snapshot stream carries a database: zero-padded to a multiple of 512 bytes, then its
    SHA-256 appended (what etcdctl checks before it keeps the file)."""
    padded = data + b"\0" * (-len(data) % ETCD_PAGE)
    return padded + hashlib.sha256(padded).digest()


def is_etcd_framed(raw: bytes) -> bool:
    return len(raw) % ETCD_PAGE == 32 and hashlib.sha256(raw[:-32]).digest() == raw[-32:]


def backup_bytes(backup: Backup) -> bytes:
    """The file ``write_backup`` writes, as bytes (the etcd gateway streams it as etcd's snapshot)."""
    return _header(backup) + backup.image


def _header(backup: Backup) -> bytes:
    header = {
        "format": FORMAT,
        "cluster_id": backup.cluster_id,
        "index": int(backup.meta.index),
        "term": int(backup.meta.term),
        "conf": _conf_json(backup.meta.conf),
        "size": len(backup.image),
        "crc32c": crc32c.crc32c(backup.image),
    }
    return json.dumps(header).encode() + b"\n"


def write_backup(path: Path, backup: Backup) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(_header(backup))
        f.write(backup.image)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_backup(path: Path) -> Backup:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BackupError(f"cannot read {path}: {e.strerror}") from None
    line, sep, image = raw.partition(b"\n")
    try:
        header = json.loads(line)
        found = header.get("format")
    except (ValueError, AttributeError) as e:
        raise BackupError(f"{path} is not a raftkv backup ({e})") from None
    if found in OLDER_FORMATS:
        raise BackupError(
            f"{path} is an older backup format ({found}, this raftkv reads {FORMAT}, which also records learners "
            "and member addresses): restore it with the raftkv release that wrote it"
        )
    try:
        if found != FORMAT:
            raise ValueError(f"format {found!r}")
        size, crc = int(header["size"]), int(header["crc32c"])
        meta = SnapshotMeta(Index(int(header["index"])), Term(int(header["term"])), _conf_of_json(header["conf"]))
    except (ValueError, KeyError, TypeError) as e:
        raise BackupError(f"{path} is not a raftkv backup ({e})") from None
    if sep and len(image) > size and is_etcd_framed(raw) and not image[size:-32].strip(b"\0"):
        image = image[:size]  # saved by etcdctl from the etcd gateway: zero padding and a SHA-256 after it
    if not sep or len(image) != size:
        raise BackupError(f"{path} is truncated: {len(image)} of {size} bytes; take the backup again")
    if crc32c.crc32c(image) != crc:
        raise BackupError(f"{path} is damaged (checksum mismatch); take the backup again")
    return Backup(meta, str(header.get("cluster_id", "")), image)


def restore_backup(path: Path, data_dir: Path, node_id: NodeId, cluster_id: str | None) -> Backup:
    """Seed an empty data dir from a backup; returns the backup (its index says where the new log starts)."""
    backup = read_backup(path)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"--data-dir {data_dir} is not empty: restore into a new or empty directory")
    claim_data_dir(data_dir, cluster_id or backup.cluster_id or "raftkv", node_id)
    storage = open_data_dir(data_dir)
    try:
        storage.snapshots.save(backup.meta, backup.image)
        storage.wal.apply_snapshot(backup.meta)
        # The log starts after the snapshot, at its term: terms in a log never go down (§5.3).
        storage.wal.set_hard_state(HardState(backup.meta.term, NO_NODE, backup.meta.index))
        storage.wal.sync()
    finally:
        storage.close()
    return backup
