"""``python -m raftkv.storage inspect DIR``: examine a node's durable state without changing it.

Theory of operation
-------------------
``DIR`` is a node data directory (``wal/`` and ``snap/``), or a WAL directory, or a snapshot directory. The
command runs the same scan as opening the log (every CRC verified) and checks every snapshot's checksums, but
repairs nothing: a torn tail is reported as what the next open will cut off. It prints the segments, the index
range, the configuration at the boundary (voters, learners and their addresses) and where configuration entries
sit above it, the hard state and the snapshots (each with its configuration), then a last line:
``status: healthy`` (exit 0) or ``error: ...`` naming what is wrong and what to do (exit 1). A torn tail alone
is healthy: it is the normal trace of a crash. A file of another format version is an error like corruption.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from raftkv.raft.types import ConfState
from raftkv.storage.datadir import SNAP_DIR, WAL_DIR
from raftkv.storage.errors import CorruptLogError, CorruptSnapshotError, UnsupportedFormatError
from raftkv.storage.fileio import OS_IO
from raftkv.storage.snapshots import DEFAULT_RETAIN, SNAPSHOT_RE, TMP_SUFFIX, DamagedSnapshot, SnapshotStore, select
from raftkv.storage.wal import SEGMENT_RE, scan


def _locate(path: str) -> tuple[str | None, str | None]:
    """(wal dir, snapshot dir) found at ``path``."""
    names = os.listdir(path)
    wal = os.path.join(path, WAL_DIR) if os.path.isdir(os.path.join(path, WAL_DIR)) else None
    snap = os.path.join(path, SNAP_DIR) if os.path.isdir(os.path.join(path, SNAP_DIR)) else None
    if wal is None and any(SEGMENT_RE.match(n) for n in names):
        wal = path
    if snap is None and any(SNAPSHOT_RE.match(n) for n in names):
        snap = path
    return wal, snap


def _members(conf: ConfState, indent: str) -> list[str]:
    """One line per member: id, suffrage and addresses ("-" where unknown)."""
    return [
        f"{indent}member {m.id}: {'learner' if m.learner else 'voter'}, peer {m.peer_address or '-'}, "
        f"client {m.client_address or '-'}"
        for m in conf.members
    ]


def inspect(path: str, out: TextIO) -> int:
    """Print a report on the storage at ``path``; return the exit code (0 healthy, 1 a problem)."""

    def fail(message: str) -> int:
        print(f"error: {message}", file=out)
        return 1

    path = os.path.abspath(path)
    if not os.path.isdir(path):
        return fail(f"{path} is not a directory; pass a node data directory (holding wal/ and snap/)")
    wal_dir, snap_dir = _locate(path)
    if wal_dir is None and snap_dir is None:
        return fail(f"no raftkv storage in {path} (expected wal/ and snap/, segment-*.wal or snapshot-*.snap files)")
    log_first_index: int | None = None
    if wal_dir is not None:
        print(f"write-ahead log: {wal_dir}", file=out)
        try:
            r = scan(wal_dir, OS_IO)
        except (CorruptLogError, UnsupportedFormatError) as exc:
            return fail(str(exc))
        except OSError as exc:
            return fail(f"cannot read {exc.filename or wal_dir}: {exc.strerror}; check permissions and the disk")
        records = 0
        for s in r.segments:
            records += s.records
            span = f"entries {s.first_entry}..{s.last_entry}" if s.entries else "no entries"
            print(
                f"  {os.path.basename(s.path)}  {s.size} bytes  {s.records} records  {s.entries} entry records "
                f"({span}, file order)",
                file=out,
            )
        if not r.segments:
            print("  (no segment files: an empty log)", file=out)
        if r.torn is not None:
            t = r.torn
            print(
                f"  torn tail: {t.dropped_bytes} bytes at offset {t.offset} of {os.path.basename(t.path)} "
                f"({t.reason}); the next open cuts it off (the normal trace of a crash during a write)",
                file=out,
            )
        held = r.last - r.boundary_index
        print(
            f"  index range: first {r.boundary_index + 1}, last {r.last} ({held} entries); compacted through "
            f"index {r.boundary_index} (term {r.boundary_term}, {r.conf.describe()})",
            file=out,
        )
        for line in _members(r.conf, "    "):
            print(line, file=out)
        confs = ", ".join(map(str, r.conf_indexes)) or "none"
        print(f"  configuration entries above the boundary: {confs}", file=out)
        hs = r.hard_state
        print(f"  hard state: term {hs.term}, vote {hs.vote}, commit {hs.commit}", file=out)
        print(f"  checksums: all {records} records verify", file=out)
        log_first_index = r.boundary_index + 1
    problem: str | None = None
    if snap_dir is not None:
        print(f"snapshots: {snap_dir}", file=out)
        store = SnapshotStore(snap_dir, OS_IO, DEFAULT_RETAIN)  # no open(): inspect must not clean anything up
        try:
            checked = store.check_all()
        except UnsupportedFormatError as exc:
            return fail(str(exc))
        for p, result in checked:
            name = os.path.basename(p)
            if isinstance(result, DamagedSnapshot):
                print(f"  {name}  DAMAGED: {result}", file=out)
            else:
                m = result.meta
                print(
                    f"  {name}  index {m.index} term {m.term} {m.conf.describe()}  {result.data_len} data bytes  ok",
                    file=out,
                )
                for line in _members(m.conf, "    "):
                    print(line, file=out)
        if not checked:
            print("  (no snapshots)", file=out)
        for n in sorted(os.listdir(snap_dir)):
            if n.endswith(TMP_SUFFIX):
                print(f"  {n}: an incomplete save left by a crash; removed on the next open", file=out)
        damaged = [(p, r) for p, r in checked if isinstance(r, DamagedSnapshot)]
        try:
            chosen, note = select(checked, log_first_index if log_first_index is not None else 1, snap_dir)
        except CorruptSnapshotError as exc:
            return fail(str(exc))
        if log_first_index is not None:
            start = f"snapshot index {chosen.meta.index}" if chosen is not None else "an empty state machine"
            print(f"  a restart would start from {start}, then replay the log", file=out)
        if damaged:
            p, why = damaged[0]
            fallback = f"; {note}" if note else ""
            problem = (
                f"snapshot {p} is damaged ({why}){fallback}; delete the damaged file (the node then starts from the "
                f"older snapshot), or wipe the node's data directory and let it rejoin"
            )
    if problem is not None:
        return fail(problem)
    print("status: healthy", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftkv.storage", description="Tools for raftkv's durable storage.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="verify and describe a data directory (read-only)")
    p.add_argument("dir", help="a node data directory (wal/ and snap/), a WAL directory or a snapshot directory")
    args = parser.parse_args(argv)
    return inspect(args.dir, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
