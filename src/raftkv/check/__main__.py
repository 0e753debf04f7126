"""``python -m raftkv.check HISTORY.jsonl [--html OUT.html] [--timeout S] [--model kv|register]``.

Theory of operation
-------------------
Load the history (JSON Lines, one operation per line; ``-`` reads standard input), check it, print one line,
and exit with the verdict: 0 linearizable, 1 not linearizable (the line names the key and the operations),
2 unknown within ``--timeout`` or bad input (the message names the file and line). With ``--html`` the
self-contained HTML view is written whatever the verdict (except bad input). The file format is in
``docs/check.md`` and in :mod:`raftkv.check.history`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from raftkv.check.checker import DEFAULT_TIMEOUT_S, check
from raftkv.check.history import HistoryError, Operation, load_jsonl, parse_jsonl
from raftkv.check.html import write_html
from raftkv.check.models import MODELS
from raftkv.check.search import Kind

EXIT_OK = 0
EXIT_ILLEGAL = 1
EXIT_UNKNOWN_OR_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m raftkv.check",
        description="Check a history of register/KV operations for linearizability. "
        "Exit 0: linearizable; 1: not; 2: unknown within --timeout, or bad input.",
    )
    p.add_argument("history", help="JSON Lines file, one operation per line ('-' for standard input)")
    p.add_argument("--html", metavar="OUT.html", help="write a self-contained HTML view of the history and verdict")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"time budget in seconds; past it the answer is unknown (default {DEFAULT_TIMEOUT_S:g}; 0: none)",
    )
    p.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="kv",
        help="kv: one register per key, checked per key (default); register: one register, keys ignored",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        history: list[Operation]
        if args.history == "-":
            history = parse_jsonl(sys.stdin, source="<stdin>")
        else:
            history = load_jsonl(args.history)
    except HistoryError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNKNOWN_OR_BAD_INPUT
    except OSError as e:
        print(f"error: cannot read {args.history}: {e.strerror or e}", file=sys.stderr)
        return EXIT_UNKNOWN_OR_BAD_INPUT
    if args.timeout < 0:
        print("error: --timeout must be >= 0", file=sys.stderr)
        return EXIT_UNKNOWN_OR_BAD_INPUT
    result = check(history, MODELS[args.model], timeout_s=args.timeout or None, partials=args.html is not None)
    print(f"{result.kind.value.upper()}: {result.reason} ({result.elapsed_s:.3f} s)")
    if args.html:
        try:
            write_html(result, history, args.html)
        except OSError as e:
            print(f"error: cannot write {args.html}: {e.strerror or e}", file=sys.stderr)
            return EXIT_UNKNOWN_OR_BAD_INPUT
        print(f"html: {args.html}", file=sys.stderr)
    if result.kind is Kind.OK:
        return EXIT_OK
    if result.kind is Kind.ILLEGAL:
        return EXIT_ILLEGAL
    return EXIT_UNKNOWN_OR_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
