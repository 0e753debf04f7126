"""``python -m raftkv.sim``: run one seed (``--seed N``) or sweep many (``--seeds A..B``).

Every failure prints the seed, the options and the one command that replays it bit for bit.
Exit code: 0 when every seed passed, 1 when any failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from typing import Any

from raftkv.raft.node import UNSAFE_HOOKS
from raftkv.sim.run import RunResult, SimOptions, run_seed


def _fixable() -> dict[str, type]:
    """Every option of a run can be fixed on the command line; the ones left out are drawn from the seed."""
    kinds: dict[str, type] = {}
    for f in fields(SimOptions):
        if f.name == "unsafe":
            continue
        kinds[f.name] = type(getattr(SimOptions(), f.name))
    return kinds


_FIXABLE = _fixable()


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_seeds(text: str) -> range:
    try:
        if ".." in text:
            a, b = text.split("..", 1)
            lo, hi = int(a), int(b)
        else:
            lo = hi = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds expects A..B (e.g. 1..300), got {text!r}") from None
    if hi < lo:
        raise argparse.ArgumentTypeError(f"--seeds range is empty: {text!r}")
    return range(lo, hi + 1)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m raftkv.sim",
        description="Deterministic Raft cluster simulator: random faults from a seed, safety checked after "
        "every event, then a liveness check after the network heals.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--seed", type=int, help="run one seed and print its summary")
    which.add_argument("--seeds", type=_parse_seeds, help="sweep a range of seeds, e.g. 1..300")
    for name, kind in _FIXABLE.items():
        parse = _parse_bool if kind is bool else kind
        flag = f"--{name.replace('_', '-')}"
        p.add_argument(flag, type=parse, default=None, metavar=kind.__name__.upper(), help=argparse.SUPPRESS)
    p.add_argument(
        "--unsafe",
        action="append",
        default=[],
        choices=sorted(UNSAFE_HOOKS),
        help="break one safety rule on purpose (to see the checker catch it)",
    )
    p.epilog = "Any run option can be fixed with --option-name VALUE: " + ", ".join(
        f"--{n.replace('_', '-')}" for n in _FIXABLE
    )
    p.add_argument("--jobs", type=int, default=1, help="worker processes for a sweep (default 1)")
    p.add_argument("--trace", action="store_true", help="print every event of a single-seed run")
    p.add_argument("--verbose-summary", action="store_true", help="explain the figures of a single-seed run")
    p.add_argument("--fail-fast", action="store_true", help="stop a sweep at the first failing seed")
    return p


def _fixed(args: argparse.Namespace) -> dict[str, Any]:
    fixed = {name: getattr(args, name) for name in _FIXABLE}
    return {k: v for k, v in fixed.items() if v is not None}


def _run(seed: int, fixed: dict[str, Any], unsafe: tuple[str, ...], trace: bool = False) -> RunResult:
    opts = SimOptions.draw(seed, **fixed)
    if unsafe:
        opts.unsafe = unsafe
    return run_seed(seed, opts, trace=trace)


def _report_failure(r: RunResult, fixed: dict[str, Any], unsafe: tuple[str, ...]) -> None:
    extra = "".join(f" --unsafe {u}" for u in unsafe)
    print(f"FAIL seed={r.seed} phase={r.phase}: {r.failure}")
    print(f"  options: {r.options.describe()}")
    print(f"  replay:  {r.replay_command(fixed)}{extra}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    fixed = _fixed(args)
    unsafe = tuple(args.unsafe)
    if args.seed is not None:
        r = _run(args.seed, fixed, unsafe, trace=args.trace)
        print(f"seed {r.seed}: {r.options.describe()}")
        if args.trace and r.trace is not None:
            for line in r.trace:
                print(line)
        s = r.stats
        print(
            f"simulated {s['sim_ms']} ms: {s['events']} events, {s['messages']} messages ({s['dropped']} lost), "
            f"{s['terms_with_leader']} leaders elected (max term {s['max_term']}), {s['crashes']} crashes, "
            f"{s['partitions']} partitions, {s['pauses']} pauses"
        )
        print(
            f"clients proposed {s['proposals']} commands; {s['acked']} acknowledged; {s['reads']} reads; "
            f"{s['applied']} log entries applied identically on every node"
        )
        if args.verbose_summary:
            print(
                "checked after every event: election safety, leader append-only, log matching, leader "
                "completeness, state machine safety, commit monotonic, applied = committed prefix, linearizable "
                "read points; then "
                "liveness: after healing, one leader and every acknowledged command applied everywhere."
            )
        if r.ok:
            print("OK: no safety violation; the cluster converged after healing")
            return 0
        _report_failure(r, fixed, unsafe)
        return 1

    seeds: range = args.seeds
    started = time.perf_counter()
    failures: list[RunResult] = []
    done = 0
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(_run, seed, fixed, unsafe) for seed in seeds]
            for fut in futures:
                r = fut.result()
                done += 1
                if not r.ok:
                    failures.append(r)
                    _report_failure(r, fixed, unsafe)
                    if args.fail_fast:
                        for f in futures:
                            f.cancel()
                        break
    else:
        for seed in seeds:
            r = _run(seed, fixed, unsafe)
            done += 1
            if not r.ok:
                failures.append(r)
                _report_failure(r, fixed, unsafe)
                if args.fail_fast:
                    break
    elapsed = time.perf_counter() - started
    rate = done / elapsed if elapsed > 0 else float("inf")
    print(
        f"{done} seeds ({seeds.start}..{seeds.stop - 1}) in {elapsed:.1f} s ({rate:.1f} seeds/s): "
        f"{len(failures)} failed"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
