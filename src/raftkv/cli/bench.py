"""``raftkv bench``: load a cluster and print ops/s, latency percentiles and a histogram."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from raftkv.cli.common import endpoints_option, fail, json_option, parse_endpoints, tls_options
from raftkv.errors import RaftError


@click.command()
@endpoints_option
@click.option("--clients", type=int, default=64, show_default=True, help="Operations kept in flight.")
@click.option("--duration", type=float, default=10.0, show_default=True, help="Seconds.")
@click.option("--value-size", type=int, default=100, show_default=True, help="Bytes per value.")
@click.option("--ratio", default="1:0", show_default=True, help="put:get mix, e.g. 1:0, 1:1, 0:1.")
@click.option("--keys", type=int, default=10_000, show_default=True, help="Size of the key space.")
@click.option("--serializable", is_flag=True, help="Gets read a node's local copy (possibly stale).")
@json_option
def bench(
    endpoints: str | None,
    clients: int,
    duration: float,
    value_size: int,
    ratio: str,
    keys: int,
    serializable: bool,
    as_json: bool,
) -> None:
    """Load a cluster for DURATION seconds and print ops/s, latency percentiles and a histogram."""
    import random
    import resource
    import time

    from raftkv.client import connect

    try:
        puts, gets = (int(x) for x in ratio.split(":"))
        if puts < 0 or gets < 0 or puts + gets == 0:
            raise ValueError
    except ValueError:
        fail(f"--ratio {ratio!r}: use PUTS:GETS with non-negative integers, e.g. 1:1")
    addrs = parse_endpoints(endpoints)
    value = b"x" * value_size
    latencies: list[float] = []
    errors: list[str] = []

    async def run() -> float:
        async with connect(addrs, **tls_options(), timeout=10.0) as c:
            await c.put("bench/warmup", value)
            if gets:
                await asyncio.gather(*(c.put(f"bench/{k}", value) for k in range(min(keys, 1000))))
            deadline = time.perf_counter() + duration

            async def worker(n: int) -> None:
                rng = random.Random(n)
                while time.perf_counter() < deadline:
                    key = f"bench/{rng.randrange(min(keys, 1000) if gets and not puts else keys)}"
                    t0 = time.perf_counter()
                    try:
                        if rng.randrange(puts + gets) < puts:
                            await c.put(key, value)
                        else:
                            await c.get(key, serializable=serializable)
                        latencies.append(time.perf_counter() - t0)
                    except RaftError as e:
                        errors.append(str(e))

            started = time.perf_counter()
            await asyncio.gather(*(worker(n) for n in range(clients)))
            return time.perf_counter() - started

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = _run_bench(run)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime) / elapsed
    lat = sorted(latencies)
    if not lat:
        fail(f"no operation succeeded ({errors[:1]})", code=1)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

    summary = {
        "ops": len(lat),
        "errors": len(errors),
        "seconds": round(elapsed, 3),
        "ops_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(pct(0.5), 3),
        "p90_ms": round(pct(0.9), 3),
        "p99_ms": round(pct(0.99), 3),
        "max_ms": round(lat[-1] * 1000, 3),
        "client_cpu_percent": round(cpu * 100, 1),
        "clients": clients,
        "ratio": ratio,
        "value_size": value_size,
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(
        f"{summary['ops']} ops in {elapsed:.1f} s: {summary['ops_per_s']:,.0f} ops/s "
        f"({clients} in flight, put:get {ratio}, {value_size} B values), {len(errors)} errors"
    )
    click.echo(
        f"latency ms: p50 {summary['p50_ms']:.2f}  p90 {summary['p90_ms']:.2f}  p99 {summary['p99_ms']:.2f}  "
        f"max {summary['max_ms']:.2f}   (load generator CPU {summary['client_cpu_percent']:.0f}%)"
    )
    bounds = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, float("inf")]
    counts = [0] * len(bounds)
    for x in lat:
        ms = x * 1000
        counts[next(k for k, b in enumerate(bounds) if ms <= b)] += 1
    top = max(counts)
    low = 0.0
    for b, n in zip(bounds, counts, strict=True):
        if n:
            label = f"{low:g}-{b:g} ms" if b != float("inf") else f">{low:g} ms"
            click.echo(f"  {label:>14} {n:>8}  {'#' * max(1, round(40 * n / top))}")
        low = b


def _run_bench(fn: Any) -> float:
    result: float = asyncio.run(fn())
    return result
