"""raftkv.check — a linearizability checker for histories of the KV store (or any single-key register system).

Theory of operation
-------------------
A history (``history.py``) is a list of operations with call and return times; a pending operation (unknown
outcome) may have taken effect at any time after its call, or never. A model (``models.py``) is the sequential
specification; the KV model partitions the history per key, since linearizability is local. Each partition is
searched (``search.py``) by Wing & Gong's algorithm with Lowe's memoization, as porcupine does. ``checker.py``
ties them under one time budget and explains the verdict; ``html.py`` draws it; ``gen.py`` generates histories
from a reference store (optionally a buggy one) for tests and benchmarks. ``python -m raftkv.check`` is the
command (``__main__.py``); ``docs/check.md`` is the manual.

    >>> from raftkv.check import check, put, get
    >>> check([put(1, "x", "a", 0, 1), get(2, "x", "a", 2, 3)]).kind
    <Kind.OK: 'ok'>
"""

from raftkv.check.checker import DEFAULT_TIMEOUT_S, CheckerBug, CheckResult, PartitionResult, check
from raftkv.check.history import (
    CasResult,
    Compare,
    HistoryError,
    Operation,
    Read,
    TxnOp,
    TxnResult,
    Written,
    cas,
    delete,
    dump_jsonl,
    get,
    load_jsonl,
    op_from_json,
    op_to_json,
    parse_jsonl,
    put,
    txn,
)
from raftkv.check.html import render_html, write_html
from raftkv.check.models import KV, MODELS, REGISTER, KVModel, Model
from raftkv.check.search import Kind

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "KV",
    "MODELS",
    "REGISTER",
    "CasResult",
    "CheckResult",
    "CheckerBug",
    "Compare",
    "HistoryError",
    "KVModel",
    "Kind",
    "Model",
    "Operation",
    "PartitionResult",
    "Read",
    "TxnOp",
    "TxnResult",
    "Written",
    "cas",
    "check",
    "delete",
    "dump_jsonl",
    "get",
    "load_jsonl",
    "op_from_json",
    "op_to_json",
    "parse_jsonl",
    "put",
    "render_html",
    "txn",
    "write_html",
]
