"""Keys, key ranges and the size limits every node enforces identically.

Theory of operation
-------------------
Keys and values are ``bytes``, ordered lexicographically (etcd's order). A *range* is written the way etcd's
API writes it, as a pair ``(key, range_end)``:

* ``range_end is None`` (or ``b""``, which etcd's protobuf cannot tell apart from "unset"): the single ``key``;
* ``range_end == b"\\0"``: every key ``>= key`` ("from key");
* otherwise the half-open interval ``[key, range_end)``, empty when ``range_end <= key``.

:func:`prefix_end` gives the ``range_end`` that selects every key starting with a prefix (etcd's
``GetPrefixRangeEnd``: drop trailing ``0xff`` bytes and increment the last remaining byte).

The limits live here, in the pure package, so that a command is valid or invalid on every node whatever its
backend: a key longer than LMDB's compile-time maximum (511 bytes) would otherwise fail only on LMDB nodes and
the replicas would diverge.
"""

from __future__ import annotations

MAX_KEY_BYTES = 511
"""Longest key (and ``range_end``) accepted: LMDB's default ``mdb_env_get_maxkeysize``."""

MAX_VALUE_BYTES = 1 << 20
"""Largest value accepted (1 MiB; etcd caps whole requests at 1.5 MiB by default)."""

FROM_KEY = b"\0"
"""The ``range_end`` meaning "every key greater than or equal to ``key``"."""


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` selecting every key that starts with ``prefix``.

    etcd's rule: strip trailing ``0xff`` bytes, then increment the last byte. A prefix made only of ``0xff`` bytes
    (or the empty prefix) has no upper bound, so the answer is :data:`FROM_KEY` ("to the end of the keyspace").
    """
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return FROM_KEY
    end[-1] += 1
    return bytes(end)


def is_single_key(range_end: bytes | None) -> bool:
    """Whether ``(key, range_end)`` names one key rather than an interval."""
    return not range_end


def scan_bounds(key: bytes, range_end: bytes | None) -> tuple[bytes, bytes | None]:
    """``(start, end)`` of an interval range for a backend scan; ``end is None`` means unbounded.

    Only meaningful when ``range_end`` is not a single-key marker (see :func:`is_single_key`).
    """
    if range_end == FROM_KEY:
        return key, None
    return key, range_end


def key_in_range(candidate: bytes, key: bytes, range_end: bytes | None) -> bool:
    """Whether ``candidate`` falls in the range ``(key, range_end)`` (etcd semantics, see the module docstring)."""
    if not range_end:
        return candidate == key
    if range_end == FROM_KEY:
        return candidate >= key
    return key <= candidate < range_end
