"""The wire: the Cap'n Proto schema (``raftkv.capnp``) and the limits both ends of every connection apply.

This is what a client imports to speak to a node; the peer transport imports it too. Nothing here does I/O
beyond loading the schema file once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import capnp  # type: ignore[import-untyped]

schema: Any = capnp.load(str(Path(__file__).with_name("raftkv.capnp")))
"""The compiled schema: ``schema.Peer``, ``schema.Client``, ``schema.Watcher``, ``schema.MessageBatch``, ..."""

TRAVERSAL_LIMIT_WORDS = 8 * 1024 * 1024
"""Cap'n Proto's read limit per message (64 MiB of pointers), equal on both sides of every connection."""
NESTING_LIMIT = 16
"""How deep a message may nest: as deep as our schema needs, no deeper."""
MAX_FRAME_BYTES = TRAVERSAL_LIMIT_WORDS * 8
"""The largest frame the peer data plane accepts (one ``MessageBatch``)."""
