"""The floor under a service put: one bare Cap'n Proto round trip between two processes, with pycapnp.

    PYTHONPATH=src .venv/bin/python bench/capnp_rtt.py [--calls 3000] [--rounds 2]

Starts a server process that implements only ``Client.ping`` of raftkv's schema, then calls it sequentially
from this process (``capnp.AsyncIoStream`` over loopback TCP, the only transport pycapnp 2 offers) and prints
the median and p90 round trip. Three server variants, interleaved over the rounds, show whether the way the
server method completes matters: it returns at once, it awaits ``asyncio.sleep(0)``, or it awaits a future
that a ``call_soon`` callback resolves (the shape of raftkv's ``execute``, which awaits its proposals).
No Raft, no disk: what is left is pycapnp, asyncio and the kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import capnp  # type: ignore[import-untyped]

from raftkv.cli.local import free_ports
from raftkv.transport.wire import schema

VARIANTS = ("immediate", "sleep0", "future")


class _Server(schema.Client.Server):  # type: ignore[misc]
    def __init__(self, variant: str) -> None:
        self.variant = variant

    async def ping(self, header: Any, payload: bytes, _context: Any, **_kw: Any) -> None:
        if self.variant == "sleep0":
            await asyncio.sleep(0)
        elif self.variant == "future":
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            loop.call_soon(done.set_result, None)
            await done
        _context.results.payload = payload


async def _serve(port: int, variant: str) -> None:
    async def on_connection(stream: Any) -> None:
        await capnp.TwoPartyServer(stream, bootstrap=_Server(variant)).on_disconnect()

    server = await capnp.AsyncIoStream.create_server(on_connection, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def _measure(port: int, calls: int) -> list[float]:
    for _ in range(100):  # the server process is starting
        try:
            stream = await capnp.AsyncIoStream.create_connection(host="127.0.0.1", port=port)
            break
        except OSError:
            await asyncio.sleep(0.05)
    else:
        raise SystemExit(f"bench/capnp_rtt.py: the server on port {port} did not come up")
    client = capnp.TwoPartyClient(stream).bootstrap().cast_as(schema.Client)
    payload = b"x" * 100
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        async with asyncio.timeout(5):
            await client.ping(payload=payload)
        times.append(time.perf_counter() - started)
    return times[calls // 10 :]  # drop the warm-up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=3000, help="sequential calls per variant and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--serve", nargs=2, metavar=("PORT", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(capnp.run(_serve(int(args.serve[0]), args.serve[1])))
        return
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for variant in VARIANTS if r % 2 == 0 else reversed(VARIANTS):
            port = free_ports(1)[0]
            server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), variant], env=dict(os.environ))
            try:
                times = asyncio.run(capnp.run(_measure(port, args.calls)))
            finally:
                server.terminate()
                server.wait(timeout=10)
            p50 = statistics.median(times) * 1e6
            p90 = statistics.quantiles(times, n=10)[-1] * 1e6
            print(f"round {r + 1} {variant:>9}: p50 {p50:5.0f} us  p90 {p90:5.0f} us")
            results[variant].append(p50)
    print("median of the rounds' p50s:")
    for variant, p50s in results.items():
        print(f"  {variant:>9}: {statistics.median(p50s):5.0f} us")


if __name__ == "__main__":
    main()
