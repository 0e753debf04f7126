"""One KJ event loop per thread, shared by every raftkv component that uses pycapnp on that thread.

pycapnp runs Cap'n Proto's KJ event loop on top of the running asyncio loop (``capnp.kj_loop()``) and refuses to
start it twice on one thread. Several nodes in one process (tests, embedders running a whole cluster) and a
client next to a node must share it: :func:`kj_loop` enters it on first use on a thread and leaves it when the
last user on that thread leaves; if the application already runs it (``capnp.run(...)``), raftkv just uses that
one. The bookkeeping is per thread, like KJ's loop itself (``SyncClient`` runs its own loop on its own thread).
Never combine with uvloop (pycapnp crashes under it on this project's machine).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import capnp  # type: ignore[import-untyped]


class _ThreadState(threading.local):
    users = 0
    owned: Any = None  # the kj_loop context raftkv entered on this thread, or None if the application owns it


_state = _ThreadState()


@contextlib.asynccontextmanager
async def kj_loop() -> AsyncIterator[None]:
    """Run the body with this thread's KJ loop active."""
    st = _state
    if st.users == 0:
        ctx = capnp.kj_loop()
        try:
            await ctx.__aenter__()
            st.owned = ctx
        except RuntimeError as e:
            if "already running" not in str(e):
                raise
            st.owned = None  # the application runs it
    st.users += 1
    try:
        yield
    finally:
        st.users -= 1
        if st.users == 0 and st.owned is not None:
            ctx, st.owned = st.owned, None
            await ctx.__aexit__(None, None, None)
