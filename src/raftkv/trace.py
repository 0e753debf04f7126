"""Stage timestamps of requests across processes, for ``bench/trace_put.py`` (issue 20's breakdown).

Off unless the environment variable ``RAFTKV_TRACE`` names a directory when this module is first imported (or
:func:`enable` is called). Then every :func:`point` appends ``<monotonic ns> <stage> <key>`` to an in-memory
buffer, written to ``<dir>/<pid>.trace`` every 256 points and at exit. ``time.monotonic_ns`` is the machine's
``CLOCK_MONOTONIC``, shared by every process on it, so the files of a client and three nodes merge into one
timeline. Call sites test :data:`ON` first (``if trace.ON: trace.point(...)``): off, a trace point costs one
global lookup and a branch. On, a point costs ~1 µs; the breakdown subtracts nothing for it.

Stages:

* client: ``c.send`` (a batch goes to the node; key: the batch's size), ``c.recv`` (its results are back);
* a node's KV service: ``s.exec`` (an ``execute`` call starts; key: its size), ``s.prop`` (its writes were
  proposed; key: the first index), ``s.done`` (its results are ready);
* a node's ready loop (the key is a log index):
  * ``n.ready``: it takes a Ready (the last index in the log);
  * ``n.ae.out`` / ``n.ae.in``: an AppendEntries with entries is sent / received (its last index);
  * ``n.written`` / ``n.synced``: the WAL wrote entries up to the key / and fsynced them;
  * ``n.ack.out`` / ``n.ack.in``: an acknowledgement is sent / received (the index it acknowledges);
  * ``n.commit``: the commit index reached the key;
  * ``n.applied``: the state machine applied up to the key.
"""

from __future__ import annotations

import atexit
import os
import time

ON: bool = False
"""Whether trace points record (read it before calling :func:`point`)."""

_dir: str | None = None
_buffer: list[str] = []
_FLUSH_AT = 256


def enable(directory: str) -> None:
    """Record from now on into ``directory`` (created if needed)."""
    global ON, _dir
    os.makedirs(directory, exist_ok=True)
    _dir = directory
    ON = True


def point(stage: str, key: int | str = "-") -> None:
    """Record that ``stage`` happened now, for ``key``."""
    _buffer.append(f"{time.monotonic_ns()} {stage} {key}\n")
    if len(_buffer) >= _FLUSH_AT:
        flush()


def flush() -> None:
    """Write the buffered points to this process's file."""
    if not _buffer or _dir is None:
        return
    lines = "".join(_buffer)
    _buffer.clear()
    with open(os.path.join(_dir, f"{os.getpid()}.trace"), "a") as f:
        f.write(lines)


atexit.register(flush)
if os.environ.get("RAFTKV_TRACE"):
    enable(os.environ["RAFTKV_TRACE"])
