"""Backups: ``raftkv snapshot save FILE`` and ``raftkv snapshot restore FILE --data-dir DIR --id N``.

A backup file is one JSON header line, then the state machine's image::

    {"format": "raftkv-backup/1", "cluster_id": ..., "index": ..., "term": ..., "voters": [...],
     "size": ..., "crc32c": ...}\\n<image bytes>

``save`` asks a node (the leader when one is known) for a consistent image of its store — one read
transaction, taken while the cluster keeps serving — downloads it in chunks, checks the CRC32C and writes the
file atomically (temporary file, fsync, rename). ``restore`` verifies the file (format, size, CRC32C) before
touching anything, refuses a data dir that is not empty, then seeds it: the identity file, the snapshot in the
snapshot store, and a log that starts right after the snapshot (at its term). Start ``raftkv serve`` on each
restored data dir (one per node, same backup) to bring up a new cluster holding the backed-up data.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import capnp  # type: ignore[import-untyped]
import crc32c

from raftkv.client import StatusReport, connect
from raftkv.errors import BackupError
from raftkv.raft.types import NO_NODE, HardState, Index, NodeId, SnapshotMeta, Term
from raftkv.storage import claim_data_dir, open_data_dir
from raftkv.transport.address import Address
from raftkv.transport.kjloop import kj_loop
from raftkv.transport.streams import PLAIN
from raftkv.transport.wire import schema

FORMAT = "raftkv-backup/1"


@dataclass(frozen=True, slots=True)
class Backup:
    meta: SnapshotMeta
    cluster_id: str
    image: bytes


def write_backup(path: Path, backup: Backup) -> None:
    header = {
        "format": FORMAT,
        "cluster_id": backup.cluster_id,
        "index": int(backup.meta.index),
        "term": int(backup.meta.term),
        "voters": [int(v) for v in backup.meta.voters],
        "size": len(backup.image),
        "crc32c": crc32c.crc32c(backup.image),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(json.dumps(header).encode() + b"\n")
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
        if header.get("format") != FORMAT:
            raise ValueError(f"format {header.get('format')!r}")
        size, crc = int(header["size"]), int(header["crc32c"])
        meta = SnapshotMeta(
            Index(int(header["index"])), Term(int(header["term"])), tuple(NodeId(int(v)) for v in header["voters"])
        )
    except (ValueError, KeyError, TypeError) as e:
        raise BackupError(f"{path} is not a raftkv backup ({e})") from None
    if not sep or len(image) != size:
        raise BackupError(f"{path} is truncated: {len(image)} of {size} bytes; take the backup again")
    if crc32c.crc32c(image) != crc:
        raise BackupError(f"{path} is damaged (checksum mismatch); take the backup again")
    return Backup(meta, str(header.get("cluster_id", "")), image)


async def download_backup(endpoints: list[Address], timeout: float) -> Backup:
    """Fetch a consistent image from the leader (or, failing that, from any node that answers)."""
    async with kj_loop():
        order = list(endpoints)
        async with connect(endpoints) as cluster:
            reports = [r for r in await cluster.statuses(timeout) if isinstance(r, StatusReport)]
        lead = next((r.endpoint for r in reports if r.role == "leader"), None)
        if lead is not None:
            order.sort(key=lambda a: str(a) != lead)
        if not reports:
            raise BackupError(f"no node reachable at {','.join(map(str, endpoints))}: is the cluster running?")
        cluster_id = reports[0].cluster_id
        last_error = ""
        for endpoint in order:
            try:
                return await _download(endpoint, cluster_id, timeout)
            except (OSError, TimeoutError, capnp.KjException, BackupError) as e:
                last_error = f"{endpoint}: {e}"
        raise BackupError(f"could not download a backup ({last_error})")


async def _download(endpoint: Address, cluster_id: str, timeout: float) -> Backup:
    client = await PLAIN.dial_rpc(endpoint, timeout)
    try:
        cap: Any = client.bootstrap().cast_as(schema.Client)
        header = {"clusterId": cluster_id, "from": 0, "to": 0}
        parts: list[bytes] = []
        offset = 0
        while True:
            async with asyncio.timeout(max(timeout, 30.0)):
                r = await cap.backupChunk(header=header, offset=offset)
            if str(r.error.code) != "none":
                raise BackupError(str(r.error.message))
            data = bytes(r.data)
            parts.append(data)
            offset += len(data)
            if offset >= int(r.totalSize) or not data:
                break
        image = b"".join(parts)
        if len(image) != int(r.totalSize) or crc32c.crc32c(image) != int(r.crc32c):
            raise BackupError("the downloaded image does not match its checksum")
        meta = SnapshotMeta(Index(int(r.lastIndex)), Term(int(r.lastTerm)), tuple(NodeId(int(v)) for v in r.voters))
        return Backup(meta, cluster_id, image)
    finally:
        client.close()


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
