"""One KJ event loop per thread, shared by every raftkv component that uses pycapnp.

pycapnp runs Cap'n Proto's KJ event loop on top of the running asyncio loop (``capnp.kj_loop()``) and refuses to
start it twice on one thread. Several nodes in one process (tests, embedders running a whole cluster) and a
client next to a node must share it: :func:`kj_loop` enters it on first use and leaves it when the last user
leaves; if the application already runs it (``capnp.run(...)``), raftkv just uses that one. Never combine with
uvloop (pycapnp crashes under it on this project's machine).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import capnp  # type: ignore[import-untyped]

_users = 0
_owned: Any = None  # the kj_loop context raftkv entered, or None when the application owns the loop


@contextlib.asynccontextmanager
async def kj_loop() -> AsyncIterator[None]:
    """Run the body with the KJ loop active."""
    global _users, _owned
    if _users == 0:
        ctx = capnp.kj_loop()
        try:
            await ctx.__aenter__()
            _owned = ctx
        except RuntimeError as e:
            if "already running" not in str(e):
                raise
            _owned = None  # the application runs it
    _users += 1
    try:
        yield
    finally:
        _users -= 1
        if _users == 0 and _owned is not None:
            ctx, _owned = _owned, None
            await ctx.__aexit__(None, None, None)
